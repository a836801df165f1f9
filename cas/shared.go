package cas

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ebsd/ebsd/cas/core"
)

// A shared catalog (Options.Catalog, e.g. PostgreSQL) is read and written by several
// daemons at once. Each daemon still keeps its in-memory entries (catalog.go), but
// there they are a cache of the catalog, not the truth, and the rules change:
//
//   - Every lookup re-reads the snapshot's record, and every listing re-reads all
//     records, so a daemon answers with what any daemon committed before the request
//     arrived (a snapshot started, completed, tagged or deleted elsewhere).
//   - What the in-memory locks serialise in one process, named catalog locks
//     serialise across processes: a put commits its map entries holding the
//     snapshot's lock shared and only if the record says pending; CompleteSnapshot
//     holds it exclusively from before it reads the map until its record is written;
//     every other record change holds it exclusively and writes only over the record
//     it read (else ErrConcurrentChange, which clients retry).
//   - A client token is looked up and written under a lock named by the token, so two
//     daemons racing with one token make one snapshot.
//   - A watcher re-reads the records every SharedRefreshInterval and tells OnDelete
//     subscribers (the FUSE export) of snapshots deleted elsewhere.

// SharedRefreshInterval is how often a daemon on a shared catalog re-reads every
// record to see snapshots deleted by other daemons.
const SharedRefreshInterval = 2 * time.Second

// ErrConcurrentChange says another daemon changed a snapshot's record between this
// daemon's read and its write; the request changed nothing and may be retried.
var ErrConcurrentChange = errors.New("the snapshot was changed by another daemon at the same time; retry")

// shared reports whether other daemons may write the catalog.
func (s *Store) shared() bool { return s.opts.Catalog != nil }

// snapshotLock names the catalog lock of a snapshot's state.
func snapshotLock(id string) []byte { return append([]byte("lock/snapshot/"), id...) }

// tokenLock names the catalog lock of a client token.
func tokenLock(owner, region, token string) []byte {
	return append([]byte("lock/"), tokenKey(owner, region, token)...)
}

// refreshEntry re-reads id's record from a shared catalog into the cache, adding an
// entry for a snapshot another daemon started and dropping one whose record is gone.
// It returns the entry, or nil when there is no record.
func (s *Store) refreshEntry(ctx context.Context, id string) (*entry, error) {
	var raw []byte
	err := s.view(ctx, func(txn core.CatalogTx) error {
		v, err := txn.Get(snapshotKey(id))
		raw = v
		return err
	})
	if errors.Is(err, core.ErrKeyNotFound) {
		s.forget(id)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cas: read snapshot record %s: %w", id, err)
	}
	var rec Snapshot
	if err := json.Unmarshal(raw, &rec); err != nil {
		return nil, fmt.Errorf("cas: snapshot record %s: %w", id, err)
	}
	return s.cacheRecord(rec), nil
}

// cacheRecord puts a record read from the catalog into the cache and returns its entry.
// A record that changed is swapped in under the entry's lock; one that did not costs
// no lock, so a lookup never waits on a put holding the entry.
func (s *Store) cacheRecord(rec Snapshot) *entry {
	s.snapsMu.Lock()
	e := s.snaps[rec.ID]
	if e == nil {
		e = &entry{owner: rec.OwnerID, rec: rec}
		e.lastActive.Store(s.clock.Now().UnixNano())
		e.deleted.Store(!rec.DeletedAt.IsZero())
		s.snaps[rec.ID] = e
		s.snapsMu.Unlock()
		s.ctr.noteState(nil, &rec)
		return e
	}
	s.snapsMu.Unlock()
	if sameRecord(e.snapshot(), rec) {
		return e
	}
	e.mu.Lock()
	prev := e.rec
	e.rec = rec
	e.mu.Unlock()
	s.ctr.noteState(&prev, &rec)
	if !rec.DeletedAt.IsZero() && !e.deleted.Swap(true) {
		s.tellDeleted(rec.ID)
	}
	return e
}

// forget drops a snapshot whose record another daemon removed.
func (s *Store) forget(id string) {
	s.snapsMu.Lock()
	e := s.snaps[id]
	delete(s.snaps, id)
	s.snapsMu.Unlock()
	if e == nil {
		return
	}
	rec := e.snapshot()
	s.ctr.noteState(&rec, nil)
	if !e.deleted.Swap(true) {
		s.tellDeleted(id)
	}
}

func sameRecord(a, b Snapshot) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// refreshAll re-reads every record of a shared catalog into the cache.
func (s *Store) refreshAll(ctx context.Context) error {
	var recs []Snapshot
	err := s.view(ctx, func(txn core.CatalogTx) error {
		recs = recs[:0]
		return txn.Scan([]byte{prefixSnapshot}, nil, func(k, v []byte) (bool, error) {
			var rec Snapshot
			if err := json.Unmarshal(v, &rec); err != nil {
				s.log.Error("undecodable snapshot record in the catalog (ebsctl scrub reports it)", "key", fmt.Sprintf("%q", k), "err", err)
				return true, nil
			}
			recs = append(recs, rec)
			return true, nil
		})
	})
	if err != nil {
		return fmt.Errorf("cas: read snapshot records: %w", err)
	}
	seen := make(map[string]bool, len(recs))
	for _, rec := range recs {
		seen[rec.ID] = true
		s.cacheRecord(rec)
	}
	s.snapsMu.RLock()
	var gone []string
	for id := range s.snaps {
		if !seen[id] {
			gone = append(gone, id)
		}
	}
	s.snapsMu.RUnlock()
	for _, id := range gone {
		s.forget(id)
	}
	return nil
}

// watchCatalog keeps the cache of a shared catalog fresh until the store closes.
func (s *Store) watchCatalog() {
	defer s.wg.Done()
	t := time.NewTicker(SharedRefreshInterval)
	defer t.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-s.stop; cancel() }() // ends with the loop: cancel closes it either way
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if err := s.refreshAll(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("re-reading the shared catalog", "err", err)
			}
			if err := s.renewLeases(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("renewing view leases", "err", err)
			}
		}
	}
}

// tellDeleted tells OnDelete subscribers that a snapshot is gone.
func (s *Store) tellDeleted(id string) {
	s.snapsMu.RLock()
	subscribers := slices.Clone(s.onDelete)
	s.snapsMu.RUnlock()
	for _, fn := range subscribers {
		fn(id)
	}
}

// writeSharedRecord writes rec over prev in a shared catalog, holding the snapshot's
// lock exclusively, and only if the stored record is still prev.
func (s *Store) writeSharedRecord(ctx context.Context, prev, rec Snapshot) error {
	want, err := json.Marshal(prev)
	if err != nil {
		return err
	}
	err = s.commit(ctx, func(txn core.CatalogTx) error {
		if err := txn.Lock(snapshotLock(rec.ID), true); err != nil {
			return err
		}
		cur, err := txn.Get(snapshotKey(rec.ID))
		if err != nil {
			return err
		}
		if !bytes.Equal(cur, want) {
			return fmt.Errorf("%w: %s", ErrConcurrentChange, rec.ID)
		}
		return putJSON(txn, snapshotKey(rec.ID), rec)
	})
	if err != nil {
		return fmt.Errorf("cas: write snapshot record: %w", err)
	}
	return nil
}

// withSnapshotLock runs fn holding a snapshot's state lock exclusively, in a catalog
// transaction fn may write the record in, after re-reading the record into e. In a
// catalog of this process alone the entry's own lock is enough: fn gets a nil tx.
func (s *Store) withSnapshotLock(ctx context.Context, e *entry, fn func(tx core.CatalogTx) error) error {
	if !s.shared() {
		return fn(nil)
	}
	return s.commit(ctx, func(txn core.CatalogTx) error {
		if err := txn.Lock(snapshotLock(e.rec.ID), true); err != nil {
			return err
		}
		v, err := txn.Get(snapshotKey(e.rec.ID))
		if err != nil {
			return fmt.Errorf("cas: read snapshot record %s: %w", e.rec.ID, err)
		}
		var rec Snapshot
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("cas: snapshot record %s: %w", e.rec.ID, err)
		}
		s.ctr.noteState(&e.rec, &rec)
		e.rec = rec // the caller holds e.mu
		e.deleted.Store(!rec.DeletedAt.IsZero())
		return fn(txn)
	})
}

// acceptPending is the shared-catalog check of a group commit: for each snapshot the
// group writes to, it takes the snapshot's lock shared and reads its record; ops of a
// snapshot that is no longer pending (completed, expired or deleted by another daemon)
// are refused with ErrNotPending and not written.
func acceptPending(txn core.CatalogTx, group []*writeOp) (map[*writeOp]error, error) {
	state := make(map[string]error)
	refused := make(map[*writeOp]error)
	for _, op := range group {
		id := op.snapID
		verdict, seen := state[id]
		if !seen {
			if err := txn.Lock(snapshotLock(id), false); err != nil {
				return nil, err
			}
			v, err := txn.Get(snapshotKey(id))
			switch {
			case errors.Is(err, core.ErrKeyNotFound):
				verdict = fmt.Errorf("%w: %s", ErrSnapshotNotFound, id)
			case err != nil:
				return nil, err
			default:
				var rec Snapshot
				if err := json.Unmarshal(v, &rec); err != nil {
					return nil, fmt.Errorf("cas: snapshot record %s: %w", id, err)
				}
				if rec.Status != StatusPending || !rec.DeletedAt.IsZero() {
					verdict = fmt.Errorf("%w: %s is %s", ErrNotPending, id, rec.Status)
				}
			}
			state[id] = verdict
		}
		if verdict != nil {
			refused[op] = verdict
		}
	}
	return refused, nil
}
