package cas

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/ebsd/ebsd/cas/core"
)

// Counters are the store's running totals, for metrics. Reading them scans nothing:
// every number is kept up to date where the store changes, so a scrape costs the same
// on an empty store and on a full one. The package knows nothing of Prometheus;
// api/ops exports these.
type Counters struct {
	// Block puts committed since the store opened, by outcome: a new block stored,
	// a block already in the store (deduplicated), an all-zero block (never stored).
	// Their sum is every block written.
	BlocksStored       int64
	BlocksDeduplicated int64
	BlocksZero         int64
	// GroupCommits[n] counts the commits that carried n block writes (1 ≤ n ≤
	// MaxGroupCommit; index 0 is unused); GroupCommitFailures those that failed.
	GroupCommits        [MaxGroupCommit + 1]int64
	GroupCommitFailures int64
	// BlockReadFailures are block reads refused since the store opened because the block
	// was missing, undecodable or did not hash to its key: corruption found by reads.
	BlockReadFailures int64

	// ContentsReady says the count of the store's contents made at open has finished;
	// until then UniqueBlocks, StoredBytes, MappedBlocks and ZeroMappedBlocks are zero.
	// Once ready they equal what a scan (Stats) would find, as of now; after a crash
	// too, since the count at open reads what is there. One case drifts until the next
	// start: a block-map release that fails halfway (Badger error, or cancelled while
	// it deletes), which the error log shows.
	ContentsReady bool
	// UniqueBlocks are the distinct non-zero blocks stored, StoredBytes their size after
	// compression as Badger records it (the measure of Stats and GCReport).
	UniqueBlocks int64
	StoredBytes  int64
	// MappedBlocks are the block-map entries of all snapshots (each index each snapshot
	// wrote, deleted snapshots included until collection releases their maps);
	// ZeroMappedBlocks those of them that are all zeros.
	MappedBlocks     int64
	ZeroMappedBlocks int64

	// Snapshots by state. Deleted ones count until collection drops their record.
	Pending, Completed, Errored, Deleted int64
	// LogicalBytes is the sum of the volume sizes of the snapshots not deleted: what
	// full copies of them would take.
	LogicalBytes int64

	// GC sums up the garbage collections since the store opened.
	GC GCTotals
	// Settle sums up settling (settle.go): since the store opened, and since it was
	// created.
	Settle SettleCounters

	// LSMBytes and VlogBytes are Badger's file sizes as Badger last measured them (it
	// does so about once a minute).
	LSMBytes, VlogBytes int64
	// Closed says Close has been called.
	Closed bool
}

// MaxGroupCommit is the most block writes one commit carries.
const MaxGroupCommit = maxGroup

// counters are the atomics behind Counters, one field of the Store.
type counters struct {
	blocksStored, blocksDedup, blocksZero atomic.Int64
	groupSizes                            [maxGroup + 1]atomic.Int64
	groupFailures                         atomic.Int64
	readFailures                          atomic.Int64

	// Contents. Until contentsReady these hold only the changes since Open; the count
	// at open then adds what the store held when it opened (see countAtOpen).
	contentsReady                                 atomic.Bool
	uniqueBlocks, storedBytes, mapped, zeroMapped atomic.Int64
	countedOnce                                   sync.Once
	counted                                       chan struct{} // closed when countAtOpen ends

	states       [numStates]atomic.Int64
	logicalBytes atomic.Int64

	gc gcHistory
}

// Counters returns the store's running totals.
func (s *Store) Counters() Counters {
	c := &s.ctr
	out := Counters{
		BlocksStored:        c.blocksStored.Load(),
		BlocksDeduplicated:  c.blocksDedup.Load(),
		BlocksZero:          c.blocksZero.Load(),
		GroupCommitFailures: c.groupFailures.Load(),
		BlockReadFailures:   c.readFailures.Load(),
		ContentsReady:       c.contentsReady.Load(),
		Pending:             c.states[statePending].Load(),
		Completed:           c.states[stateCompleted].Load(),
		Errored:             c.states[stateError].Load(),
		Deleted:             c.states[stateDeleted].Load(),
		LogicalBytes:        c.logicalBytes.Load(),
		GC:                  c.gc.totalsCopy(),
		Settle:              s.SettleCounters(),
		Closed:              s.Closed(),
	}
	for i := range c.groupSizes {
		out.GroupCommits[i] = c.groupSizes[i].Load()
	}
	if out.ContentsReady {
		out.UniqueBlocks = c.uniqueBlocks.Load()
		out.StoredBytes = c.storedBytes.Load()
		out.MappedBlocks = c.mapped.Load()
		out.ZeroMappedBlocks = c.zeroMapped.Load()
	}
	out.LSMBytes, out.VlogBytes = s.db.Size() // Badger's own gauges: cheap, safe after Close
	return out
}

// ContentsCounted is closed when the count of the store's contents at open has ended;
// Counters().ContentsReady then says whether it succeeded (it does not when the store
// closed first or Badger failed).
func (s *Store) ContentsCounted() <-chan struct{} { return s.ctr.countedCh() }

func (c *counters) countedCh() chan struct{} {
	c.countedOnce.Do(func() { c.counted = make(chan struct{}) })
	return c.counted
}

// Closed reports whether Close has been called: the store takes no more writes.
func (s *Store) Closed() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

// Snapshot states as the counters see them: a deleted snapshot counts as deleted
// whatever its status.
const (
	statePending = iota
	stateCompleted
	stateError
	stateDeleted
	numStates
)

func stateOf(rec *Snapshot) int {
	switch {
	case !rec.DeletedAt.IsZero():
		return stateDeleted
	case rec.Status == StatusPending:
		return statePending
	case rec.Status == StatusCompleted:
		return stateCompleted
	default:
		return stateError
	}
}

// noteState counts a snapshot record replacing another; nil stands for no record (a
// snapshot created or loaded, a record dropped). It is called where the in-memory
// record changes, so the counts follow the catalog exactly.
func (c *counters) noteState(before, after *Snapshot) {
	if before != nil {
		c.states[stateOf(before)].Add(-1)
		if before.DeletedAt.IsZero() {
			c.logicalBytes.Add(-before.VolumeSize << 30)
		}
	}
	if after != nil {
		c.states[stateOf(after)].Add(1)
		if after.DeletedAt.IsZero() {
			c.logicalBytes.Add(after.VolumeSize << 30)
		}
	}
}

// putTally is what one group commit changes. It is worked out inside the commit's
// transaction, which sees every earlier commit (commits are serialised by the group
// committer) and its own earlier writes, and applied only once the commit succeeds.
type putTally struct {
	stored, dedup, zero int64
	newBlocks, newBytes int64 // blocks this commit adds to the store, and their stored size
	mapped, zeroMapped  int64 // changes to the block-map counts
}

// noteMap tallies op's map entry before it is written in txn.
func (t *putTally) noteMap(txn core.CatalogTx, op *writeOp) error {
	// A put to an index written before replaces its map entry: the entry count stays.
	v, err := txn.Get(op.mapKey)
	switch {
	case errors.Is(err, core.ErrKeyNotFound):
		t.mapped++
	case err != nil:
		return fmt.Errorf("cas: count map entry: %w", err)
	case len(v) == len(Digest{}) && Digest(v) == ZeroDigest:
		t.zeroMapped--
	}
	if op.digest == ZeroDigest {
		t.zeroMapped++
	}
	return nil
}

// resetMaps forgets what noteMap tallied, before a transaction runs again.
func (t *putTally) resetMaps() { t.mapped, t.zeroMapped = 0, 0 }

// applyPuts adds a committed group's tally. A new block's stored size is the length of
// the value put, which is what Stat, Stats and GC measure.
func (s *Store) applyPuts(t *putTally) {
	c := &s.ctr
	c.blocksStored.Add(t.stored)
	c.blocksDedup.Add(t.dedup)
	c.blocksZero.Add(t.zero)
	c.mapped.Add(t.mapped)
	c.zeroMapped.Add(t.zeroMapped)
	c.uniqueBlocks.Add(t.newBlocks)
	c.storedBytes.Add(t.newBytes)
}

// noteGroup counts one group commit of n writes.
func (c *counters) noteGroup(n int, err error) {
	c.groupSizes[min(n, maxGroup)].Add(1)
	if err != nil {
		c.groupFailures.Add(1)
	}
}

// unmapped counts block-map entries deleted (a released map).
func (c *counters) unmapped(entries, zeros int64) {
	c.mapped.Add(-entries)
	c.zeroMapped.Add(-zeros)
}

// blocksRemoved counts blocks deleted from the store, with their stored sizes as
// the block store gave them.
func (c *counters) blocksRemoved(blocks []garbageBlock) {
	var size int64
	for _, g := range blocks {
		size += g.size
	}
	c.uniqueBlocks.Add(-int64(len(blocks)))
	c.storedBytes.Add(-size)
}

// zeroEntry says whether a block-map entry holds the zero digest. A damaged entry (not
// 32 bytes) is not zero, as Stats counts it.
func zeroEntry(item *badger.Item) (bool, error) {
	var zero bool
	err := item.Value(func(v []byte) error {
		zero = len(v) == len(Digest{}) && Digest(v) == ZeroDigest
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("cas: read map entry: %w", err)
	}
	return zero, nil
}

// countBlocksAtOpen counts the blocks of a block store that is not the store's own
// Badger DB (countAtOpen reads those in its transaction). No read view spans both, so
// it runs in Open before anything can write, and costs one listing of the engine per
// start.
func (s *Store) countBlocksAtOpen(ctx context.Context) error {
	var unique, stored int64
	err := s.blocks.Walk(ctx, Digest{}, func(_ Digest, size int64) error {
		unique++
		stored += size
		return nil
	})
	if err != nil {
		return fmt.Errorf("cas: count stored blocks: %w", err)
	}
	s.ctr.uniqueBlocks.Add(unique)
	s.ctr.storedBytes.Add(stored)
	return nil
}

// countMapsAtOpen counts the block-map entries of a catalog that is not the store's
// own Badger DB, in Open before anything can write, as countBlocksAtOpen does blocks.
// A catalog other daemons share changes under them: there the counts are this
// daemon's view at its start plus its own changes.
func (s *Store) countMapsAtOpen(ctx context.Context) error {
	var mapped, zeros int64
	err := s.view(ctx, func(txn core.CatalogTx) error {
		mapped, zeros = 0, 0
		return txn.Scan([]byte{prefixMap}, nil, func(_, v []byte) (bool, error) {
			mapped++
			if len(v) == len(Digest{}) && Digest(v) == ZeroDigest {
				zeros++
			}
			return true, nil
		})
	})
	if err != nil {
		return fmt.Errorf("cas: count block-map entries: %w", err)
	}
	s.ctr.mapped.Add(mapped)
	s.ctr.zeroMapped.Add(zeros)
	return nil
}

// countAtOpen counts what the store held when it opened, in txn, a read transaction
// begun in Open before anything could write: every later change is in the counters'
// deltas and nothing before it is, so adding the two is exact whatever runs meanwhile.
// It costs one pass over the keys (values of block-map entries are small and live in
// the LSM tree), once per start, in the background; it stops early when the store
// closes.
func (s *Store) countAtOpen(txn *badger.Txn) {
	defer s.wg.Done()
	defer close(s.ctr.countedCh())
	defer txn.Discard()
	began := time.Now()
	var unique, stored, mapped, zeros int64
	n := 0
	stopping := func() bool {
		n++
		return n%4096 == 0 && s.Closed()
	}
	if s.local != nil {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixBlock}})
		for it.Rewind(); it.Valid(); it.Next() {
			if stopping() {
				it.Close()
				return
			}
			unique++
			stored += valueLen(it.Item())
		}
		it.Close()
	}
	if s.localCat != nil {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixMap}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if stopping() {
				return
			}
			mapped++
			zero, err := zeroEntry(it.Item())
			if err != nil {
				s.log.Error("counting the store's contents failed: store size metrics stay unavailable until restart", "err", err)
				return
			}
			if zero {
				zeros++
			}
		}
	}
	c := &s.ctr
	c.uniqueBlocks.Add(unique)
	c.storedBytes.Add(stored)
	c.mapped.Add(mapped)
	c.zeroMapped.Add(zeros)
	c.contentsReady.Store(true) // after the adds: a reader that sees ready sees them
	s.log.Info("store contents counted", "unique_blocks", unique, "stored_bytes", stored,
		"mapped_blocks", mapped, "zero_mapped_blocks", zeros, "duration", time.Since(began))
}
