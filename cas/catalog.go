package cas

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/ebsd/ebsd/cas/core"
)

// entry is the in-memory catalog entry of one snapshot. Puts hold mu shared while they
// check the state and write, so a state change (complete, expire) under mu exclusive
// never races with a block landing in a snapshot that is no longer pending.
type entry struct {
	owner   string      // immutable, readable without mu
	deleted atomic.Bool // set once, when the snapshot is deleted
	pins    atomic.Int32
	leased  atomic.Bool // this daemon holds a lease on it in a shared catalog (gc_shared.go)
	mu      sync.RWMutex
	rec     Snapshot
	// lastActive is the unix-nano time of the last put or complete. It is not
	// persisted: after a restart the idle clock starts again, so a restart never
	// times out a snapshot earlier than its Timeout promised.
	lastActive atomic.Int64
}

func (e *entry) snapshot() Snapshot {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.rec.Clone()
}

// StartParams are the parameters of StartSnapshot.
type StartParams struct {
	OwnerID        string
	Region         string
	VolumeSize     int64
	ParentID       string
	Description    string
	Tags           []Tag
	Encrypted      bool
	KmsKeyArn      string
	TimeoutMinutes int
	ClientToken    string
}

// fingerprint identifies the parameters that must match for a client-token retry.
// Tag order does not matter; owner, region and token are the record's key.
func (p StartParams) fingerprint() string {
	tags := slices.Clone(p.Tags)
	slices.SortFunc(tags, func(a, b Tag) int { return strings.Compare(a.Key, b.Key) })
	canon, _ := json.Marshal(struct {
		VolumeSize     int64
		ParentID       string
		Description    string
		Tags           []Tag
		Encrypted      bool
		KmsKeyArn      string
		TimeoutMinutes int
	}{p.VolumeSize, p.ParentID, p.Description, tags, p.Encrypted, p.KmsKeyArn, p.TimeoutMinutes})
	sum := sha256.Sum256(canon)
	return hex.EncodeToString(sum[:])
}

type tokenRecord struct {
	SnapshotID  string    `json:"snap"`
	Fingerprint string    `json:"params"`
	Created     time.Time `json:"created"`
}

func (s *Store) loadCatalog() error {
	now := s.clock.Now().UnixNano()
	return s.view(context.Background(), func(txn core.CatalogTx) error {
		return txn.Scan([]byte{prefixSnapshot}, nil, func(k, v []byte) (bool, error) {
			e := &entry{}
			if err := json.Unmarshal(v, &e.rec); err != nil {
				return false, fmt.Errorf("cas: load snapshot record %q: %w", k, err)
			}
			e.owner = e.rec.OwnerID
			e.deleted.Store(!e.rec.DeletedAt.IsZero())
			e.lastActive.Store(now)
			s.snaps[e.rec.ID] = e
			s.ctr.noteState(nil, &e.rec)
			return true, nil
		})
	})
}

// lookup returns the entry of a snapshot the owner can see (not deleted).
func (s *Store) lookup(owner, id string) (*entry, error) {
	e, err := s.lookupAny(owner, id)
	if err == nil && e.deleted.Load() {
		return nil, fmt.Errorf("%w: %s", ErrSnapshotNotFound, id)
	}
	return e, err
}

// lookupAny returns the entry of a snapshot of the owner, deleted or not: lineages
// read through deleted ancestors.
func (s *Store) lookupAny(owner, id string) (*entry, error) {
	var e *entry
	if s.shared() {
		var err error
		if e, err = s.refreshEntry(context.Background(), id); err != nil {
			return nil, err
		}
	} else {
		s.snapsMu.RLock()
		e = s.snaps[id]
		s.snapsMu.RUnlock()
	}
	if e == nil {
		return nil, fmt.Errorf("%w: %s", ErrSnapshotNotFound, id)
	}
	if e.owner != owner {
		return nil, fmt.Errorf("%w: %s", ErrNotOwner, id)
	}
	return e, nil
}

// Snapshot returns the current record of a snapshot, settling an idle timeout first.
func (s *Store) Snapshot(ctx context.Context, owner, id string) (Snapshot, error) {
	e, err := s.lookup(owner, id)
	if err != nil {
		return Snapshot{}, err
	}
	if err := s.expireIfIdle(ctx, e); err != nil {
		return Snapshot{}, err
	}
	return e.snapshot(), nil
}

// Snapshots returns every snapshot of the owner, in no particular order.
func (s *Store) Snapshots(owner string) []Snapshot {
	return s.snapshotsWhere(func(e *entry) bool { return e.owner == owner && !e.deleted.Load() })
}

// snapshotsWhere returns the records of the entries keep selects. Records are read
// after the catalog lock is released: each entry guards its own.
func (s *Store) snapshotsWhere(keep func(*entry) bool) []Snapshot {
	if s.shared() {
		if err := s.refreshAll(context.Background()); err != nil {
			s.log.Warn("listing from this daemon's last view of the shared catalog", "err", err)
		}
	}
	s.snapsMu.RLock()
	entries := make([]*entry, 0, len(s.snaps))
	for _, e := range s.snaps {
		if keep(e) {
			entries = append(entries, e)
		}
	}
	s.snapsMu.RUnlock()
	out := make([]Snapshot, len(entries))
	for i, e := range entries {
		out[i] = e.snapshot()
	}
	return out
}

// StartSnapshot creates a pending snapshot, or with a client token seen before returns
// the snapshot that token created. The snapshot and token records are on stable
// storage before it returns.
func (s *Store) StartSnapshot(ctx context.Context, p StartParams) (Snapshot, error) {
	s.startMu.Lock()
	defer s.startMu.Unlock()

	fp := p.fingerprint()
	if p.ClientToken != "" {
		tok, found, err := s.readToken(ctx, p.OwnerID, p.Region, p.ClientToken)
		if err != nil {
			return Snapshot{}, err
		}
		if found {
			return s.answerToken(ctx, p, fp, tok)
		}
	}
	if p.ParentID != "" {
		parent, err := s.Snapshot(ctx, p.OwnerID, p.ParentID)
		if err != nil {
			return Snapshot{}, fmt.Errorf("parent: %w", err)
		}
		if parent.Status != StatusCompleted {
			return Snapshot{}, fmt.Errorf("%w: %s is %s", ErrParentNotReady, parent.ID, parent.Status)
		}
		if p.VolumeSize < parent.VolumeSize {
			return Snapshot{}, fmt.Errorf("%w: %d GiB < parent %s's %d GiB", ErrVolumeTooSmall, p.VolumeSize, parent.ID, parent.VolumeSize)
		}
	}
	if n := s.pendingCount(ctx, p.OwnerID); n >= s.opts.MaxPendingPerOwner {
		return Snapshot{}, fmt.Errorf("%w: owner %s has %d pending snapshots (limit %d)", ErrPendingLimit, p.OwnerID, n, s.opts.MaxPendingPerOwner)
	}

	// A new snapshot is refused with the puts it would bring (space.go); a retry of a
	// token seen before still gets its answer above.
	done, err := s.space.admit(0)
	if err != nil {
		return Snapshot{}, err
	}
	done()
	now := s.clock.Now()
	rec := Snapshot{
		ID:             s.unusedID(),
		OwnerID:        p.OwnerID,
		Region:         p.Region,
		VolumeSize:     p.VolumeSize,
		ParentID:       p.ParentID,
		Description:    p.Description,
		Tags:           slices.Clone(p.Tags),
		KmsKeyArn:      p.KmsKeyArn,
		Encrypted:      p.Encrypted,
		TimeoutMinutes: p.TimeoutMinutes,
		ClientToken:    p.ClientToken,
		Status:         StatusPending,
		StartTime:      now,
	}
	var raced *tokenRecord // a token another daemon wrote since the check above
	err = s.commit(ctx, func(txn core.CatalogTx) error {
		raced = nil
		if p.ClientToken != "" {
			// Looked up again under the token's lock, with the write: of daemons
			// racing with one token, one writes it and the others find it here.
			key := tokenKey(p.OwnerID, p.Region, p.ClientToken)
			if err := txn.Lock(tokenLock(p.OwnerID, p.Region, p.ClientToken), true); err != nil {
				return err
			}
			v, err := txn.Get(key)
			if err == nil {
				raced = &tokenRecord{}
				return json.Unmarshal(v, raced)
			}
			if !errors.Is(err, core.ErrKeyNotFound) {
				return err
			}
			if err := putJSON(txn, key, tokenRecord{rec.ID, fp, now}); err != nil {
				return err
			}
		}
		return putJSON(txn, snapshotKey(rec.ID), rec)
	})
	if err != nil {
		return Snapshot{}, fmt.Errorf("cas: write snapshot record: %w", err)
	}
	if raced != nil {
		return s.answerToken(ctx, p, fp, *raced)
	}
	if err := s.sync(); err != nil {
		return Snapshot{}, err
	}
	e := &entry{owner: rec.OwnerID, rec: rec}
	e.lastActive.Store(now.UnixNano())
	s.snapsMu.Lock()
	s.snaps[rec.ID] = e
	s.snapsMu.Unlock()
	s.ctr.noteState(nil, &rec)
	return rec.Clone(), nil
}

// answerToken answers a StartSnapshot whose client token started a snapshot before.
func (s *Store) answerToken(ctx context.Context, p StartParams, fp string, tok tokenRecord) (Snapshot, error) {
	if tok.Fingerprint != fp {
		return Snapshot{}, fmt.Errorf("%w: token %q started %s", ErrTokenConflict, p.ClientToken, tok.SnapshotID)
	}
	e, err := s.lookupAny(p.OwnerID, tok.SnapshotID)
	if err != nil {
		return Snapshot{}, err
	}
	if e.deleted.Load() {
		// The retry of a request whose snapshot was deleted since: the original
		// answer, as it stands now, and no new snapshot.
		snap := e.snapshot()
		snap.Status, snap.StatusMessage = StatusError, "deleted"
		return snap, nil
	}
	return s.Snapshot(ctx, p.OwnerID, tok.SnapshotID)
}

func (s *Store) unusedID() string {
	s.snapsMu.RLock()
	defer s.snapsMu.RUnlock()
	for {
		id := core.NewSnapshotID()
		if _, taken := s.snaps[id]; !taken {
			return id
		}
	}
}

func (s *Store) pendingCount(ctx context.Context, owner string) int {
	n := 0
	for _, snap := range s.Snapshots(owner) {
		if snap.Status == StatusPending {
			if cur, err := s.Snapshot(ctx, owner, snap.ID); err == nil && cur.Status == StatusPending {
				n++
			}
		}
	}
	return n
}

func (s *Store) readToken(ctx context.Context, owner, region, token string) (tokenRecord, bool, error) {
	var rec tokenRecord
	err := s.view(ctx, func(txn core.CatalogTx) error {
		v, err := txn.Get(tokenKey(owner, region, token))
		if err != nil {
			return err
		}
		return json.Unmarshal(v, &rec)
	})
	if errors.Is(err, core.ErrKeyNotFound) {
		return rec, false, nil
	}
	if err != nil {
		return rec, false, fmt.Errorf("cas: read client token: %w", err)
	}
	return rec, true, nil
}

// CompleteSnapshot seals a pending snapshot after checking the client's count of
// written blocks and, when given, its LINEAR aggregate checksum. On a mismatch the
// snapshot stays pending and nothing is lost. The completed state is on stable
// storage before it is visible.
func (s *Store) CompleteSnapshot(ctx context.Context, owner, id string, changedBlocks int64, aggregate *Digest) (Status, error) {
	e, err := s.lookup(owner, id)
	if err != nil {
		return "", err
	}
	if err := s.expireIfIdle(ctx, e); err != nil {
		return "", err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var status Status
	var done *Snapshot
	err = s.withSnapshotLock(ctx, e, func(tx core.CatalogTx) error {
		var err error
		status, done, err = s.completeLocked(ctx, e, tx, changedBlocks, aggregate)
		return err
	})
	if err != nil {
		return "", err
	}
	if done != nil { // only once the record is committed
		s.ctr.noteState(&e.rec, done)
		e.rec = *done
	}
	return status, nil
}

// completeLocked is CompleteSnapshot with e.mu held, and on a shared catalog the
// snapshot's lock held in tx, where the record is written. It returns the new record
// for the caller to cache once it is committed; it changes nothing in memory itself,
// since a catalog may run it again.
func (s *Store) completeLocked(ctx context.Context, e *entry, tx core.CatalogTx, changedBlocks int64, aggregate *Digest) (Status, *Snapshot, error) {
	id := e.rec.ID
	if e.rec.Status != StatusPending || !e.rec.DeletedAt.IsZero() {
		if e.deleted.Load() {
			return "", nil, fmt.Errorf("%w: %s", ErrSnapshotNotFound, id)
		}
		return e.rec.Status, nil, nil
	}
	e.lastActive.Store(s.clock.Now().UnixNano())
	count, linear, err := s.linearAggregate(ctx, id)
	if err != nil {
		return "", nil, err
	}
	if count != changedBlocks {
		return "", nil, fmt.Errorf("%w: the snapshot has %d changed blocks, the request says %d", ErrCountMismatch, count, changedBlocks)
	}
	if aggregate != nil && *aggregate != linear {
		return "", nil, fmt.Errorf("%w: computed LINEAR SHA256 %s over %d blocks, the request says %s", ErrAggregateMismatch, linear.Base64(), count, aggregate.Base64())
	}
	if err := s.checkMappedSound(ctx, id); err != nil {
		return "", nil, err
	}
	rec := e.rec.Clone()
	if rec.DataBlocks, rec.StoredBytes, err = s.completionSizes(ctx, rec); err != nil {
		return "", nil, err
	}
	rec.Status = StatusCompleted
	rec.CompleteTime = s.clock.Now()
	rec.ChangedBlocks = count
	if tx != nil {
		if err := s.syncBlocks(); err != nil {
			return "", nil, err
		}
		if err := putJSON(tx, snapshotKey(id), rec); err != nil {
			return "", nil, fmt.Errorf("cas: write snapshot record: %w", err)
		}
	} else if err := s.writeRecord(e.rec, rec); err != nil {
		return "", nil, err
	}
	return rec.Status, &rec, nil
}

// linearAggregate returns the number of blocks written in a snapshot and the SHA-256 of
// their raw digests concatenated in ascending index order (EBS's LINEAR method).
func (s *Store) linearAggregate(ctx context.Context, id string) (int64, Digest, error) {
	h := sha256.New()
	var n int64
	err := s.view(ctx, func(txn core.CatalogTx) error {
		return mergeMaps(ctx, txn, []string{id}, 0, func(_ int64, _ int, d Digest) (bool, error) {
			h.Write(d[:])
			n++
			return true, nil
		})
	})
	var out Digest
	h.Sum(out[:0])
	return n, out, err
}

// completionSizes counts the non-zero blocks of a snapshot's view from its parent's
// count and its own writes, and sums the stored size of the blocks it wrote.
func (s *Store) completionSizes(ctx context.Context, rec Snapshot) (dataBlocks, storedBytes int64, err error) {
	var parents []string
	if rec.ParentID != "" {
		pe, err := s.lookupAny(rec.OwnerID, rec.ParentID)
		if err != nil {
			return 0, 0, fmt.Errorf("parent: %w", err)
		}
		dataBlocks = pe.snapshot().DataBlocks
		if parents, err = s.lineage(rec.OwnerID, rec.ParentID); err != nil {
			return 0, 0, err
		}
	}
	seen := make(map[Digest]bool)
	err = s.view(ctx, func(txn core.CatalogTx) error {
		return mergeMaps(ctx, txn, []string{rec.ID}, 0, func(index int64, _ int, d Digest) (bool, error) {
			if d != ZeroDigest {
				dataBlocks++
				if !seen[d] {
					seen[d] = true
					size, err := s.blocks.Stat(ctx, d)
					if err != nil {
						return false, fmt.Errorf("block %s of index %d: %w", d, index, err)
					}
					storedBytes += size
				}
			}
			if pd, found, err := lookupView(txn, parents, index); err != nil {
				return false, err
			} else if found && pd != ZeroDigest {
				dataBlocks--
			}
			return true, nil
		})
	})
	return dataBlocks, storedBytes, err
}

// Secret returns the store-wide random secret called name, creating it on first use.
// It lives in the store so that what it signs stays valid across restarts.
func (s *Store) Secret(name string) ([]byte, error) {
	s.startMu.Lock()
	defer s.startMu.Unlock()
	key := metaKey("secret/" + name)
	ctx := context.Background()
	var secret []byte
	// Read first, without a write transaction: a store started on a full disk (which
	// refuses writes) must still find the secret it has.
	err := s.view(ctx, func(txn core.CatalogTx) error {
		v, err := txn.Get(key)
		secret = v
		return err
	})
	if err == nil {
		return secret, nil
	}
	if !errors.Is(err, core.ErrKeyNotFound) {
		return nil, fmt.Errorf("cas: read secret %s: %w", name, err)
	}
	err = s.commit(ctx, func(txn core.CatalogTx) error {
		// Under a lock every daemon sharing the catalog takes: one secret, whoever
		// asks first.
		if err := txn.Lock(key, true); err != nil {
			return err
		}
		v, err := txn.Get(key)
		if err == nil {
			secret = v
			return nil
		}
		if !errors.Is(err, core.ErrKeyNotFound) {
			return err
		}
		secret = make([]byte, 32)
		_, _ = rand.Read(secret)
		return txn.Set(key, secret)
	})
	if err != nil {
		return nil, fmt.Errorf("cas: secret %s: %w", name, err)
	}
	return secret, s.syncCatalog()
}

// writeRecord persists a snapshot record and syncs it to stable storage.
// The blocks are synced first: a block store that cannot make them durable fails the
// change before the record is written, so no record on disk promises what the store
// did not keep.
func (s *Store) writeRecord(prev, rec Snapshot) error {
	if err := s.syncBlocks(); err != nil {
		return err
	}
	if s.shared() {
		return s.writeSharedRecord(context.Background(), prev, rec)
	}
	if err := s.commit(context.Background(), func(txn core.CatalogTx) error { return putJSON(txn, snapshotKey(rec.ID), rec) }); err != nil {
		return fmt.Errorf("cas: write snapshot record: %w", err)
	}
	return s.syncCatalog()
}

// idle reports whether a pending snapshot has seen no put or complete for its Timeout.
func (s *Store) idle(e *entry, now time.Time) bool {
	timeout := time.Duration(e.rec.TimeoutMinutes) * time.Minute
	if timeout <= 0 || now.UnixNano()-e.lastActive.Load() < int64(timeout) {
		return false
	}
	if s.shared() {
		// Puts may have gone to other daemons: their last one counts too.
		if last := s.sharedActivity(e.rec.ID); now.UnixNano()-last < int64(timeout) {
			return false
		}
	}
	return true
}

// sharedActivity is when a daemon last committed a put to the snapshot (0: never, or
// unknown, which never makes a snapshot idle by itself: the caller checks its own).
func (s *Store) sharedActivity(id string) int64 {
	var last int64
	err := s.view(context.Background(), func(txn core.CatalogTx) error {
		v, err := txn.Get(activityKey(id))
		if err == nil && len(v) == 8 {
			last = int64(binary.BigEndian.Uint64(v))
		}
		if errors.Is(err, core.ErrKeyNotFound) {
			return nil
		}
		return err
	})
	if err != nil {
		// Not knowing is not idle: a snapshot is expired only on evidence.
		return math.MaxInt64 / 2
	}
	return last
}

func (s *Store) expireIfIdle(ctx context.Context, e *entry) error {
	e.mu.RLock()
	idle := e.rec.Status == StatusPending && s.idle(e, s.clock.Now())
	e.mu.RUnlock()
	if !idle {
		return nil
	}
	return s.expire(ctx, e)
}

// ExpireIdle moves every pending snapshot idle for longer than its Timeout to error and
// releases its blocks. It returns how many it moved.
func (s *Store) ExpireIdle(ctx context.Context) (int, error) {
	s.snapsMu.RLock()
	entries := make([]*entry, 0, len(s.snaps))
	for _, e := range s.snaps {
		entries = append(entries, e)
	}
	s.snapsMu.RUnlock()
	n := 0
	for _, e := range entries {
		if e.deleted.Load() {
			continue
		}
		e.mu.RLock()
		idle := e.rec.Status == StatusPending && s.idle(e, s.clock.Now())
		e.mu.RUnlock()
		if !idle {
			continue
		}
		if err := s.expire(ctx, e); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func (s *Store) expire(ctx context.Context, e *entry) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.rec.Status != StatusPending || !s.idle(e, s.clock.Now()) {
		return nil // a put or complete got there first
	}
	rec := e.rec.Clone()
	rec.Status = StatusError
	rec.StatusMessage = fmt.Sprintf("no put or complete for %d minutes (Timeout)", rec.TimeoutMinutes)
	if err := s.writeRecord(e.rec, rec); err != nil {
		return err
	}
	s.ctr.noteState(&e.rec, &rec)
	e.rec = rec
	s.log.Info("snapshot timed out", "snapshot", rec.ID, "timeout_minutes", rec.TimeoutMinutes)
	if err := s.dropMap(ctx, rec.ID); err != nil {
		return fmt.Errorf("cas: release blocks of %s: %w", rec.ID, err)
	}
	return nil
}

func putJSON(txn core.CatalogTx, key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return txn.Set(key, b)
}

// setJSON is putJSON for a Badger transaction of the embedded engines' own work.
func setJSON(txn *badger.Txn, key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return txn.Set(key, b)
}
