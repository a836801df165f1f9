package cas

import (
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"
)

// countedStore opens a store on dir and waits for its count at open.
func countedStore(t *testing.T, dir string, clock Clock) *Store {
	t.Helper()
	s, err := Open(Options{Dir: dir, ExpireInterval: -1, Clock: clock, ValueLogFileSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.ContentsCounted():
	case <-time.After(time.Minute): // a count that never ends fails here, not at the test timeout
		t.Fatal("the count of the store's contents at open did not end within a minute")
	}
	if !s.Counters().ContentsReady {
		t.Fatal("count at open ended without being ready")
	}
	return s
}

// wantCountersMatchStats fails unless the running counters equal a full scan.
func wantCountersMatchStats(t *testing.T, s *Store, when string) {
	t.Helper()
	st, err := s.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c := s.Counters()
	if c.UniqueBlocks != st.UniqueBlocks || c.StoredBytes != st.StoredBytes ||
		c.MappedBlocks != st.MappedBlocks || c.ZeroMappedBlocks != st.ZeroBlocks {
		t.Fatalf("%s: counters unique=%d stored=%d mapped=%d zero=%d, scan unique=%d stored=%d mapped=%d zero=%d",
			when, c.UniqueBlocks, c.StoredBytes, c.MappedBlocks, c.ZeroMappedBlocks,
			st.UniqueBlocks, st.StoredBytes, st.MappedBlocks, st.ZeroBlocks)
	}
}

func randomBlock(t *testing.T) []byte {
	b := make([]byte, BlockSize)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func start(t *testing.T, s *Store, parent string) string {
	t.Helper()
	snap, err := s.StartSnapshot(context.Background(), StartParams{OwnerID: owner, VolumeSize: 1, ParentID: parent, TimeoutMinutes: 60})
	if err != nil {
		t.Fatal(err)
	}
	return snap.ID
}

func put(t *testing.T, s *Store, id string, index int64, b []byte) {
	t.Helper()
	if err := s.PutBlock(context.Background(), owner, id, index, b, Sum(b)); err != nil {
		t.Fatal(err)
	}
}

// Every way the store's contents change keeps the counters equal to what a scan finds:
// new, duplicate and zero puts (compressible blocks inline in the LSM tree, random ones
// in the value log), an index overwritten, a pending snapshot deleted, a completed one
// deleted and collected, and a restart, which counts again at open.
func TestCountersMatchScanThroughWritesDeletesGCAndRestart(t *testing.T) {
	dir := t.TempDir()
	s := countedStore(t, dir, nil)
	ctx := context.Background()
	zero := make([]byte, BlockSize)
	rnd := randomBlock(t)

	a := start(t, s, "")
	put(t, s, a, 0, testBlock(1))
	put(t, s, a, 1, testBlock(1)) // deduplicated
	put(t, s, a, 2, rnd)
	put(t, s, a, 3, zero)
	put(t, s, a, 3, testBlock(2)) // zero overwritten by data
	put(t, s, a, 1, zero)         // data overwritten by zero
	wantCountersMatchStats(t, s, "after puts")
	if c := s.Counters(); c.BlocksStored != 3 || c.BlocksDeduplicated != 1 || c.BlocksZero != 2 {
		t.Fatalf("put outcomes stored=%d dedup=%d zero=%d, want 3 1 2", c.BlocksStored, c.BlocksDeduplicated, c.BlocksZero)
	}
	if _, err := s.CompleteSnapshot(ctx, owner, a, 4, nil); err != nil {
		t.Fatal(err)
	}

	b := start(t, s, a)
	put(t, s, b, 0, randomBlock(t))
	put(t, s, b, 5, zero)
	pending := start(t, s, "")
	put(t, s, pending, 0, randomBlock(t))
	put(t, s, pending, 1, zero)
	if err := s.DeleteSnapshot(ctx, owner, pending); err != nil { // releases its map at once
		t.Fatal(err)
	}
	wantCountersMatchStats(t, s, "after deleting a pending snapshot")

	if _, err := s.CompleteSnapshot(ctx, owner, b, 2, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSnapshot(ctx, owner, b); err != nil {
		t.Fatal(err)
	}
	rep, err := s.GC(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.BlocksReclaimed != 2 { // b's own block and the deleted pending one's
		t.Fatalf("GC reclaimed %d blocks, want 2", rep.BlocksReclaimed)
	}
	wantCountersMatchStats(t, s, "after GC")

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = countedStore(t, dir, nil)
	t.Cleanup(func() { _ = s.Close() })
	wantCountersMatchStats(t, s, "after restart")
	if c := s.Counters(); c.UniqueBlocks != 3 || c.MappedBlocks != 4 || c.ZeroMappedBlocks != 1 {
		t.Fatalf("after restart unique=%d mapped=%d zero=%d, want 3 4 1", c.UniqueBlocks, c.MappedBlocks, c.ZeroMappedBlocks)
	}
}

// Concurrent first puts of one new block may all get past the put's "is it stored?"
// check (DESIGN.md rule 2); the store still holds one block, and the counters say so.
func TestCountersConcurrentFirstPutsOfOneBlockCountOnce(t *testing.T) {
	s := countedStore(t, t.TempDir(), nil)
	t.Cleanup(func() { _ = s.Close() })
	id := start(t, s, "")
	data := randomBlock(t)
	const n = 32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- s.PutBlock(context.Background(), owner, id, int64(i), data, Sum(data))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	c := s.Counters()
	if c.BlocksStored != 1 || c.BlocksDeduplicated != n-1 || c.UniqueBlocks != 1 || c.MappedBlocks != n {
		t.Fatalf("stored=%d dedup=%d unique=%d mapped=%d, want 1 %d 1 %d", c.BlocksStored, c.BlocksDeduplicated, c.UniqueBlocks, c.MappedBlocks, n-1, n)
	}
	wantCountersMatchStats(t, s, "after concurrent puts")
	var commits int64
	for size, k := range c.GroupCommits {
		commits += int64(size) * k
	}
	if commits != n {
		t.Fatalf("group commits carried %d writes, want %d", commits, n)
	}
}

// Snapshot counts by state and the logical bytes follow every transition, and are the
// same after a restart.
func TestCountersSnapshotStatesAndLogicalBytes(t *testing.T) {
	dir := t.TempDir()
	clock := NewManualClock(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	s := countedStore(t, dir, clock)
	ctx := context.Background()
	want := func(when string, pending, completed, errored, deleted, logicalGiB int64) {
		t.Helper()
		c := s.Counters()
		if c.Pending != pending || c.Completed != completed || c.Errored != errored || c.Deleted != deleted || c.LogicalBytes != logicalGiB<<30 {
			t.Fatalf("%s: pending=%d completed=%d error=%d deleted=%d logical=%d, want %d %d %d %d %d GiB",
				when, c.Pending, c.Completed, c.Errored, c.Deleted, c.LogicalBytes, pending, completed, errored, deleted, logicalGiB)
		}
	}
	writeSnap(t, s, "", map[int64]uint64{0: 1})
	gone := writeSnap(t, s, "", map[int64]uint64{0: 2})
	if _, err := s.StartSnapshot(ctx, StartParams{OwnerID: owner, VolumeSize: 2, TimeoutMinutes: 1}); err != nil {
		t.Fatal(err)
	}
	start(t, s, "") // 1 GiB, a Timeout of an hour
	want("started", 2, 2, 0, 0, 5)
	if err := s.DeleteSnapshot(ctx, owner, gone); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Minute)
	if n, err := s.ExpireIdle(ctx); err != nil || n != 1 {
		t.Fatalf("ExpireIdle: %d, %v; want 1 (the 1-minute snapshot)", n, err)
	}
	want("after delete and expiry", 1, 1, 1, 1, 4)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = countedStore(t, dir, clock)
	t.Cleanup(func() { _ = s.Close() })
	want("after restart", 1, 1, 1, 1, 4)
	clock.Advance(TokenRetention)
	if _, err := s.GC(ctx, false); err != nil {
		t.Fatal(err)
	}
	want("after the deleted record is dropped", 1, 1, 1, 0, 4)
}

// The GC history keeps the last 50 runs, newest first, failed ones with their error;
// the totals count every run.
func TestGCHistoryNewestFirstAndBounded(t *testing.T) {
	s := countedStore(t, t.TempDir(), nil)
	t.Cleanup(func() { _ = s.Close() })
	writeSnap(t, s, "", map[int64]uint64{0: 1}) // a map to walk, so a cancelled run fails
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.GC(cancelled, true); !errors.Is(err, context.Canceled) {
		t.Fatalf("GC with a cancelled context: %v", err)
	}
	if h := s.GCHistory(); len(h) != 1 || h[0].Err == "" || !h[0].Report.DryRun {
		t.Fatalf("history after one failed run: %+v", h)
	}
	for range gcHistoryLen {
		if _, err := s.GC(context.Background(), true); err != nil {
			t.Fatal(err)
		}
	}
	h := s.GCHistory()
	if len(h) != gcHistoryLen {
		t.Fatalf("history holds %d runs, want %d", len(h), gcHistoryLen)
	}
	for i, r := range h {
		if r.Err != "" {
			t.Fatalf("run %d: the failed run is the oldest of %d and should have been dropped: %+v", i, gcHistoryLen+1, r)
		}
	}
	if _, err := s.GC(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	h = s.GCHistory()
	if len(h) != gcHistoryLen || h[0].Report.DryRun || h[1].Report.DryRun != true || h[0].Start.Before(h[1].Start) {
		t.Fatalf("the real run should come first: %+v, then %+v", h[0], h[1])
	}
	tot := s.Counters().GC
	if tot.DryRuns != gcHistoryLen || tot.DryRunFailures != 1 || tot.Runs != 1 || tot.RunFailures != 0 ||
		!tot.LastSuccess.Equal(h[0].Start) || !tot.Last.Start.Equal(h[0].Start) {
		t.Fatalf("totals %+v", tot)
	}
}

// A block that fails verification on read is counted.
func TestCountersBlockReadFailures(t *testing.T) {
	s := countedStore(t, t.TempDir(), nil)
	t.Cleanup(func() { _ = s.Close() })
	data := testBlock(7)
	d := putOne(t, s, data)
	if _, err := s.ReadBlock(nil, d); err != nil {
		t.Fatal(err)
	}
	corrupt(t, s, d)
	if _, err := s.ReadBlock(nil, d); !errors.Is(err, ErrCorruptBlock) {
		t.Fatalf("read of a corrupt block: %v", err)
	}
	if n := s.Counters().BlockReadFailures; n != 1 {
		t.Fatalf("BlockReadFailures = %d, want 1", n)
	}
}

// Puts, deletes and collections running at once leave the counters equal to a scan:
// every change is counted once, on the side of the commit that made it.
func TestCountersExactUnderPutsDeletesAndGCAtOnce(t *testing.T) {
	s := countedStore(t, t.TempDir(), nil)
	t.Cleanup(func() { _ = s.Close() })
	ctx := context.Background()
	shared := [][]byte{testBlock(1), testBlock(2), make([]byte, BlockSize)}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := range 3 {
				snap, err := s.StartSnapshot(ctx, StartParams{OwnerID: owner, VolumeSize: 1, TimeoutMinutes: 60})
				if err != nil {
					errs <- err
					return
				}
				for i := range 8 {
					b := shared[(i+w)%len(shared)]
					if i%3 == 0 {
						b = testBlock(uint64(100 + w*100 + round*10 + i)) // new to the store
					}
					if err := s.PutBlock(ctx, owner, snap.ID, int64(i), b, Sum(b)); err != nil {
						errs <- err
						return
					}
				}
				if round == 1 { // a pending snapshot deleted: its map goes at once
					err = s.DeleteSnapshot(ctx, owner, snap.ID)
				} else {
					_, err = s.CompleteSnapshot(ctx, owner, snap.ID, 8, nil)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 4 {
			if _, err := s.GC(ctx, false); err != nil {
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	wantCountersMatchStats(t, s, "after concurrent puts, deletes and collections")
	if _, err := s.GC(ctx, false); err != nil {
		t.Fatal(err)
	}
	wantCountersMatchStats(t, s, "after a final collection")
}
