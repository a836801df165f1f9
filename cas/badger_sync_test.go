package cas

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
)

// Badger's own Sync leaves the value-log files it rotated away from unsynced; the
// store's Sync fsyncs each of them once, the file being written being Badger's.
func TestSyncCoversRotatedValueLogFiles(t *testing.T) {
	s := openGCStore(t) // 1 MiB value-log files: every few blocks start a new one
	var synced []string
	s.dbSync.mu.Lock()
	s.dbSync.fsync = func(path string) error { synced = append(synced, filepath.Base(path)); return fsyncPath(path) }
	first := s.dbSync.synced
	s.dbSync.mu.Unlock()
	putNoise(t, s, 8, 1) // 4 MiB of raw blocks: several rotations, then a completion's Sync
	head, _ := headValueLogPath(s.opts.Dir)
	var want []string
	for _, f := range valueLogFiles(s.opts.Dir) {
		if f.fid >= first && f.fid < head {
			want = append(want, filepath.Base(f.path))
		}
	}
	slices.Sort(synced)
	synced = slices.Compact(synced)
	t.Logf("head was %d at open, is %d; fsynced %v", first, head, synced)
	if len(want) < 2 || !slices.Equal(synced, want) {
		t.Fatalf("after rotations, completion fsynced %v; want every rotated file %v", synced, want)
	}
	n := len(synced)
	if err := s.dbSync.Sync(); err != nil {
		t.Fatal(err)
	}
	if len(synced) != n {
		t.Fatalf("a Sync with nothing rotated since fsynced again: %v", synced)
	}
}

// A collection's rewrite moves live values into new value-log files and deletes the
// old ones; the moved values are fsynced right after it, not at some later
// completion, so a power cut does not take them with the deleted file.
func TestValueLogRewriteIsSynced(t *testing.T) {
	s := openGCStore(t)
	ctx := context.Background()
	keep := putNoise(t, s, 6, 1)
	gone := putNoise(t, s, 6, 100)
	if err := s.DeleteSnapshot(ctx, owner, gone); err != nil {
		t.Fatal(err)
	}
	runs := func() int { s.dbSync.mu.Lock(); defer s.dbSync.mu.Unlock(); return s.dbSync.runs }
	// The Syncs done when the sweep ended and when each rewrite had returned.
	var seen []int
	s.SetGCStageHook(func(stage GCStage, _ int) {
		if stage == GCSwept || stage == GCValueLogRewritten {
			seen = append(seen, runs())
		}
	})
	rep, err := s.GC(ctx, false)
	s.SetGCStageHook(nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.ValueLogFilesRewritten == 0 || len(seen) != 1+rep.ValueLogFilesRewritten {
		t.Fatalf("%d rewrites, stages seen %v: nothing for the test to show", rep.ValueLogFilesRewritten, seen)
	}
	for i := 1; i < len(seen); i++ {
		if seen[i] <= seen[i-1] {
			t.Fatalf("rewrite %d returned without a Sync since the step before it (Syncs so far %v)", i, seen)
		}
	}
	readView(t, s, keep)
}
