package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
)

type verifyOptions struct {
	mount   string
	workers int
	show    int
}

// errDiffers makes the exit status non-zero when a restore is not identical.
var errDiffers = errors.New("the snapshot and the image differ")

// runVerify is the dd-style restore test: every block of the snapshot against the image.
func runVerify(ctx context.Context, g *globalOptions, args []string, stdout io.Writer) error {
	var o verifyOptions
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.StringVar(&o.mount, "mount", "", "compare through the FUSE export mounted here instead of the API (ebsd only)")
	fs.IntVar(&o.workers, "workers", 4*runtime.NumCPU(), "parallel GetSnapshotBlock requests")
	fs.IntVar(&o.show, "show", 10, "how many differing offsets to print")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: ebsctl verify [flags] SNAPSHOT IMAGE

Compares every block of the snapshot with the image (blocks past the image's end must be
zero). Exit status 0 only when they are identical.

Examples:
  ebsctl verify snap-0123456789abcdef0 disk.img
  ebsctl verify --mount /var/lib/ebsd/mnt snap-0123456789abcdef0 disk.img

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parseArgs(g, fs, args, 2, "SNAPSHOT and IMAGE"); err != nil {
		return err
	}
	id := fs.Arg(0)
	im, err := openImage(fs.Arg(1))
	if err != nil {
		return err
	}
	defer im.Close()
	var diffs []int64
	var checked int64
	if o.mount != "" {
		diffs, checked, err = verifyFile(g, filepath.Join(o.mount, id), im)
	} else {
		diffs, checked, err = verifyAPI(ctx, g, o, id, im)
	}
	if err != nil {
		return err
	}
	sort.Slice(diffs, func(a, b int) bool { return diffs[a] < diffs[b] })
	if g.json {
		if err := json.NewEncoder(stdout).Encode(map[string]any{"snapshotId": id, "identical": len(diffs) == 0, "blocksChecked": checked, "differingBlockOffsets": diffs}); err != nil {
			return err
		}
	} else if len(diffs) == 0 {
		fmt.Fprintf(stdout, "identical: %d blocks of %s match %s\n", checked, id, fs.Arg(1))
	} else {
		fmt.Fprintf(stdout, "DIFFERENT: %d of %d blocks differ; first at byte offsets:\n", len(diffs), checked)
		for _, off := range diffs[:min(len(diffs), o.show)] {
			fmt.Fprintf(stdout, "  %d (block %d)\n", off, off/blockSize)
		}
	}
	if len(diffs) > 0 {
		return errDiffers
	}
	return nil
}

// verifyAPI reads the snapshot's blocks through GetSnapshotBlock; blocks it has no data
// for must be zero in the image.
func verifyAPI(ctx context.Context, g *globalOptions, o verifyOptions, id string, im *imageFile) ([]int64, int64, error) {
	eb, _, err := g.clients(ctx)
	if err != nil {
		return nil, 0, err
	}
	blocks, gib, err := listBlocks(ctx, eb, id)
	if err != nil {
		return nil, 0, err
	}
	if im.size > gib<<30 {
		return []int64{gib << 30}, 0, nil // the image is larger than the volume
	}
	hasData := make(map[int64]int, len(blocks))
	for i, b := range blocks {
		hasData[int64(aws.ToInt32(b.BlockIndex))] = i
	}
	prog := newProgress(g, "verify", im.size)
	defer prog.finish()
	var mu sync.Mutex
	var diffs []int64
	// Blocks past the image's end but inside the volume must hold zeros.
	for _, b := range blocks {
		if idx := int64(aws.ToInt32(b.BlockIndex)); idx >= im.blocks() {
			buf := make([]byte, blockSize)
			if err := getBlock(ctx, eb, id, b, buf); err != nil {
				return nil, 0, err
			}
			if !isZero(buf) {
				diffs = append(diffs, idx*blockSize)
			}
		}
	}
	err = inParallel(ctx, o.workers, im.blocks(), func() func(context.Context, int64) error {
		want, got := make([]byte, blockSize), make([]byte, blockSize)
		return func(ctx context.Context, i int64) error {
			if err := im.block(i, want); err != nil {
				return err
			}
			clear(got)
			if j, ok := hasData[i]; ok {
				if err := getBlock(ctx, eb, id, blocks[j], got); err != nil {
					return err
				}
			}
			prog.add(blockSize)
			if !bytes.Equal(want, got) {
				mu.Lock()
				diffs = append(diffs, i*blockSize+int64(firstDiff(want, got)))
				mu.Unlock()
			}
			return nil
		}
	})
	if err != nil {
		return nil, 0, err
	}
	return diffs, im.blocks(), nil
}

// verifyFile compares the FUSE image file with the image, sequentially, 1 MiB at a time.
func verifyFile(g *globalOptions, path string, im *imageFile) ([]int64, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	prog := newProgress(g, "verify", fi.Size())
	defer prog.finish()
	var diffs []int64
	want, got := make([]byte, blockSize), make([]byte, blockSize)
	var i int64
	for ; i*blockSize < fi.Size(); i++ {
		if i < im.blocks() {
			if err := im.block(i, want); err != nil {
				return nil, 0, err
			}
		} else {
			clear(want)
		}
		n, err := f.ReadAt(got, i*blockSize)
		if err != nil && !(errors.Is(err, io.EOF) && n > 0) {
			return nil, 0, fmt.Errorf("reading %s: %w", path, err)
		}
		prog.add(int64(n))
		if !bytes.Equal(want[:n], got[:n]) {
			diffs = append(diffs, i*blockSize+int64(firstDiff(want[:n], got[:n])))
		}
	}
	if im.size > fi.Size() {
		diffs = append(diffs, fi.Size())
	}
	return diffs, i, nil
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return 0
}
