package cas

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ebsd/ebsd/cas/castest"
)

func openGCStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(Options{Dir: t.TempDir(), ExpireInterval: -1, ValueLogFileSize: 1 << 20, Compression: CompressNone})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func testBlock(seed uint64) []byte {
	b := make([]byte, BlockSize)
	castest.CompressibleBlock(b, seed)
	return b
}

// writeSnap starts a snapshot, puts blocks (index → seed) and completes it.
func writeSnap(t *testing.T, s *Store, parent string, blocks map[int64]uint64) string {
	t.Helper()
	ctx := context.Background()
	snap, err := s.StartSnapshot(ctx, StartParams{OwnerID: owner, VolumeSize: 1, ParentID: parent, TimeoutMinutes: 60})
	if err != nil {
		t.Fatal(err)
	}
	for i, seed := range blocks {
		b := testBlock(seed)
		if err := s.PutBlock(ctx, owner, snap.ID, i, b, Sum(b)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.CompleteSnapshot(ctx, owner, snap.ID, int64(len(blocks)), nil); err != nil {
		t.Fatal(err)
	}
	return snap.ID
}

// readView returns index → block content of a snapshot's whole view.
func readView(t *testing.T, s *Store, id string) map[int64][]byte {
	t.Helper()
	out := map[int64][]byte{}
	err := s.ViewFrom(context.Background(), owner, id, 0, func(sl Slot) bool {
		b, err := s.ReadBlock(nil, sl.Digest)
		if err != nil {
			t.Fatalf("block %d of %s: %v", sl.Index, id, err)
		}
		out[sl.Index] = b
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameView(t *testing.T, got, want map[int64][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("view has %d blocks, want %d", len(got), len(want))
	}
	for i, b := range want {
		if !bytes.Equal(got[i], b) {
			t.Fatalf("block %d differs", i)
		}
	}
}

func TestGCDeleteMiddleOfLineageThenAll(t *testing.T) {
	s := openGCStore(t)
	ctx := context.Background()
	a := writeSnap(t, s, "", map[int64]uint64{0: 1, 1: 2, 2: 3, 3: 4})
	b := writeSnap(t, s, a, map[int64]uint64{1: 12, 2: 13, 5: 15})
	c := writeSnap(t, s, b, map[int64]uint64{2: 23, 6: 26})
	wantC := readView(t, s, c)
	wantA := readView(t, s, a)

	if err := s.DeleteSnapshot(ctx, owner, b); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Snapshot(ctx, owner, b); err == nil {
		t.Fatal("deleted snapshot still visible")
	}
	rep, err := s.GC(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	// B's own blocks 1 and 5 are still C's; its block 2 (seed 13) is hidden by C's.
	if rep.BlocksReclaimed != 0 || rep.SnapshotMapsReleased != 0 {
		t.Fatalf("GC with a live child reclaimed: %+v", rep)
	}
	sameView(t, readView(t, s, c), wantC)
	sameView(t, readView(t, s, a), wantA)

	if err := s.DeleteSnapshot(ctx, owner, c); err != nil {
		t.Fatal(err)
	}
	dry, err := s.GC(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	// B and C go: their blocks 12, 13, 15, 23, 26 are referenced by nobody else.
	if dry.BlocksReclaimed != 5 || dry.SnapshotMapsReleased != 2 {
		t.Fatalf("dry run: %+v, want 5 blocks from 2 maps", dry)
	}
	if st, _ := s.Stats(ctx); st.UniqueBlocks != 9 {
		t.Fatalf("dry run deleted something: %d blocks", st.UniqueBlocks)
	}
	rep, err = s.GC(ctx, false)
	if err != nil || rep.BlocksReclaimed != 5 {
		t.Fatalf("GC: %+v %v", rep, err)
	}
	sameView(t, readView(t, s, a), wantA)

	if err := s.DeleteSnapshot(ctx, owner, a); err != nil {
		t.Fatal(err)
	}
	rep, err = s.GC(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := s.Stats(ctx)
	if st.UniqueBlocks != 0 || st.StoredBytes != 0 || st.MappedBlocks != 0 {
		t.Fatalf("after deleting everything: %+v", st)
	}
	t.Logf("last GC: %+v", rep)
}

// Space comes back to the file system: the data directory shrinks.
func TestGCShrinksDataDirectory(t *testing.T) {
	s := openGCStore(t)
	ctx := context.Background()
	blocks := map[int64]uint64{}
	for i := range int64(64) { // 32 MiB over 1 MiB value-log files
		blocks[i] = uint64(1000 + i)
	}
	id := writeSnap(t, s, "", blocks)
	before := dirBytes(s.opts.Dir)
	if err := s.DeleteSnapshot(ctx, owner, id); err != nil {
		t.Fatal(err)
	}
	rep, err := s.GC(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	after := dirBytes(s.opts.Dir)
	t.Logf("data dir %d → %d bytes (%+v)", before, after, rep)
	if rep.BlocksReclaimed != 64 || after > before/4 {
		t.Fatalf("data dir %d → %d bytes after reclaiming %d blocks", before, after, rep.BlocksReclaimed)
	}
}

// A collection racing puts of the very blocks it is collecting loses nothing. The
// collection is stopped at each dangerous point (DESIGN.md rule 10) while a pending
// snapshot puts the blocks a deleted one held, so every interleaving happens every run:
//   - released: the deleted map is gone, nothing is marked yet; the puts find the blocks
//     stored and must be seen by the mark.
//   - marked: the mark is done without the puts' map entries; the puts find the blocks
//     stored and must be recorded, or the sweep deletes blocks they rely on.
//   - swept: the blocks are deleted; the puts must find them absent and store them again.
func TestGCRacingPuts(t *testing.T) {
	for _, tc := range []struct {
		stage GCStage
		// What the stopped collection reclaims: nothing when the puts come before the
		// sweep (they rely on every block), everything when they come after it.
		reclaimed int64
	}{{GCReleased, 0}, {GCMarked, 0}, {GCSwept, 8}} {
		stage := tc.stage
		t.Run(string(stage), func(t *testing.T) {
			s := openGCStore(t)
			ctx := context.Background()
			seeds := map[int64]uint64{}
			for i := range int64(8) {
				seeds[i] = uint64(i + 1)
			}
			old := writeSnap(t, s, "", seeds)
			if err := s.DeleteSnapshot(ctx, owner, old); err != nil {
				t.Fatal(err)
			}
			snap, err := s.StartSnapshot(ctx, StartParams{OwnerID: owner, VolumeSize: 1, TimeoutMinutes: 60})
			if err != nil {
				t.Fatal(err)
			}

			paused := make(chan int, 1)   // the collection reached stage (with its count)
			resume := make(chan struct{}) // the test lets it go on
			testDone := make(chan struct{})
			t.Cleanup(func() { close(testDone) }) // runs before the store closes: a stopped collection ends
			s.SetGCStageHook(func(st GCStage, n int) {
				if st != stage {
					return
				}
				paused <- n
				select {
				case <-resume:
				case <-testDone:
				}
			})
			gcDone := make(chan error, 1)
			go func() {
				rep, err := s.GC(ctx, false)
				if err == nil && rep.BlocksReclaimed != tc.reclaimed {
					err = fmt.Errorf("the collection stopped at %s reclaimed %d blocks, want %d", stage, rep.BlocksReclaimed, tc.reclaimed)
				}
				gcDone <- err
			}()
			select {
			case n := <-paused:
				t.Logf("collection stopped at %s (n=%d)", stage, n)
			case err := <-gcDone:
				t.Fatalf("the collection ended (%v) without reaching %s", err, stage)
			case <-time.After(time.Minute):
				t.Fatalf("the collection did not reach %s within a minute", stage)
			}
			for i, seed := range seeds {
				b := testBlock(seed)
				if err := s.PutBlock(ctx, owner, snap.ID, i, b, Sum(b)); err != nil {
					t.Fatalf("put %d while the collection is stopped at %s: %v", i, stage, err)
				}
			}
			close(resume)
			select {
			case err := <-gcDone:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(time.Minute):
				t.Fatal("the collection did not end within a minute of being let go")
			}
			s.SetGCStageHook(nil)
			if _, err := s.GC(ctx, false); err != nil { // a second pass must not take them either
				t.Fatal(err)
			}
			if _, err := s.CompleteSnapshot(ctx, owner, snap.ID, 8, nil); err != nil {
				t.Fatal(err)
			}
			got := readView(t, s, snap.ID)
			for i, seed := range seeds {
				if !bytes.Equal(got[i], testBlock(seed)) {
					t.Fatalf("stopped at %s: block %d lost or wrong", stage, i)
				}
			}
		})
	}
}

// An open view keeps a deleted snapshot readable until it closes.
func TestOpenViewPinsDeletedSnapshot(t *testing.T) {
	s := openGCStore(t)
	ctx := context.Background()
	id := writeSnap(t, s, "", map[int64]uint64{0: 7, 3: 8})
	v, err := s.OpenView(ctx, owner, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSnapshot(ctx, owner, id); err != nil {
		t.Fatal(err)
	}
	if rep, err := s.GC(ctx, false); err != nil || rep.BlocksReclaimed != 0 {
		t.Fatalf("GC with an open view: %+v %v", rep, err)
	}
	n := 0
	if err := v.From(ctx, 0, func(sl Slot) bool {
		if _, err := s.ReadBlock(nil, sl.Digest); err != nil {
			t.Fatal(err)
		}
		n++
		return true
	}); err != nil || n != 2 {
		t.Fatalf("reading the open view: %d blocks, %v", n, err)
	}
	v.Close()
	if rep, err := s.GC(ctx, false); err != nil || rep.BlocksReclaimed != 2 {
		t.Fatalf("GC after the view closed: %+v %v", rep, err)
	}
}

// A crash between creating a value-log or memtable file and sizing it leaves an empty
// file (a kill -9 during a collection left an empty .mem); the store must still open.
func TestOpenSurvivesEmptyValueLogFile(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, ExpireInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	id := ""
	func() {
		snap, err := s.StartSnapshot(context.Background(), StartParams{OwnerID: owner, VolumeSize: 1, TimeoutMinutes: 60})
		if err != nil {
			t.Fatal(err)
		}
		id = snap.ID
	}()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"000099.vlog", "00099.mem"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s, err = Open(Options{Dir: dir, ExpireInterval: -1})
	if err != nil {
		t.Fatalf("open with an empty value-log and memtable file: %v", err)
	}
	defer s.Close()
	if _, err := s.Snapshot(context.Background(), owner, id); err != nil {
		t.Fatal(err)
	}
}
