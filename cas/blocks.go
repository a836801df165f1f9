package cas

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/ebsd/ebsd/cas/core"
)

// PutBlock writes one block at index of a pending snapshot. claimed is the checksum the
// client sent; it is verified against the data, and the verified digest is the block's
// key, so every block is hashed exactly once. An all-zero block is recorded under
// ZeroDigest and costs no stored bytes. When PutBlock returns nil the block survives a
// crash of the process (not yet power loss: see CompleteSnapshot).
func (s *Store) PutBlock(ctx context.Context, owner, id string, index int64, data []byte, claimed Digest) error {
	if len(data) != BlockSize {
		return fmt.Errorf("cas: block is %d bytes, want %d", len(data), BlockSize)
	}
	e, err := s.lookup(owner, id)
	if err != nil {
		return err
	}
	if err := s.expireIfIdle(ctx, e); err != nil {
		return err
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.rec.Status != StatusPending {
		return fmt.Errorf("%w: %s is %s", ErrNotPending, id, e.rec.Status)
	}
	if index < 0 || index >= e.rec.Blocks() {
		return fmt.Errorf("%w: index %d, volume of %d GiB has blocks 0 to %d", ErrBlockOutOfRange, index, e.rec.VolumeSize, e.rec.Blocks()-1)
	}
	d := ZeroDigest
	if !bytes.Equal(data, s.zero) { // a zero check runs far faster than SHA-256
		d = Sum(data)
	}
	if d != claimed {
		return fmt.Errorf("%w: computed %s, request says %s", ErrChecksumMismatch, d.Base64(), claimed.Base64())
	}
	if err := s.writeBlock(ctx, id, index, d, data); err != nil {
		return err
	}
	e.lastActive.Store(s.clock.Now().UnixNano())
	return nil
}

// writeBlock stores the block (unless it is zero or already stored) and points the
// snapshot's map entry at it, in one group commit shared with concurrent puts.
func (s *Store) writeBlock(ctx context.Context, id string, index int64, d Digest, data []byte) error {
	op := &writeOp{mapKey: mapKey(id, index), snapID: id, digest: d}
	// Free space is checked before anything reaches Badger (space.go): a block that
	// turns out to be stored already only held its room until the commit.
	n := int64(putOverhead)
	if d != ZeroDigest && s.opts.Blocks == nil {
		n += BlockSize // the block lands in this data directory too
	}
	done, err := s.space.admit(n)
	if err != nil {
		return err
	}
	defer done()
	if d != ZeroDigest {
		stripe := &s.stripes[d[0]]
		stripe.RLock()
		defer stripe.RUnlock()
		s.noteTouched(d)
		if err := s.noteUse(ctx, d); err != nil { // other daemons' collections (gc_shared.go)
			return err
		}
		// Registered before the lookup, so that the commit knows whether another put of
		// d overlapped this one (group_commit.go).
		op.race = s.firstPuts.enter(d)
		defer s.firstPuts.leave(d)
		has, err := s.hasBlock(ctx, d)
		if err != nil {
			return err
		}
		op.fresh = !has
		// A stored copy known to be corrupt is replaced by this put's verified bytes
		// (only marked digests are read back: a dedup hit stays a key lookup).
		replace, err := s.healOnPut(d)
		if err != nil {
			return err
		}
		if !has || replace {
			buf := s.getBuf()
			defer s.putBuf(buf)
			value, tag := s.comp.encode(*buf, data)
			op.block = &StoredBlock{Digest: d, Tag: byte(tag), Data: value}
		}
		if err := s.submit(op); err != nil {
			return fmt.Errorf("cas: write block %d of %s: %w", index, id, err)
		}
		// Still under the stripe: no noteCorrupt of d runs until the mark is settled.
		return s.healed(d, replace)
	}
	if err := s.submit(op); err != nil {
		return fmt.Errorf("cas: write block %d of %s: %w", index, id, err)
	}
	return nil
}

// hasBlock says whether the block store holds d; only a definite "absent" is false.
func (s *Store) hasBlock(ctx context.Context, d Digest) (bool, error) {
	_, err := s.blocks.Stat(ctx, d)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, ErrBlockNotFound):
		return false, nil
	}
	return false, fmt.Errorf("cas: look up block %s: %w", d, err)
}

// ReadBlock appends the block with digest d to dst after checking that it hashes to d.
// A block that fails the check is an ErrCorruptBlock, never wrong bytes; a block store
// that cannot answer is an error that is neither, and marks nothing.
func (s *Store) ReadBlock(dst []byte, d Digest) ([]byte, error) {
	return s.readBlock(context.Background(), dst, d)
}

func (s *Store) readBlock(ctx context.Context, dst []byte, d Digest) ([]byte, error) {
	if d == ZeroDigest {
		return append(dst, s.zero...), nil
	}
	var out []byte
	var decodeErr error
	read := func() error {
		decodeErr = nil
		return s.blocks.Read(ctx, d, func(tag byte, v []byte) error {
			out, decodeErr = s.comp.decode(dst, v, codec(tag))
			return decodeErr
		})
	}
	err := read()
	if err != nil && decodeErr == nil {
		// A value-log rewrite (GC) may move the value and delete its old file between
		// the lookup and the read; Badger does not wait for point reads. A fresh
		// transaction finds the value where it is now. A remote engine retries itself.
		err = read()
	}
	ok := err == nil && s.verified(out[len(dst):], d)
	if inv, cached := s.blocks.(invalidator); cached && !ok && (err == nil || decodeErr != nil) {
		// A cached copy that does not verify is dropped and the block read again from
		// where it lives: the cache's disk may be what rotted.
		inv.Invalidate(d)
		err = read()
		ok = err == nil && s.verified(out[len(dst):], d)
	}
	switch {
	case ok:
		return out, nil
	case err == nil:
		s.ctr.readFailures.Add(1)
		s.markAfterFailedRead(d)
		return nil, fmt.Errorf("%w: block %s does not hash to its key", ErrCorruptBlock, d)
	case decodeErr != nil || errors.Is(err, ErrBlockNotFound) || s.local != nil:
		// The embedded engine's own read failing is the disk's word against the copy.
		s.ctr.readFailures.Add(1)
		s.markAfterFailedRead(d)
		return nil, fmt.Errorf("%w: block %s: %w", ErrCorruptBlock, d, err)
	default:
		// The engine could not answer (I/O error, a remote store unreachable): not
		// evidence against the block, so nothing is marked; the read fails.
		s.ctr.readFailures.Add(1)
		return nil, fmt.Errorf("cas: read block %s: %w", d, err)
	}
}

// verified says whether block decodes to the block with digest d.
func (s *Store) verified(block []byte, d Digest) bool {
	return len(block) == BlockSize && Sum(block) == d
}

// invalidator is a block-store decorator holding copies it can drop (cas/diskcache).
type invalidator interface{ Invalidate(d Digest) }

// dropMapBatch bounds the entries one transaction of dropMap deletes: a map of a
// large volume has millions, more than one transaction should carry.
const dropMapBatch = 4096

// dropMap deletes the block map of a snapshot; blocks no longer referenced are left to
// garbage collection. It deletes a batch per transaction, so a crash part-way leaves a
// shorter map of a snapshot that is deleted or in error either way, which the next
// collection or expiry finishes.
func (s *Store) dropMap(ctx context.Context, id string) error {
	var entries, zeros int64 // for the counters
	for more := true; more; {
		var n, z int64
		err := s.commit(ctx, func(txn core.CatalogTx) error {
			n, z, more = 0, 0, false
			var keys [][]byte
			err := txn.Scan(mapPrefix(id), nil, func(k, v []byte) (bool, error) {
				if len(keys) == dropMapBatch {
					more = true
					return false, nil
				}
				keys = append(keys, bytes.Clone(k))
				if len(v) == len(Digest{}) && Digest(v) == ZeroDigest {
					z++
				}
				return true, ctx.Err()
			})
			if err != nil {
				return err
			}
			for _, k := range keys {
				if err := txn.Delete(k); err != nil {
					return err
				}
			}
			n = int64(len(keys))
			return nil
		})
		if err != nil {
			return err
		}
		entries, zeros = entries+n, zeros+z
	}
	s.ctr.unmapped(entries, zeros)
	return s.sync()
}

// BlockDigest returns the digest of the block at index in the point-in-time view of a
// snapshot: its own write if it has one, else its parent's view, up the lineage.
// found is false where no snapshot of the lineage wrote the index.
func (s *Store) BlockDigest(ctx context.Context, owner, id string, index int64) (d Digest, found bool, err error) {
	ids, err := s.lineage(owner, id)
	if err != nil {
		return d, false, err
	}
	err = s.view(ctx, func(txn core.CatalogTx) error {
		d, found, err = lookupView(txn, ids, index)
		return err
	})
	return d, found, err
}
