package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ebsd/ebsd/cas"
)

type scrubOptions struct {
	mbPerSec int64
}

// scrubReport is the JSON of POST /ebsd/v1/scrub (cas.ScrubReport).
type scrubReport struct {
	BlocksChecked     int64 `json:"blocksChecked"`
	BytesChecked      int64 `json:"bytesChecked"`
	RecordsChecked    int64 `json:"recordsChecked"`
	CorruptBlockCount int   `json:"corruptBlockCount"`
	CorruptBlocks     []struct {
		Digest   string `json:"digest"`
		Checksum string `json:"checksum"`
		Problem  string `json:"problem"`
		UseCount int    `json:"useCount"`
		Uses     []struct {
			SnapshotID string  `json:"snapshotId"`
			OwnerID    string  `json:"ownerId"`
			Status     string  `json:"status"`
			Deleted    bool    `json:"deleted"`
			IndexCount int     `json:"indexCount"`
			Indexes    []int64 `json:"indexes"`
		} `json:"uses"`
	} `json:"corruptBlocks"`
	CorruptRecordCount int `json:"corruptRecordCount"`
	CorruptRecords     []struct {
		Key     string `json:"key"`
		Problem string `json:"problem"`
	} `json:"corruptRecords"`
	MarksCleared int           `json:"marksCleared"`
	Duration     time.Duration `json:"durationNs"`
}

// errCorruption makes ebsctl scrub exit non-zero when the store holds corrupt data, so
// a cron job or a monitoring check notices without parsing the output.
var errCorruption = errors.New("the store holds corrupt data (see above)")

// runScrub asks an ebsd daemon to verify every stored block and catalog record now
// (POST /ebsd/v1/scrub) and prints what is corrupt, with the snapshots and block
// indexes to put again.
func runScrub(ctx context.Context, g *globalOptions, args []string, stdout io.Writer) error {
	var o scrubOptions
	fs := flag.NewFlagSet("scrub", flag.ContinueOnError)
	fs.Int64Var(&o.mbPerSec, "mb-per-sec", 0, "read at most this many MiB of stored blocks per second (0: as fast as the disk goes)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: ebsctl scrub [--mb-per-sec N]\n\n"+
			"Re-reads and verifies every stored block (decompress, SHA-256) and checks the catalog's\n"+
			"records, now. Prints each corrupt block with the snapshots and block indexes that map it;\n"+
			"putting those blocks again (the same bytes, in any snapshot) heals the stored copy.\n"+
			"Exits 1 when anything is corrupt. ebsd only.\n\n"+
			"Examples:\n  ebsctl scrub\n  ebsctl scrub --mb-per-sec 64\n  ebsctl --json scrub")
		fs.PrintDefaults()
	}
	if err := g.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("scrub takes no arguments (got %q)", fs.Args())
	}
	if o.mbPerSec < 0 {
		return fmt.Errorf("--mb-per-sec %d: want 0 (no bound) or more", o.mbPerSec)
	}
	path := "/ebsd/v1/scrub"
	if o.mbPerSec > 0 {
		path += fmt.Sprintf("?mbPerSec=%d", o.mbPerSec)
	}
	var rep scrubReport
	body, err := ebsdCall(ctx, g, http.MethodPost, path, &rep)
	if err != nil {
		return err
	}
	if g.json {
		if _, err := stdout.Write(append(body, '\n')); err != nil {
			return err
		}
	} else if err := printScrub(stdout, &rep); err != nil {
		return err
	}
	if rep.CorruptBlockCount > 0 || rep.CorruptRecordCount > 0 {
		return errCorruption
	}
	return nil
}

func printScrub(w io.Writer, rep *scrubReport) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "blocks checked\t%d, %s stored\n", rep.BlocksChecked, mib(rep.BytesChecked))
	fmt.Fprintf(tw, "records checked\t%d\n", rep.RecordsChecked)
	fmt.Fprintf(tw, "corrupt blocks\t%d\n", rep.CorruptBlockCount)
	fmt.Fprintf(tw, "corrupt records\t%d\n", rep.CorruptRecordCount)
	if rep.MarksCleared > 0 {
		fmt.Fprintf(tw, "healed since found\t%d\n", rep.MarksCleared)
	}
	fmt.Fprintf(tw, "took\t%s\n", rep.Duration.Round(time.Millisecond))
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, b := range rep.CorruptBlocks {
		fmt.Fprintf(w, "\nblock %s (checksum %s): %s; mapped by %d snapshot(s)\n", b.Digest, b.Checksum, b.Problem, b.UseCount)
		for _, u := range b.Uses {
			idx := make([]string, len(u.Indexes))
			for i, n := range u.Indexes {
				idx[i] = fmt.Sprint(n)
			}
			more := ""
			if u.IndexCount > len(u.Indexes) {
				more = fmt.Sprintf(" and %d more", u.IndexCount-len(u.Indexes))
			}
			state := u.Status
			if u.Deleted {
				state = "deleted"
			}
			fmt.Fprintf(w, "  %s (account %s, %s): block indexes %s%s\n", u.SnapshotID, u.OwnerID, state, strings.Join(idx, ", "), more)
		}
		if b.UseCount > len(b.Uses) {
			fmt.Fprintf(w, "  and %d more snapshot(s)\n", b.UseCount-len(b.Uses))
		}
	}
	if n := rep.CorruptBlockCount - len(rep.CorruptBlocks); n > 0 {
		fmt.Fprintf(w, "\nand %d more corrupt blocks (ebsctl --json scrub lists the first 1000)\n", n)
	}
	for _, r := range rep.CorruptRecords {
		fmt.Fprintf(w, "\nrecord %s: %s\n", r.Key, r.Problem)
	}
	if rep.CorruptBlockCount > 0 {
		fmt.Fprintln(w, "\nTo heal a block, put its bytes again at any index of any pending snapshot (for example,\n"+
			"re-upload the volume the listed snapshots were taken of); see docs/salvage.md.")
	}
	return nil
}

// runSalvage copies every snapshot of a damaged store whose blocks still verify into a
// new store (cas.Salvage). It works on the data directory itself, not through a daemon:
// it is for the store ebsd refuses to open. ebsd must not be running on it.
func runSalvage(ctx context.Context, g *globalOptions, args []string, stdout io.Writer) error {
	var from, to string
	fs := flag.NewFlagSet("salvage", flag.ContinueOnError)
	fs.StringVar(&from, "from", "", "data directory of the damaged store (only read)")
	fs.StringVar(&to, "to", "", "new data directory to create (must not exist or be empty)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: ebsctl salvage --from DATADIR --to NEWDIR\n\n"+
			"Copies every snapshot of the store in DATADIR whose blocks (and whose ancestors' blocks) still\n"+
			"read and verify into a new store in NEWDIR, keeping snapshot ids, tags, lineage, client tokens\n"+
			"and block-token keys; table files that fail their checksums are left out. DATADIR is only read.\n"+
			"Runs on the machine that holds the data directory, with ebsd stopped; then start ebsd with\n"+
			"--data-dir NEWDIR. Prints what was saved and what was not; exits 1 when anything was lost.\n"+
			"See docs/salvage.md.\n\n"+
			"Examples:\n  ebsctl salvage --from /var/lib/ebsd --to /var/lib/ebsd.salvaged\n  ebsctl --json salvage --from .ebsd/data --to .ebsd/data.new")
		fs.PrintDefaults()
	}
	if err := g.parse(fs, args); err != nil {
		return err
	}
	if from == "" || to == "" || fs.NArg() != 0 {
		return errors.New("give --from DATADIR and --to NEWDIR, and nothing else")
	}
	rep, err := cas.Salvage(ctx, cas.SalvageOptions{From: from, To: to})
	if err != nil {
		return err
	}
	if g.json {
		b, err := json.Marshal(rep)
		if err != nil {
			return err
		}
		if _, err := stdout.Write(append(b, '\n')); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "saved %d snapshot(s) into %s: %d blocks, %s; %d client token(s)\n",
			len(rep.Saved), to, rep.BlocksCopied, mib(rep.BytesCopied), rep.TokensCopied)
		for _, p := range rep.CorruptTables {
			fmt.Fprintf(stdout, "left out damaged table file %s (the keys it held are lost)\n", p)
		}
		for _, l := range rep.Lost {
			idx := ""
			if len(l.BadIndexes) > 0 {
				idx = fmt.Sprintf(" (block indexes %v)", l.BadIndexes)
			}
			fmt.Fprintf(stdout, "not saved: %s (account %s): %s%s\n", l.ID, l.OwnerID, l.Reason, idx)
		}
		for _, k := range rep.UnreadableRecords {
			fmt.Fprintf(stdout, "unreadable snapshot record %s\n", k)
		}
	}
	if len(rep.Lost) > 0 || len(rep.CorruptTables) > 0 || len(rep.UnreadableRecords) > 0 {
		return fmt.Errorf("salvaged what verifies into %s; some of the store was lost (see above)", to)
	}
	return nil
}
