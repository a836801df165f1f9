package cas

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// putNoise puts n incompressible blocks, seeds from seed on, into a new snapshot and
// completes it.
func putNoise(t *testing.T, s *Store, n int64, seed uint64) string {
	t.Helper()
	ctx := context.Background()
	snap, err := s.StartSnapshot(ctx, StartParams{OwnerID: owner, VolumeSize: 1024, TimeoutMinutes: 60})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, BlockSize)
	for i := range n {
		noiseBlock(buf, seed+uint64(i))
		if err := s.PutBlock(ctx, owner, snap.ID, i, buf, Sum(buf)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.CompleteSnapshot(ctx, owner, snap.ID, n, nil); err != nil {
		t.Fatal(err)
	}
	return snap.ID
}

// The issue: a store smaller than one value-log file gave nothing back, since Badger
// never rewrites the file it is writing. After deleting everything and collecting, the
// data directory must be within max(64 MiB, 10%) of the live stored bytes (here none).
func TestGCGivesBackTheValueLogBeingWritten(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir(), ExpireInterval: -1, ValueLogFileSize: 128 << 20, Compression: CompressNone})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	id := putNoise(t, s, 192, 1) // 96 MiB stored, all in the first value-log file
	before := dirBytes(s.opts.Dir)
	if err := s.DeleteSnapshot(ctx, owner, id); err != nil {
		t.Fatal(err)
	}
	rep, err := s.GC(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	after := dirBytes(s.opts.Dir)
	live := s.Counters().StoredBytes
	t.Logf("data directory %d MiB → %d MiB, live %d MiB; %+v", before>>20, after>>20, live>>20, rep)
	if rep.BlocksReclaimed != 192 || live != 0 {
		t.Fatalf("reclaimed %d blocks, %d bytes still stored; want 192 and 0", rep.BlocksReclaimed, live)
	}
	if after > live+spaceBound(live) {
		t.Fatalf("data directory takes %d MiB after deleting everything, more than %d MiB over the %d MiB live",
			after>>20, spaceBound(live)>>20, live>>20)
	}
}

// reclaimTestTarget stands for max(64 MiB, 10%) in tests of stores far too small to
// reach it: after a collection has swept, reclaimTo runs the space reclamation again
// with this target, as a collection of a larger store would.
const reclaimTestTarget = 4 << 20

// reclaimTo reclaims value-log space down to target, holding the collection lock as GC
// does.
func reclaimTo(t *testing.T, s *Store, target int64) GCReport {
	t.Helper()
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	var rep GCReport
	if err := s.reclaimValueLog(context.Background(), s.Counters().StoredBytes, target, &rep); err != nil {
		t.Fatal(err)
	}
	return rep
}

// When the garbage is spread thin, no value-log file is half dead and Badger's usual
// ratio rewrites nothing; the value log is still brought within the target of the live
// bytes, and what is kept reads back intact.
func TestReclaimFilesMostlyLive(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir(), ExpireInterval: -1, ValueLogFileSize: 4 << 20, Compression: CompressNone})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	// Snapshots of 3 blocks (1.5 MiB) in turn: a 4 MiB file holds parts of three or
	// four of them, one in three is deleted, so no file is half dead.
	var kept, doomed []string
	for i := range 24 {
		id := putNoise(t, s, 3, uint64(1000*i))
		if i%3 == 1 {
			doomed = append(doomed, id)
		} else {
			kept = append(kept, id)
		}
	}
	want := map[string]map[int64][]byte{}
	for _, id := range kept {
		want[id] = readView(t, s, id)
	}
	for _, id := range doomed {
		if err := s.DeleteSnapshot(ctx, owner, id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.GC(ctx, false); err != nil {
		t.Fatal(err)
	}
	before := valueLogBytes(s.opts.Dir)
	rep := reclaimTo(t, s, reclaimTestTarget)
	after := valueLogBytes(s.opts.Dir)
	live := s.Counters().StoredBytes
	t.Logf("value log %d KiB → %d KiB, live %d KiB; %+v", before>>10, after>>10, live>>10, rep)
	if before-live <= reclaimTestTarget {
		t.Fatalf("the collection alone left %d KiB of garbage: nothing for the test to show", (before-live)>>10)
	}
	if after-live > reclaimTestTarget {
		t.Fatalf("value log takes %d KiB over the %d KiB live, more than the %d KiB target", (after-live)>>10, live>>10, reclaimTestTarget>>10)
	}
	for _, id := range kept {
		sameView(t, readView(t, s, id), want[id])
	}
}

// Puts racing every step of space reclamation (rewrites of files half dead and mostly
// live, the rotation of the file being written) lose no block, whether new, already
// stored and being moved, or just deleted and stored again: every snapshot reads back
// whole afterwards, after another collection, and after the store is reopened.
func TestReclaimRacingPutsLoseNothing(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Dir: dir, ExpireInterval: -1, ValueLogFileSize: 4 << 20, Compression: CompressNone}
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	ctx := context.Background()
	old := putNoise(t, s, 24, 1)
	keep := putNoise(t, s, 16, 10_000)
	wantKeep := readView(t, s, keep)
	if err := s.DeleteSnapshot(ctx, owner, old); err != nil {
		t.Fatal(err)
	}
	snap, err := s.StartSnapshot(ctx, StartParams{OwnerID: owner, VolumeSize: 1024, TimeoutMinutes: 60})
	if err != nil {
		t.Fatal(err)
	}
	// Block i of the new snapshot: new, the kept snapshot's (deduplicated against a
	// value being moved), or the deleted one's (swept: stored again).
	seedOf := func(i int64) uint64 {
		switch i % 3 {
		case 0:
			return 1_000_000 + uint64(i)
		case 1:
			return 10_000 + uint64(i/3%16)
		default:
			return 1 + uint64(i/3%24)
		}
	}
	var (
		wg   sync.WaitGroup
		next atomic.Int64
		done = make(chan struct{})
	)
	startWriters := func() {
		for range 3 {
			wg.Go(func() {
				buf := make([]byte, BlockSize)
				for {
					select {
					case <-done:
						return
					default:
					}
					i := next.Add(1) - 1
					noiseBlock(buf, seedOf(i))
					if err := s.PutBlock(ctx, owner, snap.ID, i, buf, Sum(buf)); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
	}
	// The writers start once the sweep is over, so they race the rewrites of the
	// collection (files at least half dead) and then of reclaimTo (every file with
	// garbage, and the head after its rotation).
	var started atomic.Bool
	s.SetGCStageHook(func(stage GCStage, _ int) {
		if stage == GCSwept && started.CompareAndSwap(false, true) {
			startWriters()
		}
	})
	rep, err := s.GC(ctx, false)
	if err != nil {
		close(done)
		wg.Wait()
		t.Fatal(err)
	}
	more := reclaimTo(t, s, 0)
	close(done)
	wg.Wait()
	s.SetGCStageHook(nil)
	n := next.Load()
	t.Logf("collection %+v; then %+v; %d puts ran alongside", rep, more, n)
	if !started.Load() || rep.ValueLogFilesRewritten+more.ValueLogFilesRewritten == 0 || !more.ValueLogRotated {
		t.Fatalf("puts ran alongside %d rewrites, rotation %v: the race the test is about did not happen",
			rep.ValueLogFilesRewritten+more.ValueLogFilesRewritten, more.ValueLogRotated)
	}
	if _, err := s.CompleteSnapshot(ctx, owner, snap.ID, n, nil); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		sameView(t, readView(t, s, keep), wantKeep)
		got := readView(t, s, snap.ID)
		buf := make([]byte, BlockSize)
		for i := range n {
			noiseBlock(buf, seedOf(i))
			if !bytes.Equal(got[i], buf) {
				t.Fatalf("%s: block %d written during the collection is lost or wrong", when, i)
			}
		}
	}
	check("after the collection")
	if _, err := s.GC(ctx, false); err != nil {
		t.Fatal(err)
	}
	reclaimTo(t, s, 0)
	check("after another collection")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(opts); err != nil {
		t.Fatal(err)
	}
	check("after reopening")
}

// A crash between writing a rotation's padding and deleting it leaves padding values
// that nothing references; the next collection deletes them.
func TestGCDropsPaddingLeftByACrash(t *testing.T) {
	s := openGCStore(t)
	key := append(metaKey(rotatePrefix), "0"...)
	if err := s.update(func(txn *badger.Txn) error { return txn.Set(key, make([]byte, BlockSize)) }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	err := s.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(key)
		return err
	})
	if !errors.Is(err, badger.ErrKeyNotFound) {
		t.Fatalf("padding left by a crash is still there after a collection: %v", err)
	}
}
