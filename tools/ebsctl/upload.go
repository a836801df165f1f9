package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	ebstypes "github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

type uploadOptions struct {
	parent      string
	description string
	tags        string
	wait        bool
	workers     int
	sendZeros   bool
	baseImage   string
	timeout     int
	stateDir    string
}

type uploadResult struct {
	SnapshotID    string  `json:"snapshotId"`
	Status        string  `json:"status"`
	Blocks        int64   `json:"blocks"`
	Sent          int64   `json:"sent"`
	SentBefore    int64   `json:"sentBefore"`
	SkippedZero   int64   `json:"skippedZero"`
	SkippedSame   int64   `json:"skippedUnchanged"`
	Seconds       float64 `json:"seconds"`
	MBps          float64 `json:"mbPerSecond"`
	ChangedBlocks int32   `json:"changedBlocks"`
}

func runUpload(ctx context.Context, g *globalOptions, args []string, stdout io.Writer) error {
	var o uploadOptions
	fs := flag.NewFlagSet("upload", flag.ContinueOnError)
	fs.StringVar(&o.parent, "parent", "", "parent snapshot: upload an incremental child")
	fs.StringVar(&o.description, "description", "", "snapshot description")
	fs.StringVar(&o.tags, "tags", "", "tags as k=v,k=v")
	fs.BoolVar(&o.wait, "wait", false, "wait until the snapshot is completed (EC2 DescribeSnapshots)")
	fs.IntVar(&o.workers, "workers", 4*runtime.NumCPU(), "parallel PutSnapshotBlock requests")
	fs.BoolVar(&o.sendZeros, "send-zeros", false, "send all-zero blocks too (they are skipped by default: they read as zeros)")
	fs.StringVar(&o.baseImage, "base-image", "", "with --parent: the image the parent was made from; only blocks that differ from it are sent (else ebsd's digests, or the parent's block list, decide)")
	fs.IntVar(&o.timeout, "timeout", 60, "minutes the pending snapshot may sit idle before the service gives up on it")
	fs.StringVar(&o.stateDir, "state-dir", "", "where resume state is kept (default: the user's cache directory)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: ebsctl upload [flags] IMAGE

Writes an image file or device as a new snapshot and prints the snapshot id first.
Interrupted? Run the same command again: it resumes the same pending snapshot.

Examples:
  ebsctl --endpoint-url http://127.0.0.1:8600 upload --wait disk.img
  ebsctl upload --parent snap-0123456789abcdef0 --base-image old.img --wait new.img

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parseArgs(g, fs, args, 1, "one IMAGE"); err != nil {
		return err
	}
	if o.baseImage != "" && o.parent == "" {
		return errors.New("--base-image needs --parent")
	}
	tags, err := parseTags(o.tags)
	if err != nil {
		return err
	}
	eb, e2, err := g.clients(ctx)
	if err != nil {
		return err
	}
	path := fs.Arg(0)
	im, err := openImage(path)
	if err != nil {
		return err
	}
	defer im.Close()
	var base *imageFile
	var parent *parentView
	switch {
	case o.baseImage != "":
		if base, err = openImage(o.baseImage); err != nil {
			return err
		}
		defer base.Close()
	case o.parent != "":
		if parent, err = loadParent(ctx, g, eb, o.parent); err != nil {
			return err
		}
	}
	// A child is at least its parent's size, and must read zeros past the image's end:
	// the parent's data there (in the base image, or in its block map) is overwritten.
	gib, span := im.gib(), im.blocks()
	if o.parent != "" {
		var parentGiB int64
		if parent != nil {
			parentGiB = parent.gib // the block listing said it
		}
		if parentGiB == 0 {
			if parentGiB, err = volumeGiB(ctx, eb, o.parent); err != nil {
				return err
			}
		}
		gib = max(gib, parentGiB)
		if base != nil {
			span = max(span, base.blocks())
		} else {
			span = max(span, parent.end())
		}
		span = min(span, gib*blocksPerGiB)
	}

	abs, _ := filepath.Abs(path)
	fi, _ := os.Stat(path)
	key := stateKey(abs, strconv.FormatInt(im.size, 10), fi.ModTime().String(), o.parent, o.baseImage, g.endpoint, g.region, o.description, o.tags)
	state, err := loadUploadState(o.stateDir, key, span)
	if err != nil {
		return err
	}
	in := &ebs.StartSnapshotInput{
		VolumeSize: aws.Int64(gib), ClientToken: aws.String(state.Token), Timeout: aws.Int32(int32(o.timeout)), Tags: tags,
	}
	if o.parent != "" {
		in.ParentSnapshotId = aws.String(o.parent)
	}
	if o.description != "" {
		in.Description = aws.String(o.description)
	}
	started, err := eb.StartSnapshot(ctx, in)
	if err != nil {
		return fmt.Errorf("StartSnapshot: %w", err)
	}
	id := aws.ToString(started.SnapshotId)
	state.SnapshotID = id
	if !g.json {
		fmt.Fprintln(stdout, id)
	} else {
		fmt.Fprintln(os.Stderr, "snapshot", id)
	}
	res := uploadResult{SnapshotID: id, Blocks: im.blocks()}
	switch started.Status {
	case ebstypes.StatusCompleted:
		state.remove()
		res.Status = string(started.Status)
		return printUpload(g, stdout, res)
	case ebstypes.StatusError:
		state.remove()
		return fmt.Errorf("snapshot %s is in error (timed out or deleted); run again to start a new one", id)
	}
	if err := state.save(); err != nil {
		return err
	}

	start := time.Now()
	sums, err := uploadBlocks(ctx, g, eb, id, im, span, base, parent, state, o, &res)
	if saveErr := state.save(); saveErr != nil && err == nil {
		err = saveErr
	}
	if err != nil {
		return fmt.Errorf("upload of %s interrupted (run the same command again to resume): %w", id, err)
	}
	count, aggregate := linearAggregate(sums)
	res.ChangedBlocks = count
	out, err := eb.CompleteSnapshot(ctx, &ebs.CompleteSnapshotInput{
		SnapshotId: aws.String(id), ChangedBlocksCount: aws.Int32(count), Checksum: aws.String(aggregate),
		ChecksumAlgorithm:         ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256,
		ChecksumAggregationMethod: ebstypes.ChecksumAggregationMethodChecksumAggregationLinear,
	})
	if err != nil {
		return fmt.Errorf("CompleteSnapshot %s: %w", id, err)
	}
	res.Status = string(out.Status)
	if o.wait && out.Status != ebstypes.StatusCompleted {
		w := ec2.NewSnapshotCompletedWaiter(e2, func(o *ec2.SnapshotCompletedWaiterOptions) { o.MinDelay = time.Second; o.MaxDelay = 15 * time.Second })
		if err := w.Wait(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}}, 6*time.Hour); err != nil {
			return fmt.Errorf("waiting for %s: %w", id, err)
		}
		res.Status = "completed"
	}
	state.remove()
	res.Seconds = time.Since(start).Seconds()
	res.MBps = float64(res.Sent) * blockSize / 1e6 / max(res.Seconds, 1e-9)
	return printUpload(g, stdout, res)
}

// uploadBlocks sends every block of the first span that belongs in the snapshot (past
// the image's end, the zeros that cover a parent's data) and returns the digest of
// each, including those acknowledged by an earlier, interrupted run.
func uploadBlocks(ctx context.Context, g *globalOptions, eb *ebs.Client, id string, im *imageFile, span int64, base *imageFile, parent *parentView, state *uploadState, o uploadOptions, res *uploadResult) (map[int64][32]byte, error) {
	var (
		mu                       sync.Mutex
		sums                     = make(map[int64][32]byte)
		sent, before, zero, same atomic.Int64
	)
	prog := newProgress(g, "upload", im.size)
	defer prog.finish()
	stopSaver := state.saveEvery(200 * time.Millisecond)
	defer stopSaver()
	err := inParallel(ctx, o.workers, span, func() func(context.Context, int64) error {
		buf, old := make([]byte, blockSize), make([]byte, blockSize)
		return func(ctx context.Context, i int64) error {
			// A hole of a sparse image is zeros without a read; otherwise checking for
			// zeros is far cheaper than hashing, and most of a volume is zeros.
			data, allZero := zeroBlock, im.hole(i)
			if !allZero {
				if err := im.block(i, buf); err != nil {
					return err
				}
				data, allZero = buf, isZero(buf)
			}
			prog.add(blockSize)
			var (
				send bool
				raw  [32]byte
				b64  string
			)
			switch {
			case parent != nil: // the parent's map says by digest
				raw, b64 = digestOf(data, allZero)
				send = parent.needs(i, raw)
			case base != nil:
				changed, err := differs(base, i, data, allZero, old)
				if err != nil {
					return err
				}
				send = changed
			default:
				send = o.sendZeros || !allZero
			}
			if !send {
				if parent != nil || base != nil {
					same.Add(1)
				} else {
					zero.Add(1)
				}
				return nil
			}
			if parent == nil { // only a block that is sent needs its digest
				raw, b64 = digestOf(data, allZero)
			}
			mu.Lock()
			sums[i] = raw
			mu.Unlock()
			if state.acked(i) {
				before.Add(1)
				return nil
			}
			_, err := eb.PutSnapshotBlock(ctx, &ebs.PutSnapshotBlockInput{
				SnapshotId: aws.String(id), BlockIndex: aws.Int32(int32(i)), BlockData: bytes.NewReader(data),
				DataLength: aws.Int32(blockSize), Checksum: aws.String(b64),
				ChecksumAlgorithm: ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256,
				Progress:          aws.Int32(int32(100 * i / max(1, span))),
			})
			if err != nil {
				return fmt.Errorf("PutSnapshotBlock %d: %w", i, err)
			}
			state.markAcked(i)
			sent.Add(1)
			return nil
		}
	})
	res.Sent, res.SentBefore, res.SkippedZero, res.SkippedSame = sent.Load(), before.Load(), zero.Load(), same.Load()
	return sums, err
}

// differs says whether block i of the new image (data, allZero if it holds only zeros)
// differs from the same block of the base image, read into old unless it is a hole or
// past the base's end (zeros, both).
func differs(base *imageFile, i int64, data []byte, allZero bool, old []byte) (bool, error) {
	if i >= base.blocks() || base.hole(i) {
		return !allZero, nil
	}
	if err := base.block(i, old); err != nil {
		return false, err
	}
	if allZero {
		return !isZero(old), nil
	}
	return !bytes.Equal(data, old), nil
}

// linearAggregate is EBS's LINEAR checksum: SHA-256 over the raw digests in index order.
func linearAggregate(sums map[int64][32]byte) (int32, string) {
	idx := make([]int64, 0, len(sums))
	for i := range sums {
		idx = append(idx, i)
	}
	sort.Slice(idx, func(a, b int) bool { return idx[a] < idx[b] })
	h := sha256.New()
	for _, i := range idx {
		d := sums[i]
		h.Write(d[:])
	}
	return int32(len(idx)), base64.StdEncoding.EncodeToString(h.Sum(nil))
}

func parseTags(s string) ([]ebstypes.Tag, error) {
	if s == "" {
		return nil, nil
	}
	var tags []ebstypes.Tag
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("tag %q is not k=v", kv)
		}
		tags = append(tags, ebstypes.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	return tags, nil
}

func printUpload(g *globalOptions, w io.Writer, r uploadResult) error {
	if g.json {
		return json.NewEncoder(w).Encode(r)
	}
	fmt.Fprintf(w, "%s %s: %d blocks sent (%d in an earlier run), %d zero and %d unchanged skipped, %d in the snapshot, %.1f MB/s\n",
		r.SnapshotID, r.Status, r.Sent, r.SentBefore, r.SkippedZero, r.SkippedSame, r.ChangedBlocks, r.MBps)
	return nil
}
