package cas

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// largestValueLog is the size of the largest value-log file in dir.
func largestValueLog(t *testing.T, dir string) (string, int64) {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if err != nil {
		t.Fatal(err)
	}
	var name string
	var largest int64
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			continue // deleted by a rewrite meanwhile
		}
		if fi.Size() > largest {
			name, largest = filepath.Base(p), fi.Size()
		}
	}
	return name, largest
}

// No write makes Badger grow the value-log file it is writing past twice its size,
// which is what Badger maps (DESIGN.md rule 34): Badger would remap the file without
// the lock its readers hold, and a concurrent read could see another mapping's bytes (a
// block that "does not hash to its key") or fault. A grown file keeps its size once
// finished, so every file is checked after each kind of writer: group commits of
// concurrent puts, a collection's rewrites of files (Badger's batches) and value-log
// rotations.
func TestValueLogHeadNeverOutgrowsItsMapping(t *testing.T) {
	dir := t.TempDir()
	s := countedStore(t, dir, nil) // 1 MiB value-log files, mapped at 2 MiB
	defer func() { _ = s.Close() }()
	limit := 2 * s.opts.ValueLogFileSize
	check := func(after string) {
		t.Helper()
		if name, size := largestValueLog(t, dir); size > limit {
			t.Fatalf("after %s: value-log file %s is %d bytes, more than the %d Badger maps", after, name, size, limit)
		}
	}
	ctx := context.Background()
	var ids []string
	var want map[int64][]byte // the last snapshot's, which the collection keeps
	for range 4 {
		id := start(t, s, "")
		want = map[int64][]byte{}
		for i := range maxGroup {
			want[int64(i)] = randomBlock(t) // incompressible: 512 KiB in the value log each
		}
		var wg sync.WaitGroup
		for i, b := range want {
			wg.Go(func() { put(t, s, id, i, b) })
		}
		wg.Wait()
		if _, err := s.CompleteSnapshot(ctx, owner, id, maxGroup, nil); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		check("concurrent puts")
	}
	// Each of those blocks is half a file: the committer gave each a commit of its own,
	// so a group's one transaction stays whole (a move's batches are split instead).
	if gc := s.Counters().GroupCommits; gc[1] != 4*maxGroup {
		t.Fatalf("group commits by size: %v, want %d of one block", gc, 4*maxGroup)
	}
	for _, id := range ids[:3] {
		if err := s.DeleteSnapshot(ctx, owner, id); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := s.GC(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.ValueLogFilesRewritten == 0 {
		t.Fatalf("the collection rewrote no value-log file: %+v", rep)
	}
	check("a collection's rewrites")
	for range 3 {
		if ok, err := s.rotateValueLog(); err != nil || !ok {
			t.Fatalf("rotation: %v, %v", ok, err)
		}
		check("a rotation")
	}
	sameView(t, readView(t, s, ids[3]), want)
}

// A rotation's padding takes the head past its size, so Badger starts a new file, and
// never to twice its size, where Badger would remap it (rule 34): for heads of every
// fill, with the allocated size a page above what Badger wrote.
func TestRotationPaddingStaysInsideTheMapping(t *testing.T) {
	const page = 4096
	for _, size := range []int64{1 << 20, 4 << 20, 64 << 20, 256 << 20} {
		fills := []int64{20, size - page, size} // empty, nearly full, full (Badger starts a new file only past size)
		for w := size / 64; w < size; w += size / 64 {
			fills = append(fills, w)
		}
		for _, written := range fills {
			used := (written + page - 1) / page * page
			pad := rotationPadding(size, used, defaultValueThreshold)
			if end := written + pad; end <= size || end >= 2*size {
				t.Errorf("file %d, head %d written (%d allocated): padding %d ends it at %d, want in (%d, %d)",
					size, written, used, pad, end, size, 2*size)
			}
		}
	}
}

// Badger rewrites a value-log file in batches of up to 15 % of the memtable, each one
// request: the store's sizes keep a batch under half a file (rule 34), whatever value-
// log file size the options ask for.
func TestStoreSizesKeepRewriteBatchesUnderHalfAFile(t *testing.T) {
	for _, tc := range []struct {
		vlog, memtable int64
		total          uint64
	}{
		{0, 0, 1 << 40},         // derived on a large file system
		{0, 0, 64 << 20},        // derived on a small one
		{1 << 20, 0, 1 << 40},   // a small value-log file asked for
		{4 << 20, 64 << 20, 0},  // both asked for
		{256 << 20, 0, 1 << 40}, // a large value-log file
	} {
		vlog, memtable := storeSizes(Options{ValueLogFileSize: tc.vlog, MemTableSize: tc.memtable}, tc.total)
		if batch := memtable * 15 / 100; batch >= vlog/2 {
			t.Errorf("%+v: value-log files of %d, memtable %d: Badger's rewrite batches reach %d", tc, vlog, memtable, batch)
		}
	}
}
