package main

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ebs/types"

	"github.com/ebsd/ebsd/cas"
	"github.com/ebsd/ebsd/cas/s3blocks"
	"github.com/ebsd/ebsd/tools/clustertest"
)

// Blocks in object storage (--blocks s3://…): a real S3 server (versitygw, started by
// scripts/cluster.sh on loopback) holds one object per distinct block; the daemon writes
// and reads through it (API and FUSE, bit-exact), survives an outage of the server
// (puts fail with a 5xx while it is down and succeed when retried after), reads with an
// empty local cache what it wrote before, and a collection removes the objects of
// blocks nothing references any more.
func TestBlocksInObjectStorage(t *testing.T) {
	c := clustertest.Start(t)
	c.UseS3(t)
	requireFUSE(t, "dd")
	ctx := context.Background()
	url := c.Env["EBSD_BLOCKS"]
	bucket, err := s3blocks.Open(ctx, s3blocks.Config{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	objects := func() map[cas.Digest]bool {
		t.Helper()
		out := map[cas.Digest]bool{}
		if err := bucket.Walk(ctx, cas.Digest{}, func(d cas.Digest, _ int64) error { out[d] = true; return nil }); err != nil {
			t.Fatalf("listing the bucket: %v", err)
		}
		return out
	}

	mnt := filepath.Join(t.TempDir(), "mnt")
	td := newTestDaemon(t, func(cfg *config) {
		cfg.blocks, cfg.cacheDir, cfg.diskCacheMB, cfg.mount = url, t.TempDir(), 64, mnt
	})
	cl := td.client()
	first := *startSnapshot(t, cl, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId
	blocks := distinctBlocks(5, 700)
	blocks[5] = make([]byte, cas.BlockSize) // zeros: mapped, never an object
	blocks[6] = blocks[0]                   // a duplicate: one object for both
	for i, b := range blocks {
		if err := putBlock(ctx, cl, first, i, b); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	if st, err := complete(ctx, cl, first, blocks); err != nil || st != types.StatusCompleted {
		t.Fatalf("complete: %v %v", st, err)
	}
	wantSnapshotReads(t, cl, first, blocks)
	stored := objects()
	if len(stored) != 5 {
		t.Fatalf("the bucket holds %d block objects, want the 5 distinct non-zero blocks", len(stored))
	}
	for i := range 5 {
		if !stored[cas.Sum(blocks[int32(i)])] {
			t.Fatalf("block %d has no object", i)
		}
	}
	var image []byte
	for i := range int32(7) {
		image = append(image, blocks[i]...)
	}
	got, err := command(t, "dd", "if="+filepath.Join(mnt, first), "bs=512K", "count=7", "status=none").Output()
	if err != nil || !bytes.Equal(got, image) {
		t.Fatalf("dd through FUSE: %v, %d bytes, equal %v", err, len(got), bytes.Equal(got, image))
	}

	// A restart with an empty cache directory reads what was written from the bucket.
	if err := td.d.stop(); err != nil {
		t.Fatal(err)
	}
	td.d = nil
	td.cfg.cacheDir = t.TempDir()
	td.start()
	cl = td.client()
	wantSnapshotReads(t, cl, first, blocks)

	// An outage of the S3 server mid-ingest: what was acknowledged stays, a put while it
	// is down is a 5xx (after the engine's own retries), the same put after it is back
	// succeeds, and the snapshot completes with every block.
	second := *startSnapshot(t, cl, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId
	more := distinctBlocks(3, 800)
	if err := putBlock(ctx, cl, second, 0, more[0]); err != nil {
		t.Fatal(err)
	}
	c.StopS3(t)
	want5xx(t, "a put while the S3 server is down", putBlock(ctx, cl, second, 1, more[1]))
	c.StartS3(t)
	for i := range int32(3) {
		if err := putBlock(ctx, cl, second, i, more[i]); err != nil {
			t.Fatalf("put %d after the S3 server came back: %v", i, err)
		}
	}
	if st, err := complete(ctx, cl, second, more); err != nil || st != types.StatusCompleted {
		t.Fatalf("complete after the outage: %v %v", st, err)
	}
	wantSnapshotReads(t, cl, second, more)
	wantNoCorruptMarks(t, td)

	// Delete + collection removes the objects only the deleted snapshot referenced.
	if err := td.store().DeleteSnapshot(ctx, defaultAccountID, first); err != nil {
		t.Fatal(err)
	}
	rep := gcNow(t, td, false)
	if rep.BlocksReclaimed != 5 {
		t.Fatalf("collection: %+v, want the 5 blocks of the deleted snapshot reclaimed", rep)
	}
	left := objects()
	if len(left) != 3 {
		t.Fatalf("after the collection the bucket holds %d block objects, want the second snapshot's 3", len(left))
	}
	for i := range int32(3) {
		if !left[cas.Sum(more[i])] {
			t.Fatalf("the collection removed block %d of the live snapshot", i)
		}
	}
	wantSnapshotReads(t, cl, second, more)
}
