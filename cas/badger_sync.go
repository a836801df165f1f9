package cas

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// valueLogSync makes a Badger Sync cover every value-log file written since the last
// one. DB.Sync fsyncs the memtable's log and the value-log file being written only,
// and with SyncWrites off (DESIGN.md, "Durability budget") Badger does not fsync a
// value-log file when it moves on to the next one either: the blocks a snapshot's puts
// left in files written before the last rotation were still only in the page cache
// when CompleteSnapshot's Sync returned, and a power cut could lose blocks of a
// completed snapshot. The files rotated since the last Sync are fsynced first, then
// Badger's own Sync runs; a rotation in between is caught by looking again.
type valueLogSync struct {
	db    *badger.DB
	dir   string
	fsync func(path string) error

	mu     sync.Mutex
	synced uint64 // every value-log file numbered below it is on disk
	runs   int    // Syncs done, for tests
}

func newValueLogSync(db *badger.DB, dir string) *valueLogSync {
	v := &valueLogSync{db: db, dir: dir, fsync: fsyncPath}
	// What an earlier process wrote is the kernel's to write back (a killed process
	// leaves its pages in the page cache): counting from the file written now is
	// what this process owes.
	v.synced, _ = headValueLogPath(dir)
	return v
}

// Sync makes everything written so far durable.
func (v *valueLogSync) Sync() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	for range 3 {
		head, _ := headValueLogPath(v.dir)
		if err := v.syncBelow(head); err != nil {
			return err
		}
		if err := v.db.Sync(); err != nil {
			return err
		}
		if now, _ := headValueLogPath(v.dir); now == head {
			v.synced = head
			v.runs++
			return nil
		}
		// Badger moved on to a new file meanwhile: the one it left was neither
		// fsynced above (it was the head) nor by DB.Sync (it no longer is).
	}
	return errors.New("the value log kept moving to new files while it was being synced")
}

// syncBelow fsyncs the value-log files numbered from v.synced up to head (excluded).
func (v *valueLogSync) syncBelow(head uint64) error {
	for _, f := range valueLogFiles(v.dir) {
		if f.fid < v.synced || f.fid >= head {
			continue
		}
		if err := v.fsync(f.path); err != nil && !errors.Is(err, os.ErrNotExist) { // collected meanwhile
			return fmt.Errorf("fsync %s: %w", f.path, err)
		}
	}
	return nil
}

func fsyncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
