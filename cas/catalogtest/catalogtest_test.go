package catalogtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/ebsd/ebsd/cas/core"
	"github.com/ebsd/ebsd/cas/internal/mutantrun"
)

func TestMemory(t *testing.T) {
	Run(t, func(*testing.T) core.Catalog { return NewMemory() })
}

// An engine may run an Update's fn more than once; the suite must pass on one that
// always does, so its own checks are judged on what commits, not on what a run saw.
func TestMemoryRerun(t *testing.T) {
	Run(t, func(*testing.T) core.Catalog {
		m := newMemory()
		m.rerun = true
		return m
	})
}

// Memory hands out copies: writing to what Get or Scan gave changes nothing stored.
func TestMemoryCopies(t *testing.T) {
	ctx := t.Context()
	m := NewMemory()
	if err := m.Update(ctx, func(tx core.CatalogTx) error { return tx.Set([]byte("k"), []byte("value")) }); err != nil {
		t.Fatal(err)
	}
	err := m.View(ctx, func(tx core.CatalogTx) error {
		return tx.Scan(nil, nil, func(k, v []byte) (bool, error) {
			clear(k)
			clear(v)
			return true, nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	err = m.View(ctx, func(tx core.CatalogTx) error {
		v, err := tx.Get([]byte("k"))
		if err != nil || string(v) != "value" {
			return fmt.Errorf("Get = %q, %v after the Scan's callback wrote to its arguments", v, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A transaction used after its View or Update returned fails instead of reading or
// writing.
func TestMemoryTxAfterEnd(t *testing.T) {
	ctx := t.Context()
	m := NewMemory()
	var kept core.CatalogTx
	if err := m.Update(ctx, func(tx core.CatalogTx) error { kept = tx; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := kept.Set([]byte("k"), nil); err == nil {
		t.Error("Set on an ended transaction returned nil")
	}
	if _, err := kept.Get([]byte("k")); err == nil || errors.Is(err, core.ErrKeyNotFound) {
		t.Errorf("Get on an ended transaction returned %v", err)
	}
	if err := kept.Lock([]byte("k"), true); err == nil {
		t.Error("Lock on an ended transaction returned nil")
	}
}

// The suite has teeth: each mutant catalog breaks one rule, and the subtest of that
// rule fails. Each runs in a child process, the test binary itself running only
// TestMutantChild with CATALOGTEST_MUTANT set; the control mutant breaks nothing and
// passes.
func TestSuiteCatchesMutants(t *testing.T) {
	for _, m := range mutants {
		t.Run(m.name+"/"+m.breaks, func(t *testing.T) {
			t.Parallel() // some wait out the suite's patience
			mutantrun.Check(t, "CATALOGTEST_MUTANT", m.name, m.breaks)
		})
	}
}

func TestMutantChild(t *testing.T) {
	name := os.Getenv("CATALOGTEST_MUTANT")
	if name == "" {
		t.Skip("run by TestSuiteCatchesMutants")
	}
	for _, m := range mutants {
		if m.name == name {
			// A short patience: some mutants make the suite wait it out.
			run(t, func(*testing.T) core.Catalog {
				return &mutant{inner: newMemory(), breaks: name, locks: newLockTable()}
			}, 2*time.Second)
			return
		}
	}
	t.Fatalf("no mutant %q", name)
}

// mutants lists the broken catalogs and a subtest each must fail.
var mutants = []struct{ name, breaks string }{
	{"control", ""},
	{"absent-unwrapped", "Absent"},
	{"set-aliases-value", "ValueReuse"},
	{"writes-immediate", "Atomicity"},
	{"writes-immediate", "ViewCommittedOnly"},
	{"update-swallows-fn-error", "Atomicity"},
	{"update-commits-on-error", "Atomicity"},
	{"view-no-snapshot", "ViewSnapshot"},
	{"view-writes", "ViewReadOnly"},
	{"scan-past-prefix", "ScanPrefix"},
	{"scan-from-exclusive", "ScanFrom"},
	{"scan-short-from-compared", "ScanFrom"},
	{"scan-ignores-stop", "ScanStop"},
	{"scan-swallows-fn-error", "ScanFnError"},
	{"scan-misses-own-writes", "ScanOwnWrites"},
	{"scan-first-page-only", "Scan10k"},
	{"locks-noop", "LockExclusive"},
	// Not {"locks-noop", "LockCounter"}: without locks the counter loses increments only
	// when the scheduler interleaves the workers, which a loaded machine may not do;
	// LockExclusive catches the mutant every time.
	{"shared-as-exclusive", "LockShared"},
	{"locks-one-name", "LockNames"},
	{"lock-creates-key", "LockNames"},
	{"lock-leaks-on-error", "LockReleasedOnError"},
	{"lock-ignores-ctx", "LockCancel"},
	{"view-lock-stale", "LockExclusiveBlocksShared"},
	{"sync-fails", "Sync"},
}

var errMutant = errors.New("mutant")

// mutant wraps a correct memory catalog and breaks the rule breaks names.
type mutant struct {
	inner  *memory
	breaks string
	locks  *lockTable // lock-leaks-on-error, locks-one-name: the mutant's own locks
}

type mutantTx struct {
	core.CatalogTx
	m      *mutant
	ctx    context.Context
	update bool

	aliased []kv            // set-aliases-value: keys with the caller's value buffers
	values  [][]byte        // ... and those buffers
	held    map[string]bool // lock-leaks-on-error, locks-one-name: the mutant's locks held
}

func (m *mutant) View(ctx context.Context, fn func(tx core.CatalogTx) error) error {
	if m.breaks == "lock-ignores-ctx" {
		ctx = context.WithoutCancel(ctx)
	}
	held := map[string]bool{}
	defer m.locks.releaseAll(held)
	return m.inner.View(ctx, func(tx core.CatalogTx) error {
		return fn(&mutantTx{CatalogTx: tx, m: m, ctx: ctx, held: held})
	})
}

func (m *mutant) Update(ctx context.Context, fn func(tx core.CatalogTx) error) error {
	if m.breaks == "lock-ignores-ctx" {
		ctx = context.WithoutCancel(ctx)
	}
	held := map[string]bool{}
	var fnErr error
	err := m.inner.Update(ctx, func(tx core.CatalogTx) error {
		mt := &mutantTx{CatalogTx: tx, m: m, ctx: ctx, update: true, held: held}
		fnErr = fn(mt)
		switch {
		case fnErr == nil && m.breaks == "set-aliases-value":
			// Store what the caller's buffers hold now, not at Set.
			for i, a := range mt.aliased {
				if err := tx.Set([]byte(a.k), mt.values[i]); err != nil {
					return err
				}
			}
		case fnErr != nil && m.breaks == "update-commits-on-error":
			return nil
		}
		return fnErr
	})
	if m.breaks != "lock-leaks-on-error" || fnErr == nil {
		m.locks.releaseAll(held)
	}
	switch {
	case m.breaks == "update-swallows-fn-error" && err != nil && errors.Is(err, fnErr):
		return nil
	case m.breaks == "update-commits-on-error" && fnErr != nil:
		return fnErr
	}
	return err
}

func (m *mutant) Sync(ctx context.Context) error {
	if m.breaks == "sync-fails" {
		return errMutant
	}
	return m.inner.Sync(ctx)
}

func (tx *mutantTx) Get(key []byte) ([]byte, error) {
	v, err := tx.CatalogTx.Get(key)
	if tx.m.breaks == "absent-unwrapped" && errors.Is(err, core.ErrKeyNotFound) {
		return nil, errMutant
	}
	if tx.m.breaks == "view-no-snapshot" && !tx.update {
		// Read the latest committed state, not the View's own.
		err = tx.m.inner.View(tx.ctx, func(fresh core.CatalogTx) error {
			v, err = fresh.Get(key)
			return err
		})
	}
	return v, err
}

func (tx *mutantTx) Set(key, value []byte) error {
	switch tx.m.breaks {
	case "set-aliases-value":
		tx.aliased = append(tx.aliased, kv{k: string(key)})
		tx.values = append(tx.values, value)
	case "writes-immediate":
		if tx.update {
			return tx.m.inner.Update(tx.ctx, func(now core.CatalogTx) error { return now.Set(key, value) })
		}
	case "view-writes":
		if !tx.update {
			return tx.m.inner.Update(tx.ctx, func(now core.CatalogTx) error { return now.Set(key, value) })
		}
	}
	return tx.CatalogTx.Set(key, value)
}

func (tx *mutantTx) Delete(key []byte) error {
	switch tx.m.breaks {
	case "writes-immediate":
		if tx.update {
			return tx.m.inner.Update(tx.ctx, func(now core.CatalogTx) error { return now.Delete(key) })
		}
	case "view-writes":
		if !tx.update {
			return tx.m.inner.Update(tx.ctx, func(now core.CatalogTx) error { return now.Delete(key) })
		}
	}
	return tx.CatalogTx.Delete(key)
}

func (tx *mutantTx) Scan(prefix, from []byte, fn func(key, value []byte) (bool, error)) error {
	visits := 0
	switch tx.m.breaks {
	case "scan-past-prefix":
		end, ok := core.PrefixEnd(prefix)
		if len(prefix) == 0 || !ok {
			break
		}
		// Scan on from the prefix's start, and take the key just past it too.
		start := core.ScanStart(prefix, from)
		return tx.CatalogTx.Scan(nil, start, func(k, v []byte) (bool, error) {
			if !bytes.HasPrefix(k, prefix) && !bytes.Equal(k, end) {
				return bytes.Compare(k, end) < 0, nil
			}
			return fn(k, v)
		})
	case "scan-from-exclusive":
		return tx.CatalogTx.Scan(prefix, from, func(k, v []byte) (bool, error) {
			if bytes.Equal(k, from) {
				return true, nil
			}
			return fn(k, v)
		})
	case "scan-short-from-compared":
		// A from shorter than the prefix is compared with keys rather than ignored.
		return tx.CatalogTx.Scan(prefix, from, func(k, v []byte) (bool, error) {
			if bytes.Compare(k, from) < 0 {
				return true, nil
			}
			return fn(k, v)
		})
	case "scan-ignores-stop":
		return tx.CatalogTx.Scan(prefix, from, func(k, v []byte) (bool, error) {
			_, err := fn(k, v)
			return true, err
		})
	case "scan-swallows-fn-error":
		return tx.CatalogTx.Scan(prefix, from, func(k, v []byte) (bool, error) {
			more, err := fn(k, v)
			return more && err == nil, nil
		})
	case "scan-misses-own-writes":
		if tx.update {
			return tx.m.inner.View(tx.ctx, func(committed core.CatalogTx) error {
				return committed.Scan(prefix, from, fn)
			})
		}
	case "scan-first-page-only":
		return tx.CatalogTx.Scan(prefix, from, func(k, v []byte) (bool, error) {
			visits++
			if visits > 1000 {
				return false, nil
			}
			return fn(k, v)
		})
	case "view-no-snapshot":
		if !tx.update {
			return tx.m.inner.View(tx.ctx, func(fresh core.CatalogTx) error {
				return fresh.Scan(prefix, from, fn)
			})
		}
	}
	return tx.CatalogTx.Scan(prefix, from, fn)
}

func (tx *mutantTx) Lock(name []byte, exclusive bool) error {
	switch tx.m.breaks {
	case "locks-noop":
		return nil
	case "shared-as-exclusive":
		exclusive = true
	case "view-lock-stale":
		if !tx.update {
			// Keep reading the state from before the wait.
			mt := tx.CatalogTx.(*memTx)
			snap := mt.read()
			err := mt.Lock(name, exclusive)
			mt.snap = snap
			return err
		}
	case "lock-creates-key":
		if tx.update {
			if err := tx.CatalogTx.Set(name, []byte("locked")); err != nil {
				return err
			}
		}
	case "lock-leaks-on-error", "locks-one-name":
		n := string(name)
		if tx.m.breaks == "locks-one-name" {
			n = "one name for all"
		}
		if _, ok := tx.held[n]; !ok {
			// Exclusive whatever the mode: the suite's lock-leak check uses exclusive
			// locks, and locks-one-name is to make different names exclude each other.
			if err := tx.m.locks.acquire(tx.ctx, n, true, false); err != nil {
				return err
			}
			tx.held[n] = true
		}
		if tx.m.breaks == "locks-one-name" {
			return nil
		}
	}
	return tx.CatalogTx.Lock(name, exclusive)
}
