// Package pgcatalog keeps the store's catalog (core.Catalog) in PostgreSQL, so that
// several daemons can share one catalog.
//
// # Layout
//
// Everything lives in one schema (Options.Schema, "ebsd" by default), created at Open
// if missing:
//
//	ebsd_kv   (k bytea PRIMARY KEY, v bytea NOT NULL)  the catalog's keys and values
//	ebsd_meta (name text PRIMARY KEY, value text NOT NULL)  ('format', '1')
//
// bytea compares as unsigned bytes, whatever the database's collation, so the primary
// key's index gives Scan the byte order core.Catalog asks for. A key must fit in a
// btree index entry (about 2,700 bytes); the store's keys are far shorter. Open
// refuses a schema whose format row names another format.
//
// # Transactions
//
// An Update is one READ COMMITTED transaction. Each statement sees every transaction
// committed before it started, so the store gets its isolation from Lock, not from the
// isolation level: Lock is a transaction-scoped advisory lock, pg_advisory_xact_lock
// or pg_advisory_xact_lock_shared, on a 64-bit hash of the schema and the name (see
// lockKey). Two names whose hashes collide share one lock, which serialises more but
// is never unsafe. A Lock's wait ends with its context: the query is cancelled on the
// server.
//
// So a read-modify-write needs a Lock: two Updates that read a key without one may
// both read the same value and both write, the second overwriting the first, where an
// optimistic engine (Badger) would have retried one of them. core.Catalog promises no
// more; the conformance suite's counter runs under a Lock.
//
// Set and Delete are queued and sent together, pipelined, before the transaction's
// next read, Lock or commit, so that an Update writing thousands of keys costs a few
// round trips instead of thousands. An error of a queued write is reported by that
// next call (or by Update).
//
// A View is a READ ONLY, REPEATABLE READ transaction, begun at its first read, so
// that all its reads see one snapshot. Its Locks are session-level advisory locks
// (pg_advisory_lock, pg_advisory_lock_shared, released when the View ends) taken on
// its connection before that transaction begins, so that its snapshot includes what
// the locks' previous holders committed. A Lock after the View has read cannot give
// it that: the run ends there (the Lock returns an error that fn must return, as
// core.Catalog says), and fn runs again with every lock asked for taken first, as the
// embedded catalog does.
//
// # Retries
//
// Update runs fn again, in a new transaction, when the transaction failed for a
// reason a second try may not meet: a serialization failure (40001), a deadlock
// (40P01), a unique violation (23505, which concurrent DDL can raise), a query
// cancelled while the caller's context lives on (57014: a stray cancel request), a
// server shutting down or starting (57P01-57P03, 53300, class 08), or a connection
// that failed or could not be made — as long as COMMIT was not sent. It tries at most
// Options.MaxAttempts times, backing off exponentially between tries (10 ms doubling
// to 1 s, jittered), and never once the context has ended. An error that fn returns
// is returned as it is and never retried, unless one of fn's calls failed first
// (the transaction is then aborted, and it is that failure that counts).
//
// If the connection fails, or the server ends the session, after COMMIT was sent, the
// outcome is unknown: Update returns an error wrapping ErrCommitUnknown and does not
// retry, since fn's writes may have committed. (A plain error in answer to COMMIT
// means it rolled back; a FATAL one may come after the commit was made durable.)
//
// A View runs fn again for the same failures (core.Catalog allows it); having
// nothing to commit, it has no unknown outcome.
//
// # Durability
//
// A commit that returned has been flushed to PostgreSQL's WAL (with the default
// synchronous_commit = on), so Sync has nothing to do. Open warns when the server
// runs with synchronous_commit or fsync off.
package pgcatalog

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ebsd/ebsd/cas/core"
)

// Defaults of Options.
const (
	DefaultSchema      = "ebsd"
	DefaultMaxConns    = 16
	DefaultMaxAttempts = 10
)

// FormatVersion is the layout this package reads and writes, kept in the schema's
// ebsd_meta table.
const FormatVersion = 1

const (
	kvTable   = "ebsd_kv"
	metaTable = "ebsd_meta"

	// Scan reads pages of keys, starting small for the scans that stop early and
	// growing to a size that keeps a long scan to few round trips.
	firstPage = 32
	maxPage   = 512

	// maxQueued writes are sent in one pipelined batch at most.
	maxQueued = 256

	// Back-off between the tries of a transaction.
	firstBackoff = 10 * time.Millisecond
	maxBackoff   = time.Second

	// connectTimeout bounds a connection attempt when the URL sets none.
	connectTimeout = 10 * time.Second
	// cleanupTimeout bounds a rollback, run even when the caller's context has ended
	// so that the connection goes back to the pool clean.
	cleanupTimeout = 5 * time.Second
	// cancelGrace is how long a query whose context ended may take to stop once the
	// server was asked to cancel it, before its connection is dropped instead.
	cancelGrace = 2 * time.Second
)

// ErrCommitUnknown says the connection failed while COMMIT was under way: the
// transaction may or may not have committed.
var ErrCommitUnknown = errors.New("pgcatalog: the commit's outcome is unknown")

// errReadOnly is what Set and Delete in a View return.
var errReadOnly = errors.New("a View's transaction is read-only")

// errRelock is what a View's Lock after a read returns: the View runs fn again with
// the lock taken before its snapshot.
var errRelock = errors.New("a View's Lock after a read: run again with the lock taken first")

// maxRelocks bounds the runs of a View that asks for new locks after reading: each
// run adds one, so only a View locking ever new names reaches it.
const maxRelocks = 100

// Options configure Open.
type Options struct {
	// URL is a PostgreSQL connection string, postgres://user:password@host:port/db?...
	// (libpq's keyword/value form works too). Settings the server accepts at connect
	// time may be given as parameters, e.g. &lock_timeout=0.
	URL string
	// Schema holds the catalog's tables; DefaultSchema if empty. Catalogs in
	// different schemas of one database are independent, their locks included.
	Schema string
	// MaxConns bounds the connection pool (over the URL's pool_max_conns);
	// DefaultMaxConns if zero. Every View and Update running holds one connection,
	// also while it waits for a Lock; one more waits for a connection to come free.
	MaxConns int32
	// MaxAttempts bounds the tries of a View or Update that fails for a reason a
	// retry may not meet; DefaultMaxAttempts if zero.
	MaxAttempts int
	// Log receives the catalog's warnings and retries; nothing is logged if nil.
	Log *slog.Logger
}

// Catalog is a core.Catalog in a PostgreSQL schema. It is safe for concurrent use.
type Catalog struct {
	pool        *pgxpool.Pool
	log         *slog.Logger
	schema      string
	maxAttempts int
	q           queries
	closed      atomic.Bool // so that calls after Close fail at once instead of retrying

	// beforeCommit, if set, runs just before an Update's COMMIT: tests break the
	// connection there.
	beforeCommit func(pg pgx.Tx)
}

var _ core.Catalog = (*Catalog)(nil)

// queries are the catalog's statements, with its schema's quoted names in them.
type queries struct {
	get, set, del          string
	scanBounded, scanToEnd string
	lockShared, lockExcl   string // an Update's, until its transaction ends
	sessShared, sessExcl   string // a View's, until it unlocks them
}

func newQueries(schema string) queries {
	t := pgx.Identifier{schema, kvTable}.Sanitize()
	return queries{
		get:         "SELECT v FROM " + t + " WHERE k = $1",
		set:         "INSERT INTO " + t + " (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
		del:         "DELETE FROM " + t + " WHERE k = $1",
		scanBounded: "SELECT k, v FROM " + t + " WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3",
		scanToEnd:   "SELECT k, v FROM " + t + " WHERE k >= $1 ORDER BY k LIMIT $2",
		lockShared:  "SELECT pg_advisory_xact_lock_shared($1)",
		lockExcl:    "SELECT pg_advisory_xact_lock($1)",
		sessShared:  "SELECT pg_advisory_lock_shared($1)",
		sessExcl:    "SELECT pg_advisory_lock($1)",
	}
}

// Open connects to the PostgreSQL server at url and opens the catalog in the default
// schema, creating it if missing.
func Open(ctx context.Context, url string, log *slog.Logger) (*Catalog, error) {
	return OpenWith(ctx, Options{URL: url, Log: log})
}

// OpenWith opens the catalog that o describes, creating its schema and tables if
// missing. Several processes may open one catalog at once.
func OpenWith(ctx context.Context, o Options) (*Catalog, error) {
	if o.URL == "" {
		return nil, errors.New("pgcatalog: no URL")
	}
	if o.Schema == "" {
		o.Schema = DefaultSchema
	}
	if len(o.Schema) > 63 {
		return nil, fmt.Errorf("pgcatalog: schema name %q is longer than PostgreSQL's 63 bytes", o.Schema)
	}
	if o.MaxConns == 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.MaxConns < 0 {
		return nil, fmt.Errorf("pgcatalog: MaxConns %d", o.MaxConns)
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.MaxAttempts < 0 {
		return nil, fmt.Errorf("pgcatalog: MaxAttempts %d", o.MaxAttempts)
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	cfg, err := pgxpool.ParseConfig(o.URL)
	if err != nil {
		// pgx's parse errors leave the password out.
		return nil, fmt.Errorf("pgcatalog: parsing the URL: %w", err)
	}
	cfg.MaxConns = o.MaxConns
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = connectTimeout
	}
	// When a context ends during a query, ask the server to cancel it rather than
	// drop the connection: a Lock wait then ends on the server too, instead of
	// leaving a backend queued for the lock, and the connection stays usable.
	cfg.ConnConfig.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: cancelGrace}
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgcatalog: connecting: %w", err)
	}
	c := &Catalog{
		pool:        pool,
		log:         o.Log,
		schema:      o.Schema,
		maxAttempts: o.MaxAttempts,
		q:           newQueries(o.Schema),
	}
	if err := c.setUp(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return c, nil
}

// Close closes the catalog's connections, waiting for those in use to be released.
func (c *Catalog) Close() {
	c.closed.Store(true)
	c.pool.Close()
}

// setUp creates the schema and tables if missing and checks the format, under an
// advisory lock so that daemons starting together do not race on the DDL.
func (c *Catalog) setUp(ctx context.Context) error {
	err := c.Update(ctx, func(ct core.CatalogTx) error {
		t := ct.(*tx)
		// A failed statement goes through t.fail, so that Update retries what
		// concurrent DDL can make fail (a unique violation in the system catalogs).
		exec := func(sql string, args ...any) error {
			if _, err := t.pg.Exec(ctx, sql, args...); err != nil {
				return t.fail("setting up", err)
			}
			return nil
		}
		query := func(dst any, sql string, args ...any) error {
			if err := t.pg.QueryRow(ctx, sql, args...).Scan(dst); err != nil {
				return t.fail("setting up", err)
			}
			return nil
		}
		if err := exec("SELECT pg_advisory_xact_lock($1)", setupLockKey(c.schema)); err != nil {
			return err
		}
		// Look before creating: CREATE ... IF NOT EXISTS needs the CREATE privilege
		// even when there is nothing to create.
		var exists bool
		if err := query(&exists, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", c.schema); err != nil {
			return err
		}
		if !exists {
			if err := exec("CREATE SCHEMA " + pgx.Identifier{c.schema}.Sanitize()); err != nil {
				return err
			}
		}
		for _, table := range []struct{ name, columns string }{
			{kvTable, "(k bytea PRIMARY KEY, v bytea NOT NULL)"},
			{metaTable, "(name text PRIMARY KEY, value text NOT NULL)"},
		} {
			name := pgx.Identifier{c.schema, table.name}.Sanitize()
			if err := query(&exists, "SELECT to_regclass($1) IS NOT NULL", name); err != nil {
				return err
			}
			if !exists {
				if err := exec("CREATE TABLE " + name + " " + table.columns); err != nil {
					return err
				}
			}
		}
		meta := pgx.Identifier{c.schema, metaTable}.Sanitize()
		err := exec("INSERT INTO "+meta+" (name, value) VALUES ('format', $1) ON CONFLICT (name) DO NOTHING", fmt.Sprint(FormatVersion))
		if err != nil {
			return err
		}
		var format string
		if err := query(&format, "SELECT value FROM "+meta+" WHERE name = 'format'"); err != nil {
			return err
		}
		if format != fmt.Sprint(FormatVersion) {
			// Not through t.fail: no retry changes the format.
			return fmt.Errorf("schema %q holds a catalog of format %q; this build reads format %d", c.schema, format, FormatVersion)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("pgcatalog: setting up schema %q: %w", c.schema, err)
	}
	var syncCommit, fsync string
	err = c.pool.QueryRow(ctx, "SELECT current_setting('synchronous_commit'), current_setting('fsync')").Scan(&syncCommit, &fsync)
	if err != nil {
		return fmt.Errorf("pgcatalog: reading the server's settings: %w", err)
	}
	if syncCommit == "off" || fsync == "off" {
		c.log.Warn("pgcatalog: the server may lose commits in a crash", "synchronous_commit", syncCommit, "fsync", fsync)
	}
	return nil
}

// View runs fn in a read-only transaction (see the package documentation).
func (c *Catalog) View(ctx context.Context, fn func(tx core.CatalogTx) error) error {
	var pre []viewLock // the locks to take before the next run's transaction
	failures := 0
	for runs := 1; ; runs++ {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("pgcatalog: view: %w", err)
		}
		t := &tx{c: c, ctx: ctx, readOnly: true, pre: pre}
		err := t.runView(fn)
		switch {
		case t.relock != nil:
			if runs >= maxRelocks {
				return fmt.Errorf("pgcatalog: view: %d runs, each locking a new name after reading", runs)
			}
			pre = addLock(pre, *t.relock)
			continue
		case err == nil:
			return nil
		case t.failed == nil || !retryable(ctx, t.failed) || c.closed.Load():
			return err
		}
		failures++
		if failures >= c.maxAttempts {
			return fmt.Errorf("pgcatalog: view failed %d times, the last: %w", failures, err)
		}
		c.log.Debug("pgcatalog: retrying a view", "attempt", failures, "err", err)
		if werr := c.backoff(ctx, failures); werr != nil {
			return fmt.Errorf("pgcatalog: view: %w (then, waiting to retry: %w)", err, werr)
		}
	}
}

// addLock adds a lock to take, or makes one of the same name exclusive.
func addLock(locks []viewLock, l viewLock) []viewLock {
	for i := range locks {
		if locks[i].name == l.name {
			locks[i].exclusive = locks[i].exclusive || l.exclusive
			return locks
		}
	}
	return append(locks, l)
}

// Update runs fn in a read-write transaction, retrying as the package documentation
// says.
func (c *Catalog) Update(ctx context.Context, fn func(tx core.CatalogTx) error) error {
	for attempt := 1; ; attempt++ {
		retry, err := c.updateOnce(ctx, fn)
		if err == nil || !retry || c.closed.Load() {
			return err
		}
		if attempt >= c.maxAttempts {
			return fmt.Errorf("pgcatalog: update failed %d times, the last: %w", attempt, err)
		}
		c.log.Debug("pgcatalog: retrying an update", "attempt", attempt, "err", err)
		if werr := c.backoff(ctx, attempt); werr != nil {
			return fmt.Errorf("pgcatalog: update: %w (then, waiting to retry: %w)", err, werr)
		}
	}
}

// updateOnce runs fn in one transaction and reports whether a failure may be retried.
func (c *Catalog) updateOnce(ctx context.Context, fn func(tx core.CatalogTx) error) (retry bool, err error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("pgcatalog: update: %w", err)
	}
	pg, err := c.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return retryable(ctx, err), fmt.Errorf("pgcatalog: begin: %w", wrapCtx(ctx, err))
	}
	defer c.rollback(ctx, pg) // does nothing after a commit
	t := &tx{c: c, ctx: ctx, pg: pg}
	ferr := fn(t)
	t.ended = true
	if t.failed != nil {
		// A statement failed, so the transaction is aborted whatever fn made of it;
		// that failure decides. fn's own error, if any, most likely wraps it.
		if ferr == nil {
			ferr = t.failed
		}
		return retryable(ctx, t.failed), ferr
	}
	if ferr != nil {
		return false, ferr
	}
	if err := t.flush(); err != nil {
		return retryable(ctx, t.failed), err
	}
	if c.beforeCommit != nil {
		c.beforeCommit(pg)
	}
	if err := pg.Commit(ctx); err != nil {
		return c.commitFailed(ctx, err)
	}
	return false, nil
}

// commitFailed tells whether a failed COMMIT rolled the transaction back (and then
// whether to retry) or left its outcome unknown.
func (c *Catalog) commitFailed(ctx context.Context, err error) (retry bool, _ error) {
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Severity == "ERROR":
		// The server refused the commit (a serialization failure, say): the
		// transaction rolled back. A FATAL one ends the session instead, and may
		// come after the commit was made durable.
		return retryable(ctx, err), fmt.Errorf("pgcatalog: commit: %w", err)
	case errors.Is(err, pgx.ErrTxCommitRollback):
		return false, fmt.Errorf("pgcatalog: commit: %w", err)
	case pgconn.SafeToRetry(err):
		// Nothing was sent: the transaction did not commit.
		return retryable(ctx, err), fmt.Errorf("pgcatalog: commit: %w", wrapCtx(ctx, err))
	}
	c.log.Warn("pgcatalog: the connection failed during a commit; it may or may not have committed", "err", err)
	return false, fmt.Errorf("pgcatalog: commit: %w: %w", ErrCommitUnknown, wrapCtx(ctx, err))
}

// Sync does nothing: a commit that returned is already durable (see the package
// documentation).
func (c *Catalog) Sync(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pgcatalog: sync: %w", err)
	}
	return nil
}

// rollback ends pg, with a context of its own: a rollback must run when the caller's
// context has ended too, so that the connection returns to the pool clean (pgxpool
// drops a connection left in a transaction).
func (c *Catalog) rollback(ctx context.Context, pg pgx.Tx) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if err := pg.Rollback(ctx); err != nil && !errors.Is(err, pgx.ErrTxClosed) {
		c.log.Debug("pgcatalog: rollback failed; the connection is dropped", "err", err)
	}
}

// backoff waits before try attempt+1: exponential, jittered so that transactions
// that failed together do not retry together.
func (c *Catalog) backoff(ctx context.Context, attempt int) error {
	d := firstBackoff << min(attempt-1, 16)
	d = min(d, maxBackoff)
	d = d/2 + rand.N(d/2+1)
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// retryable reports whether a transaction that failed with err may be run again.
func retryable(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return retryableCode(pgErr.Code)
	}
	// No answer from the server: the connection failed or could not be made (the
	// context lives on, so it was not that).
	return true
}

// retryableCode reports whether a transaction that failed with SQLSTATE code may
// succeed if run again.
func retryableCode(code string) bool {
	switch code {
	case "40001", // serialization_failure
		"40P01", // deadlock_detected
		"23505", // unique_violation: concurrent creation of the same row or catalog entry
		"57014", // query_canceled, though the caller's context lives: a stray cancel request
		"57P01", // admin_shutdown
		"57P02", // crash_shutdown
		"57P03", // cannot_connect_now: starting up or shutting down
		"53300": // too_many_connections
		return true
	}
	return len(code) == 5 && code[:2] == "08" // connection_exception
}

// wrapCtx makes err wrap the context's error too when the context has ended: pgx
// reports a query cancelled on the server as the server's error alone.
func wrapCtx(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%w: %w", cerr, err)
	}
	return err
}

// lockKey is the advisory lock key of a lock name: the first 8 bytes of the SHA-256
// of the schema, a zero byte and the name. Every daemon sharing a catalog must
// compute the same key, so this is part of the format. The schema is in it so that
// catalogs in different schemas of one database do not contend.
func lockKey(schema string, name []byte) int64 {
	h := sha256.New()
	h.Write([]byte(schema))
	h.Write([]byte{0})
	h.Write(name)
	return int64(binary.BigEndian.Uint64(h.Sum(nil)))
}

// setupLockKey is the advisory lock key that serialises setting up a schema: hashed
// apart from every lock name (schema names have no zero byte, and this has two).
func setupLockKey(schema string) int64 {
	return lockKey("pgcatalog setup\x00"+schema, nil)
}
