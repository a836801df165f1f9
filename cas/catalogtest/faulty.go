package catalogtest

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/ebsd/ebsd/cas/core"
)

// Op names a core.Catalog method, for arming faults on it and counting its calls.
type Op string

// The operations of a core.Catalog. A fault on OpUpdate is a failed commit: the
// transaction runs, then rolls back instead of committing, so none of its writes land.
const (
	OpView   Op = "View"
	OpUpdate Op = "Update"
	OpSync   Op = "Sync"
)

// ErrInjected is wrapped by every error Faulty makes up.
var ErrInjected = errors.New("catalogtest: injected fault")

var _ core.Catalog = (*Faulty)(nil)

// Faulty is a core.Catalog that passes every call to an inner catalog unless a fault
// armed on the call's operation applies (kopia's blobtesting.FaultyStorage is the
// model). It counts every call per operation, and is safe for concurrent use.
type Faulty struct {
	inner core.Catalog

	mu     sync.Mutex
	calls  map[Op]int
	faults map[Op][]*catalogFault
}

type catalogFault struct {
	at  int // the call (counted from 1 at arming) that fails; 0: every call
	err error
}

// NewFaulty returns a Faulty around inner with no faults armed.
func NewFaulty(inner core.Catalog) *Faulty {
	return &Faulty{inner: inner, calls: make(map[Op]int), faults: make(map[Op][]*catalogFault)}
}

// FailNth makes the n-th call of op from now (1-based) fail once; a nil err fails it
// with an error wrapping ErrInjected.
func (f *Faulty) FailNth(op Op, n int, err error) {
	if n < 1 {
		panic("catalogtest: FailNth needs n >= 1")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults[op] = append(f.faults[op], &catalogFault{at: f.calls[op] + n, err: err})
}

// FailAlways makes every call of op fail until Clear or ClearAll.
func (f *Faulty) FailAlways(op Op, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults[op] = append(f.faults[op], &catalogFault{err: err})
}

// Clear disarms the faults of op.
func (f *Faulty) Clear(op Op) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.faults, op)
}

// ClearAll disarms every fault; call counts are kept.
func (f *Faulty) ClearAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.faults)
}

// Calls says how many calls of op Faulty has seen, failed ones included.
func (f *Faulty) Calls(op Op) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// check counts a call of op and returns the error of the fault that applies, if any.
func (f *Faulty) check(op Op) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[op]++
	n := f.calls[op]
	for i, fl := range f.faults[op] {
		if fl.at != 0 && fl.at != n {
			continue
		}
		if fl.at != 0 { // once
			f.faults[op] = append(f.faults[op][:i:i], f.faults[op][i+1:]...)
		}
		if fl.err != nil {
			return fl.err
		}
		return fmt.Errorf("%w: call %d of %s", ErrInjected, n, op)
	}
	return nil
}

func (f *Faulty) View(ctx context.Context, fn func(core.CatalogTx) error) error {
	if err := f.check(OpView); err != nil {
		return err
	}
	return f.inner.View(ctx, fn)
}

// Update fails an armed call at its commit: fn runs in the inner transaction, which is
// then rolled back by returning the injected error from it.
func (f *Faulty) Update(ctx context.Context, fn func(core.CatalogTx) error) error {
	injected := f.check(OpUpdate)
	if injected == nil {
		return f.inner.Update(ctx, fn)
	}
	err := f.inner.Update(ctx, func(tx core.CatalogTx) error {
		if err := fn(tx); err != nil {
			return err
		}
		return injected
	})
	if err == nil { // an inner catalog that swallowed the error must not hide the fault
		return injected
	}
	return err
}

func (f *Faulty) Sync(ctx context.Context) error {
	if err := f.check(OpSync); err != nil {
		return err
	}
	return f.inner.Sync(ctx)
}
