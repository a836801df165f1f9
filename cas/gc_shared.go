package cas

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ebsd/ebsd/cas/core"
)

// Collection on a shared catalog (DESIGN.md, "Collection across daemons"). A daemon's
// stripes and touched set (gc.go) see only its own puts; across daemons the same
// promises are kept through the catalog:
//
//   - A put records, before it looks for its block, that it uses the block now (the
//     block's used key, written holding the block's lock shared); the sweep deletes a
//     block only holding that lock exclusively and only when its last use is older
//     than the grace period (Options.GCGrace, --gc-grace). A put that looked for its
//     block after the sweep's deletion finds it gone and stores it again; one that
//     looked before recorded a use the sweep sees. The grace period must exceed the
//     longest put (its use to its commit) and the clocks' disagreement.
//   - A daemon with a view open on a snapshot (a FUSE file, a listing in progress)
//     holds a lease on it in the catalog, renewed while the view is open; a collection
//     on any daemon keeps what a leased snapshot reads, even after it is deleted.
//   - One collection runs at a time across the daemons (a catalog lock held for the
//     whole collection).

// DefaultGCGrace is how long a block used by a put is kept from collection on a shared
// catalog unless configured.
const DefaultGCGrace = time.Hour

// viewLease is how long a view's lease on a snapshot lasts without renewal; the watcher
// renews leases well within it.
const viewLease = time.Minute

const (
	prefixUsed  = 'u' // u + digest                → last use by a put, unix ns (shared catalogs)
	prefixLease = 'p' // p + snapID / daemon      → a view's lease, unix ns expiry (shared catalogs)
)

func usedKey(d Digest) []byte { return append([]byte{prefixUsed}, d[:]...) }

func blockLock(d Digest) []byte { return append([]byte("lock/block/"), d[:]...) }

func leaseKey(snapID, daemon string) []byte {
	return append(append([]byte{prefixLease}, snapID...), "/"+daemon...)
}

var gcLock = []byte("lock/gc")

func (s *Store) gcGrace() time.Duration {
	if s.opts.GCGrace > 0 {
		return s.opts.GCGrace
	}
	return DefaultGCGrace
}

// noteUse records, on a shared catalog, that a put relies on block d from now on.
func (s *Store) noteUse(ctx context.Context, d Digest) error {
	if !s.shared() {
		return nil
	}
	now := s.clock.Now().UnixNano()
	err := s.commit(ctx, func(txn core.CatalogTx) error {
		if err := txn.Lock(blockLock(d), false); err != nil {
			return err
		}
		return txn.Set(usedKey(d), binary.BigEndian.AppendUint64(nil, uint64(now)))
	})
	if err != nil {
		return fmt.Errorf("cas: record the use of block %s: %w", d, err)
	}
	return nil
}

// sweepShared deletes garbage blocks whose last use is older than the grace period,
// each under its block lock held exclusively.
func (s *Store) sweepShared(ctx context.Context, garbage []garbageBlock, rep *GCReport) error {
	grace := int64(s.gcGrace())
	const batch = 256
	for len(garbage) > 0 {
		n := min(batch, len(garbage))
		part := garbage[:n]
		garbage = garbage[n:]
		var doomed, kept []garbageBlock
		err := s.commit(ctx, func(txn core.CatalogTx) error {
			doomed, kept = doomed[:0], kept[:0]
			now := s.clock.Now().UnixNano()
			for _, g := range part {
				if err := txn.Lock(blockLock(g.d), true); err != nil {
					return err
				}
				v, err := txn.Get(usedKey(g.d))
				switch {
				case err == nil && len(v) == 8 && now-int64(binary.BigEndian.Uint64(v)) < grace:
					kept = append(kept, g)
					continue
				case err != nil && !errors.Is(err, core.ErrKeyNotFound):
					return err
				}
				doomed = append(doomed, g)
			}
			ds := make([]Digest, len(doomed))
			for i, g := range doomed {
				ds[i] = g.d
			}
			// Deleted while the locks are held: no put records a use of these blocks
			// until they are gone, and every later put finds them gone.
			if err := s.blocks.Delete(ctx, ds); err != nil {
				return err
			}
			for _, d := range ds {
				if err := txn.Delete(usedKey(d)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("cas: sweep: %w", err)
		}
		for _, g := range kept {
			rep.BlocksKept++
			rep.BytesKept += g.size
		}
		s.reclaimed(doomed, rep)
	}
	return s.sync()
}

// leasedSnapshots returns the snapshots some daemon's open view holds a live lease on.
func (s *Store) leasedSnapshots(ctx context.Context) (map[string]bool, error) {
	leased := make(map[string]bool)
	now := s.clock.Now().UnixNano()
	err := s.view(ctx, func(txn core.CatalogTx) error {
		return txn.Scan([]byte{prefixLease}, nil, func(k, v []byte) (bool, error) {
			id, _, ok := strings.Cut(string(k[1:]), "/")
			if ok && len(v) == 8 && int64(binary.BigEndian.Uint64(v)) > now {
				leased[id] = true
			}
			return true, nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("cas: read view leases: %w", err)
	}
	return leased, nil
}

// renewLeases writes (or, for snapshots with no view open any more, removes) this
// daemon's leases. It runs when a view opens and on every watcher tick.
func (s *Store) renewLeases(ctx context.Context) error {
	s.snapsMu.RLock()
	var open, closed []string
	for id, e := range s.snaps {
		switch {
		case e.pins.Load() > 0:
			open = append(open, id)
		case e.leased.Load():
			closed = append(closed, id)
		}
	}
	s.snapsMu.RUnlock()
	if len(open) == 0 && len(closed) == 0 {
		return nil
	}
	expiry := binary.BigEndian.AppendUint64(nil, uint64(s.clock.Now().Add(viewLease).UnixNano()))
	err := s.commit(ctx, func(txn core.CatalogTx) error {
		for _, id := range open {
			if err := txn.Set(leaseKey(id, s.daemonID), expiry); err != nil {
				return err
			}
		}
		for _, id := range closed {
			if err := txn.Delete(leaseKey(id, s.daemonID)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("cas: renew view leases: %w", err)
	}
	s.snapsMu.RLock()
	for _, id := range open {
		if e := s.snaps[id]; e != nil {
			e.leased.Store(true)
		}
	}
	for _, id := range closed {
		if e := s.snaps[id]; e != nil && e.pins.Load() == 0 {
			e.leased.Store(false)
		}
	}
	s.snapsMu.RUnlock()
	return nil
}

// withGCLock runs a collection holding the catalog's collection lock, on a shared
// catalog; in a catalog of this process alone gcMu is enough.
func (s *Store) withGCLock(ctx context.Context, fn func() error) error {
	if !s.shared() {
		return fn()
	}
	ran := false
	err := s.commit(ctx, func(txn core.CatalogTx) error {
		if err := txn.Lock(gcLock, true); err != nil {
			return err
		}
		if ran { // a catalog may run this transaction again; the collection runs once
			return nil
		}
		ran = true
		return fn()
	})
	return err
}
