package cas

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// readOK fails unless the block reads back as data.
func readOK(t *testing.T, s *Store, d Digest, data []byte, when string) {
	t.Helper()
	got, err := s.ReadBlock(nil, d)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("%s: ReadBlock: %v (right bytes: %v)", when, err, bytes.Equal(got, data))
	}
}

func complete(t *testing.T, s *Store, id string, n int64) {
	t.Helper()
	st, err := s.CompleteSnapshot(context.Background(), owner, id, n, nil)
	if err != nil || st != StatusCompleted {
		t.Fatalf("complete %s: %s, %v", id, st, err)
	}
}

// The scenario in the store: a block rots, a read finds it, and a put of the
// same bytes in another snapshot replaces the stored copy instead of deduplicating
// against it, so both snapshots read right again.
func TestPutOfKnownCorruptBlockHealsIt(t *testing.T) {
	s := openTestStore(t)
	data := randomBlock(t)
	a := start(t, s, "")
	put(t, s, a, 0, data)
	complete(t, s, a, 1)
	d := Sum(data)
	corrupt(t, s, d)
	if _, err := s.ReadBlock(nil, d); !errors.Is(err, ErrCorruptBlock) {
		t.Fatalf("read of the rotten block: %v, want ErrCorruptBlock", err)
	}
	if got := s.CorruptBlocks(); !slices.Equal(got, []Digest{d}) {
		t.Fatalf("known corrupt after the failed read: %v, want [%s]", got, d)
	}
	b := start(t, s, "")
	put(t, s, b, 3, data)
	readOK(t, s, d, data, "after the healing put")
	if got := s.CorruptBlocks(); len(got) != 0 {
		t.Fatalf("still known corrupt after the healing put: %v", got)
	}
	if h := s.ScrubTotals().BlocksHealed; h != 1 {
		t.Fatalf("BlocksHealed = %d, want 1", h)
	}
	complete(t, s, b, 1)
}

// A snapshot that maps a block known to be corrupt is not acknowledged: the refusal is
// a checksum-class error naming the index, the snapshot stays pending, and once the
// block is put again the same complete succeeds.
func TestCompleteRefusesSnapshotMappingCorruptBlockUntilHealed(t *testing.T) {
	s := openTestStore(t)
	ctx := context.Background()
	data, other := randomBlock(t), randomBlock(t)
	d := Sum(data)
	b := start(t, s, "")
	put(t, s, b, 2, data)
	put(t, s, b, 9, other)
	corrupt(t, s, d) // rots after the put was acknowledged
	if _, err := s.ReadBlock(nil, d); err == nil {
		t.Fatal("read of the rotten block succeeded")
	}
	_, err := s.CompleteSnapshot(ctx, owner, b, 2, nil)
	if !errors.Is(err, ErrCorruptMapped) || !errors.Is(err, ErrChecksumMismatch) {
		t.Fatalf("complete: %v, want ErrCorruptMapped wrapping ErrChecksumMismatch", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "put block indexes 2 of "+b+" again (1 in all)") {
		t.Fatalf("refusal does not name index 2 (and only it): %s", msg)
	}
	if snap, _ := s.Snapshot(ctx, owner, b); snap.Status != StatusPending {
		t.Fatalf("after the refusal the snapshot is %s, want pending", snap.Status)
	}
	put(t, s, b, 2, data)
	complete(t, s, b, 2)
	readOK(t, s, d, data, "after healing and completing")
}

// A mark whose block verifies (a heal committed, then a crash before the mark was
// cleared) never refuses a snapshot: completion checks again and drops the mark.
func TestStaleCorruptMarkDoesNotRefuseComplete(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, ExpireInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	data := randomBlock(t)
	d := Sum(data)
	b := start(t, s, "")
	put(t, s, b, 0, data)
	if err := s.db.Update(func(txn *badger.Txn) error {
		return setJSON(txn, corruptKey(d), corruptMark{Problem: "left by a crash"})
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(Options{Dir: dir, ExpireInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.CorruptBlocks(); !slices.Equal(got, []Digest{d}) {
		t.Fatalf("marks after reopening: %v, want the stale one", got)
	}
	complete(t, s, b, 1)
	if got := s.CorruptBlocks(); len(got) != 0 {
		t.Fatalf("stale mark kept after completion verified the block: %v", got)
	}
}

// Marks are durable: a corruption found before a restart still refuses completion and
// still makes the next put heal.
func TestCorruptMarksSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, ExpireInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	data := randomBlock(t)
	d := Sum(data)
	b := start(t, s, "")
	put(t, s, b, 4, data)
	corrupt(t, s, d)
	if _, err := s.ReadBlock(nil, d); err == nil {
		t.Fatal("read of the rotten block succeeded")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(Options{Dir: dir, ExpireInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.CompleteSnapshot(context.Background(), owner, b, 1, nil); !errors.Is(err, ErrCorruptMapped) {
		t.Fatalf("complete after restart: %v, want ErrCorruptMapped", err)
	}
	put(t, s, b, 4, data)
	complete(t, s, b, 1)
	readOK(t, s, d, data, "healed after restart")
}

// A scrub finds a rotten block nobody has read, names every snapshot and index that
// maps it, marks it; after a put heals it, the next scrub finds nothing.
func TestScrubFindsCorruptBlockWithItsSnapshotsAndIndexes(t *testing.T) {
	s := openTestStore(t)
	ctx := context.Background()
	bad, good := randomBlock(t), randomBlock(t)
	d := Sum(bad)
	a := start(t, s, "")
	put(t, s, a, 0, bad)
	put(t, s, a, 5, bad)
	put(t, s, a, 6, good)
	complete(t, s, a, 3)
	b := start(t, s, a)
	put(t, s, b, 7, bad)
	corrupt(t, s, d)

	rep, err := s.Scrub(ctx, ScrubOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.BlocksChecked != 2 || rep.CorruptBlockCount != 1 || len(rep.CorruptBlocks) != 1 || rep.CorruptRecordCount != 0 {
		t.Fatalf("scrub: %+v, want 2 blocks checked and 1 corrupt", rep)
	}
	cb := rep.CorruptBlocks[0]
	if cb.Digest != d.String() || cb.Checksum != d.Base64() || cb.UseCount != 2 {
		t.Fatalf("corrupt block %+v, want %s used by 2 snapshots", cb, d)
	}
	want := map[string][]int64{a: {0, 5}, b: {7}}
	for _, u := range cb.Uses {
		if !slices.Equal(u.Indexes, want[u.SnapshotID]) || u.OwnerID != owner || u.IndexCount != len(want[u.SnapshotID]) {
			t.Fatalf("use %+v, want indexes %v of owner %s", u, want[u.SnapshotID], owner)
		}
	}
	if !s.knownCorrupt(d) {
		t.Fatal("scrub did not mark the block it found")
	}
	if st := stats(t, s); st.KnownCorruptBlocks != 1 {
		t.Fatalf("stats count %d known corrupt blocks after the scrub found one", st.KnownCorruptBlocks)
	}
	if _, err := s.CompleteSnapshot(ctx, owner, b, 1, nil); !errors.Is(err, ErrCorruptMapped) {
		t.Fatalf("complete of a snapshot mapping the block scrub found: %v", err)
	}
	c := start(t, s, "")
	put(t, s, c, 1, bad) // the right bytes, in a third snapshot
	rep, err = s.Scrub(ctx, ScrubOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.CorruptBlockCount != 0 || rep.CorruptRecordCount != 0 {
		t.Fatalf("scrub after healing: %+v, want nothing corrupt", rep)
	}
	complete(t, s, b, 1)
	if st := stats(t, s); st.KnownCorruptBlocks != 0 {
		t.Fatalf("stats count %d known corrupt blocks after the heal", st.KnownCorruptBlocks)
	}
	tot := s.ScrubTotals()
	if tot.Runs != 2 || tot.CorruptBlocksFound != 1 || tot.CorruptBlocksKnown != 0 {
		t.Fatalf("totals %+v, want 2 runs, 1 corrupt found, none known now", tot)
	}
	if h := s.ScrubHistory(); len(h) != 2 || h[0].Report.CorruptBlockCount != 0 || h[1].Report.CorruptBlockCount != 1 {
		t.Fatalf("history not newest first: %+v", h)
	}
}

// A scrub reports a mapped block that is missing and catalog records that do not
// decode; a put of the missing block stores it again.
func TestScrubFindsMissingBlocksAndBadRecords(t *testing.T) {
	s := openTestStore(t)
	ctx := context.Background()
	data := randomBlock(t)
	d := Sum(data)
	a := start(t, s, "")
	put(t, s, a, 3, data)
	if err := s.db.Update(func(txn *badger.Txn) error {
		if err := txn.Delete(blockKey(d)); err != nil {
			return err
		}
		if err := txn.Set(snapshotKey("snap-0123456789abcdef0"), []byte("{not json")); err != nil {
			return err
		}
		if err := txn.Set(mapKey("snap-0123456789abcdef0", 1), []byte("short")); err != nil {
			return err
		}
		return txn.Set(tokenKey(owner, "r", "tok"), []byte(`{"snap":""}`))
	}); err != nil {
		t.Fatal(err)
	}
	rep, err := s.Scrub(ctx, ScrubOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.CorruptBlockCount != 1 || rep.CorruptBlocks[0].Problem != "missing" ||
		len(rep.CorruptBlocks[0].Uses) != 1 || !slices.Equal(rep.CorruptBlocks[0].Uses[0].Indexes, []int64{3}) {
		t.Fatalf("scrub blocks: %+v, want block %s missing, mapped at %s index 3", rep.CorruptBlocks, d, a)
	}
	if rep.CorruptRecordCount != 3 {
		t.Fatalf("corrupt records %+v, want the snapshot, map and token records", rep.CorruptRecords)
	}
	if _, err := s.CompleteSnapshot(ctx, owner, a, 1, nil); !errors.Is(err, ErrCorruptMapped) {
		t.Fatalf("complete of a snapshot mapping a missing block: %v", err)
	}
	put(t, s, a, 3, data)
	complete(t, s, a, 1)
	readOK(t, s, d, data, "missing block put again")
}

// A cancelled scrub stops, says so and is in the history as a failure.
func TestScrubCancelledIsRecordedAsFailure(t *testing.T) {
	s := openTestStore(t)
	a := start(t, s, "")
	put(t, s, a, 0, randomBlock(t))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Scrub(ctx, ScrubOptions{BytesPerSec: 1}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled scrub: %v, want context.Canceled", err)
	}
	h := s.ScrubHistory()
	if len(h) != 1 || h[0].Err == "" || s.ScrubTotals().Failures != 1 {
		t.Fatalf("history %+v, want one failed run", h)
	}
}

// The rate limiter sleeps only when a scrub runs ahead of its bound, and a cancel ends
// the sleep.
func TestScrubRateLimiterWaitsAndCancels(t *testing.T) {
	s := openTestStore(t)
	l := pacer{rate: 1, granularity: scrubRateGranularity, clock: SystemClock{}, sleep: s.sleepCtx}
	l.restart()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.wait(ctx, scrubRateGranularity) }() // would sleep for weeks
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("wait: %v, want context.Canceled", err)
	}
	unbounded := pacer{clock: SystemClock{}}
	unbounded.restart()
	if err := unbounded.wait(context.Background(), 1<<40); err != nil {
		t.Fatalf("unbounded wait: %v", err)
	}
}

// Heals, reads and scrubs of one rotten block at once: every put is acknowledged, the
// block ends healed and unmarked, and -race sees no unsynchronised access.
func TestHealRacingPutsReadsAndScrub(t *testing.T) {
	s := openTestStore(t)
	ctx := context.Background()
	data := randomBlock(t)
	d := Sum(data)
	a := start(t, s, "")
	put(t, s, a, 0, data)
	corrupt(t, s, d)
	if _, err := s.ReadBlock(nil, d); err == nil {
		t.Fatal("read of the rotten block succeeded")
	}
	ids := make([]string, 4)
	for i := range ids {
		ids[i] = start(t, s, "")
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i, id := range ids {
		wg.Add(2)
		go func() {
			defer wg.Done()
			errs <- s.PutBlock(ctx, owner, id, int64(i), data, d)
		}()
		go func() {
			defer wg.Done()
			_, _ = s.ReadBlock(nil, d) // may fail before the heal lands; never wrong bytes
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, err := s.Scrub(ctx, ScrubOptions{})
		errs <- err
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	readOK(t, s, d, data, "after racing heals")
	// Marks are confirmed under the block's stripe, so a scrub or read that saw the
	// rotten copy before the heal cannot mark it after.
	if got := s.CorruptBlocks(); len(got) != 0 {
		t.Fatalf("marks after healing: %v", got)
	}
	for _, id := range ids {
		complete(t, s, id, 1)
	}
}

// A marked block that garbage collection removed (nothing maps it) loses its mark at
// the next scrub: the known-corrupt count does not stay up for ever.
func TestScrubDropsMarksOfCollectedBlocks(t *testing.T) {
	s := openTestStore(t)
	ctx := context.Background()
	data := randomBlock(t)
	d := Sum(data)
	a := start(t, s, "")
	put(t, s, a, 0, data)
	corrupt(t, s, d)
	if _, err := s.ReadBlock(nil, d); err == nil {
		t.Fatal("read of the rotten block succeeded")
	}
	if err := s.DeleteSnapshot(ctx, owner, a); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(ctx, false); err != nil {
		t.Fatal(err)
	}
	if got := s.CorruptBlocks(); !slices.Equal(got, []Digest{d}) {
		t.Fatalf("marks after collection: %v, want the collected block's", got)
	}
	rep, err := s.Scrub(ctx, ScrubOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.CorruptBlockCount != 0 || rep.MarksCleared != 1 || len(s.CorruptBlocks()) != 0 || s.ScrubTotals().CorruptBlocksKnown != 0 {
		t.Fatalf("scrub after collection: %+v, marks %v: want the mark dropped", rep, s.CorruptBlocks())
	}
}
