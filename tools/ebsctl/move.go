package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/ebsd/ebsd/cas"
	"github.com/ebsd/ebsd/cas/engines"
)

// runMove copies a whole store from one set of engines into another (cas.Move): the
// embedded Badger store of a data directory into S3 and PostgreSQL, or back. It works
// on the stores themselves, not through a daemon; no daemon may serve either meanwhile.
func runMove(ctx context.Context, g *globalOptions, args []string, stdout io.Writer) error {
	var from, to side
	fs := flag.NewFlagSet("move", flag.ContinueOnError)
	fs.StringVar(&from.dir, "from", "", "data directory of an embedded (Badger) store to copy")
	fs.StringVar(&from.catalog, "from-catalog", "", "postgres://… catalog of a shared store to copy (with --from-blocks)")
	fs.StringVar(&from.blocks, "from-blocks", "", "s3://BUCKET/PREFIX blocks of a shared store to copy (with --from-catalog)")
	fs.StringVar(&to.dir, "to", "", "data directory of a new embedded store (must not hold records)")
	fs.StringVar(&to.catalog, "to-catalog", "", "postgres://… catalog of the new shared store (with --to-blocks; must not hold records)")
	fs.StringVar(&to.blocks, "to-blocks", "", "s3://BUCKET/PREFIX blocks of the new shared store (with --to-catalog)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: ebsctl move (--from DATADIR | --from-catalog URL --from-blocks s3://…)\n"+
			"                  (--to DATADIR | --to-catalog URL --to-blocks s3://…)\n\n"+
			"Copies every block and record of one store into another, empty one: the embedded store of\n"+
			"a data directory into S3 and PostgreSQL when one machine is outgrown, or back. Snapshot ids,\n"+
			"client tokens, tags, lineage and block-token keys stay as they were; then every block of every\n"+
			"live snapshot is read back through the new store and verified. Stop the daemons of both\n"+
			"stores first. S3 endpoint, region and credentials are found the AWS way\n"+
			"(AWS_ENDPOINT_URL_S3, AWS_REGION, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, profiles).\n\n"+
			"Examples:\n  ebsctl move --from /var/lib/ebsd --to-catalog \"$EBSD_CATALOG\" --to-blocks \"$EBSD_BLOCKS\"\n"+
			"  ebsctl move --from-catalog \"$EBSD_CATALOG\" --from-blocks \"$EBSD_BLOCKS\" --to /var/lib/ebsd.local")
		fs.PrintDefaults()
	}
	if err := g.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return errors.New("move takes flags only")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	fromOpts, closeFrom, err := from.open(ctx, "from", log)
	if err != nil {
		return err
	}
	defer closeFrom()
	toOpts, closeTo, err := to.open(ctx, "to", log)
	if err != nil {
		return err
	}
	defer closeTo()
	rep, err := cas.Move(ctx, cas.MoveOptions{From: fromOpts, To: toOpts, Logger: log})
	if err != nil {
		return err
	}
	if g.json {
		b, err := json.Marshal(rep)
		if err != nil {
			return err
		}
		_, err = stdout.Write(append(b, '\n'))
		return err
	}
	_, err = fmt.Fprintf(stdout, "moved %d blocks (%s stored) and %d records; verified %d blocks of %d live snapshots in %s\n",
		rep.Blocks, mib(rep.StoredBytes), rep.Records, rep.BlocksChecked, rep.Snapshots, rep.Duration.Round(1e6))
	return err
}

// side is one end of a move: a data directory, or a catalog and a bucket.
type side struct{ dir, catalog, blocks string }

func (s side) open(ctx context.Context, name string, log *slog.Logger) (cas.Options, func(), error) {
	switch {
	case s.dir != "" && s.catalog == "" && s.blocks == "":
		return cas.Options{Dir: s.dir}, func() {}, nil
	case s.dir == "" && s.catalog != "" && s.blocks != "":
	default:
		return cas.Options{}, nil, fmt.Errorf("give --%s DATADIR, or --%s-catalog and --%s-blocks", name, name, name)
	}
	blocks, err := engines.OpenBlocks(ctx, s.blocks, "", 0, log)
	if err != nil {
		return cas.Options{}, nil, fmt.Errorf("--%s-blocks: %w", name, err)
	}
	cat, err := engines.OpenCatalog(ctx, s.catalog, log)
	if err != nil {
		return cas.Options{}, nil, fmt.Errorf("--%s-catalog: %w", name, err)
	}
	// The shared store's local directory holds nothing of the store (the embedded DB a
	// store always opens stays empty): a temporary one does.
	dir, err := os.MkdirTemp("", "ebsctl-move-")
	if err != nil {
		cat.Close()
		return cas.Options{}, nil, err
	}
	return cas.Options{Dir: dir, Catalog: cat, Blocks: blocks}, func() { cat.Close(); _ = os.RemoveAll(dir) }, nil
}
