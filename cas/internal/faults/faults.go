// Package faults is the arming and counting behind the fault-injecting decorators of
// the store's seams (cas/blocktest.Faulty for block stores, cas/catalogtest.Faulty for
// catalogs): which call of which operation fails, with what error.
package faults

import (
	"fmt"
	"sync"
)

// Plan counts calls per operation and decides which ones fail. Arg is what a call is
// given that a predicate fault may aim at (a block digest). Safe for concurrent use;
// faults may be armed and cleared while calls run.
type Plan[Op ~string, Arg any] struct {
	injected error // what made-up errors wrap

	mu     sync.Mutex
	calls  map[Op]int
	faults map[Op][]*fault[Arg]
}

// fault is one armed fault: FailNth when at > 0, FailWhen when when != nil, otherwise
// FailAlways.
type fault[Arg any] struct {
	at   int
	when func(Arg) bool
	err  error
}

// New returns a plan with nothing armed whose made-up errors wrap injected.
func New[Op ~string, Arg any](injected error) *Plan[Op, Arg] {
	return &Plan[Op, Arg]{injected: injected, calls: make(map[Op]int), faults: make(map[Op][]*fault[Arg])}
}

// FailNth makes the n-th call of op from now (n = 1 is the next call) fail once; n must
// be at least 1 (the caller checks).
func (p *Plan[Op, Arg]) FailNth(op Op, n int, err error) {
	p.arm(op, &fault[Arg]{at: 0, err: err}, n)
}

// FailAlways makes every call of op fail until Clear or ClearAll.
func (p *Plan[Op, Arg]) FailAlways(op Op, err error) { p.arm(op, &fault[Arg]{err: err}, 0) }

// FailWhen makes a call of op fail, until Clear or ClearAll, when pred holds for an
// argument it is given.
func (p *Plan[Op, Arg]) FailWhen(op Op, pred func(Arg) bool, err error) {
	p.arm(op, &fault[Arg]{when: pred, err: err}, 0)
}

func (p *Plan[Op, Arg]) arm(op Op, f *fault[Arg], nth int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if nth > 0 {
		f.at = p.calls[op] + nth
	}
	p.faults[op] = append(p.faults[op], f)
}

// Clear disarms every fault armed on op, including FailNth faults yet to fire.
func (p *Plan[Op, Arg]) Clear(op Op) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.faults, op)
}

// ClearAll disarms every fault. Call counts are kept.
func (p *Plan[Op, Arg]) ClearAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.faults)
}

// Calls returns how many calls of op the plan has counted, failed ones included.
func (p *Plan[Op, Arg]) Calls(op Op) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[op]
}

// Check counts a call of op given args and returns the error of the first fault, in
// the order armed, that applies to it, or nil. A due FailNth fault is disarmed. name
// says what an argument is in a made-up error ("block %s"). Predicates run outside
// the plan's lock.
func (p *Plan[Op, Arg]) Check(op Op, name func(Arg) string, args ...Arg) error {
	n, cands := p.start(op)
	for _, f := range cands {
		if f.when == nil {
			return p.error(f, fmt.Sprintf("call %d of %s", n, op))
		}
		for _, a := range args {
			if f.when(a) {
				return p.error(f, fmt.Sprintf("%s of %s", op, name(a)))
			}
		}
	}
	return nil
}

// CheckEach counts a call of op whose arguments arrive one by one (a walk). It returns
// the error of a fault that fails the call whatever its arguments, or else a check to
// run on each argument as it arrives (nil when no predicate fault is armed).
func (p *Plan[Op, Arg]) CheckEach(op Op, name func(Arg) string) (func(Arg) error, error) {
	n, cands := p.start(op)
	var whens []*fault[Arg]
	for _, f := range cands {
		if f.when == nil {
			return nil, p.error(f, fmt.Sprintf("call %d of %s", n, op))
		}
		whens = append(whens, f)
	}
	if len(whens) == 0 {
		return nil, nil
	}
	return func(a Arg) error {
		for _, f := range whens {
			if f.when(a) {
				return p.error(f, fmt.Sprintf("%s at %s", op, name(a)))
			}
		}
		return nil
	}, nil
}

// start counts a call of op and returns the faults that may apply to it, in the order
// they were armed: predicate faults, then at most one fault that fails the call
// whatever its arguments (a due FailNth or a FailAlways). n is the call's number.
func (p *Plan[Op, Arg]) start(op Op) (n int, cands []*fault[Arg]) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls[op]++
	n = p.calls[op]
	armed := p.faults[op]
	kept := armed[:0]
	decided := false
	for _, f := range armed {
		switch {
		case f.at > 0:
			if f.at == n && !decided {
				cands = append(cands, f)
				decided = true
			}
			if f.at > n {
				kept = append(kept, f)
			}
			continue
		case f.when != nil:
			if !decided {
				cands = append(cands, f)
			}
		default:
			if !decided {
				cands = append(cands, f)
				decided = true
			}
		}
		kept = append(kept, f)
	}
	clear(armed[len(kept):])
	p.faults[op] = kept
	return n, cands
}

func (p *Plan[Op, Arg]) error(f *fault[Arg], what string) error {
	if f.err != nil {
		return f.err
	}
	return fmt.Errorf("%w: %s", p.injected, what)
}
