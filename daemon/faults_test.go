package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ebs/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/ebsd/ebsd/cas"
	"github.com/ebsd/ebsd/cas/blocktest"
	"github.com/ebsd/ebsd/cas/castest"
	"github.com/ebsd/ebsd/cas/catalogtest"
)

// Faults on cue: the daemon's block store is wrapped in blocktest.Faulty and its catalog
// in catalogtest.Faulty (the seams every engine sits behind), so a test makes a block
// write, a read, a sync, a deletion or a catalog commit fail on the call it chooses. Each failure reaches the client as a 5xx (EIO through FUSE),
// leaves every snapshot as the acknowledged requests left it, marks no block corrupt
// (a store that cannot answer says nothing against the block), and a retry succeeds
// once the fault clears.

// newFaultyDaemon starts a daemon whose block store is wrapped in a Faulty.
func newFaultyDaemon(t *testing.T, adjust ...func(*config)) (*testDaemon, *blocktest.Faulty) {
	t.Helper()
	var f *blocktest.Faulty
	wrap := func(c *config) {
		c.wrapBlocks = func(inner cas.BlockStore) cas.BlockStore {
			f = blocktest.NewFaulty(inner)
			return f
		}
	}
	td := newTestDaemon(t, append([]func(*config){wrap}, adjust...)...)
	if f == nil {
		t.Fatal("the daemon did not build its block store through wrapBlocks")
	}
	return td, f
}

// want5xx fails unless err is an HTTP answer of 500 or more: a fault below the API is
// the server's failure, never the client's (4xx) and never a success.
func want5xx(t *testing.T, what string, err error) {
	t.Helper()
	var re *smithyhttp.ResponseError
	if !errors.As(err, &re) || re.HTTPStatusCode() < 500 {
		t.Fatalf("%s under an injected fault: %v, want a 5xx answer", what, err)
	}
}

// distinctBlocks returns n compressible blocks unique to seed.
func distinctBlocks(n int, seed uint64) map[int32][]byte {
	out := make(map[int32][]byte, n)
	for i := range n {
		b := make([]byte, cas.BlockSize)
		castest.CompressibleBlock(b, seed+uint64(i))
		out[int32(i)] = b
	}
	return out
}

// wantNoCorruptMarks fails if a fault made the store mark a block corrupt.
func wantNoCorruptMarks(t *testing.T, td *testDaemon) {
	t.Helper()
	if bad := td.store().CorruptBlocks(); len(bad) != 0 {
		t.Fatalf("an injected fault marked %d blocks corrupt: %v", len(bad), bad)
	}
}

// wantSnapshotReads fails unless every block of the snapshot reads back bit-exact
// through the API.
func wantSnapshotReads(t *testing.T, c *ebs.Client, id string, want map[int32][]byte) {
	t.Helper()
	got := readSnapshot(t, c, id)
	if len(got) != len(want) {
		t.Fatalf("%s reads %d blocks, want %d", id, len(got), len(want))
	}
	for i, b := range want {
		if !bytes.Equal(got[i], b) {
			t.Fatalf("%s block %d differs from what was put", id, i)
		}
	}
}

func TestFaultBlockWriteAndLookupReachClientAsServerErrorsAndRetrySucceeds(t *testing.T) {
	td, f := newFaultyDaemon(t)
	c := td.client() // no SDK retries: the test sees each first answer
	ctx := context.Background()
	id := *startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId
	blocks := distinctBlocks(4, 100)

	f.FailNth(blocktest.OpPut, 1, nil) // the commit of block 0's bytes
	want5xx(t, "a put whose block write fails", putBlock(ctx, c, id, 0, blocks[0]))
	f.FailAlways(blocktest.OpStat, nil) // the dedup lookup before every write
	want5xx(t, "a put whose block lookup fails", putBlock(ctx, c, id, 1, blocks[1]))
	f.ClearAll()
	// Nothing of the failed puts is in the snapshot: completing as if they had landed
	// is refused as a count mismatch, and the snapshot stays pending.
	if _, err := complete(ctx, c, id, map[int32][]byte{0: blocks[0], 1: blocks[1]}); err == nil {
		t.Fatal("complete counting the two failed puts: accepted, want a mismatch")
	} else {
		wantValidation(t, err, types.ValidationExceptionReasonInvalidParameterValue)
	}
	for i, b := range blocks {
		if err := putBlock(ctx, c, id, i, b); err != nil {
			t.Fatalf("retried put %d after the fault cleared: %v", i, err)
		}
	}
	if st, err := complete(ctx, c, id, blocks); err != nil || st != types.StatusCompleted {
		t.Fatalf("complete after retries: %v %v", st, err)
	}
	wantSnapshotReads(t, c, id, blocks)
	wantNoCorruptMarks(t, td)
}

func TestFaultSyncFailsCompleteWhichStaysPendingUntilRetried(t *testing.T) {
	td, f := newFaultyDaemon(t)
	c := td.client()
	ctx := context.Background()
	id := *startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId
	blocks := distinctBlocks(3, 200)
	for i, b := range blocks {
		if err := putBlock(ctx, c, id, i, b); err != nil {
			t.Fatal(err)
		}
	}
	f.FailNth(blocktest.OpSync, 1, nil)
	_, err := complete(ctx, c, id, blocks)
	want5xx(t, "a complete whose sync fails", err)
	snap, err := td.store().Snapshot(ctx, defaultAccountID, id)
	if err != nil || snap.Status != cas.StatusPending {
		t.Fatalf("after a failed complete the snapshot is %q (%v), want pending", snap.Status, err)
	}
	// Restarting proves the refusal was not written behind the client's back.
	td.restart()
	f.ClearAll()
	if snap, err := td.store().Snapshot(ctx, defaultAccountID, id); err != nil || snap.Status != cas.StatusPending {
		t.Fatalf("after a restart the snapshot is %q (%v), want pending", snap.Status, err)
	}
	c = td.client()
	if st, err := complete(ctx, c, id, blocks); err != nil || st != types.StatusCompleted {
		t.Fatalf("complete retried after the fault cleared: %v %v", st, err)
	}
	wantSnapshotReads(t, c, id, blocks)
	wantNoCorruptMarks(t, td)
}

func TestFaultReadIsServerErrorThroughAPIAndEIOThroughFUSE(t *testing.T) {
	requireFUSE(t, "dd", "cmp")
	mnt := filepath.Join(t.TempDir(), "mnt")
	td, f := newFaultyDaemon(t, func(c *config) { c.mount = mnt })
	c := td.client()
	ctx := context.Background()
	id := *startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId
	blocks := distinctBlocks(2, 300)
	for i, b := range blocks {
		if err := putBlock(ctx, c, id, i, b); err != nil {
			t.Fatal(err)
		}
	}
	if st, err := complete(ctx, c, id, blocks); err != nil || st != types.StatusCompleted {
		t.Fatalf("complete: %v %v", st, err)
	}
	list, err := c.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: aws.String(id)})
	if err != nil || len(list.Blocks) != len(blocks) {
		t.Fatalf("ListSnapshotBlocks: %v", err)
	}

	f.FailAlways(blocktest.OpRead, nil)
	_, err = c.GetSnapshotBlock(ctx, &ebs.GetSnapshotBlockInput{SnapshotId: aws.String(id), BlockIndex: aws.Int32(0), BlockToken: list.Blocks[0].BlockToken})
	want5xx(t, "GetSnapshotBlock whose read fails", err)
	image := filepath.Join(mnt, id)
	out, err := command(t, "dd", "if="+image, "of=/dev/null", "bs=512K", "count=1", "skip=1").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Input/output error") {
		t.Fatalf("dd of a block whose read fails through FUSE: %v %s, want EIO", err, out)
	}
	wantNoCorruptMarks(t, td)

	f.ClearAll()
	wantSnapshotReads(t, c, id, blocks)
	want := append(append([]byte{}, blocks[0]...), blocks[1]...)
	got, err := command(t, "dd", "if="+image, "bs=512K", "count=2", "status=none").Output()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("dd through FUSE after the fault cleared: %v, %d bytes, equal %v", err, len(got), bytes.Equal(got, want))
	}
	wantNoCorruptMarks(t, td)
}

func TestFaultDuringCollectionLosesNothingAndTheNextOneReclaims(t *testing.T) {
	td, f := newFaultyDaemon(t)
	c := td.client()
	ctx := context.Background()
	keep := *startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId
	drop := *startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId
	kept, dropped := distinctBlocks(2, 400), distinctBlocks(2, 500)
	for id, blocks := range map[string]map[int32][]byte{keep: kept, drop: dropped} {
		for i, b := range blocks {
			if err := putBlock(ctx, c, id, i, b); err != nil {
				t.Fatal(err)
			}
		}
		if st, err := complete(ctx, c, id, blocks); err != nil || st != types.StatusCompleted {
			t.Fatalf("complete %s: %v %v", id, st, err)
		}
	}
	if _, err := c.StartSnapshot(ctx, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}); err != nil {
		t.Fatal(err)
	}
	if err := td.store().DeleteSnapshot(ctx, defaultAccountID, drop); err != nil {
		t.Fatal(err)
	}

	for _, op := range []blocktest.Op{blocktest.OpWalk, blocktest.OpDelete} {
		f.FailAlways(op, nil)
		r := td.raw("POST", "/ebsd/v1/gc", nil, nil, 0)
		if r.status < 500 {
			t.Fatalf("a collection whose block %s fails: %d %s, want a 5xx", op, r.status, r.body)
		}
		f.Clear(op)
		wantSnapshotReads(t, c, keep, kept)
	}
	rep := gcNow(t, td, false)
	if rep.BlocksReclaimed != int64(len(dropped)) || rep.BlocksKept != int64(len(kept)) {
		t.Fatalf("the collection after the faults cleared: %+v, want %d reclaimed and %d kept", rep, len(dropped), len(kept))
	}
	wantSnapshotReads(t, c, keep, kept)
	wantNoCorruptMarks(t, td)
	if st, err := td.store().Stats(ctx); err != nil || st.UniqueBlocks != int64(len(kept)) {
		t.Fatalf("stats after the collection: %+v %v", st, err)
	}
}

// The seam is the daemon's only way to its blocks: a test that arms a fault and sees
// no call would prove nothing.
func TestFaultSeamSeesEveryBlockOperation(t *testing.T) {
	td, f := newFaultyDaemon(t)
	c := td.client()
	ctx := context.Background()
	id := *startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId
	blocks := distinctBlocks(1, 600)
	if err := putBlock(ctx, c, id, 0, blocks[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := complete(ctx, c, id, blocks); err != nil {
		t.Fatal(err)
	}
	wantSnapshotReads(t, c, id, blocks)
	gcNow(t, td, false)
	for _, op := range []blocktest.Op{blocktest.OpPut, blocktest.OpStat, blocktest.OpSync, blocktest.OpRead, blocktest.OpWalk} {
		if f.Calls(op) == 0 {
			t.Errorf("no %s reached the block store's seam", op)
		}
	}
}

// newFaultyCatalogDaemon starts a daemon whose catalog is wrapped in a Faulty.
func newFaultyCatalogDaemon(t *testing.T) (*testDaemon, *catalogtest.Faulty) {
	t.Helper()
	var f *catalogtest.Faulty
	td := newTestDaemon(t, func(c *config) {
		c.wrapCatalog = func(inner cas.Catalog) cas.Catalog {
			f = catalogtest.NewFaulty(inner)
			return f
		}
	})
	if f == nil {
		t.Fatal("the daemon did not build its catalog through wrapCatalog")
	}
	return td, f
}

// A catalog commit failed on cue (the group commit of a put, the record of a new
// snapshot, the completed record) is a 5xx that changes nothing, and the retry succeeds.
func TestFaultCatalogCommitReachesClientAsServerErrorAndRetrySucceeds(t *testing.T) {
	td, f := newFaultyCatalogDaemon(t)
	c := td.client()
	ctx := context.Background()

	f.FailNth(catalogtest.OpUpdate, 1, nil)
	_, err := c.StartSnapshot(ctx, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), ClientToken: aws.String("commit-fault")})
	want5xx(t, "a StartSnapshot whose commit fails", err)
	if n := len(td.store().Snapshots(defaultAccountID)); n != 0 {
		t.Fatalf("a failed StartSnapshot left %d snapshots", n)
	}
	id := *startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), ClientToken: aws.String("commit-fault")}).SnapshotId

	blocks := distinctBlocks(3, 1100)
	f.FailNth(catalogtest.OpUpdate, 1, nil) // the group commit of the block-map entry
	want5xx(t, "a put whose commit fails", putBlock(ctx, c, id, 0, blocks[0]))
	for i, b := range blocks {
		if err := putBlock(ctx, c, id, i, b); err != nil {
			t.Fatalf("put %d retried: %v", i, err)
		}
	}
	f.FailNth(catalogtest.OpUpdate, 1, nil) // the completed record
	_, err = complete(ctx, c, id, blocks)
	want5xx(t, "a complete whose commit fails", err)
	td.restart() // what is on disk says pending: the failed commit wrote nothing
	f.ClearAll()
	if snap, err := td.store().Snapshot(ctx, defaultAccountID, id); err != nil || snap.Status != cas.StatusPending {
		t.Fatalf("after a failed complete and a restart: %q %v, want pending", snap.Status, err)
	}
	c = td.client()
	if st, err := complete(ctx, c, id, blocks); err != nil || st != types.StatusCompleted {
		t.Fatalf("complete retried: %v %v", st, err)
	}
	wantSnapshotReads(t, c, id, blocks)
	again := *startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), ClientToken: aws.String("commit-fault")}).SnapshotId
	if again != id {
		t.Fatalf("the token after the failed first try names %s, want %s", again, id)
	}
}
