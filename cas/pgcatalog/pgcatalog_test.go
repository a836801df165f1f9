package pgcatalog

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ebsd/ebsd/cas/catalogtest"
	"github.com/ebsd/ebsd/cas/core"
	"github.com/ebsd/ebsd/tools/clustertest"
)

// testTimeout bounds every test's calls, so that a server that stops answering fails
// a test instead of hanging it.
const testTimeout = 2 * time.Minute

// patience bounds a wait for what must happen (a barrier partner, a goroutine's end).
const patience = 30 * time.Second

// probe is how long a test watches for what must not happen: a lock granted while
// another transaction holds it.
const probe = 200 * time.Millisecond

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// Lock keys are part of the format: daemons of different builds sharing a catalog
// must compute the same ones.
func TestLockKey(t *testing.T) {
	// Fixed values, computed apart from the code (Python's hashlib): a change here
	// breaks clusters of mixed builds.
	for _, c := range []struct {
		schema, name string
		key          int64
	}{
		{"ebsd", "", -9025498899459586681},
		{"ebsd", "snapshot/1", 8621123085171306795},
		{"other", "\x00\xff", 477892961529241978},
	} {
		if got := lockKey(c.schema, []byte(c.name)); got != c.key {
			t.Errorf("lockKey(%q, %q) = %d, want %d", c.schema, c.name, got, c.key)
		}
	}
	if lockKey("ebsd", []byte("x")) == lockKey("other", []byte("x")) {
		t.Error("the same name in two schemas has one lock key")
	}
	if lockKey("ab", []byte("c")) == lockKey("a", []byte("bc")) {
		t.Error("schema and name are not kept apart in the hash")
	}
	if setupLockKey("ebsd") == lockKey("ebsd", nil) {
		t.Error("the setup lock is the lock of the empty name")
	}
}

func TestRetryable(t *testing.T) {
	ctx := t.Context()
	for code, want := range map[string]bool{
		"40001": true, "40P01": true, "23505": true, "57014": true, "57P01": true, "57P03": true,
		"08006": true, "08001": true, "53300": true,
		"42P01": false, "54000": false, "23502": false, "25006": false, "55P03": false, "XX000": false,
	} {
		err := fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: code, Severity: "ERROR"})
		if got := retryable(ctx, err); got != want {
			t.Errorf("retryable(SQLSTATE %s) = %v, want %v", code, got, want)
		}
	}
	if !retryable(ctx, errors.New("connection reset by peer")) {
		t.Error("a connection error is not retryable")
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	if retryable(done, &pgconn.PgError{Code: "40P01"}) {
		t.Error("retryable with an ended context")
	}
	if retryable(ctx, nil) {
		t.Error("nil is retryable")
	}
}

func TestOpenRefusesBadOptions(t *testing.T) {
	ctx := t.Context()
	for _, o := range []Options{
		{},
		{URL: "postgres://a@127.0.0.1:1/x", Schema: strings.Repeat("s", 64)},
		{URL: "postgres://a@127.0.0.1:1/x", MaxConns: -1},
		{URL: "postgres://a@127.0.0.1:1/x", MaxAttempts: -1},
		{URL: "postgres://a:secret@127.0.0.1:1/x?sslmode=nonsense"},
	} {
		c, err := OpenWith(ctx, o)
		if err == nil {
			c.Close()
			t.Errorf("OpenWith(%+v) succeeded", o)
			continue
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("OpenWith's error shows the password: %v", err)
		}
	}
}

// TestCluster runs against a real PostgreSQL (from scripts/cluster.sh) when
// EBSD_CLUSTER=1. One cluster serves all subtests: starting one costs seconds. Each
// catalog gets a schema of its own; the subtests that restart the server come last.
func TestCluster(t *testing.T) {
	c := clustertest.Start(t)
	url := c.Env["EBSD_CATALOG"]
	var schemas atomic.Int64
	newSchema := func() string { return fmt.Sprintf("t%d", schemas.Add(1)) }
	open := func(t *testing.T, o Options) *Catalog {
		t.Helper()
		if o.URL == "" {
			o.URL = url
		}
		if o.Log == nil {
			o.Log = testLog(t)
		}
		cat, err := OpenWith(testContext(t), o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cat.Close)
		return cat
	}

	t.Run("Conformance", func(t *testing.T) {
		catalogtest.Run(t, func(t *testing.T) core.Catalog { return open(t, Options{Schema: newSchema()}) })
	})
	// Two daemons: every call goes to one of two Catalogs on one schema in turn, so
	// locks and commits are checked across connection pools.
	t.Run("ConformanceTwoInstances", func(t *testing.T) {
		catalogtest.Run(t, func(t *testing.T) core.Catalog {
			s := newSchema()
			return &split{cs: [2]*Catalog{open(t, Options{Schema: s}), open(t, Options{Schema: s})}}
		})
	})
	t.Run("Layout", func(t *testing.T) { testLayout(t, url, open) })
	t.Run("ConcurrentOpen", func(t *testing.T) { testConcurrentOpen(t, url, newSchema()) })
	t.Run("ScanPages", func(t *testing.T) { testScanPages(t, open(t, Options{Schema: newSchema()})) })
	t.Run("TwoInstances", func(t *testing.T) {
		s := newSchema()
		testTwoInstances(t, open(t, Options{Schema: s}), open(t, Options{Schema: s}))
	})
	t.Run("ViewRelock", func(t *testing.T) { testViewRelock(t, open(t, Options{Schema: newSchema()})) })
	t.Run("DeadlockRetried", func(t *testing.T) {
		// A short deadlock_timeout (the server's default is a second) through the
		// URL, which pgx sends at connect; the cluster's user is a superuser.
		testDeadlockRetried(t, open(t, Options{URL: withParam(url, "deadlock_timeout", "100ms"), Schema: newSchema()}))
	})
	t.Run("ConnectionLostRetried", func(t *testing.T) { testConnectionLostRetried(t, open(t, Options{Schema: newSchema()})) })
	t.Run("CommitOutcomeUnknown", func(t *testing.T) { testCommitOutcomeUnknown(t, open(t, Options{Schema: newSchema()})) })
	t.Run("FailedStatementNotCommitted", func(t *testing.T) {
		testFailedStatementNotCommitted(t, open(t, Options{Schema: newSchema()}))
	})
	t.Run("Outage", func(t *testing.T) { testOutage(t, c, open(t, Options{Schema: newSchema()})) })
	t.Run("Restart", func(t *testing.T) {
		cat := open(t, Options{Schema: newSchema()})
		for _, kill := range []bool{false, true} {
			testRestart(t, c, cat, kill)
		}
	})
}

// start runs f on a goroutine and returns a function that waits for its result. The
// test waits for f at its end too (when its context, which f's calls take, has been
// cancelled), so that no goroutine outlives it.
func start(t *testing.T, f func() error) (wait func() error) {
	done := make(chan struct{})
	var err error
	go func() {
		defer close(done)
		err = f()
	}()
	t.Cleanup(func() {
		select {
		case <-done:
		case <-time.After(patience):
			t.Errorf("a call the test started did not return within %v of its end", patience)
		}
	})
	return func() error {
		t.Helper()
		select {
		case <-done:
			return err
		case <-time.After(patience):
			t.Fatalf("a call did not return within %v", patience)
			return nil
		}
	}
}

func withParam(url, name, value string) string {
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	return url + sep + name + "=" + value
}

// split is a core.Catalog that sends each call to one of two Catalogs in turn.
type split struct {
	cs [2]*Catalog
	n  atomic.Uint32
}

func (s *split) next() *Catalog { return s.cs[s.n.Add(1)%2] }

func (s *split) View(ctx context.Context, fn func(core.CatalogTx) error) error {
	return s.next().View(ctx, fn)
}

func (s *split) Update(ctx context.Context, fn func(core.CatalogTx) error) error {
	return s.next().Update(ctx, fn)
}

func (s *split) Sync(ctx context.Context) error { return s.next().Sync(ctx) }

func set(t *testing.T, ctx context.Context, c core.Catalog, key, value string) {
	t.Helper()
	if err := c.Update(ctx, func(tx core.CatalogTx) error { return tx.Set([]byte(key), []byte(value)) }); err != nil {
		t.Fatalf("Update setting %q: %v", key, err)
	}
}

func get(ctx context.Context, c core.Catalog, key string) (string, error) {
	var v []byte
	err := c.View(ctx, func(tx core.CatalogTx) error {
		var err error
		v, err = tx.Get([]byte(key))
		return err
	})
	return string(v), err
}

func want(t *testing.T, ctx context.Context, c core.Catalog, key, value string) {
	t.Helper()
	if got, err := get(ctx, c, key); err != nil || got != value {
		t.Errorf("Get %q = %q, %v; want %q", key, got, err, value)
	}
}

func wantAbsent(t *testing.T, ctx context.Context, c core.Catalog, key string) {
	t.Helper()
	if got, err := get(ctx, c, key); !errors.Is(err, core.ErrKeyNotFound) {
		t.Errorf("Get %q = %q, %v; want core.ErrKeyNotFound", key, got, err)
	}
}

// testLayout checks the tables themselves, the format row, and the default schema.
func testLayout(t *testing.T, url string, open func(*testing.T, Options) *Catalog) {
	ctx := testContext(t)
	cat, err := Open(ctx, url, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	if cat.schema != DefaultSchema {
		t.Errorf("Open's schema is %q, want %q", cat.schema, DefaultSchema)
	}
	key, value := []byte("k\x00\xff"), []byte("v\x00\xff")
	set(t, ctx, cat, string(key), string(value))
	var v []byte
	if err := cat.pool.QueryRow(ctx, `SELECT v FROM ebsd.ebsd_kv WHERE k = $1`, key).Scan(&v); err != nil || !bytes.Equal(v, value) {
		t.Errorf("the row of %q holds %q (%v), want %q", key, v, err, value)
	}
	rows, err := cat.pool.Query(ctx, `SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns
		WHERE table_schema = 'ebsd' ORDER BY table_name, ordinal_position`)
	if err != nil {
		t.Fatal(err)
	}
	var cols []string
	for rows.Next() {
		var table, col, typ, nullable string
		if err := rows.Scan(&table, &col, &typ, &nullable); err != nil {
			t.Fatal(err)
		}
		cols = append(cols, fmt.Sprintf("%s.%s %s %s", table, col, typ, nullable))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	wantCols := "ebsd_kv.k bytea NO, ebsd_kv.v bytea NO, ebsd_meta.name text NO, ebsd_meta.value text NO"
	if got := strings.Join(cols, ", "); got != wantCols {
		t.Errorf("columns: %s\nwant %s", got, wantCols)
	}
	var format string
	if err := cat.pool.QueryRow(ctx, `SELECT value FROM ebsd.ebsd_meta WHERE name = 'format'`).Scan(&format); err != nil || format != "1" {
		t.Errorf("format row %q (%v), want \"1\"", format, err)
	}

	// Opening again finds everything in place; a schema of another format is refused.
	again, err := Open(ctx, url, testLog(t))
	if err != nil {
		t.Fatalf("second Open: %v", err)
	}
	want(t, ctx, again, string(key), string(value))
	again.Close()
	start := time.Now()
	if err := again.Update(ctx, func(core.CatalogTx) error { return nil }); err == nil {
		t.Error("Update after Close succeeded")
	}
	if _, err := get(ctx, again, "k"); err == nil || errors.Is(err, core.ErrKeyNotFound) {
		t.Errorf("View after Close: %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("calls after Close took %v to fail: retried?", took)
	}
	if _, err := cat.pool.Exec(ctx, `UPDATE ebsd.ebsd_meta SET value = '99' WHERE name = 'format'`); err != nil {
		t.Fatal(err)
	}
	if c, err := Open(ctx, url, testLog(t)); err == nil || !strings.Contains(err.Error(), `format "99"`) {
		if c != nil {
			c.Close()
		}
		t.Errorf("Open of a schema of format 99: %v", err)
	}
	if _, err := cat.pool.Exec(ctx, `UPDATE ebsd.ebsd_meta SET value = '1' WHERE name = 'format'`); err != nil {
		t.Fatal(err)
	}
	// A schema name that needs quoting works like any other.
	odd := open(t, Options{Schema: `Odd "name"; x`})
	set(t, ctx, odd, "k", "odd")
	want(t, ctx, odd, "k", "odd")
	want(t, ctx, cat, string(key), string(value))
}

// Daemons starting together on a new schema all open it.
func testConcurrentOpen(t *testing.T, url, schema string) {
	ctx := testContext(t)
	const n = 4
	var waits [n]func() error
	var cats [n]*Catalog
	for i := range n {
		waits[i] = start(t, func() error {
			c, err := OpenWith(ctx, Options{URL: url, Schema: schema, Log: testLog(t)})
			if err == nil {
				cats[i] = c
				t.Cleanup(c.Close)
			}
			return err
		})
	}
	for i := range n {
		if err := waits[i](); err != nil {
			t.Fatalf("concurrent Open: %v", err)
		}
	}
	set(t, ctx, cats[0], "k", "v")
	for _, c := range cats {
		want(t, ctx, c, "k", "v")
	}
}

// Scans whose lengths straddle the page sizes (32, then 64, 128, 256, 512).
func testScanPages(t *testing.T, cat *Catalog) {
	ctx := testContext(t)
	sizes := []int{31, 32, 33, 95, 96, 97, 224, 225, 993}
	err := cat.Update(ctx, func(tx core.CatalogTx) error {
		for _, n := range sizes {
			for i := range n {
				if err := tx.Set(fmt.Appendf(nil, "sp/%04d/%04d", n, i), []byte{byte(i)}); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = cat.View(ctx, func(tx core.CatalogTx) error {
		for _, n := range sizes {
			seen := 0
			err := tx.Scan(fmt.Appendf(nil, "sp/%04d/", n), nil, func(k, v []byte) (bool, error) {
				if want := fmt.Sprintf("sp/%04d/%04d", n, seen); string(k) != want || v[0] != byte(seen) {
					return false, fmt.Errorf("visit %d of %d: %q = %x, want %q", seen, n, k, v, want)
				}
				seen++
				return true, nil
			})
			if err != nil {
				return err
			}
			if seen != n {
				return fmt.Errorf("Scan of %d keys visited %d", n, seen)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// holdLock starts an Update on cat that takes the lock name exclusively, sets key to
// "A" and holds both until free is called, and returns once the lock is taken; wait
// returns the Update's error.
func holdLock(t *testing.T, ctx context.Context, cat *Catalog, name, key string) (wait func() error, free func()) {
	t.Helper()
	held, release := make(chan struct{}), make(chan struct{})
	var holdOnce, releaseOnce sync.Once
	wait = start(t, func() error {
		return cat.Update(ctx, func(tx core.CatalogTx) error {
			if err := tx.Lock([]byte(name), true); err != nil {
				return err
			}
			if err := tx.Set([]byte(key), []byte("A")); err != nil {
				return err
			}
			holdOnce.Do(func() { close(held) })
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	})
	free = func() { releaseOnce.Do(func() { close(release) }) }
	select {
	case <-held:
	case <-time.After(patience):
		free()
		t.Fatalf("an Update did not take lock %q", name)
	}
	return wait, free
}

// Two Catalogs on one schema, as two daemons: each sees the other's commits, and an
// exclusive lock held in one makes the other's wait until it commits.
func testTwoInstances(t *testing.T, a, b *Catalog) {
	ctx := testContext(t)
	set(t, ctx, a, "two/a", "from a")
	want(t, ctx, b, "two/a", "from a")
	set(t, ctx, b, "two/b", "from b")
	want(t, ctx, a, "two/b", "from b")

	waitA, free := holdLock(t, ctx, a, "two", "two/k")
	defer free()
	acquired := make(chan struct{}, 1)
	var seen []byte
	waitB := start(t, func() error {
		return b.Update(ctx, func(tx core.CatalogTx) error {
			if err := tx.Lock([]byte("two"), true); err != nil {
				return err
			}
			select {
			case acquired <- struct{}{}:
			default:
			}
			var err error
			seen, err = tx.Get([]byte("two/k"))
			return err
		})
	})
	select {
	case <-acquired:
		t.Error("the second instance took an exclusive lock the first held")
	case <-time.After(probe):
	}
	free()
	if err := waitA(); err != nil {
		t.Errorf("the first instance's Update: %v", err)
	}
	if err := waitB(); err != nil {
		t.Errorf("the second instance's Update: %v", err)
	}
	if string(seen) != "A" {
		t.Errorf("the second instance read %q after the lock, want the first's commit, \"A\"", seen)
	}
}

// A View that locks after it has read runs again, with the lock taken before its
// snapshot: its reads then see what the lock's holder committed.
func testViewRelock(t *testing.T, cat *Catalog) {
	ctx := testContext(t)
	set(t, ctx, cat, "vr/k", "old")
	waitA, free := holdLock(t, ctx, cat, "vr", "vr/k")
	defer free()
	acquired := make(chan struct{}, 1)
	var runs int
	var seen string
	var firstLockErr error
	waitV := start(t, func() error {
		return cat.View(ctx, func(tx core.CatalogTx) error {
			runs++
			if _, err := tx.Get([]byte("vr/other")); !errors.Is(err, core.ErrKeyNotFound) {
				return err
			}
			if err := tx.Lock([]byte("vr"), false); err != nil {
				if runs == 1 {
					firstLockErr = err
				}
				return err
			}
			select {
			case acquired <- struct{}{}:
			default:
			}
			v, err := tx.Get([]byte("vr/k"))
			seen = string(v)
			return err
		})
	})
	select {
	case <-acquired:
		t.Error("a View took a shared lock an Update held exclusively")
	case <-time.After(probe):
	}
	free()
	if err := waitA(); err != nil {
		t.Fatalf("the Update: %v", err)
	}
	if err := waitV(); err != nil {
		t.Fatalf("the View: %v", err)
	}
	if runs != 2 || !errors.Is(firstLockErr, errRelock) {
		t.Errorf("the View ran %d times, its first Lock returning %v; want 2 runs, the first ended by errRelock", runs, firstLockErr)
	}
	if seen != "A" {
		t.Errorf("the View read %q after its Lock, want the lock holder's commit, \"A\"", seen)
	}
	// The View's lock is gone with it.
	if err := cat.Update(ctx, func(tx core.CatalogTx) error { return tx.Lock([]byte("vr"), true) }); err != nil {
		t.Errorf("Update locking after the View: %v", err)
	}
}

// Two Updates take two locks in opposite orders: PostgreSQL aborts one with
// deadlock_detected, and Update runs it again, so both commit once.
func testDeadlockRetried(t *testing.T, cat *Catalog) {
	ctx := testContext(t)
	var runs atomic.Int32
	arrived := [2]chan struct{}{make(chan struct{}), make(chan struct{})}
	var once [2]sync.Once
	names := [2][]byte{[]byte("x"), []byte("y")}
	increment := func(tx core.CatalogTx) error {
		n := 0
		v, err := tx.Get([]byte("count"))
		if err == nil {
			n = int(v[0])
		} else if !errors.Is(err, core.ErrKeyNotFound) {
			return err
		}
		return tx.Set([]byte("count"), []byte{byte(n + 1)})
	}
	var waits [2]func() error
	for i := range 2 {
		waits[i] = start(t, func() error {
			return cat.Update(ctx, func(tx core.CatalogTx) error {
				runs.Add(1)
				if err := tx.Lock(names[i], true); err != nil {
					return err
				}
				once[i].Do(func() { close(arrived[i]) })
				select {
				case <-arrived[1-i]:
				case <-ctx.Done():
					return ctx.Err()
				}
				if err := tx.Lock(names[1-i], true); err != nil {
					return err // deadlock_detected, for one of the two
				}
				return increment(tx)
			})
		})
	}
	for _, wait := range waits {
		if err := wait(); err != nil {
			t.Errorf("Update: %v", err)
		}
	}
	if got, err := get(ctx, cat, "count"); err != nil || got != "\x02" {
		t.Errorf("count = %q, %v; want 2: each Update committed once", got, err)
	}
	if n := runs.Load(); n != 3 {
		t.Errorf("fn ran %d times, want 3 (one deadlock victim run again)", n)
	}
}

// terminate ends the server process behind pg's connection, waiting until it has.
func terminate(ctx context.Context, cat *Catalog, pg pgx.Tx) error {
	pid := pg.Conn().PgConn().PID()
	var ok bool
	if err := cat.pool.QueryRow(ctx, "SELECT pg_terminate_backend($1, 10000)", int64(pid)).Scan(&ok); err != nil {
		return fmt.Errorf("terminating backend %d: %w", pid, err)
	}
	if !ok {
		return fmt.Errorf("backend %d did not end", pid)
	}
	return nil
}

// A connection lost in the middle of fn: the transaction never committed, so Update
// runs it again on another connection.
func testConnectionLostRetried(t *testing.T, cat *Catalog) {
	ctx := testContext(t)
	var runs int
	err := cat.Update(ctx, func(ct core.CatalogTx) error {
		runs++
		t0 := ct.(*tx)
		if err := t0.Set([]byte("cl/k"), []byte("v")); err != nil {
			return err
		}
		if runs == 1 {
			if err := terminate(ctx, cat, t0.pg); err != nil {
				return err
			}
		}
		if _, err := t0.Get([]byte("cl/other")); !errors.Is(err, core.ErrKeyNotFound) {
			return err // the lost connection, on the first run
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Update whose connection was lost: %v", err)
	}
	if runs != 2 {
		t.Errorf("fn ran %d times, want 2", runs)
	}
	want(t, ctx, cat, "cl/k", "v")
	// And an fn error is never retried.
	runs = 0
	err = cat.Update(ctx, func(core.CatalogTx) error { runs++; return errStopTest })
	if !errors.Is(err, errStopTest) || runs != 1 {
		t.Errorf("Update whose fn failed: %v after %d runs, want fn's error after 1", err, runs)
	}
}

var errStopTest = errors.New("test stops fn")

// The connection lost just before COMMIT: Update cannot tell whether the commit was
// made, and says so rather than run fn again — or, if nothing of the COMMIT was sent,
// runs it again.
func testCommitOutcomeUnknown(t *testing.T, cat *Catalog) {
	ctx := testContext(t)
	var once sync.Once
	var hookErr error
	cat.beforeCommit = func(pg pgx.Tx) { once.Do(func() { hookErr = terminate(ctx, cat, pg) }) }
	var runs int
	err := cat.Update(ctx, func(tx core.CatalogTx) error {
		runs++
		return tx.Set([]byte("cu/k"), []byte("v"))
	})
	cat.beforeCommit = nil
	if hookErr != nil {
		t.Fatal(hookErr)
	}
	switch {
	case errors.Is(err, ErrCommitUnknown):
		if runs != 1 {
			t.Errorf("fn ran %d times though the commit's outcome was unknown", runs)
		}
		// The server ended before COMMIT arrived: nothing committed.
		wantAbsent(t, ctx, cat, "cu/k")
	case err == nil:
		if runs != 2 {
			t.Errorf("Update succeeded after %d runs; want 2 (a COMMIT that was never sent, retried)", runs)
		}
		want(t, ctx, cat, "cu/k", "v")
	default:
		t.Errorf("Update whose connection was lost before COMMIT: %v, want ErrCommitUnknown or a retry", err)
	}
	// The pool has recovered.
	set(t, ctx, cat, "cu/after", "x")
	want(t, ctx, cat, "cu/after", "x")
}

// A statement the server refuses aborts the transaction even if fn ignores the
// error (which core.Catalog forbids fn, and this fn does on purpose): Update fails,
// commits nothing, and does not retry what would fail again.
func testFailedStatementNotCommitted(t *testing.T, cat *Catalog) {
	ctx := testContext(t)
	big := make([]byte, 10000) // too big for a btree entry, and random, so incompressible
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	var runs int
	err := cat.Update(ctx, func(tx core.CatalogTx) error {
		runs++
		if err := tx.Set([]byte("fs/ok"), []byte("x")); err != nil {
			return err
		}
		if err := tx.Set(big, []byte("x")); err != nil {
			return err
		}
		_, _ = tx.Get([]byte("fs/other")) // sends the writes; its error ignored
		return nil
	})
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "54000" {
		t.Errorf("Update whose statement failed returned %v, want the server's program_limit_exceeded", err)
	}
	if runs != 1 {
		t.Errorf("fn ran %d times, want 1", runs)
	}
	wantAbsent(t, ctx, cat, "fs/ok")
}

// PostgreSQL down: calls fail (within the retries' bounds, and not as absent keys);
// once it is back, the same Catalog works again.
func testOutage(t *testing.T, c *clustertest.Cluster, cat *Catalog) {
	ctx := testContext(t)
	set(t, ctx, cat, "out/known", "v")
	c.StopPG(t)
	up := false
	defer func() {
		if !up {
			c.StartPG(t)
		}
	}()
	start := time.Now()
	err := cat.Update(ctx, func(tx core.CatalogTx) error { return tx.Set([]byte("out/during"), []byte("x")) })
	took := time.Since(start)
	if err == nil || errors.Is(err, core.ErrKeyNotFound) {
		t.Errorf("Update with the server down returned %v", err)
	}
	if took > 20*time.Second {
		t.Errorf("Update with the server down took %v", took)
	}
	t.Logf("Update with the server down failed after %v: %v", took.Round(time.Millisecond), err)
	if v, err := get(ctx, cat, "out/known"); err == nil || errors.Is(err, core.ErrKeyNotFound) {
		t.Errorf("View with the server down returned %q, %v", v, err)
	}
	c.StartPG(t)
	up = true
	set(t, ctx, cat, "out/after", "y")
	want(t, ctx, cat, "out/known", "v")
	want(t, ctx, cat, "out/after", "y")
	wantAbsent(t, ctx, cat, "out/during")
}

// PostgreSQL restarted (or crashed, kill) under a stream of Updates and Views: no call
// hangs, no failure reads as an absent key, every Update that returned nil survives,
// and the Catalog works afterwards.
func testRestart(t *testing.T, c *clustertest.Cluster, cat *Catalog, kill bool) {
	ctx := testContext(t)
	set(t, ctx, cat, "rs/known", "v")
	prefix := fmt.Sprintf("rs/%v/", kill)
	type result struct {
		committed           []string
		failed, viewErrs    []error
		updates, viewsTried int
		slowest             time.Duration // an Update that retried across the outage shows here
	}
	stop := make(chan struct{})
	var stopOnce sync.Once
	halt := func() { stopOnce.Do(func() { close(stop) }) }
	defer halt()
	started := make(chan struct{})
	var r result
	wait := start(t, func() error {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			default:
			}
			key := fmt.Sprintf("%s%06d", prefix, i)
			r.updates++
			began := time.Now()
			err := cat.Update(ctx, func(tx core.CatalogTx) error { return tx.Set([]byte(key), []byte("x")) })
			r.slowest = max(r.slowest, time.Since(began))
			if err != nil {
				r.failed = append(r.failed, err)
			} else {
				r.committed = append(r.committed, key)
			}
			r.viewsTried++
			if v, err := get(ctx, cat, "rs/known"); err != nil || v != "v" {
				r.viewErrs = append(r.viewErrs, fmt.Errorf("%q, %w", v, err))
			}
			if i == 0 {
				close(started)
			}
		}
	})
	select {
	case <-started:
	case <-time.After(patience):
		t.Fatal("no Update returned")
	}
	c.RestartPG(t, kill)
	halt()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	t.Logf("restart (kill %v): %d Updates, %d failed, the slowest %v; %d Views, %d failed",
		kill, r.updates, len(r.failed), r.slowest.Round(time.Millisecond), r.viewsTried, len(r.viewErrs))
	for _, err := range append(r.failed, r.viewErrs...) {
		if errors.Is(err, core.ErrKeyNotFound) {
			t.Errorf("a call during the restart said a key was absent: %v", err)
		}
	}
	if len(r.failed) > 0 {
		t.Logf("first failed Update: %v", r.failed[0])
	}
	if len(r.viewErrs) > 0 {
		t.Logf("first failed View: %v", r.viewErrs[0])
	}
	set(t, ctx, cat, "rs/after", fmt.Sprint(kill))
	want(t, ctx, cat, "rs/after", fmt.Sprint(kill))
	// Every Update that returned nil survived the restart, a crash included.
	committed := map[string]bool{}
	err := cat.View(ctx, func(tx core.CatalogTx) error {
		return tx.Scan([]byte(prefix), nil, func(k, _ []byte) (bool, error) {
			committed[string(k)] = true
			return true, nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range r.committed {
		if !committed[k] {
			t.Errorf("%q, committed before the restart, is gone", k)
		}
	}
}
