package cas

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// fakeFS is a file system of pool bytes that the ballast file in dir takes its share
// of, as a real one would: free is pool less the ballast's allocated blocks.
type fakeFS struct {
	dir  string
	pool int64
}

func (f *fakeFS) statfs(string) (free, total uint64, err error) {
	var used int64
	if fi, err := os.Stat(filepath.Join(f.dir, spaceReserveFile)); err == nil {
		used = fi.Sys().(*syscall.Stat_t).Blocks * 512
	}
	return uint64(max(f.pool-used, 0)), 1 << 30, nil
}

func newTestGuard(t *testing.T, pool int64) (*spaceGuard, *fakeFS) {
	t.Helper()
	fs := &fakeFS{dir: t.TempDir(), pool: pool}
	g, err := openSpace(fs.dir, 1<<20, 6<<20, slog.New(slog.DiscardHandler), fs.statfs)
	if err != nil {
		t.Fatalf("openSpace: %v", err)
	}
	g.lsmBytes = func() int64 { return 0 }
	t.Cleanup(g.close)
	return g, fs
}

func wantNoSpaceErr(t *testing.T, err error, what string) {
	t.Helper()
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("%s: want ErrNoSpace, got %v", what, err)
	}
}

// New data is taken while floor, reserve and what is in flight stay free, and refused
// one byte short of that. A refusal keeps the reserve in the ballast: released then,
// another program filling the disk would take it; a delete or collection releases it
// when it needs it. New data comes back only once the whole reserve (and some room) is
// free again.
func TestSpaceGuardRefusesNewDataBeforeTheReserve(t *testing.T) {
	const n = BlockSize
	g, fs := newTestGuard(t, 100<<20)
	if g.held != g.target {
		t.Fatalf("ballast holds %d after opening with room, want %d", g.held, g.target)
	}
	floor := g.floor(0)

	// Exactly enough: floor + n free besides the ballast.
	fs.pool = g.target + floor + n
	done, err := g.admit(n)
	if err != nil {
		t.Fatalf("admit with exactly enough free: %v", err)
	}
	// A second put in flight needs its own room: the first has not written yet.
	_, err = g.admit(n)
	wantNoSpaceErr(t, err, "second put while the first is in flight")
	if g.held != g.target {
		t.Fatalf("a refused put left the ballast holding %d of %d bytes: the rest is free for any program", g.held, g.target)
	}
	done()

	// Another program takes more: a delete finds less than the floor free and gets
	// the ballast's space.
	fs.pool = g.target + floor - 1
	if err := g.maintain(); err != nil {
		t.Fatalf("a delete with the reserve in the ballast: %v", err)
	}
	if g.held != 0 {
		t.Fatalf("a delete below the floor left the ballast holding %d bytes", g.held)
	}
	// With the ballast released, free space includes the reserve, yet new data stays
	// refused: the reserve belongs to deletes and collections.
	_, err = g.admit(n)
	wantNoSpaceErr(t, err, "new data with the reserve released")

	// GC gives space back: enough for the reserve and the slack, new data resumes and
	// the reserve is held in the ballast again first.
	fs.pool = g.target + floor + resumeSlack + n
	done, err = g.admit(n)
	if err != nil {
		t.Fatalf("admit after space came back: %v", err)
	}
	done()
	if g.held != g.target {
		t.Fatalf("ballast holds %d after space came back, want %d", g.held, g.target)
	}
}

// Deletes and collections may use the reserve, and are refused only below the floor,
// which nothing may go under.
func TestSpaceGuardMaintenanceUsesTheReserve(t *testing.T) {
	g, fs := newTestGuard(t, 100<<20)
	floor := g.floor(0)
	// Someone else took everything but the ballast.
	fs.pool = g.target
	if err := g.maintain(); err != nil {
		t.Fatalf("a delete on a disk full up to the ballast: %v", err)
	}
	if g.held != 0 {
		t.Fatalf("maintenance below the floor left the ballast holding %d", g.held)
	}
	fs.pool = floor - 1
	wantNoSpaceErr(t, g.maintain(), "a delete below the floor with no ballast left")
}

// A store filled by someone else while stopped opens on its ballast's space; with
// neither room nor ballast it refuses to open with ErrNoSpace (not SIGBUS in Badger).
func TestOpenSpaceOnAFullDisk(t *testing.T) {
	g, fs := newTestGuard(t, 100<<20)
	g.close()
	fs.pool = g.target // the ballast is all there is
	g2, err := openSpace(fs.dir, 1<<20, 6<<20, slog.New(slog.DiscardHandler), fs.statfs)
	if err != nil {
		t.Fatalf("opening on a full disk with the ballast held: %v", err)
	}
	if g2.held != 0 {
		t.Fatalf("ballast still holds %d after opening on a full disk", g2.held)
	}
	g2.close()
	fs.pool = 0
	_, err = openSpace(fs.dir, 1<<20, 6<<20, slog.New(slog.DiscardHandler), fs.statfs)
	wantNoSpaceErr(t, err, "opening with nothing free and no ballast")
}

// On a file system that cannot preallocate, the reserve is counted in free space
// instead: new data is refused below floor and reserve, and accepted above them.
func TestSpaceGuardWithoutFallocate(t *testing.T) {
	const n = BlockSize
	fs := &fakeFS{dir: t.TempDir(), pool: 100 << 20}
	g, err := openSpace(fs.dir, 1<<20, 6<<20, slog.New(slog.DiscardHandler), fs.statfs)
	if err != nil {
		t.Fatal(err)
	}
	defer g.close()
	g.lsmBytes = func() int64 { return 0 }
	g.mu.Lock()
	g.releaseLocked()
	g.fallocate = func(int, uint32, int64, int64) error { return syscall.EOPNOTSUPP }
	g.mu.Unlock()
	// Room to allocate the ballast: the attempt finds preallocation missing.
	fs.pool = g.floor(0) + g.target + resumeSlack + n
	done, err := g.admit(n)
	if err != nil {
		t.Fatalf("admit with room, no fallocate: %v", err)
	}
	done()
	if g.ballast != nil {
		t.Fatal("the ballast is kept on a file system that cannot allocate it")
	}
	fs.pool = g.floor(0) + g.target + n
	if done, err = g.admit(n); err != nil {
		t.Fatalf("admit with floor, reserve and the block free, no fallocate: %v", err)
	}
	done()
	fs.pool--
	_, err = g.admit(n)
	wantNoSpaceErr(t, err, "one byte short of floor and reserve, no fallocate")
}

// The floor counts the LSM tree's files, not the blocks in the value log: Badger's own
// table size (TableInfo.OnDiskSize) adds the value-log bytes its keys point at, and the
// guard that summed it refused new data with the disk half empty.
func TestSpaceFloorCountsTablesNotValues(t *testing.T) {
	s := openGCStore(t)
	putNoise(t, s, 32, 1)                      // 16 MiB of blocks in the value log
	if err := s.settleDiscards(); err != nil { // flush the memtable into a table
		t.Fatal(err)
	}
	var badgerSays int64
	for _, ti := range s.db.Tables() {
		badgerSays += int64(ti.OnDiskSize)
	}
	fresh := &spaceGuard{dir: s.opts.Dir} // the store's own guard may hold a size from before the flush
	fresh.useTables(s.db)
	lsm, tables := fresh.lsmBytes(), filesBytes(s.opts.Dir, ".sst")
	t.Logf("tables on disk %d KiB, the guard counts %d KiB, Badger's OnDiskSize %d KiB", tables>>10, lsm>>10, badgerSays>>10)
	if badgerSays < 16<<20 {
		t.Fatalf("Badger's table sizes add up to %d KiB, no longer the value-log bytes: the test shows nothing", badgerSays>>10)
	}
	if lsm != tables || lsm > 1<<20 {
		t.Fatalf("the guard counts %d KiB of LSM tree for %d KiB of table files", lsm>>10, tables>>10)
	}
}
