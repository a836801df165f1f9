package pgcatalog

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ebsd/ebsd/cas/core"
)

// tx is one run of a View's or an Update's fn.
type tx struct {
	c        *Catalog
	ctx      context.Context
	readOnly bool
	pg       pgx.Tx // nil until a View's first read
	queued   *pgx.Batch

	// A View's connection (acquired at its first call), the locks it holds there,
	// name → exclusive, the locks to take before its first read (asked for by earlier
	// runs), and a Lock that came after a read and so ends this run.
	conn   *pgxpool.Conn
	held   map[string]bool
	pre    []viewLock
	relock *viewLock
	// unlock says the View's session may hold locks: set before asking for one,
	// since a request that fails (cancelled, say) may have been granted first.
	unlock bool

	// failed is the first call that failed on the server or the connection: the
	// transaction is aborted from then on (PostgreSQL refuses every later statement
	// of it), so later calls fail at once and Update goes by this error.
	failed error
	ended  bool
}

var _ core.CatalogTx = (*tx)(nil)

// row is one key and value of a Scan's page.
type row struct{ k, v []byte }

// viewLock is a lock a View takes before its transaction begins.
type viewLock struct {
	name      string
	exclusive bool
}

// usable checks that tx can still be used.
func (t *tx) usable(op string, key []byte) error {
	switch {
	case t.ended:
		return fmt.Errorf("pgcatalog: %s %q: the transaction has ended", op, key)
	case t.failed != nil:
		return fmt.Errorf("pgcatalog: %s %q: an earlier call failed, aborting the transaction: %w", op, key, t.failed)
	case t.relock != nil:
		return fmt.Errorf("pgcatalog: %s %q: %w", op, key, errRelock)
	}
	return nil
}

// ready checks that tx can run a statement, begins a View's transaction at its first
// read, and sends the queued writes so that the statement sees them.
func (t *tx) ready(op string, key []byte) error {
	if err := t.usable(op, key); err != nil {
		return err
	}
	if t.pg == nil {
		if err := t.connect(); err != nil {
			return err
		}
		pg, err := t.conn.BeginTx(t.ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
		if err != nil {
			return t.fail("begin", err)
		}
		t.pg = pg
	}
	return t.flush()
}

// connect acquires a View's connection and takes the locks earlier runs asked for.
func (t *tx) connect() error {
	if t.conn != nil {
		return nil
	}
	conn, err := t.c.pool.Acquire(t.ctx)
	if err != nil {
		return t.fail("connecting", err)
	}
	t.conn = conn
	for _, l := range t.pre {
		if err := t.sessionLock(l.name, l.exclusive); err != nil {
			return err
		}
	}
	return nil
}

// sessionLock takes a View's lock on its connection, outside any transaction.
func (t *tx) sessionLock(name string, exclusive bool) error {
	q := t.c.q.sessShared
	if exclusive {
		q = t.c.q.sessExcl
	}
	t.unlock = true
	if _, err := t.conn.Exec(t.ctx, q, lockKey(t.c.schema, []byte(name))); err != nil {
		return t.fail(fmt.Sprintf("lock %q", name), err)
	}
	if t.held == nil {
		t.held = map[string]bool{}
	}
	t.held[name] = t.held[name] || exclusive
	return nil
}

// runView runs fn as one run of a View and ends it: its transaction rolled back, its
// locks released, its connection back in the pool.
func (t *tx) runView(fn func(core.CatalogTx) error) error {
	defer t.endView()
	if err := fn(t); err != nil {
		return err
	}
	// fn may have carried on past a failed call; the run failed all the same.
	return t.failed
}

func (t *tx) endView() {
	t.ended = true
	if t.pg != nil {
		t.c.rollback(t.ctx, t.pg)
	}
	if t.conn == nil {
		return
	}
	if t.unlock {
		// With a context of its own, like the rollback: the locks must go whatever
		// became of the caller's.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.ctx), cleanupTimeout)
		defer cancel()
		if _, err := t.conn.Exec(ctx, "SELECT pg_advisory_unlock_all()"); err != nil {
			// The session may hold them still: end it rather than pool it.
			t.c.log.Debug("pgcatalog: unlocking failed; the connection is dropped", "err", err)
			_ = t.conn.Conn().Close(ctx)
		}
	}
	t.conn.Release()
}

// fail records err as the call that aborted the transaction and returns it, wrapped.
func (t *tx) fail(what string, err error) error {
	err = fmt.Errorf("pgcatalog: %s: %w", what, wrapCtx(t.ctx, err))
	if t.failed == nil {
		t.failed = err
	}
	return err
}

func (t *tx) Get(key []byte) ([]byte, error) {
	if err := t.ready("get", key); err != nil {
		return nil, err
	}
	var v []byte // pgx copies the bytes out of its buffer: the caller may keep them
	err := t.pg.QueryRow(t.ctx, t.c.q.get, nonNil(key)).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("pgcatalog: get %q: %w", key, core.ErrKeyNotFound)
	}
	if err != nil {
		return nil, t.fail(fmt.Sprintf("get %q", key), err)
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

func (t *tx) Set(key, value []byte) error {
	if err := t.writable("set", key); err != nil {
		return err
	}
	// Copies, since the write is sent later and the caller may reuse its buffers;
	// never nil, which pgx would send as NULL.
	t.queue(t.c.q.set, append([]byte{}, key...), append([]byte{}, value...))
	return t.flushIfFull()
}

func (t *tx) Delete(key []byte) error {
	if err := t.writable("delete", key); err != nil {
		return err
	}
	t.queue(t.c.q.del, append([]byte{}, key...))
	return t.flushIfFull()
}

func (t *tx) writable(op string, key []byte) error {
	if err := t.usable(op, key); err != nil {
		return err
	}
	if t.readOnly {
		return fmt.Errorf("pgcatalog: %s %q: %w", op, key, errReadOnly)
	}
	return nil
}

func (t *tx) queue(sql string, args ...any) {
	if t.queued == nil {
		t.queued = &pgx.Batch{}
	}
	t.queued.Queue(sql, args...)
}

func (t *tx) flushIfFull() error {
	if t.queued.Len() < maxQueued {
		return nil
	}
	return t.flush()
}

// flush sends the queued writes in one pipelined batch.
func (t *tx) flush() error {
	if t.queued == nil || t.queued.Len() == 0 {
		return nil
	}
	b := t.queued
	t.queued = nil
	if err := t.pg.SendBatch(t.ctx, b).Close(); err != nil {
		return t.fail(fmt.Sprintf("writing %d keys", b.Len()), err)
	}
	return nil
}

// Scan reads a page of keys at a time into memory and only then calls fn for each,
// since fn may call the transaction and a connection runs one statement at a time.
// Each page starts just after the last key of the one before, so fn's own writes
// ahead of the scan may be visited, and those behind it are not.
func (t *tx) Scan(prefix, from []byte, fn func(key, value []byte) (bool, error)) error {
	start := nonNil(core.ScanStart(prefix, from))
	end, bounded := core.PrefixEnd(prefix)
	limit := firstPage
	for {
		page, err := t.page(prefix, start, end, bounded, limit)
		if err != nil {
			return err
		}
		for _, r := range page {
			more, err := fn(r.k, r.v)
			if err != nil {
				return err
			}
			if !more {
				return nil
			}
		}
		if len(page) < limit {
			return nil
		}
		last := page[len(page)-1].k
		start = append(last[:len(last):len(last)], 0) // the least key after last
		limit = min(2*limit, maxPage)
	}
}

// page returns up to limit keys from start on, below end if bounded.
func (t *tx) page(prefix, start, end []byte, bounded bool, limit int) ([]row, error) {
	if err := t.ready("scan", prefix); err != nil {
		return nil, err
	}
	var rows pgx.Rows
	var err error
	if bounded {
		rows, err = t.pg.Query(t.ctx, t.c.q.scanBounded, start, end, limit)
	} else {
		rows, err = t.pg.Query(t.ctx, t.c.q.scanToEnd, start, limit)
	}
	if err != nil {
		return nil, t.fail(fmt.Sprintf("scan %q", prefix), err)
	}
	defer rows.Close()
	page := make([]row, 0, limit)
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.k, &r.v); err != nil {
			return nil, t.fail(fmt.Sprintf("scan %q", prefix), err)
		}
		page = append(page, r)
	}
	if err := rows.Err(); err != nil {
		return nil, t.fail(fmt.Sprintf("scan %q", prefix), err)
	}
	return page, nil
}

func (t *tx) Lock(name []byte, exclusive bool) error {
	if t.readOnly {
		return t.viewLock(name, exclusive)
	}
	if err := t.ready("lock", name); err != nil {
		return err
	}
	q := t.c.q.lockShared
	if exclusive {
		q = t.c.q.lockExcl
	}
	if _, err := t.pg.Exec(t.ctx, q, lockKey(t.c.schema, name)); err != nil {
		return t.fail(fmt.Sprintf("lock %q", name), err)
	}
	return nil
}

// viewLock takes a View's lock before its first read, or else ends the run so that
// the next takes it before its snapshot.
func (t *tx) viewLock(name []byte, exclusive bool) error {
	if err := t.usable("lock", name); err != nil {
		return err
	}
	if held, ok := t.held[string(name)]; ok && (held || !exclusive) {
		return nil
	}
	if t.pg != nil {
		t.relock = &viewLock{name: string(name), exclusive: exclusive}
		return fmt.Errorf("pgcatalog: lock %q: %w", name, errRelock)
	}
	if err := t.connect(); err != nil {
		return err
	}
	return t.sessionLock(string(name), exclusive)
}

// nonNil returns b, or an empty slice for nil: pgx sends a nil slice as NULL.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
