package catalogtest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ebsd/ebsd/cas/core"
)

// suiteTimeout bounds each subtest's context: generous for a network engine, and a
// catalog that ignores its context still ends at go test's -timeout.
const suiteTimeout = 2 * time.Minute

// defaultPatience is how long the suite waits for what must happen: a barrier
// partner, a lock that must be granted, a cancelled wait that must return, a call
// started on another goroutine. A catalog that deadlocks fails the subtest after it
// instead of hanging it.
const defaultPatience = 10 * time.Second

// probe is how long the suite watches for what must not happen: a lock granted while
// another transaction holds it. A broken engine grants within microseconds, so a short
// window catches it and costs the suite little.
const probe = 100 * time.Millisecond

// errStop is what the suite's callbacks return to fail an Update, a View or a Scan.
var errStop = errors.New("catalogtest: the callback stopped")

// Run is the conformance suite of core.Catalog: it checks, in subtests, the rules the
// interface's documentation says every implementation MUST keep. open returns a
// fresh, empty catalog each call (registering with t whatever cleanup it needs); every
// subtest opens its own. Catalogs may share an engine (a PostgreSQL schema each, say)
// but must not see one another's keys or be slowed by one another's locks.
//
// Every fn the suite passes returns the errors of its transaction's methods (but
// ErrKeyNotFound where it expects it), keeps what it observed only from its last run,
// and signals other goroutines idempotently: View and Update may run fn again.
//
// Beyond the documented rules the suite requires what the rules leave implicit:
//   - Views and Updates run concurrently: a transaction waits for another only on a
//     Lock. (The suite holds one transaction open while it runs others.)
//   - A View's reads are of one committed state until it takes a Lock: an Update that
//     commits while a View runs is seen by none of the View's later reads, or, after
//     the View's Lock, by all of them.
//   - Set and Delete in a View fail and change nothing.
//   - Delete of an absent key is not an error.
//   - The slice Get returns is the caller's: it outlives the transaction, and writing
//     to it changes nothing stored.
//   - Scan's callback may call Get, Set and Delete on its transaction (not Scan).
//   - A Lock creates no key, the empty name included.
//   - A Lock that ends with its context returns an error wrapping the context's.
//
// Keys the suite writes are never empty: engines may refuse the empty key. It cannot
// force an engine to run fn again, so it checks what a rerun must keep (one commit
// per Update) through concurrent Updates, and the package's own tests run it on a
// catalog that runs every fn twice; nor can it check durability across a crash, which
// engines test themselves.
//
// On PostgreSQL over loopback the suite takes about two seconds (five under -race),
// most of it in Scan10k, ScanFrom and the probes of the lock subtests.
func Run(t *testing.T, open func(t *testing.T) core.Catalog) {
	run(t, open, defaultPatience)
}

// run is Run with the patience given: the package's mutant tests wait less for
// what a broken catalog never does.
func run(t *testing.T, open func(t *testing.T) core.Catalog, patience time.Duration) {
	tests := []struct {
		name string
		fn   func(e *env)
	}{
		{"Empty", testEmpty},
		{"RoundTrip", testRoundTrip},
		{"Absent", testAbsent},
		{"Values", testValues},
		{"ValueReuse", testValueReuse},
		{"PrefixKeys", testPrefixKeys},
		{"Atomicity", testAtomicity},
		{"ReadOwnWrites", testReadOwnWrites},
		{"ViewCommittedOnly", testViewCommittedOnly},
		{"ViewSnapshot", testViewSnapshot},
		{"ViewReadOnly", testViewReadOnly},
		{"ScanOrder", testScanOrder},
		{"ScanPrefix", testScanPrefix},
		{"ScanFrom", testScanFrom},
		{"ScanStop", testScanStop},
		{"ScanFnError", testScanFnError},
		{"ScanOwnWrites", testScanOwnWrites},
		{"ScanCallbackUsesTx", testScanCallbackUsesTx},
		{"Scan10k", testScan10k},
		{"LockExclusive", testLockExclusive},
		{"LockCounter", testLockCounter},
		{"LockShared", testLockShared},
		{"LockExclusiveBlocksShared", testLockExclusiveBlocksShared},
		{"LockNames", testLockNames},
		{"LockReleasedOnError", testLockReleasedOnError},
		{"LockCancel", testLockCancel},
		{"Sync", testSync},
		{"Concurrent", testConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := open(t)
			if c == nil {
				t.Fatal("open returned a nil catalog")
			}
			ctx, cancel := context.WithTimeout(t.Context(), suiteTimeout)
			t.Cleanup(cancel)
			tc.fn(&env{t: t, ctx: ctx, c: c, patience: patience})
		})
	}
}

// --- helpers ---

// env is one subtest's catalog and context.
type env struct {
	t        *testing.T
	ctx      context.Context
	c        core.Catalog
	patience time.Duration
}

// kv is a key and its value, as strings: any bytes, comparable with ==.
type kv struct{ k, v string }

func (e *env) update(fn func(tx core.CatalogTx) error) error { return e.c.Update(e.ctx, fn) }
func (e *env) view(fn func(tx core.CatalogTx) error) error   { return e.c.View(e.ctx, fn) }

func (e *env) mustUpdate(what string, fn func(tx core.CatalogTx) error) {
	e.t.Helper()
	if err := e.update(fn); err != nil {
		e.t.Fatalf("%s: %v", what, err)
	}
}

func (e *env) mustView(what string, fn func(tx core.CatalogTx) error) {
	e.t.Helper()
	if err := e.view(fn); err != nil {
		e.t.Fatalf("%s: %v", what, err)
	}
}

// set writes pairs in one Update.
func (e *env) set(pairs ...kv) {
	e.t.Helper()
	e.mustUpdate(fmt.Sprintf("Update setting %d keys", len(pairs)), func(tx core.CatalogTx) error {
		for _, p := range pairs {
			if err := tx.Set([]byte(p.k), []byte(p.v)); err != nil {
				return fmt.Errorf("Set %q: %w", p.k, err)
			}
		}
		return nil
	})
}

// get reads key in a View.
func (e *env) get(key string) (string, error) {
	var v []byte
	err := e.view(func(tx core.CatalogTx) error {
		var err error
		v, err = tx.Get([]byte(key))
		return err
	})
	return string(v), err
}

// want checks that a View reads value under key.
func (e *env) want(key, value string) {
	e.t.Helper()
	got, err := e.get(key)
	switch {
	case err != nil:
		e.t.Errorf("Get %q: %v; want %s", key, err, describe(value))
	case got != value:
		e.t.Errorf("Get %q = %s, want %s", key, describe(got), describe(value))
	}
}

// wantAbsent checks that a View finds no value under key.
func (e *env) wantAbsent(key string) {
	e.t.Helper()
	got, err := e.get(key)
	if !errors.Is(err, core.ErrKeyNotFound) {
		e.t.Errorf("Get of absent %q = %s, %v; want an error wrapping core.ErrKeyNotFound", key, describe(got), err)
	}
}

// scan returns what a View's Scan visits, failing the test if the Scan errs or its
// order is wrong.
func (e *env) scan(prefix, from string) []kv {
	e.t.Helper()
	var got []kv
	e.mustView(fmt.Sprintf("View scanning %q from %q", prefix, from), func(tx core.CatalogTx) error {
		var err error
		got, err = txScan(tx, prefix, from)
		return err
	})
	return got
}

// wantScan checks that a View's Scan visits exactly want.
func (e *env) wantScan(prefix, from string, want []kv) {
	e.t.Helper()
	if d := diffKVs(e.scan(prefix, from), want); d != "" {
		e.t.Errorf("Scan of %q from %q: %s", prefix, from, d)
	}
}

// txScan returns copies of what tx's Scan visits, or an error if the Scan errs or
// visits out of order or outside the prefix.
func txScan(tx core.CatalogTx, prefix, from string) ([]kv, error) {
	var got []kv
	var from0 []byte
	if from != "" {
		from0 = []byte(from)
	}
	err := tx.Scan([]byte(prefix), from0, func(k, v []byte) (bool, error) {
		got = append(got, kv{string(k), string(v)})
		return true, nil
	})
	if err != nil {
		return got, fmt.Errorf("Scan of %q from %q: %w", prefix, from, err)
	}
	return got, checkScan(prefix, from, got)
}

// checkScan checks that got is strictly ascending, within prefix and from its start.
func checkScan(prefix, from string, got []kv) error {
	start := string(core.ScanStart([]byte(prefix), []byte(from)))
	for i, p := range got {
		switch {
		case !strings.HasPrefix(p.k, prefix):
			return fmt.Errorf("Scan of %q from %q visited %q, outside the prefix", prefix, from, p.k)
		case p.k < start:
			return fmt.Errorf("Scan of %q from %q visited %q, before its start %q", prefix, from, p.k, start)
		case i > 0 && got[i-1].k >= p.k:
			return fmt.Errorf("Scan of %q from %q visited %q after %q: not strictly ascending by bytes", prefix, from, p.k, got[i-1].k)
		}
	}
	return nil
}

// diffKVs describes the first difference between got and want, or returns "".
func diffKVs(got, want []kv) string {
	if slices.Equal(got, want) {
		return ""
	}
	for i := range max(len(got), len(want)) {
		switch {
		case i >= len(got):
			return fmt.Sprintf("visited %d keys, want %d: missing %q and what follows", len(got), len(want), want[i].k)
		case i >= len(want):
			return fmt.Sprintf("visited %d keys, want %d: extra %q and what follows", len(got), len(want), got[i].k)
		case got[i].k != want[i].k:
			return fmt.Sprintf("visited %d keys, want %d: visit %d is %q, want %q", len(got), len(want), i, got[i].k, want[i].k)
		case got[i].v != want[i].v:
			return fmt.Sprintf("key %q has value %s, want %s", got[i].k, describe(got[i].v), describe(want[i].v))
		}
	}
	return "differs" // not reached
}

// describe quotes a value, or summarises a long one.
func describe(v string) string {
	if len(v) <= 48 {
		return strconv.Quote(v)
	}
	return fmt.Sprintf("%d bytes %q...", len(v), v[:24])
}

// model is what a catalog should hold.
type model map[string]string

// scan returns what a Scan of prefix from from should visit.
func (m model) scan(prefix, from string) []kv {
	start := string(core.ScanStart([]byte(prefix), []byte(from)))
	var out []kv
	for k, v := range m {
		if strings.HasPrefix(k, prefix) && k >= start {
			out = append(out, kv{k, v})
		}
	}
	slices.SortFunc(out, func(a, b kv) int { return strings.Compare(a.k, b.k) })
	return out
}

func (m model) pairs() []kv { return m.scan("", "") }

// randomBytes returns n random bytes, the same for the same seed.
func randomBytes(seed uint64, n int) []byte {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	key[31] = 0xc7
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(key).Read(b) // ChaCha8.Read never fails
	return b
}

// signal is a channel closed once, however often fire is called: fn may run more
// than once.
type signal struct {
	once sync.Once
	ch   chan struct{}
}

func newSignal() *signal { return &signal{ch: make(chan struct{})} }
func (s *signal) fire()  { s.once.Do(func() { close(s.ch) }) }

// await waits for s on the test goroutine.
func (s *signal) await(e *env, what string) {
	e.t.Helper()
	select {
	case <-s.ch:
	case <-time.After(e.patience):
		e.t.Fatalf("%s did not happen within %v: deadlock?", what, e.patience)
	}
}

// wait waits for s inside a transaction's fn, returning an error if the subtest's
// context ends or patience runs out first.
func (s *signal) wait(e *env, what string) error {
	select {
	case <-s.ch:
		return nil
	case <-e.ctx.Done():
		return fmt.Errorf("waiting for %s: %w", what, e.ctx.Err())
	case <-time.After(e.patience):
		return fmt.Errorf("%s did not happen within %v: deadlock?", what, e.patience)
	}
}

// task is a call running on a goroutine of its own.
type task struct {
	done chan struct{}
	err  error
}

// spawn runs f on a goroutine and makes the test wait for it at its end (when the
// subtest's context, which f's calls take, has been cancelled), so that no goroutine
// outlives its test.
func spawn(e *env, f func() error) *task {
	tk := &task{done: make(chan struct{})}
	go func() {
		defer close(tk.done)
		tk.err = f()
	}()
	e.t.Cleanup(func() {
		select {
		case <-tk.done:
		case <-time.After(e.patience):
			e.t.Errorf("a call the test started did not return within %v of the test's end", e.patience)
		}
	})
	return tk
}

// wait returns f's error, failing the test if f does not return within patience.
func (tk *task) wait(e *env, what string) error {
	e.t.Helper()
	select {
	case <-tk.done:
		return tk.err
	case <-time.After(e.patience):
		e.t.Fatalf("%s did not return within %v: deadlock, or a lock wait that ignores its context?", what, e.patience)
		return nil
	}
}

// --- subtests: keys and values ---

func testEmpty(e *env) {
	t := e.t
	if got := e.scan("", ""); len(got) != 0 {
		t.Errorf("Scan of an empty catalog visited %d keys, the first %q", len(got), got[0].k)
	}
	e.wantAbsent("k")
	e.wantAbsent("\x00")
	e.wantAbsent("\xff")
	if err := e.update(func(core.CatalogTx) error { return nil }); err != nil {
		t.Errorf("Update doing nothing: %v", err)
	}
	if err := e.view(func(core.CatalogTx) error { return nil }); err != nil {
		t.Errorf("View doing nothing: %v", err)
	}
	e.mustUpdate("Update reading an empty catalog", func(tx core.CatalogTx) error {
		if v, err := tx.Get([]byte("k")); !errors.Is(err, core.ErrKeyNotFound) {
			return fmt.Errorf("Get of absent key in an Update = %q, %v; want core.ErrKeyNotFound", v, err)
		}
		if err := tx.Delete([]byte("k")); err != nil {
			return fmt.Errorf("Delete of absent key: %w", err)
		}
		got, err := txScan(tx, "", "")
		if err != nil {
			return err
		}
		if len(got) != 0 {
			return fmt.Errorf("Scan in an Update on an empty catalog visited %d keys", len(got))
		}
		return nil
	})
	if err := e.c.Sync(e.ctx); err != nil {
		t.Errorf("Sync of an empty catalog: %v", err)
	}
	if got := e.scan("", ""); len(got) != 0 {
		t.Errorf("Scan after an empty Update visited %d keys", len(got))
	}
}

func testRoundTrip(e *env) {
	long := "long/" + strings.Repeat("k", 250)
	m := model{
		"a":      "1",
		"b/c":    "two",
		"\x00":   "the key 0x00",
		"\xff":   "the key 0xff",
		long:     "a key of 255 bytes",
		"z\x00z": "\x00\x01\x02",
	}
	e.set(m.pairs()...)
	for k, v := range m {
		e.want(k, v)
	}
	e.mustUpdate("Update reading committed keys", func(tx core.CatalogTx) error {
		for k, v := range m {
			got, err := tx.Get([]byte(k))
			if err != nil || string(got) != v {
				return fmt.Errorf("Get %q in an Update = %s, %v; want %s", k, describe(string(got)), err, describe(v))
			}
		}
		return nil
	})
	e.wantScan("", "", m.pairs())

	// Overwrite, delete, set again.
	e.set(kv{"a", "one"})
	m["a"] = "one"
	e.want("a", "one")
	e.mustUpdate("Update deleting a key", func(tx core.CatalogTx) error { return tx.Delete([]byte("b/c")) })
	delete(m, "b/c")
	e.wantAbsent("b/c")
	e.wantScan("", "", m.pairs())
	e.set(kv{"b/c", "three"})
	m["b/c"] = "three"
	for k, v := range m {
		e.want(k, v)
	}
	e.wantScan("", "", m.pairs())
	// A Get of the same key again reads the same: reading consumes nothing.
	e.want("a", "one")
}

func testAbsent(e *env) {
	e.set(kv{"abc", "stored"}, kv{"gone", "soon"})
	e.mustUpdate("Update deleting a key", func(tx core.CatalogTx) error { return tx.Delete([]byte("gone")) })
	near := []string{"ab", "abc\x00", "abd", "abb\xff", "ABC", "abcd", "gone", "never", "\x00", "\xff\xff"}
	for _, k := range near {
		e.wantAbsent(k)
	}
	e.want("abc", "stored")
	e.mustUpdate("Update reading absent keys", func(tx core.CatalogTx) error {
		for _, k := range near {
			if v, err := tx.Get([]byte(k)); !errors.Is(err, core.ErrKeyNotFound) {
				return fmt.Errorf("Get of absent %q in an Update = %q, %v; want an error wrapping core.ErrKeyNotFound", k, v, err)
			}
		}
		return nil
	})
}

func testValues(e *env) {
	all := make([]byte, 512)
	for i := range all {
		all[i] = byte(i)
	}
	values := []struct {
		k string
		v []byte
	}{
		{"v/nil", nil},
		{"v/empty", []byte{}},
		{"v/zero", []byte{0}},
		{"v/ff", []byte{0xff}},
		{"v/zeros", make([]byte, 100)},
		{"v/ffs", bytes.Repeat([]byte{0xff}, 100)},
		{"v/all", all},
		{"v/text", []byte("hello, catalog")},
		{"v/64k", randomBytes(1, 64<<10)},
		{"v/64k+1", randomBytes(2, 64<<10+1)},
	}
	m := model{}
	// Half in one Update, the rest one Update each.
	e.mustUpdate("Update setting values", func(tx core.CatalogTx) error {
		for _, x := range values[:5] {
			if err := tx.Set([]byte(x.k), x.v); err != nil {
				return fmt.Errorf("Set %q: %w", x.k, err)
			}
		}
		return nil
	})
	for _, x := range values[5:] {
		e.mustUpdate("Update setting "+x.k, func(tx core.CatalogTx) error { return tx.Set([]byte(x.k), x.v) })
	}
	for _, x := range values {
		m[x.k] = string(x.v)
		e.want(x.k, string(x.v))
	}
	e.wantScan("v/", "", m.pairs())

	// A large value becomes empty, small, and large again.
	for i, v := range []string{"", "small", string(randomBytes(3, 64<<10)), ""} {
		e.set(kv{"v/64k", v})
		m["v/64k"] = v
		e.want("v/64k", v)
		if e.t.Failed() {
			e.t.Fatalf("after rewrite %d", i)
		}
	}
	e.wantScan("v/", "", m.pairs())
}

func testValueReuse(e *env) {
	e.mustUpdate("Update reusing its buffers", func(tx core.CatalogTx) error {
		key := []byte("reuse/a")
		val := []byte("first value")
		if err := tx.Set(key, val); err != nil {
			return err
		}
		// The caller reuses both buffers at once: Set read them during the call only.
		copy(key, "reuse/b")
		copy(val, "XXXXX")
		if err := tx.Set(key, val); err != nil {
			return err
		}
		copy(key, "reuse/c")
		copy(val, "YYYYYYYYYYY")
		got, err := tx.Get([]byte("reuse/a"))
		if err != nil || string(got) != "first value" {
			return fmt.Errorf("Get in the Update after the caller reused Set's buffers = %q, %v; want %q", got, err, "first value")
		}
		return nil
	})
	e.want("reuse/a", "first value")
	e.want("reuse/b", "XXXXX value")
	e.wantAbsent("reuse/c")

	// What Get returns is the caller's: it outlives the transaction and later writes,
	// and writing to it changes nothing stored.
	var v1, v2 []byte
	e.mustView("View getting a value", func(tx core.CatalogTx) error {
		var err error
		if v1, err = tx.Get([]byte("reuse/a")); err != nil {
			return err
		}
		v2, err = tx.Get([]byte("reuse/b"))
		return err
	})
	e.set(kv{"reuse/a", "overwritten"}, kv{"reuse/b", "overwritten"})
	if string(v1) != "first value" || string(v2) != "XXXXX value" {
		e.t.Errorf("values returned by Get changed after the View and an overwrite: %q, %q", v1, v2)
	}
	for i := range v1 {
		v1[i] = '!'
	}
	e.want("reuse/a", "overwritten")
	var v3 []byte
	e.mustUpdate("Update getting a value", func(tx core.CatalogTx) error {
		var err error
		v3, err = tx.Get([]byte("reuse/a"))
		return err
	})
	clear(v3)
	e.want("reuse/a", "overwritten")
}

func testPrefixKeys(e *env) {
	m := model{
		"p":         "p",
		"p\x00":     "p 00",
		"p\x00\x00": "p 00 00",
		"p\x01":     "p 01",
		"pa":        "pa",
		"pa\xff":    "pa ff",
		"p\xff":     "p ff",
		"p\xff\xff": "p ff ff",
		"q":         "q",
		"o\xff":     "o ff",
	}
	e.set(m.pairs()...)
	for k, v := range m {
		e.want(k, v)
	}
	e.wantScan("p", "", m.scan("p", ""))
	e.wantScan("p\x00", "", m.scan("p\x00", ""))
	e.wantScan("p\xff", "", m.scan("p\xff", ""))
	// Deleting a key leaves the keys it is a prefix of, and the keys that are its
	// prefixes.
	e.mustUpdate("Update deleting prefix keys", func(tx core.CatalogTx) error {
		if err := tx.Delete([]byte("p\x00")); err != nil {
			return err
		}
		return tx.Delete([]byte("p"))
	})
	delete(m, "p\x00")
	delete(m, "p")
	e.wantAbsent("p")
	e.wantAbsent("p\x00")
	for k, v := range m {
		e.want(k, v)
	}
	e.wantScan("", "", m.pairs())
	e.wantScan("p", "", m.scan("p", ""))
}

// --- subtests: transactions ---

func testAtomicity(e *env) {
	t := e.t
	e.set(kv{"at/keep", "old"}, kv{"at/del", "old"})
	write := func(tx core.CatalogTx) error {
		if err := tx.Set([]byte("at/keep"), []byte("new")); err != nil {
			return err
		}
		if err := tx.Delete([]byte("at/del")); err != nil {
			return err
		}
		if err := tx.Set([]byte("at/new"), []byte("new")); err != nil {
			return err
		}
		for i := range 300 {
			if err := tx.Set(fmt.Appendf(nil, "at/many/%03d", i), []byte("x")); err != nil {
				return err
			}
		}
		return nil
	}
	err := e.update(func(tx core.CatalogTx) error {
		if err := write(tx); err != nil {
			return err
		}
		return fmt.Errorf("failing on purpose: %w", errStop)
	})
	if !errors.Is(err, errStop) {
		t.Errorf("Update whose fn failed returned %v, want fn's error", err)
	}
	// None of the failed Update's writes is visible: not the overwrite, not the
	// delete, not the new keys.
	e.want("at/keep", "old")
	e.want("at/del", "old")
	e.wantAbsent("at/new")
	if got := e.scan("at/many/", ""); len(got) != 0 {
		t.Errorf("%d keys of a failed Update are visible", len(got))
	}
	if t.Failed() {
		return
	}
	// A View's fn error comes back too.
	if err := e.view(func(core.CatalogTx) error { return errStop }); !errors.Is(err, errStop) {
		t.Errorf("View whose fn failed returned %v, want fn's error", err)
	}
	// The same writes, succeeding, are all visible.
	e.mustUpdate("Update with the same writes", write)
	e.want("at/keep", "new")
	e.wantAbsent("at/del")
	e.want("at/new", "new")
	if got := e.scan("at/many/", ""); len(got) != 300 {
		t.Errorf("%d keys of a committed Update of 300 are visible", len(got))
	}
}

func testReadOwnWrites(e *env) {
	e.set(kv{"own/committed", "c"})
	expect := func(tx core.CatalogTx, key, want string) error {
		got, err := tx.Get([]byte(key))
		if err != nil || string(got) != want {
			return fmt.Errorf("Get %q after the Update's own writes = %q, %v; want %q", key, got, err, want)
		}
		return nil
	}
	expectAbsent := func(tx core.CatalogTx, key string) error {
		if got, err := tx.Get([]byte(key)); !errors.Is(err, core.ErrKeyNotFound) {
			return fmt.Errorf("Get %q after the Update's own delete = %q, %v; want core.ErrKeyNotFound", key, got, err)
		}
		return nil
	}
	e.mustUpdate("Update reading its own writes", func(tx core.CatalogTx) error {
		steps := []func() error{
			func() error { return expectAbsent(tx, "own/new") },
			func() error { return tx.Set([]byte("own/new"), []byte("1")) },
			func() error { return expect(tx, "own/new", "1") },
			func() error { return tx.Set([]byte("own/new"), []byte("2")) },
			func() error { return expect(tx, "own/new", "2") },
			func() error { return tx.Delete([]byte("own/new")) },
			func() error { return expectAbsent(tx, "own/new") },
			func() error { return tx.Set([]byte("own/new"), []byte("3")) },
			func() error { return expect(tx, "own/committed", "c") },
			func() error { return tx.Delete([]byte("own/committed")) },
			func() error { return expectAbsent(tx, "own/committed") },
			func() error { return tx.Set([]byte("own/empty"), nil) },
			func() error { return expect(tx, "own/empty", "") },
			func() error { return expect(tx, "own/new", "3") },
		}
		for i, step := range steps {
			if err := step(); err != nil {
				return fmt.Errorf("step %d: %w", i, err)
			}
		}
		got, err := txScan(tx, "own/", "")
		if err != nil {
			return err
		}
		if d := diffKVs(got, []kv{{"own/empty", ""}, {"own/new", "3"}}); d != "" {
			return fmt.Errorf("Scan in the Update after its writes: %s", d)
		}
		return nil
	})
	e.want("own/new", "3")
	e.want("own/empty", "")
	e.wantAbsent("own/committed")
}

func testViewCommittedOnly(e *env) {
	t := e.t
	e.set(kv{"vc/k", "old"})
	held, release := newSignal(), newSignal()
	defer release.fire()
	w := spawn(e, func() error {
		return e.update(func(tx core.CatalogTx) error {
			if err := tx.Set([]byte("vc/k"), []byte("new")); err != nil {
				return err
			}
			if err := tx.Set([]byte("vc/added"), []byte("added")); err != nil {
				return err
			}
			held.fire()
			return release.wait(e, "the test's release")
		})
	})
	held.await(e, "the Update's writes")
	// Views (in a goroutine of their own: they must not wait for the open Update).
	check := spawn(e, func() error {
		return e.view(func(tx core.CatalogTx) error {
			v, err := tx.Get([]byte("vc/k"))
			if err != nil || string(v) != "old" {
				return fmt.Errorf("View during an open Update reads vc/k = %q, %v; want the committed %q", v, err, "old")
			}
			if v, err := tx.Get([]byte("vc/added")); !errors.Is(err, core.ErrKeyNotFound) {
				return fmt.Errorf("View during an open Update reads its uncommitted vc/added = %q, %v", v, err)
			}
			got, err := txScan(tx, "vc/", "")
			if err != nil {
				return err
			}
			if d := diffKVs(got, []kv{{"vc/k", "old"}}); d != "" {
				return fmt.Errorf("Scan in a View during an open Update: %s", d)
			}
			return nil
		})
	})
	if err := check.wait(e, "View during an open Update"); err != nil {
		t.Error(err)
	}
	release.fire()
	if err := w.wait(e, "Update"); err != nil {
		t.Fatalf("Update: %v", err)
	}
	e.want("vc/k", "new")
	e.want("vc/added", "added")
}

func testViewSnapshot(e *env) {
	e.set(kv{"ss/x", "0"}, kv{"ss/y", "0"})
	var once sync.Once
	var updated error
	e.mustView("View across a commit", func(tx core.CatalogTx) error {
		x, err := tx.Get([]byte("ss/x"))
		if err != nil {
			return err
		}
		// An Update commits both keys while the View is open (in its first run: a
		// View may run fn again, and then sees both or neither all the same).
		once.Do(func() {
			w := spawn(e, func() error {
				return e.update(func(tx core.CatalogTx) error {
					if err := tx.Set([]byte("ss/x"), []byte("1")); err != nil {
						return err
					}
					return tx.Set([]byte("ss/y"), []byte("1"))
				})
			})
			select {
			case <-w.done:
				if w.err != nil {
					updated = fmt.Errorf("Update during the View: %w", w.err)
				}
			case <-time.After(e.patience):
				updated = fmt.Errorf("an Update did not commit within %v while a View was open: Views must not block Updates", e.patience)
			}
		})
		if updated != nil {
			return updated
		}
		y, err := tx.Get([]byte("ss/y"))
		if err != nil {
			return err
		}
		if string(x) != string(y) {
			return fmt.Errorf("a View read ss/x = %q, then ss/y = %q after another Update committed both: it saw half of that Update", x, y)
		}
		got, err := txScan(tx, "ss/", "")
		if err != nil {
			return err
		}
		if d := diffKVs(got, []kv{{"ss/x", string(x)}, {"ss/y", string(x)}}); d != "" {
			return fmt.Errorf("Scan after another Update committed, having read ss/x = %q: %s", x, d)
		}
		return nil
	})
	e.want("ss/x", "1")
	e.want("ss/y", "1")
}

func testViewReadOnly(e *env) {
	e.set(kv{"ro/k", "v"})
	// fn returns what the write returned, as core.Catalog has it: the View fails.
	for _, w := range []struct {
		what string
		fn   func(tx core.CatalogTx) error
	}{
		{"Set of an existing key", func(tx core.CatalogTx) error { return tx.Set([]byte("ro/k"), []byte("changed")) }},
		{"Set of a new key", func(tx core.CatalogTx) error { return tx.Set([]byte("ro/new"), []byte("new")) }},
		{"Delete", func(tx core.CatalogTx) error { return tx.Delete([]byte("ro/k")) }},
	} {
		if err := e.view(w.fn); err == nil {
			e.t.Errorf("%s in a View returned nil", w.what)
		}
	}
	e.want("ro/k", "v")
	e.wantAbsent("ro/new")
}

// --- subtests: scans ---

// orderKeys returns keys with the edge cases of byte order: 0x00 and 0xff bytes,
// keys that are prefixes of others, bytes either side of 0x80, random binary keys.
func orderKeys() []string {
	keys := []string{
		"\x00", "\x00\x00", "\x00\x01", "\x01", "\x7f", "\x80", "\xfe\xff", "\xff", "\xff\x00", "\xff\xff", "\xff\xff\xff",
		"a", "a\x00", "a\x00\x00", "a\x01", "a\x7f", "a\x80", "a\xff", "aa", "ab", "b", "B", "~",
	}
	rng := rand.New(rand.NewPCG(20, 1))
	for range 24 {
		k := make([]byte, 1+rng.IntN(10))
		for i := range k {
			k[i] = byte(rng.UintN(256))
		}
		keys = append(keys, string(k))
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

// setShuffled writes m in shuffled order over three Updates.
func (e *env) setShuffled(seed uint64, m model) {
	e.t.Helper()
	pairs := m.pairs()
	rng := rand.New(rand.NewPCG(seed, 2))
	rng.Shuffle(len(pairs), func(i, j int) { pairs[i], pairs[j] = pairs[j], pairs[i] })
	third := len(pairs) / 3
	e.set(pairs[:third]...)
	e.set(pairs[third : 2*third]...)
	e.set(pairs[2*third:]...)
}

func testScanOrder(e *env) {
	m := model{}
	for i, k := range orderKeys() {
		m[k] = fmt.Sprintf("value %d \x00\xff", i)
	}
	e.setShuffled(21, m)
	want := m.pairs()
	for i := 1; i < len(want); i++ {
		if bytes.Compare([]byte(want[i-1].k), []byte(want[i].k)) >= 0 {
			e.t.Fatalf("the suite's model is out of byte order at %q", want[i].k) // strings compare by bytes
		}
	}
	e.wantScan("", "", want)
	e.mustUpdate("Update scanning", func(tx core.CatalogTx) error {
		got, err := txScan(tx, "", "")
		if err != nil {
			return err
		}
		if d := diffKVs(got, want); d != "" {
			return fmt.Errorf("Scan in an Update: %s", d)
		}
		return nil
	})
}

// scanPrefixes are prefixes whose bounds are edge cases: empty, 0x00, ending in 0xff,
// all 0xff.
var scanPrefixes = []string{"", "\x00", "a", "a\x00", "a\xff", "a\xff\xff", "ab", "b", "\xff", "\xff\xff", "\xff\xff\xff", "zz"}

// prefixModel returns keys in, at the edges of and just outside each of scanPrefixes.
func prefixModel() model {
	m := model{}
	add := func(k string) {
		if k != "" {
			m[k] = "v:" + k
		}
	}
	for _, p := range scanPrefixes {
		for _, k := range []string{p, p + "\x00", p + "\x01", p + "x", p + "\xff", p + "\xff\xff", p + "\xff\x00"} {
			add(k)
		}
		if p == "" {
			continue
		}
		add(p[:len(p)-1]) // shorter
		if last := p[len(p)-1]; last > 0 {
			add(p[:len(p)-1] + string(last-1) + "\xff\xff\xff") // the last keys before it
		}
		if end, ok := core.PrefixEnd([]byte(p)); ok {
			add(string(end)) // the first key after it
			add(string(end) + "\x00")
		}
	}
	return m
}

func testScanPrefix(e *env) {
	m := prefixModel()
	e.setShuffled(31, m)
	e.mustView("View scanning prefixes", func(tx core.CatalogTx) error {
		for _, p := range scanPrefixes {
			got, err := txScan(tx, p, "")
			if err != nil {
				return err
			}
			if d := diffKVs(got, m.scan(p, "")); d != "" {
				return fmt.Errorf("Scan of prefix %q: %s", p, d)
			}
		}
		return nil
	})
	e.mustUpdate("Update scanning prefixes", func(tx core.CatalogTx) error {
		for _, p := range scanPrefixes {
			got, err := txScan(tx, p, "")
			if err != nil {
				return err
			}
			if d := diffKVs(got, m.scan(p, "")); d != "" {
				return fmt.Errorf("Scan of prefix %q in an Update: %s", p, d)
			}
		}
		return nil
	})
}

func testScanFrom(e *env) {
	m := prefixModel()
	e.setShuffled(41, m)
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	})
	check := func(tx core.CatalogTx, p, from string) error {
		got, err := txScan(tx, p, from)
		if err != nil {
			return err
		}
		if d := diffKVs(got, m.scan(p, from)); d != "" {
			return fmt.Errorf("Scan of prefix %q from %q: %s", p, from, d)
		}
		return nil
	}
	e.mustView("View scanning from keys", func(tx core.CatalogTx) error {
		for _, p := range []string{"", "a", "a\xff", "ab", "\xff\xff"} {
			froms := []string{
				"",                            // the start
				p,                             // the prefix itself
				p + strings.Repeat("\xff", 8), // past every key
			}
			if p != "" {
				short := p[:len(p)-1]
				froms = append(froms, short) // shorter and before: the start of the prefix
				if last := p[len(p)-1]; last > 0 {
					froms = append(froms, short+string(last-1)+"zz") // longer, before the prefix
				}
				if end, ok := core.PrefixEnd([]byte(p)); ok {
					froms = append(froms, string(end)+"\x00") // longer, after the prefix: nothing
					if len(end) < len(p) {
						froms = append(froms, string(end)) // shorter and after: the start
					}
				}
				if len(p) > 1 {
					froms = append(froms, "\xff") // shorter and after: the start
				}
			}
			for _, k := range keys {
				if !strings.HasPrefix(k, p) {
					continue
				}
				froms = append(froms, k, k+"\x00") // on a key, and between it and the next
				if last := k[len(k)-1]; last > 0 {
					froms = append(froms, k[:len(k)-1]+string(last-1)+"\xff") // just before it
				}
			}
			for _, from := range froms {
				if err := check(tx, p, from); err != nil {
					return err
				}
			}
		}
		return nil
	})
	// And in an Update, from between its own writes.
	err := e.update(func(tx core.CatalogTx) error {
		if err := tx.Set([]byte("ab\x00own"), []byte("own")); err != nil {
			return err
		}
		for _, from := range []string{"ab", "ab\x00", "ab\x00own", "ab\x00own\x00", "ab\x01"} {
			got, err := txScan(tx, "ab", from)
			if err != nil {
				return err
			}
			mm := model{"ab\x00own": "own"}
			for k, v := range m {
				mm[k] = v
			}
			if d := diffKVs(got, mm.scan("ab", from)); d != "" {
				return fmt.Errorf("Scan of prefix \"ab\" from %q in an Update: %s", from, d)
			}
		}
		return errStop // leave the catalog as it was
	})
	if !errors.Is(err, errStop) {
		e.t.Errorf("Update scanning from keys: %v", err)
	}
}

func testScanStop(e *env) {
	t := e.t
	m := model{}
	for i := range 20 {
		m[fmt.Sprintf("st/%02d", i)] = fmt.Sprint(i)
	}
	e.set(m.pairs()...)
	all := m.pairs()
	run := func(tx core.CatalogTx, where string) error {
		for _, stopAt := range []int{1, 3, len(all)} {
			var got []kv
			err := tx.Scan([]byte("st/"), nil, func(k, v []byte) (bool, error) {
				got = append(got, kv{string(k), string(v)})
				return len(got) < stopAt, nil
			})
			if err != nil {
				return fmt.Errorf("%s: Scan whose fn returned false at visit %d: %w", where, stopAt, err)
			}
			if d := diffKVs(got, all[:stopAt]); d != "" {
				return fmt.Errorf("%s: Scan whose fn returned false at visit %d (fn is not called after it returns false): %s", where, stopAt, d)
			}
		}
		return nil
	}
	if err := e.view(func(tx core.CatalogTx) error { return run(tx, "View") }); err != nil {
		t.Error(err)
	}
	if err := e.update(func(tx core.CatalogTx) error { return run(tx, "Update") }); err != nil {
		t.Error(err)
	}
}

func testScanFnError(e *env) {
	t := e.t
	m := model{}
	for i := range 20 {
		m[fmt.Sprintf("fe/%02d", i)] = fmt.Sprint(i)
	}
	e.set(m.pairs()...)
	run := func(tx core.CatalogTx, where string) error {
		for _, failAt := range []int{1, 5, 20} {
			visits := 0
			err := tx.Scan([]byte("fe/"), nil, func(k, v []byte) (bool, error) {
				visits++
				if visits == failAt {
					return true, fmt.Errorf("visit %d: %w", visits, errStop)
				}
				return true, nil
			})
			if !errors.Is(err, errStop) {
				return fmt.Errorf("%s: Scan whose fn failed at visit %d returned %v, want fn's error", where, failAt, err)
			}
			if visits != failAt {
				return fmt.Errorf("%s: Scan whose fn failed at visit %d made %d visits (fn is not called after it fails)", where, failAt, visits)
			}
		}
		return nil
	}
	if err := e.view(func(tx core.CatalogTx) error { return run(tx, "View") }); err != nil {
		t.Error(err)
	}
	// In an Update whose fn passes the Scan's error on: the Update fails with it and
	// commits nothing.
	err := e.update(func(tx core.CatalogTx) error {
		if err := tx.Set([]byte("fe/new"), []byte("x")); err != nil {
			return err
		}
		if err := run(tx, "Update"); err != nil {
			return err
		}
		return tx.Scan([]byte("fe/"), nil, func(k, v []byte) (bool, error) { return false, errStop })
	})
	if !errors.Is(err, errStop) {
		t.Errorf("Update whose Scan's fn failed returned %v, want the fn's error", err)
	}
	e.wantAbsent("fe/new")
}

func testScanOwnWrites(e *env) {
	e.set(kv{"ow/a", "1"}, kv{"ow/c", "1"}, kv{"ow/e", "1"}, kv{"ow/g", "1"}, kv{"ox", "outside"})
	want := func(tx core.CatalogTx, from string, exp []kv) error {
		got, err := txScan(tx, "ow/", from)
		if err != nil {
			return err
		}
		if d := diffKVs(got, exp); d != "" {
			return fmt.Errorf("Scan of \"ow/\" from %q after the Update's own writes: %s", from, d)
		}
		return nil
	}
	e.mustUpdate("Update scanning its own writes", func(tx core.CatalogTx) error {
		for _, w := range []kv{{"ow/b", "2"}, {"ow/e", "2"}, {"ow/h", "2"}, {"ow/", "root"}, {"ow0", "outside"}} {
			if err := tx.Set([]byte(w.k), []byte(w.v)); err != nil {
				return err
			}
		}
		if err := tx.Delete([]byte("ow/c")); err != nil {
			return err
		}
		if err := want(tx, "", []kv{{"ow/", "root"}, {"ow/a", "1"}, {"ow/b", "2"}, {"ow/e", "2"}, {"ow/g", "1"}, {"ow/h", "2"}}); err != nil {
			return err
		}
		if err := want(tx, "ow/c", []kv{{"ow/e", "2"}, {"ow/g", "1"}, {"ow/h", "2"}}); err != nil {
			return err
		}
		if err := want(tx, "ow/b", []kv{{"ow/b", "2"}, {"ow/e", "2"}, {"ow/g", "1"}, {"ow/h", "2"}}); err != nil {
			return err
		}
		// More writes after a Scan: the next Scan sees them.
		if err := tx.Delete([]byte("ow/h")); err != nil {
			return err
		}
		if err := tx.Set([]byte("ow/d"), []byte("2")); err != nil {
			return err
		}
		return want(tx, "", []kv{{"ow/", "root"}, {"ow/a", "1"}, {"ow/b", "2"}, {"ow/d", "2"}, {"ow/e", "2"}, {"ow/g", "1"}})
	})
	e.wantScan("ow/", "", []kv{{"ow/", "root"}, {"ow/a", "1"}, {"ow/b", "2"}, {"ow/d", "2"}, {"ow/e", "2"}, {"ow/g", "1"}})
	e.want("ox", "outside")
	e.want("ow0", "outside")
}

func testScanCallbackUsesTx(e *env) {
	t := e.t
	m := model{}
	for i := range 40 {
		m[fmt.Sprintf("cb/%02d", i)] = fmt.Sprint(i)
	}
	e.set(m.pairs()...)
	// Get, Set and Delete from inside the callback, on a goroutine so that a deadlock
	// fails the test.
	w := spawn(e, func() error {
		return e.update(func(tx core.CatalogTx) error {
			var visited []string
			err := tx.Scan([]byte("cb/"), nil, func(k, v []byte) (bool, error) {
				visited = append(visited, string(k))
				got, err := tx.Get(k)
				if err != nil || !bytes.Equal(got, v) {
					return false, fmt.Errorf("Get %q in the Scan's callback = %q, %v; want %q", k, got, err, v)
				}
				if err := tx.Set(append([]byte("cbw/"), k...), v); err != nil {
					return false, fmt.Errorf("Set in the Scan's callback: %w", err)
				}
				if len(visited)%2 == 0 {
					// Delete the key being visited.
					if err := tx.Delete(k); err != nil {
						return false, fmt.Errorf("Delete in the Scan's callback: %w", err)
					}
				}
				return true, nil
			})
			if err != nil {
				return err
			}
			if len(visited) != 40 {
				return fmt.Errorf("Scan whose callback wrote visited %d of 40 keys", len(visited))
			}
			return nil
		})
	})
	if err := w.wait(e, "Update whose Scan's callback calls the transaction"); err != nil {
		t.Fatal(err)
	}
	want := model{}
	for i := range 40 {
		k := fmt.Sprintf("cb/%02d", i)
		want["cbw/"+k] = fmt.Sprint(i)
		if i%2 == 0 {
			want[k] = fmt.Sprint(i)
		}
	}
	e.wantScan("", "", want.pairs())
}

func testScan10k(e *env) {
	t := e.t
	const n = 10_000
	key := func(i int) []byte { return binary.BigEndian.AppendUint32([]byte("big/"), uint32(i)) }
	val := func(i int) []byte { return binary.BigEndian.AppendUint32(nil, uint32(i)*7) }
	// count checks a Scan's visits from index first on: consecutive keys, their values.
	count := func(tx core.CatalogTx, from []byte, first, stopAt int) (int, error) {
		seen := 0
		err := tx.Scan([]byte("big/"), from, func(k, v []byte) (bool, error) {
			i := first + seen
			if !bytes.Equal(k, key(i)) || !bytes.Equal(v, val(i)) {
				return false, fmt.Errorf("visit %d: %q = %x, want %q = %x", seen, k, v, key(i), val(i))
			}
			seen++
			return seen != stopAt, nil
		})
		return seen, err
	}
	e.mustUpdate("Update setting 10,000 keys", func(tx core.CatalogTx) error {
		// Keys either side of the prefix, then the 10,000 in shuffled order.
		for _, k := range []string{"big", "big.", "big0", "bif\xff", "big\x00"} {
			if err := tx.Set([]byte(k), []byte("outside")); err != nil {
				return err
			}
		}
		rng := rand.New(rand.NewPCG(50, 1))
		for _, i := range rng.Perm(n) {
			if err := tx.Set(key(i), val(i)); err != nil {
				return err
			}
		}
		seen, err := count(tx, nil, 0, -1)
		if err != nil {
			return fmt.Errorf("Scan in the Update that wrote the keys: %w", err)
		}
		if seen != n {
			return fmt.Errorf("Scan in the Update that wrote %d keys visited %d", n, seen)
		}
		return nil
	})
	e.mustView("View scanning 10,000 keys", func(tx core.CatalogTx) error {
		for _, c := range []struct {
			from          []byte
			first, stopAt int
			want          int
		}{
			{nil, 0, -1, n},
			{key(7777), 7777, -1, n - 7777},
			{nil, 0, 5000, 5000},
			{key(n - 1), n - 1, -1, 1},
		} {
			seen, err := count(tx, c.from, c.first, c.stopAt)
			if err != nil {
				return fmt.Errorf("Scan from %q: %w", c.from, err)
			}
			if seen != c.want {
				return fmt.Errorf("Scan from %q stopping at %d visited %d keys, want %d", c.from, c.stopAt, seen, c.want)
			}
		}
		return nil
	})
	if t.Failed() {
		return
	}
	e.want("big0", "outside")
}

// --- subtests: locks ---

// holdLock starts an Update that takes lock name (exclusive or not), sets key to
// value, and holds the lock until release fires; it returns once the lock is held.
func (e *env) holdLock(name string, exclusive bool, key, value string, release *signal) *task {
	e.t.Helper()
	held := newSignal()
	w := spawn(e, func() error {
		return e.update(func(tx core.CatalogTx) error {
			if err := tx.Lock([]byte(name), exclusive); err != nil {
				return err
			}
			if err := tx.Set([]byte(key), []byte(value)); err != nil {
				return err
			}
			held.fire()
			return release.wait(e, "the test's release")
		})
	})
	held.await(e, fmt.Sprintf("Update taking lock %q", name))
	return w
}

// notBefore checks, for the probe's length, that acquired does not fire.
func notBefore(t *testing.T, acquired *signal, what string) {
	t.Helper()
	select {
	case <-acquired.ch:
		t.Errorf("%s while another transaction held the lock", what)
	case <-time.After(probe):
	}
}

func testLockExclusive(e *env) {
	t := e.t
	release := newSignal()
	defer release.fire()
	a := e.holdLock("lx", true, "lx/k", "A", release)

	started, acquired := newSignal(), newSignal()
	b := spawn(e, func() error {
		return e.update(func(tx core.CatalogTx) error {
			started.fire()
			if err := tx.Lock([]byte("lx"), true); err != nil {
				return err
			}
			acquired.fire()
			// Reads after the Lock see what the lock's previous holder committed.
			v, err := tx.Get([]byte("lx/k"))
			if errors.Is(err, core.ErrKeyNotFound) {
				v, err = []byte("absent"), nil
			}
			if err != nil {
				return err
			}
			if err := tx.Set([]byte("lx/seen"), v); err != nil {
				return err
			}
			return tx.Set([]byte("lx/k"), []byte("B"))
		})
	})
	started.await(e, "the second Update's start")
	notBefore(t, acquired, "a second Update took an exclusive lock")
	release.fire()
	if err := a.wait(e, "the lock holder's Update"); err != nil {
		t.Fatalf("the lock holder's Update: %v", err)
	}
	if err := b.wait(e, "the waiting Update"); err != nil {
		t.Fatalf("the Update waiting for the lock: %v", err)
	}
	e.want("lx/seen", "A")
	e.want("lx/k", "B")
}

func testLockCounter(e *env) {
	t := e.t
	const workers, increments = 8, 5
	tasks := make([]*task, workers)
	for w := range tasks {
		tasks[w] = spawn(e, func() error {
			for range increments {
				err := e.update(func(tx core.CatalogTx) error {
					if err := tx.Lock([]byte("counter lock"), true); err != nil {
						return err
					}
					n := 0
					v, err := tx.Get([]byte("lc/counter"))
					switch {
					case errors.Is(err, core.ErrKeyNotFound):
					case err != nil:
						return err
					default:
						if n, err = strconv.Atoi(string(v)); err != nil {
							return fmt.Errorf("counter holds %q: %w", v, err)
						}
					}
					// Let the other workers run between the read and the write, so
					// that a lock that excludes nothing loses increments.
					runtime.Gosched()
					return tx.Set([]byte("lc/counter"), []byte(strconv.Itoa(n+1)))
				})
				if err != nil {
					return err
				}
			}
			return nil
		})
	}
	for w, tk := range tasks {
		if err := tk.wait(e, fmt.Sprintf("worker %d", w)); err != nil {
			t.Errorf("worker %d: %v", w, err)
		}
	}
	e.want("lc/counter", strconv.Itoa(workers*increments))
}

// barrier returns fns for parties that each wait for all the others; a party that
// waits longer than patience fails.
func barrier(e *env, parties int) func(i int) error {
	arrived := make([]*signal, parties)
	for i := range arrived {
		arrived[i] = newSignal()
	}
	return func(i int) error {
		arrived[i].fire()
		for j, s := range arrived {
			if j == i {
				continue
			}
			if err := s.wait(e, fmt.Sprintf("party %d at the barrier", j)); err != nil {
				return err
			}
		}
		return nil
	}
}

func testLockShared(e *env) {
	t := e.t
	// Two Updates and a View hold the same shared lock at once: each waits inside
	// its transaction, holding the lock, until all three are there.
	meet := barrier(e, 3)
	var tasks []*task
	for i := range 2 {
		tasks = append(tasks, spawn(e, func() error {
			return e.update(func(tx core.CatalogTx) error {
				if err := tx.Lock([]byte("ls"), false); err != nil {
					return err
				}
				if err := tx.Set(fmt.Appendf(nil, "ls/%d", i), []byte("x")); err != nil {
					return err
				}
				return meet(i)
			})
		}))
	}
	tasks = append(tasks, spawn(e, func() error {
		return e.view(func(tx core.CatalogTx) error {
			if err := tx.Lock([]byte("ls"), false); err != nil {
				return err
			}
			return meet(2)
		})
	}))
	for i, tk := range tasks {
		if err := tk.wait(e, fmt.Sprintf("shared holder %d", i)); err != nil {
			t.Errorf("shared holder %d: %v (shared locks must not exclude each other)", i, err)
		}
	}
	e.want("ls/0", "x")
	e.want("ls/1", "x")
}

func testLockExclusiveBlocksShared(e *env) {
	t := e.t
	// An exclusive holder makes a View's shared Lock wait; once the holder commits,
	// the View's reads see its writes.
	release := newSignal()
	defer release.fire()
	a := e.holdLock("lxs", true, "lxs/k", "A", release)
	started, acquired := newSignal(), newSignal()
	var seen string
	b := spawn(e, func() error {
		return e.view(func(tx core.CatalogTx) error {
			started.fire()
			if err := tx.Lock([]byte("lxs"), false); err != nil {
				return err
			}
			acquired.fire()
			v, err := tx.Get([]byte("lxs/k"))
			seen = string(v)
			return err
		})
	})
	started.await(e, "the View's start")
	notBefore(t, acquired, "a View took a shared lock")
	release.fire()
	if err := a.wait(e, "the exclusive holder"); err != nil {
		t.Fatalf("the exclusive holder's Update: %v", err)
	}
	if err := b.wait(e, "the View waiting for a shared lock"); err != nil {
		t.Fatalf("the View waiting for a shared lock: %v", err)
	}
	if seen != "A" {
		t.Errorf("a View that waited for a lock read %q, want what the lock's holder committed, %q", seen, "A")
	}

	// A shared holder (a View) makes an exclusive Lock wait.
	release2 := newSignal()
	defer release2.fire()
	held := newSignal()
	v := spawn(e, func() error {
		return e.view(func(tx core.CatalogTx) error {
			if err := tx.Lock([]byte("lxs2"), false); err != nil {
				return err
			}
			held.fire()
			return release2.wait(e, "the test's release")
		})
	})
	held.await(e, "the View's shared lock")
	started2, acquired2 := newSignal(), newSignal()
	u := spawn(e, func() error {
		return e.update(func(tx core.CatalogTx) error {
			started2.fire()
			if err := tx.Lock([]byte("lxs2"), true); err != nil {
				return err
			}
			acquired2.fire()
			return tx.Set([]byte("lxs2/k"), []byte("U"))
		})
	})
	started2.await(e, "the Update's start")
	notBefore(t, acquired2, "an Update took an exclusive lock")
	release2.fire()
	if err := v.wait(e, "the shared holder"); err != nil {
		t.Fatalf("the View holding a shared lock: %v", err)
	}
	if err := u.wait(e, "the Update waiting for an exclusive lock"); err != nil {
		t.Fatalf("the Update waiting for an exclusive lock: %v", err)
	}
	e.want("lxs2/k", "U")
}

func testLockNames(e *env) {
	t := e.t
	e.set(kv{"ln/key", "value"})
	names := []string{"", "\x00", "\xff\xff", "ln/key", "ln/absent", "lock", strings.Repeat("n", 300)}
	lockAll := func(tx core.CatalogTx, exclusive bool) error {
		for _, n := range names {
			if err := tx.Lock([]byte(n), exclusive); err != nil {
				return fmt.Errorf("Lock %q: %w", n, err)
			}
		}
		return nil
	}
	e.mustUpdate("Update locking names", func(tx core.CatalogTx) error { return lockAll(tx, true) })
	e.mustUpdate("Update locking names shared", func(tx core.CatalogTx) error { return lockAll(tx, false) })
	e.mustView("View locking names", func(tx core.CatalogTx) error { return lockAll(tx, false) })
	// A lock is no key: the catalog holds what it held, the locked key its value.
	e.wantScan("", "", []kv{{"ln/key", "value"}})
	e.wantAbsent("ln/absent")
	e.wantAbsent("lock")

	// Exclusive locks of different names do not exclude each other.
	meet := barrier(e, 2)
	var tasks []*task
	for i, n := range []string{"ln/one", "ln/two"} {
		tasks = append(tasks, spawn(e, func() error {
			return e.update(func(tx core.CatalogTx) error {
				if err := tx.Lock([]byte(n), true); err != nil {
					return err
				}
				return meet(i)
			})
		}))
	}
	for i, tk := range tasks {
		if err := tk.wait(e, fmt.Sprintf("holder %d", i)); err != nil {
			t.Errorf("holder of lock %d: %v (locks of different names must not exclude each other)", i, err)
		}
	}
}

func testLockReleasedOnError(e *env) {
	t := e.t
	err := e.update(func(tx core.CatalogTx) error {
		if err := tx.Lock([]byte("lr"), true); err != nil {
			return err
		}
		if err := tx.Set([]byte("lr/k"), []byte("x")); err != nil {
			return err
		}
		return errStop
	})
	if !errors.Is(err, errStop) {
		t.Fatalf("Update whose fn failed returned %v, want fn's error", err)
	}
	err = e.view(func(tx core.CatalogTx) error {
		if err := tx.Lock([]byte("lr2"), true); err != nil {
			return err
		}
		return errStop
	})
	if !errors.Is(err, errStop) {
		t.Fatalf("View whose fn failed returned %v, want fn's error", err)
	}
	// Both locks are free again.
	w := spawn(e, func() error {
		return e.update(func(tx core.CatalogTx) error {
			if err := tx.Lock([]byte("lr"), true); err != nil {
				return err
			}
			if err := tx.Lock([]byte("lr2"), true); err != nil {
				return err
			}
			return tx.Set([]byte("lr/k"), []byte("y"))
		})
	})
	if err := w.wait(e, "Update taking the locks of failed transactions"); err != nil {
		t.Fatal(err)
	}
	e.want("lr/k", "y")
}

func testLockCancel(e *env) {
	t := e.t
	release := newSignal()
	defer release.fire()
	a := e.holdLock("lk", true, "lk/a", "A", release)

	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	started, acquired := newSignal(), newSignal()
	b := spawn(e, func() error {
		return e.c.Update(ctx, func(tx core.CatalogTx) error {
			if err := tx.Set([]byte("lk/b"), []byte("B")); err != nil {
				return err
			}
			started.fire()
			if err := tx.Lock([]byte("lk"), true); err != nil {
				return err
			}
			acquired.fire()
			return nil
		})
	})
	started.await(e, "the waiting Update's start")
	notBefore(t, acquired, "an Update took an exclusive lock")
	cancel() // while b waits for the lock
	err := b.wait(e, "Update whose context ended while it waited for a lock")
	switch {
	case err == nil:
		t.Errorf("Update whose context ended while it waited for a lock returned nil")
	case !errors.Is(err, context.Canceled):
		t.Errorf("Update whose context ended while it waited for a lock returned %v, want an error wrapping context.Canceled", err)
	}
	// And a View waiting for a shared lock.
	vctx, vcancel := context.WithCancel(e.ctx)
	defer vcancel()
	vstarted, vacquired := newSignal(), newSignal()
	v := spawn(e, func() error {
		return e.c.View(vctx, func(tx core.CatalogTx) error {
			vstarted.fire()
			if err := tx.Lock([]byte("lk"), false); err != nil {
				return err
			}
			vacquired.fire()
			return nil
		})
	})
	vstarted.await(e, "the waiting View's start")
	notBefore(t, vacquired, "a View took a shared lock")
	vcancel()
	err = v.wait(e, "View whose context ended while it waited for a lock")
	switch {
	case err == nil:
		t.Errorf("View whose context ended while it waited for a lock returned nil")
	case !errors.Is(err, context.Canceled):
		t.Errorf("View whose context ended while it waited for a lock returned %v, want an error wrapping context.Canceled", err)
	}
	// The holder is unaffected, the cancelled Update left nothing, and the lock is
	// free once the holder commits.
	release.fire()
	if err := a.wait(e, "the lock holder"); err != nil {
		t.Fatalf("the lock holder's Update: %v", err)
	}
	e.wantAbsent("lk/b")
	w := spawn(e, func() error {
		return e.update(func(tx core.CatalogTx) error {
			if err := tx.Lock([]byte("lk"), true); err != nil {
				return err
			}
			return tx.Set([]byte("lk/c"), []byte("C"))
		})
	})
	if err := w.wait(e, "Update taking the lock after the cancelled wait"); err != nil {
		t.Fatal(err)
	}
	e.want("lk/a", "A")
	e.want("lk/c", "C")
}

// --- subtests: the rest ---

func testSync(e *env) {
	t := e.t
	if err := e.c.Sync(e.ctx); err != nil {
		t.Fatalf("Sync of an empty catalog: %v", err)
	}
	e.set(kv{"sync/a", "1"}, kv{"sync/b", "2"})
	if err := e.c.Sync(e.ctx); err != nil {
		t.Fatalf("Sync after an Update: %v", err)
	}
	if err := e.c.Sync(e.ctx); err != nil {
		t.Fatalf("Sync again: %v", err)
	}
	e.mustUpdate("Update deleting", func(tx core.CatalogTx) error { return tx.Delete([]byte("sync/a")) })
	// Syncs concurrent with each other and with an Update.
	var tasks []*task
	for range 3 {
		tasks = append(tasks, spawn(e, func() error { return e.c.Sync(e.ctx) }))
	}
	e.set(kv{"sync/c", "3"})
	for i, tk := range tasks {
		if err := tk.wait(e, "Sync"); err != nil {
			t.Errorf("concurrent Sync %d: %v", i, err)
		}
	}
	e.wantScan("sync/", "", []kv{{"sync/b", "2"}, {"sync/c", "3"}})
}

// Concurrent use: workers each own some keys (so each can tell what they must hold),
// write a pair of shared keys together (so a View that sees half a commit shows), and
// increment a counter under a lock; a scanner checks pairs meanwhile.
const (
	concWorkers    = 4
	concIterations = 30
	concOwn        = 4
)

func ownKey(w, j int) string { return fmt.Sprintf("cc/own/%d/%d", w, j) }

type concResult struct {
	increments int
	own        model
}

func checkPair(tx core.CatalogTx) error {
	x, errX := tx.Get([]byte("cc/pair/x"))
	y, errY := tx.Get([]byte("cc/pair/y"))
	switch {
	case errors.Is(errX, core.ErrKeyNotFound) && errors.Is(errY, core.ErrKeyNotFound):
		return nil
	case errX != nil || errY != nil:
		return fmt.Errorf("Get of the pair: %v, %v", errX, errY)
	case !bytes.Equal(x, y):
		return fmt.Errorf("a View read the pair as %q and %q: half of an Update", x, y)
	}
	return nil
}

func concWorker(ctx context.Context, c core.Catalog, w int, res *concResult) error {
	rng := rand.New(rand.NewPCG(uint64(w), 60))
	own := model{}
	for it := range concIterations {
		val := fmt.Sprintf("w%d i%d", w, it)
		j := rng.IntN(concOwn)
		k := ownKey(w, j)
		var err error
		switch op := rng.IntN(10); op {
		case 0, 1:
			err = c.Update(ctx, func(tx core.CatalogTx) error { return tx.Set([]byte(k), []byte(val)) })
			if err == nil {
				own[k] = val
			}
		case 2:
			err = c.View(ctx, func(tx core.CatalogTx) error {
				v, err := tx.Get([]byte(k))
				want, ok := own[k]
				switch {
				case !ok && !errors.Is(err, core.ErrKeyNotFound):
					return fmt.Errorf("Get of own %q, deleted or never set: %q, %v", k, v, err)
				case ok && (err != nil || string(v) != want):
					return fmt.Errorf("Get of own %q = %q, %v; want %q, committed last", k, v, err, want)
				}
				return nil
			})
		case 3:
			err = c.Update(ctx, func(tx core.CatalogTx) error { return tx.Delete([]byte(k)) })
			if err == nil {
				delete(own, k)
			}
		case 4:
			err = c.Update(ctx, func(tx core.CatalogTx) error {
				if err := tx.Set([]byte("cc/pair/x"), []byte(val)); err != nil {
					return err
				}
				return tx.Set([]byte("cc/pair/y"), []byte(val))
			})
		case 5:
			err = c.View(ctx, checkPair)
		case 6:
			err = c.Update(ctx, func(tx core.CatalogTx) error {
				if err := tx.Lock([]byte("cc/counter"), true); err != nil {
					return err
				}
				n := 0
				v, err := tx.Get([]byte("cc/counter"))
				if err == nil {
					n, err = strconv.Atoi(string(v))
				}
				if err != nil && !errors.Is(err, core.ErrKeyNotFound) {
					return err
				}
				return tx.Set([]byte("cc/counter"), []byte(strconv.Itoa(n+1)))
			})
			if err == nil {
				res.increments++
			}
		case 7:
			err = c.Update(ctx, func(tx core.CatalogTx) error {
				if err := tx.Set([]byte(k), []byte("never committed")); err != nil {
					return err
				}
				return errStop
			})
			if errors.Is(err, errStop) {
				err = nil
			} else {
				err = fmt.Errorf("failing Update returned %v, want its fn's error", err)
			}
		case 8, 9:
			// A Scan of own keys, in a View or in an Update that then writes one.
			prefix := fmt.Sprintf("cc/own/%d/", w)
			scan := func(tx core.CatalogTx) error {
				got, err := txScan(tx, prefix, "")
				if err != nil {
					return err
				}
				if d := diffKVs(got, own.scan(prefix, "")); d != "" {
					return fmt.Errorf("Scan of own keys: %s", d)
				}
				return nil
			}
			if op == 8 {
				err = c.View(ctx, scan)
				break
			}
			err = c.Update(ctx, func(tx core.CatalogTx) error {
				if err := scan(tx); err != nil {
					return err
				}
				return tx.Set([]byte(k), []byte(val))
			})
			if err == nil {
				own[k] = val
			}
		}
		if err != nil {
			return fmt.Errorf("iteration %d: %w", it, err)
		}
	}
	res.own = own
	return nil
}

func testConcurrent(e *env) {
	t := e.t
	results := make([]concResult, concWorkers)
	var tasks []*task
	for w := range concWorkers {
		tasks = append(tasks, spawn(e, func() error { return concWorker(e.ctx, e.c, w, &results[w]) }))
	}
	tasks = append(tasks, spawn(e, func() error {
		for range 10 {
			err := e.c.View(e.ctx, func(tx core.CatalogTx) error {
				if _, err := txScan(tx, "cc/", ""); err != nil {
					return err
				}
				return checkPair(tx)
			})
			if err != nil {
				return fmt.Errorf("scanner: %w", err)
			}
		}
		return nil
	}))
	for i, tk := range tasks {
		if err := tk.wait(e, "concurrent worker"); err != nil {
			t.Errorf("worker %d: %v", i, err)
		}
	}
	if t.Failed() {
		return
	}
	// Each worker's keys hold what it committed last, and the counter every increment.
	want, increments := model{}, 0
	for _, r := range results {
		for k, v := range r.own {
			want[k] = v
		}
		increments += r.increments
	}
	e.wantScan("cc/own/", "", want.pairs())
	if increments > 0 {
		e.want("cc/counter", strconv.Itoa(increments))
	} else {
		e.wantAbsent("cc/counter")
	}
	e.mustView("View of the pair", checkPair)
}
