package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

type downloadOptions struct {
	workers int
}

// runDownload restores a snapshot into a file (sparse: blocks without data stay holes) or
// a device, checking every block's checksum, and fsyncs before it reports success.
func runDownload(ctx context.Context, g *globalOptions, args []string, stdout io.Writer) error {
	var o downloadOptions
	fs := flag.NewFlagSet("download", flag.ContinueOnError)
	fs.IntVar(&o.workers, "workers", 4*runtime.NumCPU(), "parallel GetSnapshotBlock requests")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: ebsctl download [flags] SNAPSHOT FILE|DEVICE

Restores a snapshot. A file is created sparse at the volume's size; on a device only
blocks with data are written (zero it first if it held other data).

Example:
  ebsctl download snap-0123456789abcdef0 restored.img

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parseArgs(g, fs, args, 2, "SNAPSHOT and FILE|DEVICE"); err != nil {
		return err
	}
	id, path := fs.Arg(0), fs.Arg(1)
	eb, _, err := g.clients(ctx)
	if err != nil {
		return err
	}
	blocks, gib, err := listBlocks(ctx, eb, id)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Mode().IsRegular() {
		if err := f.Truncate(0); err != nil { // holes everywhere, then the data
			return err
		}
		if err := f.Truncate(gib << 30); err != nil {
			return err
		}
	}
	start := time.Now()
	prog := newProgress(g, "download", int64(len(blocks))*blockSize)
	var written atomic.Int64
	err = inParallel(ctx, o.workers, int64(len(blocks)), func() func(context.Context, int64) error {
		buf := make([]byte, blockSize)
		return func(ctx context.Context, j int64) error {
			b := blocks[j]
			if err := getBlock(ctx, eb, id, b, buf); err != nil {
				return err
			}
			prog.add(blockSize)
			if isZero(buf) && fi.Mode().IsRegular() {
				return nil // a hole reads as zeros
			}
			if _, err := f.WriteAt(buf, int64(aws.ToInt32(b.BlockIndex))*blockSize); err != nil {
				return err
			}
			written.Add(1)
			return nil
		}
	})
	prog.finish()
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	secs := time.Since(start).Seconds()
	res := map[string]any{"snapshotId": id, "path": path, "volumeSizeGiB": gib, "blocks": len(blocks), "written": written.Load(),
		"seconds": secs, "mbPerSecond": float64(len(blocks)) * blockSize / 1e6 / max(secs, 1e-9)}
	if g.json {
		return json.NewEncoder(stdout).Encode(res)
	}
	fmt.Fprintf(stdout, "%s -> %s: %d blocks (%d with data written), %d GiB, %.1f MB/s\n", id, path, len(blocks), written.Load(), gib, res["mbPerSecond"])
	return nil
}
