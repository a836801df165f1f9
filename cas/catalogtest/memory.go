package catalogtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/ebsd/ebsd/cas/core"
)

// NewMemory returns an empty core.Catalog held in memory: the reference the suite
// checks itself against, and a catalog for tests that need no engine.
//
// Updates run concurrently, each writing to a buffer of its own that is applied at
// commit under a short global mutex, so a failed Update leaves nothing behind. An
// Update reads the latest committed state overlaid with its own writes (as
// PostgreSQL's READ COMMITTED does, so Lock alone gives an Update's read-modify-write
// its isolation); a View reads one committed state, taken at its first read and again
// after each of its Locks, so that reads after a Lock see what the lock's previous
// holders committed. Named locks are a real lock table, held until the transaction
// ends, so that shared holders coexist and an exclusive one waits until ctx ends. Keys
// and values are copied on the way in and out. Sync does nothing.
func NewMemory() core.Catalog { return newMemory() }

type memory struct {
	mu    sync.Mutex // serialises commits and guards state
	state *memState
	locks *lockTable

	// rerun makes View and Update run every fn that succeeds a second time,
	// discarding the first run's writes: an engine that retried after a conflict.
	// Locks taken by the first run are kept for the second, as an engine that takes
	// them before the transaction begins would. Only the package's own tests set it.
	rerun bool
}

func newMemory() *memory {
	return &memory{state: &memState{vals: map[string][]byte{}}, locks: newLockTable()}
}

// memState is one committed state. It is never modified once published: a commit
// makes a new one, so a View can go on reading the one it took.
type memState struct {
	keys []string          // ascending
	vals map[string][]byte // the values of keys
}

type memWrite struct {
	value   []byte
	deleted bool
}

var errMemReadOnly = errors.New("a View's transaction is read-only")

func (m *memory) load() *memState {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state
}

// commit publishes a state with tx's writes applied: O(keys), which the suite's sizes
// afford.
func (m *memory) commit(tx *memTx) {
	if len(tx.writes) == 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.state
	vals := maps.Clone(old.vals)
	for k, w := range tx.writes {
		if w.deleted {
			delete(vals, k)
		} else {
			vals[k] = w.value
		}
	}
	keys := make([]string, 0, len(vals))
	i, j := 0, 0
	for i < len(old.keys) || j < len(tx.wkeys) {
		var k string
		switch {
		case j == len(tx.wkeys) || i < len(old.keys) && old.keys[i] < tx.wkeys[j]:
			k = old.keys[i]
			i++
		case i == len(old.keys) || tx.wkeys[j] < old.keys[i]:
			k = tx.wkeys[j]
			j++
		default: // the same key in both
			k = old.keys[i]
			i++
			j++
		}
		if _, ok := vals[k]; ok {
			keys = append(keys, k)
		}
	}
	m.state = &memState{keys: keys, vals: vals}
}

func (m *memory) View(ctx context.Context, fn func(tx core.CatalogTx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("catalogtest: memory view: %w", err)
	}
	held := map[string]bool{}
	defer m.locks.releaseAll(held)
	if m.rerun {
		tx := &memTx{m: m, ctx: ctx, held: held}
		err := fn(tx)
		tx.end()
		if err != nil {
			return err
		}
	}
	tx := &memTx{m: m, ctx: ctx, held: held}
	defer tx.end()
	return fn(tx)
}

func (m *memory) Update(ctx context.Context, fn func(tx core.CatalogTx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("catalogtest: memory update: %w", err)
	}
	held := map[string]bool{}
	// Released after the commit: whoever takes a lock next sees what was committed
	// under it.
	defer m.locks.releaseAll(held)
	runs := 1
	if m.rerun {
		runs = 2
	}
	for run := 1; ; run++ {
		tx := &memTx{m: m, ctx: ctx, update: true, held: held, writes: map[string]memWrite{}}
		err := fn(tx)
		tx.end()
		if err != nil {
			return err
		}
		if run < runs {
			continue
		}
		// An Update whose context ended while fn ran does not commit: its caller
		// may have given up on it.
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("catalogtest: memory update: %w", err)
		}
		m.commit(tx)
		return nil
	}
}

func (m *memory) Sync(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("catalogtest: memory sync: %w", err)
	}
	return nil
}

// memTx is one transaction of a memory catalog.
type memTx struct {
	m      *memory
	ctx    context.Context
	update bool
	held   map[string]bool // lock name → exclusive; shared by the runs of one Update
	ended  bool

	snap   *memState           // View: the state it reads; nil until its first read
	writes map[string]memWrite // Update: the writes to apply at commit
	wkeys  []string            // Update: the keys of writes, ascending
}

func (tx *memTx) end() { tx.ended = true }

func (tx *memTx) usable(op string, key []byte) error {
	if tx.ended {
		return fmt.Errorf("catalogtest: memory %s %q: the transaction has ended", op, key)
	}
	return nil
}

// read returns the committed state tx reads.
func (tx *memTx) read() *memState {
	if tx.update {
		return tx.m.load()
	}
	if tx.snap == nil {
		tx.snap = tx.m.load()
	}
	return tx.snap
}

func (tx *memTx) Get(key []byte) ([]byte, error) {
	if err := tx.usable("get", key); err != nil {
		return nil, err
	}
	if w, ok := tx.writes[string(key)]; ok {
		if w.deleted {
			return nil, fmt.Errorf("catalogtest: memory get %q: %w", key, core.ErrKeyNotFound)
		}
		return bytes.Clone(w.value), nil
	}
	v, ok := tx.read().vals[string(key)]
	if !ok {
		return nil, fmt.Errorf("catalogtest: memory get %q: %w", key, core.ErrKeyNotFound)
	}
	return bytes.Clone(v), nil
}

func (tx *memTx) write(op string, key []byte, w memWrite) error {
	if err := tx.usable(op, key); err != nil {
		return err
	}
	if !tx.update {
		return fmt.Errorf("catalogtest: memory %s %q: %w", op, key, errMemReadOnly)
	}
	k := string(key)
	if _, ok := tx.writes[k]; !ok {
		at, _ := slices.BinarySearch(tx.wkeys, k)
		tx.wkeys = slices.Insert(tx.wkeys, at, k)
	}
	tx.writes[k] = w
	return nil
}

func (tx *memTx) Set(key, value []byte) error {
	// Never nil, so that an empty value is told from a deletion by the flag alone.
	return tx.write("set", key, memWrite{value: append([]byte{}, value...)})
}

func (tx *memTx) Delete(key []byte) error {
	return tx.write("delete", key, memWrite{deleted: true})
}

// Scan steps from key to key, each step a fresh search of the committed state and of
// the transaction's writes, so fn may call the transaction (even write) meanwhile.
func (tx *memTx) Scan(prefix, from []byte, fn func(key, value []byte) (bool, error)) error {
	if err := tx.usable("scan", prefix); err != nil {
		return err
	}
	cur := string(core.ScanStart(prefix, from))
	end, bounded := core.PrefixEnd(prefix)
	for {
		if err := tx.ctx.Err(); err != nil {
			return fmt.Errorf("catalogtest: memory scan %q: %w", prefix, err)
		}
		k, v, ok := tx.next(cur)
		if !ok || bounded && k >= string(end) {
			return nil
		}
		more, err := fn([]byte(k), bytes.Clone(v))
		if err != nil {
			return err
		}
		if !more {
			return nil
		}
		cur = k + "\x00" // the least key after k
	}
}

// next returns the first key at or after cur that tx sees, with its value.
func (tx *memTx) next(cur string) (string, []byte, bool) {
	st := tx.read()
	for {
		ci, _ := slices.BinarySearch(st.keys, cur)
		wi, _ := slices.BinarySearch(tx.wkeys, cur)
		var k string
		switch {
		case ci == len(st.keys) && wi == len(tx.wkeys):
			return "", nil, false
		case ci == len(st.keys):
			k = tx.wkeys[wi]
		case wi == len(tx.wkeys):
			k = st.keys[ci]
		default:
			k = min(st.keys[ci], tx.wkeys[wi])
		}
		if w, ok := tx.writes[k]; ok {
			if w.deleted {
				cur = k + "\x00"
				continue
			}
			return k, w.value, true
		}
		return k, st.vals[k], true
	}
}

func (tx *memTx) Lock(name []byte, exclusive bool) error {
	if err := tx.usable("lock", name); err != nil {
		return err
	}
	n := string(name)
	had, holds := tx.held[n]
	if holds && (had || !exclusive) {
		return nil // held already, in a mode at least as strong
	}
	if err := tx.m.locks.acquire(tx.ctx, n, exclusive, holds); err != nil {
		return fmt.Errorf("catalogtest: memory lock %q: %w", name, err)
	}
	tx.held[n] = exclusive
	tx.snap = nil // a View's reads after the lock see what its holders committed
	return nil
}

// lockTable is a set of named reader-writer locks whose waits end with a context.
type lockTable struct {
	mu      sync.Mutex
	locks   map[string]*lockState
	changed chan struct{} // closed, and replaced, whenever a lock is released
}

type lockState struct {
	exclusive bool
	shared    int
}

func newLockTable() *lockTable {
	return &lockTable{locks: map[string]*lockState{}, changed: make(chan struct{})}
}

// acquire takes lock name, waiting until it can or ctx ends. upgrade says the caller
// holds it shared already and wants it exclusive.
func (lt *lockTable) acquire(ctx context.Context, name string, exclusive, upgrade bool) error {
	for {
		lt.mu.Lock()
		st := lt.locks[name]
		switch {
		case st == nil:
			lt.locks[name] = &lockState{exclusive: exclusive, shared: boolInt(!exclusive)}
			lt.mu.Unlock()
			return nil
		case !exclusive && !st.exclusive:
			st.shared++
			lt.mu.Unlock()
			return nil
		case upgrade && !st.exclusive && st.shared == 1:
			st.exclusive, st.shared = true, 0
			lt.mu.Unlock()
			return nil
		}
		changed := lt.changed
		lt.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (lt *lockTable) release(name string, exclusive bool) {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	st := lt.locks[name]
	if st == nil {
		panic(fmt.Sprintf("catalogtest: releasing lock %q, not held", name))
	}
	if !exclusive && st.shared > 1 {
		st.shared--
	} else {
		delete(lt.locks, name)
	}
	close(lt.changed)
	lt.changed = make(chan struct{})
}

func (lt *lockTable) releaseAll(held map[string]bool) {
	for name, exclusive := range held {
		lt.release(name, exclusive)
	}
	clear(held)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
