package api

import (
	"context"
	"crypto/sha256"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/ebsd/ebsd/cas"
)

// fakeStore is an in-memory Store (and Admin and BlockReader) for handler tests. It
// keeps the store-side rules the handlers rely on (ownership, states, the index range,
// checksums) and records what reached it, so a test can prove a refused request
// changed nothing.
type fakeStore struct {
	mu       sync.Mutex
	snaps    map[string]*fakeSnap
	blocks   map[cas.Digest][]byte
	seq      int
	starts   []cas.StartParams // every StartSnapshot that reached the store
	puts     int               // PutBlock calls
	gcRuns   []bool            // the dryRun of every GC call
	mutating int               // DeleteSnapshot and ChangeTags calls
}

type fakeSnap struct {
	snap   cas.Snapshot
	blocks map[int64]cas.Digest // written in this snapshot
}

func newFakeStore() *fakeStore {
	return &fakeStore{snaps: map[string]*fakeSnap{}, blocks: map[cas.Digest][]byte{}}
}

func (f *fakeStore) lookup(owner, id string) (*fakeSnap, error) {
	s, ok := f.snaps[id]
	if !ok || !s.snap.DeletedAt.IsZero() {
		return nil, fmt.Errorf("%w: %s", cas.ErrSnapshotNotFound, id)
	}
	if s.snap.OwnerID != owner {
		return nil, fmt.Errorf("%w: %s", cas.ErrNotOwner, id)
	}
	return s, nil
}

func (f *fakeStore) StartSnapshot(_ context.Context, p cas.StartParams) (cas.Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.starts = append(f.starts, p)
	if p.ParentID != "" {
		parent, err := f.lookup(p.OwnerID, p.ParentID)
		if err != nil {
			return cas.Snapshot{}, err
		}
		if parent.snap.Status != cas.StatusCompleted {
			return cas.Snapshot{}, cas.ErrParentNotReady
		}
		if p.VolumeSize < parent.snap.VolumeSize {
			return cas.Snapshot{}, cas.ErrVolumeTooSmall
		}
	}
	f.seq++
	s := cas.Snapshot{ID: fmt.Sprintf("snap-%017x", f.seq), OwnerID: p.OwnerID, Region: p.Region,
		VolumeSize: p.VolumeSize, ParentID: p.ParentID, Description: p.Description,
		Tags: slices.Clone(p.Tags), Status: cas.StatusPending, TimeoutMinutes: p.TimeoutMinutes}
	f.snaps[s.ID] = &fakeSnap{snap: s, blocks: map[int64]cas.Digest{}}
	return s, nil
}

func (f *fakeStore) PutBlock(_ context.Context, owner, id string, index int64, data []byte, claimed cas.Digest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.puts++
	s, err := f.lookup(owner, id)
	if err != nil {
		return err
	}
	if s.snap.Status != cas.StatusPending {
		return cas.ErrNotPending
	}
	if index >= s.snap.Blocks() {
		return cas.ErrBlockOutOfRange
	}
	if d := cas.Digest(sha256.Sum256(data)); d != claimed {
		return fmt.Errorf("%w: computed %s", cas.ErrChecksumMismatch, d.Base64())
	}
	f.blocks[claimed] = slices.Clone(data)
	s.blocks[index] = claimed
	return nil
}

func (f *fakeStore) CompleteSnapshot(_ context.Context, owner, id string, changed int64, aggregate *cas.Digest) (cas.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, err := f.lookup(owner, id)
	if err != nil {
		return "", err
	}
	if s.snap.Status == cas.StatusCompleted {
		return s.snap.Status, nil
	}
	if int64(len(s.blocks)) != changed {
		return "", cas.ErrCountMismatch
	}
	if aggregate != nil {
		h := sha256.New()
		for _, i := range slices.Sorted(maps.Keys(s.blocks)) {
			d := s.blocks[i]
			h.Write(d[:])
		}
		if cas.Digest(h.Sum(nil)) != *aggregate {
			return "", cas.ErrAggregateMismatch
		}
	}
	s.snap.Status = cas.StatusCompleted
	return s.snap.Status, nil
}

func (f *fakeStore) Snapshot(_ context.Context, owner, id string) (cas.Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, err := f.lookup(owner, id)
	if err != nil {
		return cas.Snapshot{}, err
	}
	return s.snap, nil
}

// view is a snapshot's point-in-time view: its own blocks over its ancestors'.
func (f *fakeStore) view(id string) map[int64]cas.Digest {
	out := map[int64]cas.Digest{}
	var chain []*fakeSnap
	for cur := id; cur != ""; cur = f.snaps[cur].snap.ParentID {
		chain = append(chain, f.snaps[cur])
	}
	for i := len(chain) - 1; i >= 0; i-- {
		for k, d := range chain[i].blocks {
			out[k] = d
		}
	}
	return out
}

func (f *fakeStore) ViewFrom(_ context.Context, owner, id string, start int64, fn func(cas.Slot) bool) error {
	f.mu.Lock()
	if _, err := f.lookup(owner, id); err != nil {
		f.mu.Unlock()
		return err
	}
	v := f.view(id)
	f.mu.Unlock()
	for _, i := range slices.Sorted(maps.Keys(v)) {
		if i >= start && !fn(cas.Slot{Index: i, Digest: v[i]}) {
			return nil
		}
	}
	return nil
}

func (f *fakeStore) Changes(_ context.Context, owner, first, second string, start int64, _ int, fn func(cas.Change) bool) (int64, error) {
	f.mu.Lock()
	for _, id := range []string{first, second} {
		if _, err := f.lookup(owner, id); err != nil {
			f.mu.Unlock()
			return -1, err
		}
	}
	a, b := f.view(first), f.view(second)
	f.mu.Unlock()
	all := map[int64]cas.Digest{}
	for k, d := range a {
		all[k] = d
	}
	for k, d := range b {
		all[k] = d
	}
	for _, i := range slices.Sorted(maps.Keys(all)) {
		da, hasA := a[i]
		db, hasB := b[i]
		if i < start || hasA == hasB && da == db {
			continue
		}
		if !fn(cas.Change{Index: i, First: da, Second: db, HasFirst: hasA, HasSecond: hasB}) {
			break
		}
	}
	return -1, nil
}

func (f *fakeStore) Snapshots(owner string) []cas.Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []cas.Snapshot
	for _, s := range f.snaps {
		if s.snap.OwnerID == owner && s.snap.DeletedAt.IsZero() {
			out = append(out, s.snap)
		}
	}
	return out
}

func (f *fakeStore) DeleteSnapshot(_ context.Context, owner, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mutating++
	s, err := f.lookup(owner, id)
	if err != nil {
		return err
	}
	delete(f.snaps, s.snap.ID)
	return nil
}

func (f *fakeStore) ChangeTags(_ context.Context, owner, id string, ch cas.TagChange) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mutating++
	s, err := f.lookup(owner, id)
	if err != nil {
		return err
	}
	for _, r := range ch.Remove {
		s.snap.Tags = slices.DeleteFunc(s.snap.Tags, func(t cas.Tag) bool {
			return t.Key == r.Key && (!r.HasValue || t.Value == r.Value)
		})
	}
	for _, t := range ch.Set {
		s.snap.Tags = slices.DeleteFunc(s.snap.Tags, func(old cas.Tag) bool { return old.Key == t.Key })
		s.snap.Tags = append(s.snap.Tags, t)
	}
	return nil
}

func (f *fakeStore) Stats(context.Context) (cas.Stats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return cas.Stats{Snapshots: len(f.snaps), UniqueBlocks: int64(len(f.blocks))}, nil
}

func (f *fakeStore) GC(_ context.Context, dryRun bool) (cas.GCReport, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gcRuns = append(f.gcRuns, dryRun)
	return cas.GCReport{DryRun: dryRun}, nil
}

// Block implements cas.BlockReader.
func (f *fakeStore) Block(_ context.Context, d cas.Digest) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.blocks[d]
	if !ok {
		return nil, cas.ErrCorruptBlock
	}
	return b, nil
}

var (
	_ Store           = (*fakeStore)(nil)
	_ Admin           = (*fakeStore)(nil)
	_ cas.BlockReader = (*fakeStore)(nil)
)
