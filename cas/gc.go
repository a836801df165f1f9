package cas

import (
	"context"
	"fmt"
	"time"

	"github.com/ebsd/ebsd/cas/core"
)

// GCReport says what a collection found and did.
type GCReport struct {
	DryRun bool `json:"dryRun"`
	// SnapshotMapsReleased counts deleted snapshots whose block maps were dropped
	// because no live snapshot or open reader needs them any more.
	SnapshotMapsReleased int `json:"snapshotMapsReleased"`
	// RecordsDropped counts deleted snapshot records (and their client tokens) dropped
	// after TokenRetention.
	RecordsDropped int `json:"recordsDropped"`
	// BlocksReclaimed and BytesReclaimed are the unreferenced blocks deleted (or, dry, the
	// ones that would be); BlocksKept the ones still referenced.
	BlocksReclaimed int64 `json:"blocksReclaimed"`
	BytesReclaimed  int64 `json:"bytesReclaimed"`
	BlocksKept      int64 `json:"blocksKept"`
	// BytesKept is the stored (compressed) size of the blocks kept: what the store's
	// value log is brought within the bound of DESIGN.md rule 16 of.
	BytesKept int64 `json:"bytesKept"`
	// ValueLogFilesRewritten counts Badger value-log files garbage-collected.
	ValueLogFilesRewritten int `json:"valueLogFilesRewritten"`
	// ValueLogRotated says the collection made Badger start a new value-log file so
	// that the dead bytes of the one it was writing could be given back.
	ValueLogRotated bool `json:"valueLogRotated"`
	// DiskBytesBefore and DiskBytesAfter are the store's files on disk (allocated).
	DiskBytesBefore int64         `json:"diskBytesBefore"`
	DiskBytesAfter  int64         `json:"diskBytesAfter"`
	Duration        time.Duration `json:"durationNs"` // nanoseconds
}

// TokenRetention is how long a deleted snapshot's record and client token outlive it.
const TokenRetention = 24 * time.Hour

// GC reclaims the space of everything no live snapshot, pending snapshot, in-flight put
// or open reader can need (DESIGN.md rule 10): block maps of deleted snapshots without
// live descendants, then blocks no block map references, then Badger value-log files
// left mostly empty. A dry run only counts.
func (s *Store) GC(ctx context.Context, dryRun bool) (rep GCReport, err error) {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	start := time.Now()
	defer func() { s.recordGC(start, rep, err) }() // the history and metrics see every run
	err = s.withGCLock(ctx, func() error {
		var err error
		rep, err = s.collect(ctx, dryRun, start)
		return err
	})
	return rep, err
}

// collect is GC with the collection locks held.
func (s *Store) collect(ctx context.Context, dryRun bool, start time.Time) (rep GCReport, err error) {
	rep = GCReport{DryRun: dryRun, DiskBytesBefore: dirBytes(s.opts.Dir)}
	if !dryRun {
		// A collection writes (tombstones, a memtable flush, value-log rewrites) even
		// when it finds nothing to drop: it needs the floor like any write, and may use
		// the reserve (DESIGN.md, Free space).
		if err := s.space.maintain(); err != nil {
			return rep, err
		}
	}
	released, err := s.releaseDeleted(ctx, dryRun, &rep)
	if err != nil {
		return rep, err
	}
	s.gcStage(GCReleased, rep.SnapshotMapsReleased)
	if !dryRun {
		s.startTracking()
		defer s.stopTracking()
	}
	marked, err := s.markReferenced(ctx, released)
	if err != nil {
		return rep, err
	}
	s.gcStage(GCMarked, len(marked))
	garbage, err := s.unreferencedBlocks(ctx, marked, &rep)
	if err != nil {
		return rep, err
	}
	if !dryRun {
		sweep := s.sweep
		if s.shared() {
			sweep = s.sweepShared
		}
		if err := sweep(ctx, garbage, &rep); err != nil {
			return rep, err
		}
		s.gcStage(GCSwept, int(rep.BlocksReclaimed))
		s.stopTracking()
		live := s.liveStored(rep.BytesKept)
		if err := s.reclaimValueLog(ctx, live, s.reclaimTarget(live), &rep); err != nil {
			return rep, err
		}
	} else {
		for _, g := range garbage {
			rep.BlocksReclaimed++
			rep.BytesReclaimed += g.size
		}
	}
	rep.DiskBytesAfter = dirBytes(s.opts.Dir)
	rep.Duration = time.Since(start)
	s.log.Info("garbage collection", "dry_run", dryRun, "maps_released", rep.SnapshotMapsReleased,
		"blocks_reclaimed", rep.BlocksReclaimed, "bytes_reclaimed", rep.BytesReclaimed, "blocks_kept", rep.BlocksKept,
		"vlog_files_rewritten", rep.ValueLogFilesRewritten, "disk_before", rep.DiskBytesBefore, "disk_after", rep.DiskBytesAfter,
		"duration", rep.Duration)
	return rep, nil
}

// releaseDeleted drops the block maps of deleted snapshots that no live snapshot (as an
// ancestor) and no open view needs, and the records of those deleted long enough ago.
// It returns the snapshots whose maps are (or, dry, would be) released.
func (s *Store) releaseDeleted(ctx context.Context, dryRun bool, rep *GCReport) (map[string]bool, error) {
	var leased map[string]bool // views other daemons hold open
	if s.shared() {
		if err := s.refreshAll(ctx); err != nil {
			return nil, err
		}
		var err error
		if leased, err = s.leasedSnapshots(ctx); err != nil {
			return nil, err
		}
	}
	s.snapsMu.RLock()
	entries := make(map[string]*entry, len(s.snaps))
	for id, e := range s.snaps {
		entries[id] = e
	}
	s.snapsMu.RUnlock()
	needed := make(map[string]bool)
	for id, e := range entries {
		if e.deleted.Load() && e.pins.Load() == 0 && !leased[id] {
			continue
		}
		for cur := id; cur != "" && !needed[cur]; {
			needed[cur] = true
			pe := entries[cur]
			if pe == nil {
				break
			}
			cur = pe.snapshot().ParentID
		}
	}
	now := s.clock.Now()
	released := make(map[string]bool)
	for id, e := range entries {
		if !e.deleted.Load() || needed[id] {
			continue
		}
		released[id] = true
		snap := e.snapshot()
		if !snap.MapReleased {
			rep.SnapshotMapsReleased++
			if !dryRun {
				if err := s.dropMap(ctx, id); err != nil {
					return nil, fmt.Errorf("cas: release map of deleted %s: %w", id, err)
				}
				e.mu.Lock()
				rec := e.rec.Clone()
				rec.MapReleased = true
				err := s.writeRecord(e.rec, rec)
				if err == nil {
					e.rec = rec
				}
				e.mu.Unlock()
				if err != nil {
					return nil, err
				}
			}
		}
		if now.Sub(snap.DeletedAt) >= TokenRetention {
			rep.RecordsDropped++
			if !dryRun {
				if err := s.dropRecord(snap); err != nil {
					return nil, err
				}
			}
		}
	}
	return released, nil
}

// dropRecord forgets a deleted snapshot and its client token for good.
func (s *Store) dropRecord(snap Snapshot) error {
	err := s.commit(context.Background(), func(txn core.CatalogTx) error {
		if snap.ClientToken != "" {
			if err := txn.Delete(tokenKey(snap.OwnerID, snap.Region, snap.ClientToken)); err != nil {
				return err
			}
		}
		if err := txn.Delete(activityKey(snap.ID)); err != nil {
			return err
		}
		return txn.Delete(snapshotKey(snap.ID))
	})
	if err != nil {
		return fmt.Errorf("cas: drop record of %s: %w", snap.ID, err)
	}
	s.snapsMu.Lock()
	delete(s.snaps, snap.ID)
	s.snapsMu.Unlock()
	s.ctr.noteState(&snap, nil)
	return nil
}

// startTracking makes every put from now on record its digest, after waiting for the
// puts already past their "is this block stored?" check: each of them has committed its
// map entry before the mark begins, and every later one is recorded. Together the mark
// and the record cover every block a put may rely on.
func (s *Store) startTracking() {
	for i := range s.stripes {
		s.stripes[i].Lock()
	}
	s.touchMu.Lock()
	s.touched = make(map[Digest]struct{})
	s.touchMu.Unlock()
	s.tracking.Store(true)
	for i := range s.stripes {
		s.stripes[i].Unlock()
	}
}

func (s *Store) stopTracking() {
	s.tracking.Store(false)
	s.touchMu.Lock()
	s.touched = nil
	s.touchMu.Unlock()
}

// noteTouched records a digest a put relies on while a collection runs. The put holds
// the digest's stripe shared, so it sees tracking switched on by the barrier; outside a
// collection it costs one atomic load.
func (s *Store) noteTouched(d Digest) {
	if !s.tracking.Load() {
		return
	}
	s.touchMu.Lock()
	if s.touched != nil {
		s.touched[d] = struct{}{}
	}
	s.touchMu.Unlock()
}

func (s *Store) wasTouched(d Digest) bool {
	s.touchMu.Lock()
	defer s.touchMu.Unlock()
	_, ok := s.touched[d]
	return ok
}

// markReferenced returns every digest some block map points at: live, pending, and
// deleted-but-needed snapshots alike. Maps of the released snapshots are skipped (a dry
// run has not dropped them).
func (s *Store) markReferenced(ctx context.Context, released map[string]bool) (map[Digest]struct{}, error) {
	marked := make(map[Digest]struct{})
	err := s.view(ctx, func(txn core.CatalogTx) error {
		return txn.Scan([]byte{prefixMap}, nil, func(k, v []byte) (bool, error) {
			if err := ctx.Err(); err != nil {
				return false, err
			}
			if len(k) < 10 || released[string(k[1:len(k)-9])] {
				return true, nil
			}
			if len(v) != len(Digest{}) {
				return false, fmt.Errorf("%w: map entry %x has %d bytes", ErrCorruptBlock, k, len(v))
			}
			marked[Digest(v)] = struct{}{}
			return true, nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("cas: mark: %w", err)
	}
	return marked, nil
}

type garbageBlock struct {
	d    Digest
	size int64
}

func (s *Store) unreferencedBlocks(ctx context.Context, marked map[Digest]struct{}, rep *GCReport) ([]garbageBlock, error) {
	var out []garbageBlock
	err := s.blocks.Walk(ctx, Digest{}, func(d Digest, size int64) error {
		if _, ok := marked[d]; ok {
			rep.BlocksKept++
			rep.BytesKept += size
			return nil
		}
		out = append(out, garbageBlock{d: d, size: size})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cas: find unreferenced blocks: %w", err)
	}
	return out, nil
}

// reclaimed counts blocks a sweep deleted: in the store's counters, in the report and
// in the collection's progress.
func (s *Store) reclaimed(doomed []garbageBlock, rep *GCReport) {
	s.ctr.blocksRemoved(doomed)
	for _, g := range doomed {
		rep.BlocksReclaimed++
		rep.BytesReclaimed += g.size
	}
	s.gcStage(GCSweeping, int(rep.BlocksReclaimed))
}

// sweep deletes unreferenced blocks, one stripe at a time under that stripe's lock,
// skipping any a put has relied on since the mark began.
func (s *Store) sweep(ctx context.Context, garbage []garbageBlock, rep *GCReport) error {
	var byStripe [256][]garbageBlock
	for _, g := range garbage {
		byStripe[g.d[0]] = append(byStripe[g.d[0]], g)
	}
	for i := range byStripe {
		if len(byStripe[i]) == 0 {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		s.stripes[i].Lock()
		var doomed []garbageBlock
		for _, g := range byStripe[i] {
			if s.wasTouched(g.d) {
				rep.BlocksKept++
				rep.BytesKept += g.size
				continue
			}
			doomed = append(doomed, g)
		}
		ds := make([]Digest, len(doomed))
		for k, g := range doomed {
			ds[k] = g.d
		}
		err := s.blocks.Delete(ctx, ds) // the embedded engine takes the write gate itself
		s.stripes[i].Unlock()
		if err != nil {
			return fmt.Errorf("cas: sweep: %w", err)
		}
		s.reclaimed(doomed, rep)
	}
	return s.sync()
}
