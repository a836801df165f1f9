package cas

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// A snapshot's point-in-time view is its own block map over its parent's view. The
// views are never materialised: they are read by merging the block maps of the
// lineage, which costs O(blocks returned × lineage depth), never O(volume size).

// lineage returns the ids from id up to its root, child first.
func (s *Store) lineage(owner, id string) ([]string, error) {
	var ids []string
	for cur := id; cur != ""; {
		e, err := s.lookupAny(owner, cur)
		if err != nil {
			return nil, err
		}
		ids = append(ids, cur)
		cur = e.snapshot().ParentID
		if len(ids) > 1<<16 {
			return nil, fmt.Errorf("cas: lineage of %s does not end", id)
		}
	}
	return ids, nil
}

// completedSnapshot returns the record of a readable snapshot.
func (s *Store) completedSnapshot(ctx context.Context, owner, id string) (Snapshot, error) {
	snap, err := s.Snapshot(ctx, owner, id)
	if err != nil {
		return snap, err
	}
	if snap.Status != StatusCompleted {
		return snap, fmt.Errorf("%w: %s is %s", ErrNotCompleted, id, snap.Status)
	}
	return snap, nil
}

// mapCursor walks one snapshot's block map in index order.
type mapCursor struct {
	it     *badger.Iterator
	prefix []byte
}

func (c *mapCursor) valid() bool { return c.it.Valid() && bytes.HasPrefix(c.it.Item().Key(), c.prefix) }

func (c *mapCursor) index() int64 { return indexFromMapKey(c.it.Item().Key()) }

func (c *mapCursor) digest() (Digest, error) {
	var d Digest
	err := c.it.Item().Value(func(v []byte) error {
		if len(v) != len(d) {
			return fmt.Errorf("%w: map entry %x has %d bytes", ErrCorruptBlock, c.it.Item().Key(), len(v))
		}
		copy(d[:], v)
		return nil
	})
	return d, err
}

// mergeMaps calls fn, in ascending index order from start, once for each index written
// in any of the snapshots ids, with the position in ids of the first snapshot that
// wrote it and its digest there. It stops when fn returns false.
func mergeMaps(ctx context.Context, txn *badger.Txn, ids []string, start int64, fn func(index int64, who int, d Digest) (bool, error)) error {
	cursors := make([]*mapCursor, len(ids))
	for i, id := range ids {
		p := mapPrefix(id)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: p, PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		it.Seek(mapKey(id, start))
		cursors[i] = &mapCursor{it: it, prefix: p}
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		next, who := int64(-1), -1
		for i, c := range cursors {
			if !c.valid() {
				continue
			}
			if idx := c.index(); next < 0 || idx < next {
				next, who = idx, i
			}
		}
		if who < 0 {
			return nil
		}
		d, err := cursors[who].digest()
		if err != nil {
			return err
		}
		for _, c := range cursors {
			if c.valid() && c.index() == next {
				c.it.Next()
			}
		}
		if more, err := fn(next, who, d); err != nil || !more {
			return err
		}
	}
}

// ViewFrom calls fn for each slot of the completed snapshot's view from index start
// on, in ascending order, until fn returns false.
func (s *Store) ViewFrom(ctx context.Context, owner, id string, start int64, fn func(Slot) bool) error {
	v, err := s.OpenView(ctx, owner, id)
	if err != nil {
		return err
	}
	defer v.Close()
	return v.From(ctx, start, fn)
}

// lookupView returns the digest at index in the view of ids[0].
func lookupView(txn *badger.Txn, ids []string, index int64) (Digest, bool, error) {
	var d Digest
	for _, id := range ids {
		item, err := txn.Get(mapKey(id, index))
		if errors.Is(err, badger.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return d, false, err
		}
		err = item.Value(func(v []byte) error {
			if len(v) != len(d) {
				return fmt.Errorf("%w: map entry of %s block %d has %d bytes", ErrCorruptBlock, id, index, len(v))
			}
			copy(d[:], v)
			return nil
		})
		return d, err == nil, err
	}
	return d, false, nil
}

// Change is one block whose content differs between two views. A side without data
// at Index has Has… false.
type Change struct {
	Index               int64
	First, Second       Digest
	HasFirst, HasSecond bool
}

// Changes calls fn, in ascending index order from start, for each block whose content
// differs between the views of two completed snapshots of one lineage tree. Only the
// block maps between the two snapshots and their closest common ancestor are read.
// examine bounds how many candidate indices one call looks at (0: no bound); next is
// where to resume, or -1 when there is nothing more.
func (s *Store) Changes(ctx context.Context, owner, first, second string, start int64, examine int, fn func(Change) bool) (next int64, err error) {
	for _, id := range []string{first, second} {
		if _, err := s.completedSnapshot(ctx, owner, id); err != nil {
			return -1, err
		}
	}
	fl, err := s.lineage(owner, first)
	if err != nil {
		return -1, err
	}
	sl, err := s.lineage(owner, second)
	if err != nil {
		return -1, err
	}
	if fl[len(fl)-1] != sl[len(sl)-1] {
		return -1, fmt.Errorf("%w: %s and %s have no common ancestor", ErrUnrelated, first, second)
	}
	// Strip the shared tail: what remains are the snapshots whose writes can differ.
	common := 0
	for common < len(fl) && common < len(sl) && fl[len(fl)-1-common] == sl[len(sl)-1-common] {
		common++
	}
	fOwn, sOwn := fl[:len(fl)-common], sl[:len(sl)-common]
	// Only the snapshots below the common ancestor can make the views differ; each
	// side's full lineage answers what that side holds at a candidate index.
	ids := append(append([]string{}, fOwn...), sOwn...)
	next = -1
	err = s.db.View(func(txn *badger.Txn) error {
		examined := 0
		return mergeMaps(ctx, txn, ids, start, func(index int64, _ int, _ Digest) (bool, error) {
			if examine > 0 && examined == examine {
				next = index
				return false, nil
			}
			examined++
			c := Change{Index: index}
			var err error
			if c.First, c.HasFirst, err = lookupView(txn, fl, index); err != nil {
				return false, err
			}
			if c.Second, c.HasSecond, err = lookupView(txn, sl, index); err != nil {
				return false, err
			}
			if c.HasFirst == c.HasSecond && c.First == c.Second {
				return true, nil
			}
			if !fn(c) {
				next = index + 1
				return false, nil
			}
			return true, nil
		})
	})
	return next, err
}
