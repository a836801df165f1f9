package cas

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/dgraph-io/badger/v4"
	"github.com/ebsd/ebsd/cas/core"
)

// badgerCatalog is the embedded catalog: the store's records in its own Badger DB,
// beside the blocks of the embedded block store. Badger's own conflict detection is
// off (the store serialises writers itself, and with it off Update never fails for a
// conflict); named locks live in this process, the only one that can open the DB.
type badgerCatalog struct {
	db *badger.DB
	// sync is the store's one Sync of the DB (badger_sync.go).
	sync *valueLogSync
	// gate is taken around every write: the store holds it exclusively while a
	// collection flushes Badger's memtable, which makes Badger refuse writes.
	gate  func(func() error) error
	locks lockTable
}

var _ core.Catalog = (*badgerCatalog)(nil)

// A Badger transaction reads the DB as it was when the transaction began, but a read
// after Lock must see what the lock's previous holders committed. So a transaction never
// waits for a lock inside itself: its first Lock of a name ends the run (errRelock), and
// the next run takes every lock asked for so far before its transaction begins. fn runs
// once more per lock name the first time; the store's hot paths on this catalog take no
// locks (one process: its own locks serialise them).
var errRelock = errors.New("badger catalog: lock before the transaction begins")

func (c *badgerCatalog) View(ctx context.Context, fn func(core.CatalogTx) error) error {
	return c.run(ctx, false, fn)
}

func (c *badgerCatalog) Update(ctx context.Context, fn func(core.CatalogTx) error) error {
	return c.run(ctx, true, fn)
}

func (c *badgerCatalog) run(ctx context.Context, write bool, fn func(core.CatalogTx) error) error {
	var want []heldLock // every lock a run asked for, taken before the next run begins
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		tx := &badgerTx{ctx: ctx, locks: &c.locks}
		err := tx.lockAll(want)
		if err == nil {
			err = c.once(write, tx, fn)
		}
		// Locks are released after the commit (or the discard): what a lock protects
		// is committed before the next holder reads it.
		tx.release()
		if !errors.Is(err, errRelock) {
			return err
		}
		want = addLock(want, tx.asked)
	}
}

// addLock adds a lock to take, or makes a shared one of the same name exclusive (one
// transaction never holds a name twice: that would wait for itself).
func addLock(want []heldLock, l heldLock) []heldLock {
	for i := range want {
		if want[i].name == l.name {
			want[i].exclusive = want[i].exclusive || l.exclusive
			return want
		}
	}
	return append(want, l)
}

func (c *badgerCatalog) once(write bool, tx *badgerTx, fn func(core.CatalogTx) error) error {
	body := func(txn *badger.Txn) error {
		tx.txn = txn
		return fn(tx)
	}
	if !write {
		return c.db.View(body)
	}
	return c.gate(func() error { return c.db.Update(body) })
}

func (c *badgerCatalog) Sync(context.Context) error {
	if err := c.sync.Sync(); err != nil {
		return fmt.Errorf("badger catalog: fsync: %w", err)
	}
	return nil
}

// badgerTx is one transaction of the embedded catalog.
type badgerTx struct {
	ctx   context.Context
	txn   *badger.Txn
	locks *lockTable
	held  []heldLock
	asked heldLock // the lock whose first request ended this run
}

func (t *badgerTx) Get(key []byte) ([]byte, error) {
	item, err := t.txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("badger catalog: %q: %w", key, core.ErrKeyNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("badger catalog: get %q: %w", key, err)
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return nil, fmt.Errorf("badger catalog: read %q: %w", key, err)
	}
	return v, nil
}

func (t *badgerTx) Set(key, value []byte) error {
	// Badger keeps the slices until the commit: copies, since the caller may reuse them.
	if err := t.txn.Set(bytes.Clone(key), bytes.Clone(value)); err != nil {
		return fmt.Errorf("badger catalog: set %q: %w", key, err)
	}
	return nil
}

func (t *badgerTx) Delete(key []byte) error {
	if err := t.txn.Delete(bytes.Clone(key)); err != nil {
		return fmt.Errorf("badger catalog: delete %q: %w", key, err)
	}
	return nil
}

func (t *badgerTx) Scan(prefix, from []byte, fn func(key, value []byte) (bool, error)) error {
	it := t.txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 64})
	defer it.Close()
	for it.Seek(core.ScanStart(prefix, from)); it.Valid(); it.Next() {
		if err := t.ctx.Err(); err != nil {
			return err
		}
		item := it.Item()
		var more bool
		var fnErr error
		err := item.Value(func(v []byte) error {
			more, fnErr = fn(item.Key(), v)
			return fnErr
		})
		switch {
		case fnErr != nil:
			return fnErr
		case err != nil:
			return fmt.Errorf("badger catalog: read %q: %w", item.Key(), err)
		case !more:
			return nil
		}
	}
	return nil
}

func (t *badgerTx) Lock(name []byte, exclusive bool) error {
	for _, h := range t.held {
		if h.name == string(name) && (h.exclusive || !exclusive) {
			return nil // taken before this transaction began
		}
	}
	t.asked = heldLock{name: string(name), exclusive: exclusive}
	return errRelock
}

// lockAll takes the locks before the transaction begins.
func (t *badgerTx) lockAll(locks []heldLock) error {
	for _, l := range locks {
		h, err := t.locks.acquire(t.ctx, l.name, l.exclusive)
		if err != nil {
			return err
		}
		t.held = append(t.held, h)
	}
	return nil
}

func (t *badgerTx) release() {
	for i := len(t.held) - 1; i >= 0; i-- {
		t.locks.release(t.held[i])
	}
	t.held = nil
}

// lockTable holds the named locks of the embedded catalog's transactions: a
// reader-writer lock per name, created on first use and dropped when no transaction
// holds or waits for it, so names that are block digests cost nothing once released.
type lockTable struct {
	mu    sync.Mutex
	locks map[string]*namedLock
}

type namedLock struct {
	refs    int           // holders and waiters
	readers int           // shared holders
	writer  bool          // an exclusive holder
	changed chan struct{} // closed and replaced whenever the lock is released
}

type heldLock struct {
	name      string
	exclusive bool
}

// acquire waits for the lock, or for ctx to end.
func (lt *lockTable) acquire(ctx context.Context, name string, exclusive bool) (heldLock, error) {
	lt.mu.Lock()
	if lt.locks == nil {
		lt.locks = make(map[string]*namedLock)
	}
	l := lt.locks[name]
	if l == nil {
		l = &namedLock{changed: make(chan struct{})}
		lt.locks[name] = l
	}
	l.refs++
	for l.writer || (exclusive && l.readers > 0) {
		wait := l.changed
		lt.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			lt.mu.Lock()
			l.refs--
			lt.dropIfIdle(name, l)
			lt.mu.Unlock()
			return heldLock{}, fmt.Errorf("badger catalog: waiting for lock %q: %w", name, ctx.Err())
		}
		lt.mu.Lock()
	}
	if exclusive {
		l.writer = true
	} else {
		l.readers++
	}
	lt.mu.Unlock()
	return heldLock{name: name, exclusive: exclusive}, nil
}

func (lt *lockTable) release(h heldLock) {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	l := lt.locks[h.name]
	if h.exclusive {
		l.writer = false
	} else {
		l.readers--
	}
	l.refs--
	close(l.changed)
	l.changed = make(chan struct{})
	lt.dropIfIdle(h.name, l)
}

func (lt *lockTable) dropIfIdle(name string, l *namedLock) {
	if l.refs == 0 {
		delete(lt.locks, name)
	}
}
