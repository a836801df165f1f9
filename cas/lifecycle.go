package cas

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/ebsd/ebsd/cas/core"
)

// MaxTags is how many tags a snapshot may carry.
const MaxTags = 50

// OnDelete registers fn to be told the id of every snapshot deleted from now on (the
// FUSE export uses it to make the file disappear at once).
func (s *Store) OnDelete(fn func(id string)) {
	s.snapsMu.Lock()
	defer s.snapsMu.Unlock()
	s.onDelete = append(s.onDelete, fn)
}

// DeleteSnapshot deletes a snapshot. It disappears from every listing at once; a pending
// one is aborted and its blocks released. The block map of a completed one stays while
// a live descendant or an open reader needs it; garbage collection releases the rest.
func (s *Store) DeleteSnapshot(ctx context.Context, owner, id string) error {
	e, err := s.lookup(owner, id)
	if err != nil {
		return err
	}
	e.mu.Lock()
	if e.deleted.Load() {
		e.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrSnapshotNotFound, id)
	}
	rec := e.rec.Clone()
	rec.DeletedAt = s.clock.Now()
	wasPending := rec.Status == StatusPending
	if wasPending {
		rec.Status, rec.StatusMessage = StatusError, "deleted while pending"
	}
	if err := s.writeRecord(e.rec, rec); err != nil {
		e.mu.Unlock()
		return err
	}
	s.ctr.noteState(&e.rec, &rec)
	e.rec = rec
	e.deleted.Store(true)
	e.mu.Unlock()
	s.log.Info("snapshot deleted", "snapshot", id, "was", map[bool]string{true: "pending", false: string(rec.Status)}[wasPending])
	if wasPending {
		// Pending snapshots have no children: nothing can need their blocks.
		if err := s.dropMap(ctx, id); err != nil {
			return fmt.Errorf("cas: release blocks of %s: %w", id, err)
		}
	}
	s.snapsMu.RLock()
	subscribers := slices.Clone(s.onDelete)
	s.snapsMu.RUnlock()
	for _, fn := range subscribers {
		fn(id)
	}
	return nil
}

// TagChange says which tags to set and which to remove. A removal with a value removes
// the tag only while it has that value.
type TagChange struct {
	Set    []Tag
	Remove []TagRemoval
}

// TagRemoval names a tag to remove.
type TagRemoval struct {
	Key      string
	Value    string
	HasValue bool
}

// ChangeTags sets and removes tags of a snapshot, durably.
func (s *Store) ChangeTags(ctx context.Context, owner, id string, ch TagChange) error {
	e, err := s.lookup(owner, id)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	rec := e.rec.Clone()
	for _, t := range ch.Set {
		if i := slices.IndexFunc(rec.Tags, func(x Tag) bool { return x.Key == t.Key }); i >= 0 {
			rec.Tags[i].Value = t.Value
		} else {
			rec.Tags = append(rec.Tags, t)
		}
	}
	rec.Tags = slices.DeleteFunc(rec.Tags, func(x Tag) bool {
		return slices.ContainsFunc(ch.Remove, func(r TagRemoval) bool { return r.Key == x.Key && (!r.HasValue || r.Value == x.Value) })
	})
	if len(rec.Tags) > MaxTags {
		return fmt.Errorf("%w: %s would have %d tags, at most %d are allowed", ErrTooManyTags, id, len(rec.Tags), MaxTags)
	}
	if err := s.writeRecord(e.rec, rec); err != nil {
		return err
	}
	e.rec = rec
	return nil
}

// View is a completed snapshot held open for reading. While it is open, garbage
// collection keeps every block it can reach, even if the snapshot is deleted: readers
// keep reading what they started reading.
type View struct {
	s     *Store
	e     *entry
	ids   []string // lineage, child first
	snap  Snapshot
	close sync.Once
}

// OpenView opens a completed snapshot for reading. Close it when done.
func (s *Store) OpenView(ctx context.Context, owner, id string) (*View, error) {
	snap, err := s.completedSnapshot(ctx, owner, id)
	if err != nil {
		return nil, err
	}
	e, err := s.lookupAny(owner, id)
	if err != nil {
		return nil, err
	}
	e.pins.Add(1) // before the lineage is read: a collection from now on sees the pin
	ids, err := s.lineage(owner, id)
	if err == nil && s.shared() && !e.leased.Load() {
		err = s.renewLeases(ctx) // collections on other daemons see the lease
	}
	if err != nil {
		e.pins.Add(-1)
		return nil, err
	}
	return &View{s: s, e: e, ids: ids, snap: snap}, nil
}

// Snapshot is the record of the snapshot as it was when the view opened.
func (v *View) Snapshot() Snapshot { return v.snap }

// From calls fn for each slot of the view from index start on, ascending, until fn
// returns false.
func (v *View) From(ctx context.Context, start int64, fn func(Slot) bool) error {
	return v.s.view(ctx, func(txn core.CatalogTx) error {
		return mergeMaps(ctx, txn, v.ids, start, func(index int64, _ int, d Digest) (bool, error) {
			return fn(Slot{Index: index, Digest: d}), nil
		})
	})
}

// Close releases the view.
func (v *View) Close() { v.close.Do(func() { v.e.pins.Add(-1) }) }
