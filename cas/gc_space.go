package cas

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/sys/unix"
)

// How much space a collection gives back (DESIGN.md rule 16). Badger frees value-log
// space only by rewriting a whole file (moving its live values to the file being
// written, then deleting it), it picks only the file with the most dead bytes, and it
// never rewrites the file being written (the head). A store smaller than one file has
// nothing but a head, so without help nothing ever came back. A collection therefore:
//
//  1. rewrites every file at least half dead (cheap: it moves at most half a file);
//  2. while the value log still exceeds the live stored bytes by more than
//     reclaimTarget, rewrites the file with the most dead bytes whatever its ratio;
//  3. if that is still not enough and the head holds the garbage, makes Badger start a
//     new head (rotateValueLog) and goes on with step 2.
//
// Each file is rewritten with writes paused (rewriteValueLogFile), so the size of one
// value-log file bounds how long a put waits.

const (
	// spaceSlack, smallStoreFiles and spaceFraction make the bound a collection
	// promises (spaceBound).
	spaceSlack      = 1 << 20
	smallStoreFiles = 4
	spaceFraction   = 10
	// lowDiscardRatio is the smallest share of dead bytes for which step 2 rewrites a
	// file: below it a rewrite moves almost a whole file to free almost nothing.
	lowDiscardRatio = 0.02
	// rotatePiece is the size of the values a rotation pads the head with.
	rotatePiece = 4 << 20
	// maxTailScan bounds how far back writtenLength looks for the head's last byte.
	maxTailScan = 4 << 20
)

// spaceBound is the most a collected store's value log may exceed its live stored
// bytes by: 1 MiB, plus a tenth of whatever the store holds beyond its first four
// value-log files (256 MiB by default).
//
// Going below a tenth means rewriting files that are mostly live, moving many bytes
// for each one freed, which a large store must not do at every collection. Its first
// four files are the exception: rewriting all of them costs four files of I/O, and
// without it a small store (a first snapshot, a test, a benchmark) kept up to a whole
// file of dead bytes, as much as its data; after settling, mostly the old copies in
// the head.
func (s *Store) spaceBound(live int64) int64 {
	return max(spaceSlack, (live-smallStoreFiles*s.opts.ValueLogFileSize)/spaceFraction)
}

// reclaimTarget is where a collection stops rewriting: three quarters of the bound, so
// the memtable and LSM growth of the next puts do not take the store past it at once,
// and the next collection does not start with a file to rewrite for a few bytes.
func (s *Store) reclaimTarget(live int64) int64 { return s.spaceBound(live) / 4 * 3 }

// liveStored is the stored size of the blocks a collection kept, or more if the
// counters, which also see the blocks put since the mark, know better.
func (s *Store) liveStored(kept int64) int64 {
	if s.ctr.contentsReady.Load() {
		return max(kept, s.ctr.storedBytes.Load())
	}
	return kept
}

// reclaimValueLog gives the space of deleted blocks back to the file system until the
// value log exceeds live, the bytes of the blocks still stored, by at most target.
// Badger learns that value-log entries are dead only when compaction drops their keys,
// and a memtable is compacted only after it is flushed: the collection flushes it (by
// dropping a marker key, the one public way) and flattens the LSM tree first.
func (s *Store) reclaimValueLog(ctx context.Context, live, target int64, rep *GCReport) error {
	if err := s.dropRotationPadding(); err != nil {
		return err
	}
	if err := s.settleDiscards(); err != nil {
		return err
	}
	// Each rewrite empties a file that existed before it (Badger never picks the head);
	// files it creates hold only live values. The limit only guards against Badger's
	// statistics pointing at files it cannot give back.
	limit := s.countValueLogFiles() + 2
	rotated, checked, room := false, false, false
	// What is left over after a rotation is not garbage a rewrite can give back (values
	// other than blocks that outgrew the value threshold, entry headers), or less than
	// the target: counted again, it would rotate the head at every collection for
	// nothing. It shrinks as deletes take it away.
	defer func() {
		if rotated {
			s.unmovable = max(0, valueLogBytes(s.opts.Dir)-live)
		}
	}()
	for n := 0; n < limit; n++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		excess := valueLogBytes(s.opts.Dir) - live
		s.unmovable = min(s.unmovable, max(0, excess)) // deletes took some of it
		over := excess - s.unmovable - target
		if over > 0 && !checked {
			checked, room = true, s.roomToReclaim()
		}
		if !room {
			over = 0 // only what the full-disk reserve covers (space.go)
		}
		ratio := 0.5
		if over > 0 {
			ratio = lowDiscardRatio
		}
		err := s.rewriteValueLogFile(ratio)
		switch {
		case err == nil:
			rep.ValueLogFilesRewritten++
			s.gcStage(GCValueLogRewritten, rep.ValueLogFilesRewritten)
			continue
		case errors.Is(err, badger.ErrRejected):
			return nil // Badger is closing
		case !errors.Is(err, badger.ErrNoRewrite):
			return fmt.Errorf("cas: value log gc: %w", err)
		}
		if over <= 0 || rotated {
			return nil
		}
		// Every other file is clean enough: what is left over is in the head.
		rotated = true
		ok, err := s.rotateValueLog()
		if err != nil {
			return err
		}
		if !ok {
			return nil
		}
		rep.ValueLogRotated = true
		if err := s.settleDiscards(); err != nil {
			return err
		}
	}
	return nil
}

// settleDiscards makes Badger count every deleted value as dead: it flushes the
// memtable and compacts the whole LSM tree, which drops the deleted keys and credits
// their values to Badger's per-file discard statistics.
func (s *Store) settleDiscards() error {
	if err := s.flushMemtable(); err != nil {
		return err
	}
	if err := s.db.Flatten(2); err != nil {
		return fmt.Errorf("cas: flatten: %w", err)
	}
	return nil
}

// rewriteValueLogFile rewrites the value-log file with the most dead data if at least
// ratio of it is dead. Writes pause meanwhile: Badger's rewrite reads the memtable's
// version (DB.MaxVersion) without synchronisation against concurrent commits (a data
// race -race reports). Holding the gate per file, not per collection, lets puts run
// between files; the file size bounds each pause.
//
// A rewrite writes the live values into the head without an fsync (SyncWrites is off)
// and then deletes the old file: until the moved values reach the disk, a power cut
// would lose blocks of completed snapshots. They are fsynced at once; Badger offers no
// way to do it before the delete, so a power cut in the moment between the two is the
// window that remains.
func (s *Store) rewriteValueLogFile(ratio float64) error {
	s.writeGate.Lock()
	defer s.writeGate.Unlock()
	if err := s.db.RunValueLogGC(ratio); err != nil {
		return err
	}
	if err := s.dbSync.Sync(); err != nil {
		return fmt.Errorf("cas: sync after a value-log rewrite: %w", err)
	}
	return nil
}

func (s *Store) flushMemtable() error {
	s.writeGate.Lock()
	defer s.writeGate.Unlock()
	marker := metaKey("gc-flush")
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(marker, []byte{1}) }); err != nil {
		return fmt.Errorf("cas: flush marker: %w", err)
	}
	if err := s.db.DropPrefix(marker); err != nil {
		return fmt.Errorf("cas: flush memtable: %w", err)
	}
	return nil
}

// rotateValueLog makes Badger close the value-log file it is writing and start a new
// one, so the old head can be rewritten. Badger has no call for it: it starts a new
// file after the write that takes the head past ValueLogFileSize, so a collection
// writes padding that does, in one transaction (Badger keeps a transaction's values in
// one file), then deletes it: the padding is dead at once and goes with the old head's
// rewrite. The padding is at most one file, written as values of rotatePiece so that
// neither this nor Badger's encoding buffer holds a whole file in memory.
func (s *Store) rotateValueLog() (bool, error) {
	size := s.opts.ValueLogFileSize
	zeros := make([]byte, min(rotatePiece, size))
	for range 3 { // the head's size is estimated (writtenLength)
		fid, used := headValueLog(s.opts.Dir)
		if fid == 0 {
			return false, nil
		}
		pad := rotationPadding(size, used, s.opts.ValueThreshold)
		var keys [][]byte
		for off := int64(0); off < pad; off += int64(len(zeros)) {
			keys = append(keys, append(metaKey(rotatePrefix), strconv.Itoa(len(keys))...))
		}
		err := s.update(func(txn *badger.Txn) error {
			for _, k := range keys {
				if err := txn.Set(k, zeros); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return false, fmt.Errorf("cas: value-log rotation: %w", err)
		}
		if err := s.dropRotationPadding(); err != nil {
			return false, err
		}
		if next, _ := headValueLog(s.opts.Dir); next > fid {
			return true, nil
		}
	}
	return false, nil
}

// rotationPadding is how many bytes of padding take a head of about used bytes (what
// writtenLength finds, which a value ending in zeros makes short by a few bytes) past
// size, so that Badger starts a new file: the rest of the file plus a
// margin that makes one padding enough in the common case (rotateValueLog's loop
// covers the rest), at least one value-log value. The margin is at most a quarter
// file and the padding at most one file, so the head stays below twice its size,
// which is what Badger maps (DESIGN.md rule 34).
func rotationPadding(size, used, valueThreshold int64) int64 {
	margin := min(1<<20, size/4)
	return min(max(size-used+margin, valueThreshold), size)
}

// rotatePrefix starts the names of the padding values (metaKey).
const rotatePrefix = "gc-rotate/"

// dropRotationPadding deletes the padding of a rotation: right after writing it, and at
// every collection in case a crash came in between (the padding would otherwise stay
// live, a file's worth of it).
func (s *Store) dropRotationPadding() error {
	var keys [][]byte
	prefix := metaKey(rotatePrefix)
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		return nil
	})
	if err == nil && len(keys) > 0 {
		err = s.update(func(txn *badger.Txn) error {
			for _, k := range keys {
				if err := txn.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err != nil {
		return fmt.Errorf("cas: drop value-log rotation padding: %w", err)
	}
	return nil
}

// roomToReclaim says whether the file system has room for the steps beyond rewriting
// files at least half dead. A rewrite writes the live part of a file before deleting
// it: at most half a file for step 1, which the full-disk reserve (space.go) covers, but
// almost a whole one for step 2, and a rotation's padding is up to one more. Without two
// files' worth free, and a memtable's for Badger to flush and compact, those steps wait
// for a later collection.
func (s *Store) roomToReclaim() bool {
	need := 2*s.opts.ValueLogFileSize + s.space.memtable
	free, ok := freeBytes(s.opts.Dir)
	if !ok || free >= uint64(need) {
		return true
	}
	s.log.Warn("garbage collection: too little free space to rewrite value-log files that are mostly live; the store stays above its bound until there is room",
		"free", free, "needed", need)
	return false
}

// headValueLog returns the number of the value-log file Badger writes (the highest) and
// how much of it Badger has written, or 0 when there is none.
func headValueLog(dir string) (fid uint64, used int64) {
	fid, head := headValueLogPath(dir)
	if fid == 0 {
		return 0, 0
	}
	return fid, writtenLength(head)
}

// headValueLogPath returns the number and path of the value-log file Badger writes
// (the highest), or 0 when there is none.
func headValueLogPath(dir string) (fid uint64, head string) {
	for _, f := range valueLogFiles(dir) {
		if f.fid > fid {
			fid, head = f.fid, f.path
		}
	}
	return fid, head
}

// valueLogFile is one of Badger's value-log files, by its number.
type valueLogFile struct {
	fid  uint64
	path string
}

// valueLogFiles lists the value-log files in dir.
func valueLogFiles(dir string) []valueLogFile {
	paths, _ := filepath.Glob(filepath.Join(dir, "*.vlog"))
	files := make([]valueLogFile, 0, len(paths))
	for _, p := range paths {
		if fid, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(p), ".vlog"), 10, 32); err == nil {
			files = append(files, valueLogFile{fid: fid, path: p})
		}
	}
	return files
}

// writtenLength is how much of the value-log file Badger writes it has written. The
// file is sparse (mapped at twice its size) and written through the mapping, and the
// page cache may hold it in large folios (ext4 on Linux 6.16 and later uses up to
// 2 MiB): a write allocates the whole folio, so the file's allocation runs up to a
// folio past Badger's last write until Badger trims the file at rotation or close.
// Counted as garbage, that tail would make every collection rotate the head for
// nothing. Every entry ends in its checksum, so the written part ends at the last
// non-zero byte; the scan reads at most maxTailScan back from the end of the data.
// It is never more than the allocation, which is all a file system that cannot tell
// data from holes (SEEK_HOLE at the end of the file) leaves to go by.
func writtenLength(path string) int64 {
	alloc := allocated(path)
	f, err := os.Open(path)
	if err != nil {
		return alloc
	}
	defer f.Close()
	end, err := f.Seek(0, unix.SEEK_HOLE) // the end of the data from the start
	if err != nil {
		return alloc
	}
	end = min(end, alloc)
	buf := make([]byte, 64<<10)
	for pos := end; pos > 0 && end-pos < maxTailScan; {
		n := min(pos, int64(len(buf)))
		pos -= n
		if _, err := f.ReadAt(buf[:n], pos); err != nil {
			return end
		}
		for i := n - 1; i >= 0; i-- {
			if buf[i] != 0 {
				return pos + i + 1
			}
		}
	}
	return end
}

func (s *Store) countValueLogFiles() int {
	paths, _ := filepath.Glob(filepath.Join(s.opts.Dir, "*.vlog"))
	return len(paths)
}

// valueLogBytes is the space the value log takes: the value-log files' allocation, as
// du counts it, but only the written part of the file Badger writes (writtenLength).
// The bound is kept on the value log alone: the LSM tree's dead entries are gone
// once it is flattened, and its live ones (block maps, records) are not stored bytes
// that any rewrite could shrink; counting them would make every collection rewrite in
// vain on a store with many large maps.
func valueLogBytes(dir string) int64 {
	files := valueLogFiles(dir)
	var head uint64
	for _, f := range files {
		head = max(head, f.fid)
	}
	var n int64
	for _, f := range files {
		if f.fid == head {
			n += writtenLength(f.path)
		} else {
			n += allocated(f.path)
		}
	}
	return n
}

// allocated is the space a file takes on disk (Badger's files are sparse).
func allocated(path string) int64 {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0
	}
	return st.Blocks * 512
}

// freeBytes is what an unprivileged writer may still allocate in dir's file system.
func freeBytes(dir string) (uint64, bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, false
	}
	return st.Bavail * uint64(st.Bsize), true
}
