package catalogtest

import (
	"context"
	"errors"

	"github.com/ebsd/ebsd/cas/core"
	"github.com/ebsd/ebsd/cas/internal/faults"
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
	plan  *faults.Plan[Op, struct{}]
}

// NewFaulty returns a Faulty around inner with no faults armed.
func NewFaulty(inner core.Catalog) *Faulty {
	return &Faulty{inner: inner, plan: faults.New[Op, struct{}](ErrInjected)}
}

// FailNth makes the n-th call of op from now (1-based) fail once; a nil err fails it
// with an error wrapping ErrInjected.
func (f *Faulty) FailNth(op Op, n int, err error) {
	if n < 1 {
		panic("catalogtest: FailNth needs n >= 1")
	}
	f.plan.FailNth(op, n, err)
}

// FailAlways makes every call of op fail until Clear or ClearAll.
func (f *Faulty) FailAlways(op Op, err error) { f.plan.FailAlways(op, err) }

// Clear disarms the faults of op.
func (f *Faulty) Clear(op Op) { f.plan.Clear(op) }

// ClearAll disarms every fault; call counts are kept.
func (f *Faulty) ClearAll() { f.plan.ClearAll() }

// Calls says how many calls of op Faulty has seen, failed ones included.
func (f *Faulty) Calls(op Op) int { return f.plan.Calls(op) }

// check counts a call of op and returns the error of the fault that applies, if any.
func (f *Faulty) check(op Op) error { return f.plan.Check(op, nil) }

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
