package cas

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// ErrNoSpace is returned by writes refused because the data directory's file system is
// too full to take them without eating the space garbage collection and deletes need.
var ErrNoSpace = errors.New("not enough free space in the data directory")

// Badger keeps its value log and memtable WAL in memory-mapped files that it sizes
// sparse (twice their nominal size) and writes through the mapping, and it writes new
// SST tables through a mapping too. On a full file system such a write is not an error
// but SIGBUS: the process dies, and dies again at its next start. So nothing may reach
// Badger unless the space it is about to use is free, and what Badger does behind our
// back (memtable flushes, compactions) must find its space free as well. DESIGN.md
// "Free space" states the rule; spaceGuard keeps it:
//
//   - floor: what must stay free for Badger to flush a full memtable (at most
//     MemTableSize) and compact the whole LSM tree once (at most its size), plus a
//     margin for file-system metadata and the headers of new files. Nothing writes to
//     Badger below it, not even deletes and garbage collection.
//   - reserve: space only deletes, garbage collection and the small records of
//     completion and tags may use: half a value-log file and half a group commit,
//     what a value-log rewrite moves before the file it empties is deleted.
//     It is held in a preallocated file (the ballast, spaceReserveFile) so that nothing
//     else on the file system can take it: when new data is refused the ballast is
//     released, so a collection on a full disk has its space; once the file system
//     has room for it again the ballast is allocated anew before new data is accepted.
//     A daemon started on a full disk frees the ballast first, so Badger can open.
//   - new data (puts, new snapshots) is accepted only while free space, less what the
//     puts in flight may still write, stays above floor + the part of the reserve the
//     ballast does not hold.
//
// Free space is read with statfs at each decision (f_bavail: what an unprivileged
// writer may use; ext4 and tmpfs count pages dirtied through a mapping at once, so
// what a commit wrote is seen by the next check). A watcher re-checks every second, so
// the ballast comes back and the state is logged even while no write arrives.
type spaceGuard struct {
	dir      string
	log      *slog.Logger
	statfs   func(dir string) (free, total uint64, err error)
	lsmBytes func() int64 // SST bytes on disk; set once Badger is open
	// fallocate is syscall.Fallocate; tests stand in a file system without it.
	fallocate func(fd int, mode uint32, off, size int64) error
	memtable  int64
	target    int64 // the reserve the ballast holds when whole

	mu       sync.Mutex
	ballast  *os.File // nil when the reserve cannot be held in a file (see openSpace)
	held     int64    // bytes the ballast holds now
	inflight int64    // bytes admitted puts may still write
	refusing bool     // new data is refused (for logging the change once)
}

// spaceReserveFile is the ballast's name in the data directory; Badger ignores it.
const spaceReserveFile = "space-reserve"

const (
	// spaceMargin covers what the other terms do not: file-system metadata of new
	// files, the headers of the memtable WAL and value-log file Badger creates at every
	// open, the MANIFEST and the discard-stats file.
	spaceMargin = 2 << 20
	// putOverhead is what one put adds besides its value: the value-log entry header,
	// the block and map keys in the memtable WAL and, later, in the LSM tree.
	putOverhead = 1 << 10
	// maxGroupBytes bounds one group commit: a value-log file is rotated only after the
	// write that took it past its size, so a file may be that much larger.
	maxGroupBytes = maxGroup * (BlockSize + putOverhead)
	// openMargin is what opening needs besides replaying memtables: the new files'
	// first pages, the MANIFEST, the discard stats and their metadata.
	openMargin = 1 << 20
	// watchEvery is how often the watcher re-reads the free space.
	watchEvery = time.Second
	// lsmFresh is how long a reading of the LSM tree's size is reused: it grows by
	// about a hundred bytes a put, far less than spaceMargin in that time.
	lsmFresh = 100 * time.Millisecond
)

// storeSizes are Badger's file sizes for a file system of total bytes, when the options
// do not give them: a 64 MiB value-log file and a 64 MiB memtable (Badger's default)
// on file systems of 4 GiB and more, a sixteenth and a sixty-fourth of the file system
// below that (at least Badger's minimum of 1 MiB), so a small file system is not
// mostly reserve.
func storeSizes(opts Options, total uint64) (vlog, memtable int64) {
	vlog, memtable = opts.ValueLogFileSize, opts.MemTableSize
	if vlog <= 0 {
		// 64 MiB at most: a collection rewrites a file with writes paused (Badger's
		// rewrite races concurrent commits), so the file size bounds how long a put
		// waits during GC; at 64 MiB the p99 stays under a second (BENCHMARKS.md).
		// With Debian's vm.max_map_count (65530) that allows about 4 TiB stored;
		// raise --vlog-file-mb (and the sysctl) beyond that.
		vlog = min(max(int64(total/16)&^(1<<20-1), 1<<20), 64<<20)
	}
	if memtable <= 0 {
		memtable = min(max(int64(total/64)&^(1<<20-1), 1<<20), 64<<20)
	}
	// Badger's value-log rewrite writes batches of up to 15 % of the memtable in one
	// request; at most three files' worth keeps a batch under half a file (DESIGN.md
	// rule 34). Only a value-log file set small on a large file system is affected.
	memtable = min(memtable, maxMemTableFiles*vlog)
	return vlog, memtable
}

// maxMemTableFiles bounds the memtable in value-log files (rule 34).
const maxMemTableFiles = 3

// reserveFor is the reserve only deletes and collections may use (see spaceGuard):
// what one value-log rewrite writes before it deletes the file it empties. A
// collection rewrites only files at least half dead, and a file is at most a group
// commit longer than its nominal size. The memtable flushes and compactions their
// tombstones cause are the floor's business, which every write keeps free.
func reserveFor(vlog int64) int64 {
	return (vlog + maxGroupBytes) / 2
}

func statfsFree(dir string) (free, total uint64, err error) {
	var st syscall.Statfs_t
	for {
		if err = syscall.Statfs(dir, &st); !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return st.Bavail * uint64(st.Bsize), st.Blocks * uint64(st.Bsize), nil
}

// openSpace prepares the guard before Badger opens: it opens (or creates) the ballast
// and, when the file system has less free than Badger needs to open (replaying the
// memtables a crash left and creating a new memtable and value-log file), gives the
// ballast's space back first. With too little space even then it refuses to open,
// naming the directory, rather than letting Badger die of SIGBUS.
func openSpace(dir string, memtable, target int64, log *slog.Logger, statfs func(string) (uint64, uint64, error)) (*spaceGuard, error) {
	g := &spaceGuard{dir: dir, log: log, statfs: statfs, memtable: memtable, target: target,
		lsmBytes: func() int64 { return filesBytes(dir, ".sst") }, fallocate: syscall.Fallocate}
	f, err := os.OpenFile(filepath.Join(dir, spaceReserveFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cas: open space reserve: %w", err)
	}
	g.ballast = f
	if fi, err := f.Stat(); err == nil {
		g.held = fi.Size()
	}
	// Opening flushes the memtables a crash left (their SSTs are no larger than their
	// WAL files) and writes the first page of a new memtable WAL and value-log file;
	// no compaction runs before something is written, and nothing is written below
	// the floor. So opening needs less than the floor: a store filled up to its floor
	// and then by someone else still opens.
	need := filesBytes(dir, ".mem") + openMargin
	free, _, err := g.statfs(dir)
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("cas: %w", err)
	}
	if int64(free) < need && g.held > 0 {
		log.Warn("the data directory's file system is full: releasing the space reserve so the store can open; new data is refused until there is room again",
			"dir", dir, "free", free, "needed", need, "reserve", g.held)
		g.releaseLocked()
		if free, _, err = g.statfs(dir); err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("cas: %w", err)
		}
	}
	if int64(free) < need {
		_ = f.Close()
		return nil, fmt.Errorf("cas: %w: %s has %d bytes free, opening the store needs %d (free some space and start again)", ErrNoSpace, dir, free, need)
	}
	g.grow(int64(free))
	return g, nil
}

// filesBytes is the space the files of dir ending in ext take (allocated blocks).
func filesBytes(dir, ext string) int64 {
	var n int64
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ext) {
			continue
		}
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			} else {
				n += info.Size()
			}
		}
	}
	return n
}

// floor is what must stay free whatever writes (see spaceGuard).
func (g *spaceGuard) floor(lsm int64) int64 { return g.memtable + lsm + spaceMargin }

// needLocked is the free space new data of n bytes needs: the floor, the part of the
// reserve the ballast does not hold, what puts in flight may still write, and n.
func (g *spaceGuard) needLocked(n, lsm int64) int64 {
	return g.floor(lsm) + max(g.target-g.held, 0) + g.inflight + n
}

// hysteresisLocked is what new data needs beyond needLocked while it is being refused:
// refusing is a state, which ends once there is some room again, not at every block a
// finished put or a collection frees (accepting and refusing by turns).
func (g *spaceGuard) hysteresisLocked() int64 {
	if g.refusing {
		return resumeSlack
	}
	return 0
}

// resumeSlack is the room beyond floor and reserve the file system must have before a
// released ballast is allocated again: new data resumes when a few MiB can be taken,
// not at every block GC or a deleted file frees (which would refuse and accept by
// turns, releasing and allocating the ballast each time).
const resumeSlack = maxGroupBytes / 2

// admit accepts n bytes of new data or refuses them with ErrNoSpace. On success the
// caller must call done once the write has committed (or failed): until then its bytes
// count as used, since Badger may still be writing them.
func (g *spaceGuard) admit(n int64) (done func(), err error) {
	lsm := g.lsmBytes()
	// statfs under the lock: a free count read before a put in flight committed and
	// left inflight would count that put's bytes nowhere.
	g.mu.Lock()
	defer g.mu.Unlock()
	free, _, err := g.statfs(g.dir)
	if err != nil {
		return nil, fmt.Errorf("cas: %w", err)
	}
	// New data is taken only while the ballast holds the whole reserve.
	if g.held < g.target && g.grow(int64(free)-g.inflight) {
		if free, _, err = g.statfs(g.dir); err != nil {
			return nil, fmt.Errorf("cas: %w", err)
		}
	}
	if need := g.needLocked(n, lsm) + g.hysteresisLocked(); g.ballast != nil && g.held < g.target || int64(free) < need {
		g.log.Debug("refusing new data", "free", free, "needed", need, "held", g.held)
		if !g.refusing {
			g.refusing = true
			g.log.Warn("data directory nearly full: refusing new data; deletes and garbage collection go on",
				"dir", g.dir, "free", free, "needed", need, "reserve", g.target)
		}
		// The ballast stays: only a delete or a collection that needs its space
		// releases it (maintain), the moment it writes. Released here, at the first
		// refused put, it went to whichever program was filling the disk, and the
		// deletes and collections it was kept for found nothing (DESIGN.md rule 18).
		return nil, fmt.Errorf("cas: %w: %s has %d bytes free; new data is refused while less than %d bytes for Badger's flushes and compactions plus a reserve of %d that only deletes and garbage collection may use are free (delete snapshots and run GC, or free space on the file system)",
			ErrNoSpace, g.dir, free, g.floor(lsm), g.target)
	}
	if g.refusing {
		g.refusing = false
		g.log.Info("data directory has room again: accepting new data", "dir", g.dir, "free", free)
	}
	g.inflight += n
	return func() {
		g.mu.Lock()
		g.inflight -= n
		g.mu.Unlock()
	}, nil
}

// maintain lets a delete, a collection or a small record write proceed: it releases
// the ballast when free space is below the floor, and refuses only if even then Badger
// could not flush and compact without running out.
func (g *spaceGuard) maintain() error {
	free, _, err := g.statfs(g.dir)
	if err != nil {
		return fmt.Errorf("cas: %w", err)
	}
	floor := g.floor(g.lsmBytes())
	if int64(free) >= floor {
		return nil
	}
	g.mu.Lock()
	released := g.releaseLocked()
	g.mu.Unlock()
	if released {
		if free, _, err = g.statfs(g.dir); err != nil {
			return fmt.Errorf("cas: %w", err)
		}
	}
	if int64(free) < floor {
		return fmt.Errorf("cas: %w: %s has %d bytes free, below the %d Badger needs to flush and compact; free space outside the store",
			ErrNoSpace, g.dir, free, floor)
	}
	return nil
}

// grow allocates the ballast up to the target when free (bytes) leaves room for it
// above the floor; it reports whether it allocated anything. Called with g.mu held or
// before the guard is shared.
func (g *spaceGuard) grow(free int64) bool {
	if g.ballast == nil || g.held >= g.target || free < g.floor(g.lsmBytes())+(g.target-g.held)+resumeSlack {
		return false
	}
	if err := g.fallocate(int(g.ballast.Fd()), 0, 0, g.target); errors.Is(err, syscall.EOPNOTSUPP) {
		// No preallocation on this file system: the reserve is then only counted in
		// free space (needLocked), which still keeps new data from taking it but not
		// other programs.
		g.log.Warn("the data directory's file system cannot preallocate: the space reserve is kept as free space, which other programs can take", "dir", g.dir)
		_ = g.ballast.Close()
		_ = os.Remove(g.ballast.Name())
		g.ballast, g.held = nil, 0
		return false
	} else if err != nil {
		// Someone else took the space meanwhile: keep what is held, try again later.
		// Fallocate allocates nothing on failure but may leave a longer file.
		_ = g.ballast.Truncate(g.held)
		g.log.Debug("space reserve not allocated", "dir", g.dir, "err", err)
		return false
	}
	g.held = g.target
	return true
}

// releaseLocked frees the ballast's space; it reports whether there was any.
func (g *spaceGuard) releaseLocked() bool {
	if g.ballast == nil || g.held == 0 {
		return false
	}
	if err := g.ballast.Truncate(0); err != nil {
		g.log.Error("releasing the space reserve", "dir", g.dir, "err", err)
		return false
	}
	g.held = 0
	return true
}

// watch re-reads the free space every watchEvery until stop is closed: it releases the
// ballast when something outside the store filled the file system (so a delete, a
// collection or the memtable flush at close finds room), and allocates it again once
// the file system has room, so new data is accepted again without a restart.
func (g *spaceGuard) watch(stop <-chan struct{}) {
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		lsm := g.lsmBytes()
		g.mu.Lock()
		free, _, err := g.statfs(g.dir)
		if err != nil {
			g.mu.Unlock()
			continue
		}
		// Below the floor the reserve stays held: released here, it would go to whatever
		// fills the file system (another program), and the memtable flush of a Close or
		// the space a collection needs would find nothing (a SIGBUS in Badger's flush
		// was seen so). maintain releases it to the store's own deletes, collections and
		// close, and to nothing else.
		if int64(free) >= g.floor(lsm) {
			g.grow(int64(free) - g.inflight)
		}
		g.mu.Unlock()
	}
}

// useTables makes the guard read the LSM tree's size from Badger's table list, each
// table's file sized once (no directory listing per put); a size read in the last
// lsmFresh is reused. Not from TableInfo.OnDiskSize: Badger adds to it the value-log
// bytes the table's keys point at, so the floor counted every stored block and new
// data was refused with the disk half empty.
func (g *spaceGuard) useTables(db *badger.DB) {
	var (
		mu     sync.Mutex
		sizes  = map[uint64]int64{}
		cached int64
		at     time.Time
	)
	g.lsmBytes = func() int64 {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(at) < lsmFresh {
			return cached
		}
		now := make(map[uint64]int64, len(sizes))
		var n int64
		for _, t := range db.Tables() {
			size, ok := sizes[t.ID]
			if !ok {
				size = allocated(filepath.Join(g.dir, fmt.Sprintf("%06d.sst", t.ID)))
			}
			now[t.ID] = size
			n += size
		}
		sizes, cached, at = now, n, time.Now()
		return n
	}
}

// close closes the ballast (its space stays allocated for the next start).
func (g *spaceGuard) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ballast != nil {
		_ = g.ballast.Close()
		g.ballast = nil
	}
}

// SpaceStatus is what the free-space rule sees now (for /readyz and the status page).
type SpaceStatus struct {
	Dir string
	// Free is what the file system has free; Floor + Reserve is what new data needs
	// free (the part of Reserve the ballast holds counts as kept).
	Free, Floor, Reserve, Held int64
	// Accepting says whether new data is accepted now.
	Accepting bool
}

// Space reports the data directory's free space against the rule.
func (s *Store) Space() (SpaceStatus, error) {
	g := s.space
	free, _, err := g.statfs(g.dir)
	if err != nil {
		return SpaceStatus{Dir: g.dir}, fmt.Errorf("cas: %w", err)
	}
	lsm := g.lsmBytes()
	g.mu.Lock()
	defer g.mu.Unlock()
	accepting := int64(free) >= g.needLocked(0, lsm)+g.hysteresisLocked()
	if g.ballast != nil && g.held < g.target {
		accepting = int64(free) >= g.floor(lsm)+g.target-g.held+resumeSlack
	}
	return SpaceStatus{Dir: g.dir, Free: int64(free), Floor: g.floor(lsm), Reserve: g.target, Held: g.held,
		Accepting: accepting}, nil
}
