package cas

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/ebsd/ebsd/cas/core"
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

// mapCursor walks one snapshot's block map in index order, a page of entries at a
// time: the catalog's Scan runs one at a time per transaction, and a merge of several
// maps needs several positions at once.
type mapCursor struct {
	tx     core.CatalogTx
	prefix []byte
	page   []Slot
	pos    int
	resume []byte // where the next page starts; nil when the map is exhausted
}

// mapPageSize is how many entries a cursor reads per Scan.
const mapPageSize = 256

func newMapCursor(tx core.CatalogTx, id string, start int64) (*mapCursor, error) {
	c := &mapCursor{tx: tx, prefix: mapPrefix(id), resume: mapKey(id, max(start, 0))}
	return c, c.fill()
}

func (c *mapCursor) fill() error {
	c.page, c.pos = c.page[:0], 0
	from := c.resume
	c.resume = nil
	if from == nil {
		return nil
	}
	return c.tx.Scan(c.prefix, from, func(k, v []byte) (bool, error) {
		if len(c.page) == mapPageSize {
			c.resume = bytes.Clone(k)
			return false, nil
		}
		if len(v) != len(Digest{}) || len(k) != len(c.prefix)+8 {
			return false, fmt.Errorf("%w: map entry %x has %d bytes", ErrCorruptBlock, k, len(v))
		}
		c.page = append(c.page, Slot{Index: indexFromMapKey(k), Digest: Digest(v)})
		return true, nil
	})
}

func (c *mapCursor) valid() bool { return c.pos < len(c.page) }

func (c *mapCursor) index() int64 { return c.page[c.pos].Index }

func (c *mapCursor) digest() Digest { return c.page[c.pos].Digest }

func (c *mapCursor) next() error {
	c.pos++
	if c.pos == len(c.page) && c.resume != nil {
		return c.fill()
	}
	return nil
}

// mergeMaps calls fn, in ascending index order from start, once for each index written
// in any of the snapshots ids, with the position in ids of the first snapshot that
// wrote it and its digest there. It stops when fn returns false.
func mergeMaps(ctx context.Context, tx core.CatalogTx, ids []string, start int64, fn func(index int64, who int, d Digest) (bool, error)) error {
	cursors := make([]*mapCursor, len(ids))
	for i, id := range ids {
		c, err := newMapCursor(tx, id, start)
		if err != nil {
			return err
		}
		cursors[i] = c
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
		d := cursors[who].digest()
		for _, c := range cursors {
			if c.valid() && c.index() == next {
				if err := c.next(); err != nil {
					return err
				}
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
func lookupView(tx core.CatalogTx, ids []string, index int64) (Digest, bool, error) {
	var d Digest
	for _, id := range ids {
		v, err := tx.Get(mapKey(id, index))
		if errors.Is(err, core.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return d, false, err
		}
		if len(v) != len(d) {
			return d, false, fmt.Errorf("%w: map entry of %s block %d has %d bytes", ErrCorruptBlock, id, index, len(v))
		}
		return Digest(v), true, nil
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
	err = s.view(ctx, func(txn core.CatalogTx) error {
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
