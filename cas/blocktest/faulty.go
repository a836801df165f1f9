package blocktest

import (
	"context"
	"errors"
	"fmt"

	"github.com/ebsd/ebsd/cas/core"
	"github.com/ebsd/ebsd/cas/internal/faults"
)

// Op names a core.BlockStore method, for arming faults on it and counting its calls.
type Op string

// The operations of a core.BlockStore.
const (
	OpPut    Op = "Put"
	OpRead   Op = "Read"
	OpStat   Op = "Stat"
	OpDelete Op = "Delete"
	OpWalk   Op = "Walk"
	OpSync   Op = "Sync"
)

var ops = [...]Op{OpPut, OpRead, OpStat, OpDelete, OpWalk, OpSync}

// ErrInjected is wrapped by every error Faulty makes up. A fault armed with an error
// of the test's own returns that error as it is instead.
var ErrInjected = errors.New("blocktest: injected fault")

var _ core.BlockStore = (*Faulty)(nil)

// Faulty is a core.BlockStore that passes every call to an inner store unless a fault
// armed on the call's operation applies, in which case the call fails without
// reaching the inner store: a failed Put stores none of its blocks, a failed Delete
// removes none. (Walk is the exception: a fault aimed at a digest with FailWhen ends
// a walk when it gets to that digest, after the blocks before it were visited.)
//
// When several armed faults apply to one call, the one armed first decides the error.
// Faulty counts every call, failed or not, per operation. It is safe for concurrent
// use; faults may be armed and cleared while calls run.
type Faulty struct {
	inner core.BlockStore
	plan  *faults.Plan[Op, core.Digest]
}

// NewFaulty returns a Faulty around inner with no faults armed.
func NewFaulty(inner core.BlockStore) *Faulty {
	return &Faulty{inner: inner, plan: faults.New[Op, core.Digest](ErrInjected)}
}

// FailNth makes the n-th call of op from now (n = 1 is the next call) fail once, with
// err, or with an error wrapping ErrInjected if err is nil. It panics if n < 1.
func (f *Faulty) FailNth(op Op, n int, err error) {
	mustOp(op)
	if n < 1 {
		panic(fmt.Sprintf("blocktest: FailNth(%s, %d): n must be at least 1", op, n))
	}
	f.plan.FailNth(op, n, err)
}

// FailAlways makes every call of op fail, until Clear(op) or ClearAll, with err, or
// with an error wrapping ErrInjected if err is nil.
func (f *Faulty) FailAlways(op Op, err error) {
	mustOp(op)
	f.plan.FailAlways(op, err)
}

// FailWhen makes a call of op fail, until Clear(op) or ClearAll, when pred holds for a
// digest the call is given: any block of a Put, any digest of a Delete, the digest of
// a Read or Stat. A Walk fails on getting to a digest pred holds for, before calling
// its fn with it. pred runs outside Faulty's lock and may be called concurrently.
// Sync has no digest: FailWhen(OpSync, …) panics, as does a nil pred.
func (f *Faulty) FailWhen(op Op, pred func(d core.Digest) bool, err error) {
	mustOp(op)
	if op == OpSync || pred == nil {
		panic(fmt.Sprintf("blocktest: FailWhen(%s): needs an operation given digests and a predicate", op))
	}
	f.plan.FailWhen(op, pred, err)
}

// Clear disarms every fault armed on op, including FailNth faults yet to fire.
func (f *Faulty) Clear(op Op) { f.plan.Clear(op) }

// ClearAll disarms every fault. Call counts are kept.
func (f *Faulty) ClearAll() { f.plan.ClearAll() }

// Calls returns how many calls of op Faulty has had, failed ones included.
func (f *Faulty) Calls(op Op) int { return f.plan.Calls(op) }

func mustOp(op Op) {
	for _, o := range ops {
		if o == op {
			return
		}
	}
	panic(fmt.Sprintf("blocktest: unknown operation %q", op))
}

func blockName(d core.Digest) string { return "block " + d.String() }

// check counts a call of op given digests ds and returns the error of the first fault
// that applies to it, or nil.
func (f *Faulty) check(op Op, ds ...core.Digest) error {
	return f.plan.Check(op, blockName, ds...)
}

// Put passes the blocks to the inner store unless a fault applies.
func (f *Faulty) Put(ctx context.Context, blocks []core.StoredBlock) error {
	ds := make([]core.Digest, len(blocks))
	for i, b := range blocks {
		ds[i] = b.Digest
	}
	if err := f.check(OpPut, ds...); err != nil {
		return err
	}
	return f.inner.Put(ctx, blocks)
}

// Read passes the call to the inner store unless a fault applies.
func (f *Faulty) Read(ctx context.Context, d core.Digest, fn func(tag byte, data []byte) error) error {
	if err := f.check(OpRead, d); err != nil {
		return err
	}
	return f.inner.Read(ctx, d, fn)
}

// Stat passes the call to the inner store unless a fault applies.
func (f *Faulty) Stat(ctx context.Context, d core.Digest) (int64, error) {
	if err := f.check(OpStat, d); err != nil {
		return 0, err
	}
	return f.inner.Stat(ctx, d)
}

// Delete passes the digests to the inner store unless a fault applies.
func (f *Faulty) Delete(ctx context.Context, ds []core.Digest) error {
	if err := f.check(OpDelete, ds...); err != nil {
		return err
	}
	return f.inner.Delete(ctx, ds)
}

// Walk walks the inner store unless a fault fails the call before it starts; a
// FailWhen fault ends the walk with its error at the first digest it holds for.
func (f *Faulty) Walk(ctx context.Context, from core.Digest, fn func(d core.Digest, size int64) error) error {
	each, err := f.plan.CheckEach(OpWalk, blockName)
	if err != nil {
		return err
	}
	if each == nil {
		return f.inner.Walk(ctx, from, fn)
	}
	return f.inner.Walk(ctx, from, func(d core.Digest, size int64) error {
		if err := each(d); err != nil {
			return err
		}
		return fn(d, size)
	})
}

// Sync passes the call to the inner store unless a fault applies.
func (f *Faulty) Sync(ctx context.Context) error {
	if err := f.check(OpSync); err != nil {
		return err
	}
	return f.inner.Sync(ctx)
}
