package cas

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
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
// value log must be within the bound of the live stored bytes (here none).
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
	after, vlog := dirBytes(s.opts.Dir), valueLogBytes(s.opts.Dir)
	live := s.Counters().StoredBytes
	t.Logf("data directory %d MiB → %d MiB, value log %d KiB, live %d MiB; %+v", before>>20, after>>20, vlog>>10, live>>20, rep)
	if rep.BlocksReclaimed != 192 || live != 0 {
		t.Fatalf("reclaimed %d blocks, %d bytes still stored; want 192 and 0", rep.BlocksReclaimed, live)
	}
	if vlog > live+s.spaceBound(live) {
		t.Fatalf("the value log takes %d KiB after deleting everything, more than %d KiB over the %d KiB live",
			vlog>>10, s.spaceBound(live)>>10, live>>10)
	}
}

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
// ratio rewrites nothing; a collection still brings the value log within the bound of
// the live bytes, and what is kept reads back intact.
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
	before := valueLogBytes(s.opts.Dir)
	rep, err := s.GC(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	after := valueLogBytes(s.opts.Dir)
	live := s.Counters().StoredBytes
	t.Logf("value log %d KiB → %d KiB, live %d KiB; %+v", before>>10, after>>10, live>>10, rep)
	if bound := s.spaceBound(live); after-live > bound {
		t.Fatalf("value log takes %d KiB over the %d KiB live, more than the %d KiB bound", (after-live)>>10, live>>10, bound>>10)
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
	// The writers start once the sweep is over, so they race the collection's rewrites
	// (files half dead, then mostly live, and the head after its rotation) and then
	// those of reclaimTo.
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
	if !started.Load() || rep.ValueLogFilesRewritten+more.ValueLogFilesRewritten == 0 || !(rep.ValueLogRotated || more.ValueLogRotated) {
		t.Fatalf("puts ran alongside %d rewrites, rotation %v: the race the test is about did not happen",
			rep.ValueLogFilesRewritten+more.ValueLogFilesRewritten, rep.ValueLogRotated || more.ValueLogRotated)
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

// Settling leaves the old copies of the blocks it re-encodes in the file being written
// when they were stored recently, as after a first upload: a store of one value-log
// file is all head. A collection gives them back (it rotates the head), and the next
// collection, with nothing dead, rewrites and rotates nothing.
func TestGCGivesBackWhatSettlingLeftInTheHead(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir(), ExpireInterval: -1, Compression: CompressNone})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	id, want := settleFixture(t, s, 24, 0) // 12 MiB stored raw, in the one (64 MiB) head
	if _, err := s.Settle(ctx, settleLevel); err != nil {
		t.Fatal(err)
	}
	before := valueLogBytes(s.opts.Dir)
	rep, err := s.GC(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	after, live := valueLogBytes(s.opts.Dir), s.Counters().StoredBytes
	t.Logf("value log %d KiB → %d KiB, live %d KiB; %+v", before>>10, after>>10, live>>10, rep)
	if before-live < 4<<20 {
		t.Fatalf("settling left %d KiB of old copies: nothing for the test to show", (before-live)>>10)
	}
	if bound := s.spaceBound(live); after-live > bound || !rep.ValueLogRotated {
		t.Fatalf("value log %d KiB over the %d KiB live after a collection (bound %d KiB), head rotated: %v",
			(after-live)>>10, live>>10, bound>>10, rep.ValueLogRotated)
	}
	again, err := s.GC(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if again.ValueLogFilesRewritten != 0 || again.ValueLogRotated {
		t.Fatalf("a collection with nothing dead rewrote %d files, rotated: %v", again.ValueLogFilesRewritten, again.ValueLogRotated)
	}
	sameView(t, readView(t, s, id), want)
}

// Values other than blocks can outgrow the value threshold (a snapshot record with
// many tags) and then sit in the value log without counting as stored bytes. A
// collection cannot give them back; after one rotation has shown that, later
// collections must not rotate the head again for them.
func TestGCDoesNotRotateForValuesItCannotGiveBack(t *testing.T) {
	s := openGCStore(t)
	ctx := context.Background()
	putNoise(t, s, 2, 1)
	big := make([]byte, 600<<10) // twice: live, in the value log, not blocks
	for i := range big {
		big[i] = byte(i%251 + 1)
	}
	for _, k := range []string{"test-large-1", "test-large-2"} {
		if err := s.update(func(txn *badger.Txn) error { return txn.Set(metaKey(k), big) }); err != nil {
			t.Fatal(err)
		}
	}
	first, err := s.GC(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		rep, err := s.GC(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		if rep.ValueLogRotated || rep.ValueLogFilesRewritten != 0 {
			t.Fatalf("collection %d after %+v rotated (%v) and rewrote %d files for a value it cannot give back",
				i+2, first, rep.ValueLogRotated, rep.ValueLogFilesRewritten)
		}
	}
}

// writtenLength finds the end of what was written in a file whose allocation runs on
// in zeros (a large folio's tail) and then in a hole.
func TestWrittenLengthIgnoresTheZeroTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "000001.vlog")
	data := bytes.Repeat([]byte{7}, 100_003)
	file := append(append([]byte{}, data...), make([]byte, 2<<20)...) // zeros, allocated
	if err := os.WriteFile(path, file, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 8<<20); err != nil { // and a sparse rest, as Badger maps it
		t.Fatal(err)
	}
	if got := writtenLength(path); got != int64(len(data)) {
		t.Fatalf("writtenLength = %d, want %d", got, len(data))
	}
	if got := valueLogBytes(filepath.Dir(path)); got != int64(len(data)) {
		t.Fatalf("valueLogBytes of a store whose head is that file = %d, want %d", got, len(data))
	}
}
