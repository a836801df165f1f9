package blocktest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ebsd/ebsd/cas/core"
	"github.com/ebsd/ebsd/cas/internal/mutantrun"
)

func TestMemory(t *testing.T) {
	Run(t, func(*testing.T) core.BlockStore { return NewMemory() })
}

func TestFaultyNoFaults(t *testing.T) {
	Run(t, func(*testing.T) core.BlockStore { return NewFaulty(NewMemory()) })
}

// Predicates armed that never hold send every call, Walk's callback included, through
// Faulty's fault checks without changing what the store does.
func TestFaultyIdlePredicates(t *testing.T) {
	Run(t, func(*testing.T) core.BlockStore {
		f := NewFaulty(NewMemory())
		never := func(core.Digest) bool { return false }
		for _, op := range []Op{OpPut, OpRead, OpStat, OpDelete, OpWalk} {
			f.FailWhen(op, never, nil)
		}
		return f
	})
}

func TestMemoryLen(t *testing.T) {
	ctx := t.Context()
	m := NewMemory()
	if m.Len() != 0 {
		t.Fatalf("new Memory holds %d blocks", m.Len())
	}
	a, b := randomBlock(1, 0, 10), randomBlock(2, 0, 10)
	put(t, ctx, m, a, b, a)
	if m.Len() != 2 {
		t.Errorf("Len = %d after putting 2 blocks, one twice; want 2", m.Len())
	}
	del(t, ctx, m, a.Digest, a.Digest)
	if m.Len() != 1 {
		t.Errorf("Len = %d after deleting one of 2; want 1", m.Len())
	}
}

// Memory hands Read's callback a copy: writing to it changes nothing stored.
func TestMemoryReadCopies(t *testing.T) {
	ctx := t.Context()
	m := NewMemory()
	b := randomBlock(3, 0x81, 100)
	put(t, ctx, m, b)
	err := m.Read(ctx, b.Digest, func(_ byte, data []byte) error {
		clear(data)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wantBlock(t, ctx, m, b)
}

// fixture is a Faulty around a Memory holding n blocks put through the Memory,
// sorted by digest.
func fixture(t *testing.T, n int) (*Faulty, *Memory, []core.StoredBlock) {
	t.Helper()
	inner := NewMemory()
	blocks := make([]core.StoredBlock, n)
	for i := range blocks {
		blocks[i] = randomBlock(uint64(2000+i), byte(i), 100+i)
	}
	slices.SortFunc(blocks, func(a, b core.StoredBlock) int { return compareDigests(a.Digest, b.Digest) })
	put(t, t.Context(), inner, blocks...)
	return NewFaulty(inner), inner, blocks
}

func TestFaultyFailNth(t *testing.T) {
	ctx := t.Context()
	f, inner, _ := fixture(t, 0)
	blocks := make([]core.StoredBlock, 5)
	for i := range blocks {
		blocks[i] = randomBlock(uint64(2100+i), 1, 50)
	}
	f.FailNth(OpPut, 3, nil)
	for i, b := range blocks {
		err := f.Put(ctx, []core.StoredBlock{b})
		if i == 2 {
			if !errors.Is(err, ErrInjected) {
				t.Errorf("third Put returned %v, want an error wrapping ErrInjected", err)
			}
			wantAbsent(t, ctx, inner, b.Digest)
		} else {
			if err != nil {
				t.Errorf("Put %d: %v", i+1, err)
			}
			wantBlock(t, ctx, inner, b)
		}
	}
	if inner.Len() != 4 || f.Calls(OpPut) != 5 {
		t.Errorf("after 5 Puts, one failed: inner holds %d blocks, Calls = %d; want 4 and 5", inner.Len(), f.Calls(OpPut))
	}

	// n counts from when the fault is armed, and the test's own error comes back as is.
	own := errors.New("own error")
	for range 2 {
		if _, _, _, err := read(ctx, f, blocks[0].Digest); err != nil {
			t.Fatal(err)
		}
	}
	f.FailNth(OpRead, 2, own)
	var errs []error
	for range 4 {
		_, _, _, err := read(ctx, f, blocks[0].Digest)
		errs = append(errs, err)
	}
	if errs[0] != nil || errs[1] != own || errs[2] != nil || errs[3] != nil {
		t.Errorf("Reads after FailNth(OpRead, 2, own) returned %v, want [nil own nil nil]", errs)
	}

	// Two faults due on different calls both fire; a Clear disarms one yet to fire.
	f.FailNth(OpSync, 1, nil)
	f.FailNth(OpSync, 2, own)
	f.FailNth(OpSync, 4, nil)
	if err := f.Sync(ctx); !errors.Is(err, ErrInjected) {
		t.Errorf("Sync 1: %v, want injected", err)
	}
	if err := f.Sync(ctx); err != own {
		t.Errorf("Sync 2: %v, want %v", err, own)
	}
	if err := f.Sync(ctx); err != nil {
		t.Errorf("Sync 3: %v", err)
	}
	f.Clear(OpSync)
	if err := f.Sync(ctx); err != nil {
		t.Errorf("Sync 4, its fault cleared: %v", err)
	}
}

// A failed call does nothing to the inner store: no block of a failed Put is stored,
// no block of a failed Delete removed.
func TestFaultyFailureLeavesInnerUntouched(t *testing.T) {
	ctx := t.Context()
	f, inner, blocks := fixture(t, 3)
	replacement := core.StoredBlock{Digest: blocks[0].Digest, Tag: 0x81, Data: randomData(2200, 9)}
	fresh := randomBlock(2201, 2, 30)
	batch := []core.StoredBlock{replacement, fresh}
	untouched := func(what string) {
		t.Helper()
		for _, b := range blocks {
			wantBlock(t, ctx, inner, b)
		}
		wantAbsent(t, ctx, inner, fresh.Digest)
		if inner.Len() != len(blocks) {
			t.Errorf("%s: inner store holds %d blocks, want %d", what, inner.Len(), len(blocks))
		}
	}

	f.FailNth(OpPut, 1, nil)
	if err := f.Put(ctx, batch); !errors.Is(err, ErrInjected) {
		t.Fatalf("Put with a fault due: %v", err)
	}
	untouched("failed Put")

	// A predicate on the batch's last digest fails the whole batch.
	f.FailWhen(OpPut, func(d core.Digest) bool { return d == fresh.Digest }, nil)
	if err := f.Put(ctx, batch); !errors.Is(err, ErrInjected) {
		t.Fatalf("Put of a targeted digest: %v", err)
	}
	untouched("Put failed by predicate")
	if err := f.Put(ctx, batch[:1]); err != nil {
		t.Fatalf("Put missing the targeted digest: %v", err)
	}
	wantBlock(t, ctx, inner, replacement)
	put(t, ctx, inner, blocks[0]) // back as it was

	ds := []core.Digest{blocks[0].Digest, blocks[1].Digest, blocks[2].Digest}
	f.FailNth(OpDelete, 1, nil)
	if err := f.Delete(ctx, ds); !errors.Is(err, ErrInjected) {
		t.Fatalf("Delete with a fault due: %v", err)
	}
	untouched("failed Delete")
	f.FailWhen(OpDelete, func(d core.Digest) bool { return d == blocks[2].Digest }, nil)
	if err := f.Delete(ctx, ds); !errors.Is(err, ErrInjected) {
		t.Fatalf("Delete of a targeted digest: %v", err)
	}
	untouched("Delete failed by predicate")
	f.ClearAll()
	if err := f.Delete(ctx, ds); err != nil {
		t.Fatalf("Delete with no faults: %v", err)
	}
	if inner.Len() != 0 {
		t.Errorf("after the Delete went through the inner store holds %d blocks", inner.Len())
	}
}

func TestFaultyFailAlways(t *testing.T) {
	ctx := t.Context()
	f, _, blocks := fixture(t, 2)
	d := blocks[0].Digest
	f.FailAlways(OpStat, nil)
	for i := range 3 {
		if _, err := f.Stat(ctx, d); !errors.Is(err, ErrInjected) {
			t.Errorf("Stat %d under FailAlways: %v", i+1, err)
		}
	}
	wantBlockRead(t, ctx, f, blocks[0]) // other operations are unaffected
	f.Clear(OpStat)
	wantBlock(t, ctx, f, blocks[0])

	// Every operation at once, until ClearAll.
	own := errors.New("own error")
	for _, op := range ops {
		f.FailAlways(op, own)
	}
	walked := 0
	errs := map[Op]error{
		OpPut:    f.Put(ctx, []core.StoredBlock{randomBlock(2300, 0, 10)}),
		OpRead:   f.Read(ctx, d, func(byte, []byte) error { return nil }),
		OpDelete: f.Delete(ctx, []core.Digest{d}),
		OpWalk:   f.Walk(ctx, core.Digest{}, func(core.Digest, int64) error { walked++; return nil }),
		OpSync:   f.Sync(ctx),
	}
	_, errs[OpStat] = f.Stat(ctx, d)
	for _, op := range ops {
		if errs[op] != own {
			t.Errorf("%s under FailAlways(own): %v", op, errs[op])
		}
	}
	if walked != 0 {
		t.Errorf("a failed Walk visited %d blocks", walked)
	}
	f.ClearAll()
	wantBlock(t, ctx, f, blocks[0])
	wantWalk(t, ctx, f, core.Digest{}, blocks)
	if err := f.Sync(ctx); err != nil {
		t.Errorf("Sync after ClearAll: %v", err)
	}
}

// wantBlockRead is wantBlock without the Stat.
func wantBlockRead(t *testing.T, ctx context.Context, s core.BlockStore, b core.StoredBlock) {
	t.Helper()
	tag, data, _, err := read(ctx, s, b.Digest)
	if err != nil || tag != b.Tag || diffData(data, b.Data) != "" {
		t.Errorf("Read %s = %#x, %d bytes, %v; want %#x, %d bytes", b.Digest, tag, len(data), err, b.Tag, len(b.Data))
	}
}

func TestFaultyFailWhen(t *testing.T) {
	ctx := t.Context()
	f, _, blocks := fixture(t, 5)
	target := blocks[2].Digest
	isTarget := func(d core.Digest) bool { return d == target }

	f.FailWhen(OpRead, isTarget, nil)
	f.FailWhen(OpStat, isTarget, nil)
	for i, b := range blocks {
		_, _, calls, err := read(ctx, f, b.Digest)
		_, serr := f.Stat(ctx, b.Digest)
		if i == 2 {
			if !errors.Is(err, ErrInjected) || !errors.Is(serr, ErrInjected) || calls != 0 {
				t.Errorf("targeted block: Read %v (fn called %d times), Stat %v; want injected errors", err, calls, serr)
			}
			if !strings.Contains(err.Error(), target.String()) {
				t.Errorf("injected error %q does not name the digest", err)
			}
		} else if err != nil || serr != nil {
			t.Errorf("block %d, not targeted: Read %v, Stat %v", i, err, serr)
		}
	}

	// A walk fails on reaching the target, after visiting the blocks before it; one
	// from just past the target goes through.
	own := errors.New("own error")
	f.FailWhen(OpWalk, isTarget, own)
	var got []core.Digest
	err := f.Walk(ctx, core.Digest{}, func(d core.Digest, _ int64) error {
		got = append(got, d)
		return nil
	})
	if err != own {
		t.Errorf("Walk over the target returned %v, want %v", err, own)
	}
	if len(got) != 2 || got[0] != blocks[0].Digest || got[1] != blocks[1].Digest {
		t.Errorf("Walk over the target visited %d blocks, want the 2 before it", len(got))
	}
	after, _ := nextDigest(target)
	wantWalk(t, ctx, f, after, blocks)

	f.Clear(OpRead)
	f.Clear(OpStat)
	f.Clear(OpWalk)
	wantBlock(t, ctx, f, blocks[2])
	wantWalk(t, ctx, f, core.Digest{}, blocks)
}

// When several faults apply to a call, the one armed first decides the error.
func TestFaultyPrecedence(t *testing.T) {
	ctx := t.Context()
	f, _, blocks := fixture(t, 2)
	e1, e2 := errors.New("first"), errors.New("second")

	f.FailNth(OpSync, 1, e1)
	f.FailAlways(OpSync, e2)
	if err := f.Sync(ctx); err != e1 {
		t.Errorf("Sync 1: %v, want %v", err, e1)
	}
	if err := f.Sync(ctx); err != e2 {
		t.Errorf("Sync 2: %v, want %v", err, e2)
	}

	f.FailWhen(OpStat, func(d core.Digest) bool { return d == blocks[0].Digest }, e1)
	f.FailAlways(OpStat, e2)
	if _, err := f.Stat(ctx, blocks[0].Digest); err != e1 {
		t.Errorf("Stat of the targeted block: %v, want %v", err, e1)
	}
	if _, err := f.Stat(ctx, blocks[1].Digest); err != e2 {
		t.Errorf("Stat of another block: %v, want %v", err, e2)
	}

	// A FailNth due while an earlier fault decides the call is spent all the same.
	f.ClearAll()
	f.FailAlways(OpRead, e1)
	f.FailNth(OpRead, 1, e2)
	if _, _, _, err := read(ctx, f, blocks[0].Digest); err != e1 {
		t.Errorf("Read 1: %v, want %v", err, e1)
	}
	f.Clear(OpRead)
	f.FailAlways(OpRead, nil)
	f.Clear(OpRead)
	if _, _, _, err := read(ctx, f, blocks[0].Digest); err != nil {
		t.Errorf("Read 2, after Clear: %v", err)
	}
}

func TestFaultyCalls(t *testing.T) {
	ctx := t.Context()
	f, _, blocks := fixture(t, 3)
	for _, op := range ops {
		if n := f.Calls(op); n != 0 {
			t.Errorf("Calls(%s) = %d before any call", op, n)
		}
	}
	f.FailNth(OpRead, 2, nil)
	f.FailAlways(OpSync, nil)
	want := map[Op]int{OpPut: 2, OpRead: 3, OpStat: 1, OpDelete: 1, OpWalk: 2, OpSync: 2}
	for range want[OpPut] {
		_ = f.Put(ctx, nil)
	}
	for range want[OpRead] {
		_, _, _, _ = read(ctx, f, blocks[0].Digest)
	}
	_, _ = f.Stat(ctx, blocks[1].Digest)
	_ = f.Delete(ctx, []core.Digest{blocks[2].Digest})
	for range want[OpWalk] {
		_ = f.Walk(ctx, core.Digest{}, func(core.Digest, int64) error { return nil })
	}
	for range want[OpSync] {
		_ = f.Sync(ctx)
	}
	f.ClearAll() // keeps the counts
	for _, op := range ops {
		if n := f.Calls(op); n != want[op] {
			t.Errorf("Calls(%s) = %d, want %d (failed calls count too)", op, n, want[op])
		}
	}
}

func TestFaultyPanicsOnMisuse(t *testing.T) {
	f := NewFaulty(NewMemory())
	for name, arm := range map[string]func(){
		"FailNth(0)":       func() { f.FailNth(OpPut, 0, nil) },
		"FailWhen(OpSync)": func() { f.FailWhen(OpSync, func(core.Digest) bool { return true }, nil) },
		"FailWhen(nil)":    func() { f.FailWhen(OpRead, nil, nil) },
		"unknown op":       func() { f.FailAlways(Op("Get"), nil) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s did not panic", name)
				}
			}()
			arm()
		}()
	}
}

// Concurrent Puts with one fault due: exactly one call fails, whichever goroutine
// makes it, while faults are armed and cleared and counts read on other goroutines.
func TestFaultyConcurrent(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), watchdog)
	defer cancel()
	inner := NewMemory()
	f := NewFaulty(inner)
	const workers, puts = 4, 50
	f.FailNth(OpPut, 100, nil)
	type result struct {
		failed int
		err    error
	}
	results := make(chan result, workers+1)
	for w := range workers {
		go func() {
			var r result
			for i := range puts {
				b := randomBlock(uint64(3000+w*puts+i), byte(w), 64)
				err := f.Put(ctx, []core.StoredBlock{b})
				switch {
				case errors.Is(err, ErrInjected):
					r.failed++
				case err != nil:
					r.err = err
				}
				if _, _, _, err := read(ctx, f, b.Digest); err != nil && !errors.Is(err, core.ErrBlockNotFound) && !errors.Is(err, ErrInjected) {
					r.err = err
				}
			}
			results <- r
		}()
	}
	go func() {
		var r result
		for i := range puts {
			f.FailWhen(OpRead, func(d core.Digest) bool { return d[0] == byte(i) }, nil)
			_ = f.Calls(OpPut)
			f.Clear(OpRead)
			f.FailAlways(OpSync, nil)
			if err := f.Sync(ctx); !errors.Is(err, ErrInjected) {
				r.err = fmt.Errorf("Sync under FailAlways: %w", err)
			}
			f.Clear(OpSync)
		}
		results <- r
	}()
	failed := 0
	for range workers + 1 {
		select {
		case r := <-results:
			failed += r.failed
			if r.err != nil {
				t.Error(r.err)
			}
		case <-ctx.Done():
			t.Fatalf("goroutines did not finish: %v", context.Cause(ctx))
		}
	}
	if failed != 1 || f.Calls(OpPut) != workers*puts || inner.Len() != workers*puts-1 {
		t.Errorf("%d Puts with the 100th set to fail: %d failed, Calls = %d, inner holds %d; want 1, %d, %d",
			workers*puts, failed, f.Calls(OpPut), inner.Len(), workers*puts, workers*puts-1)
	}
}

// The suite has teeth: each mutant store breaks one rule, and the subtest of that rule
// fails. Each runs in a child process, the test binary itself running only
// TestMutantChild with BLOCKTEST_MUTANT set; the control mutant breaks nothing and
// passes every subtest.
func TestSuiteCatchesMutants(t *testing.T) {
	for _, m := range mutants {
		t.Run(m.name, func(t *testing.T) {
			mutantrun.Check(t, "BLOCKTEST_MUTANT", m.name, m.breaks)
		})
	}
}

func TestMutantChild(t *testing.T) {
	name := os.Getenv("BLOCKTEST_MUTANT")
	if name == "" {
		t.Skip("run by TestSuiteCatchesMutants")
	}
	for _, m := range mutants {
		if m.name == name {
			Run(t, func(*testing.T) core.BlockStore { return &mutant{BlockStore: NewMemory(), breaks: m.name} })
			return
		}
	}
	t.Fatalf("no mutant %q", name)
}

// mutants lists the broken stores and the subtest each must fail.
var mutants = []struct{ name, breaks string }{
	{"control", ""},
	{"absent-unwrapped", "Absent"},
	{"empty-not-stored", "ZeroLength"},
	{"replace-keeps-tag", "Replace"},
	{"delete-absent-fails", "Delete"},
	{"delete-first-only", "PutMany"},
	{"truncates-full-blocks", "FullSizeBlocks"},
	{"put-aliases-data", "PutDataReuse"},
	{"read-replaces-fn-error", "ReadFnError"},
	{"walk-wrong-size", "WalkOrder"},
	{"walk-from-exclusive", "WalkFrom"},
	{"walk-ignores-from", "WalkFrom"},
	{"walk-swallows-fn-error", "WalkStop"},
	{"walk-ctx-at-start-only", "WalkCancelled"},
	{"sync-fails", "Sync"},
}

// mutant wraps a correct store and breaks the rule breaks names.
type mutant struct {
	core.BlockStore
	breaks string

	mu      sync.Mutex
	pending []core.StoredBlock // put-aliases-data: blocks put but not yet passed on
}

var errMutant = errors.New("mutant")

func (m *mutant) flush(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.pending) == 0 {
		return nil
	}
	err := m.BlockStore.Put(ctx, m.pending)
	m.pending = nil
	return err
}

func (m *mutant) Put(ctx context.Context, blocks []core.StoredBlock) error {
	switch m.breaks {
	case "empty-not-stored":
		blocks = slices.DeleteFunc(slices.Clone(blocks), func(b core.StoredBlock) bool { return len(b.Data) == 0 })
	case "replace-keeps-tag":
		blocks = slices.Clone(blocks)
		for i, b := range blocks {
			_ = m.BlockStore.Read(ctx, b.Digest, func(tag byte, _ []byte) error {
				blocks[i].Tag = tag
				return nil
			})
		}
	case "truncates-full-blocks":
		blocks = slices.Clone(blocks)
		for i := range blocks {
			blocks[i].Data = blocks[i].Data[:min(len(blocks[i].Data), core.BlockSize/2)]
		}
	case "put-aliases-data":
		m.mu.Lock()
		defer m.mu.Unlock()
		m.pending = append(m.pending, blocks...) // keeps the caller's Data
		return nil
	}
	return m.BlockStore.Put(ctx, blocks)
}

func (m *mutant) Read(ctx context.Context, d core.Digest, fn func(tag byte, data []byte) error) error {
	if err := m.flush(ctx); err != nil {
		return err
	}
	err := m.BlockStore.Read(ctx, d, fn)
	switch {
	case m.breaks == "absent-unwrapped" && errors.Is(err, core.ErrBlockNotFound):
		return errMutant
	case m.breaks == "read-replaces-fn-error" && err != nil:
		return fmt.Errorf("read failed: %v", err)
	}
	return err
}

func (m *mutant) Stat(ctx context.Context, d core.Digest) (int64, error) {
	if err := m.flush(ctx); err != nil {
		return 0, err
	}
	size, err := m.BlockStore.Stat(ctx, d)
	if m.breaks == "absent-unwrapped" && errors.Is(err, core.ErrBlockNotFound) {
		return 0, errMutant
	}
	return size, err
}

func (m *mutant) Delete(ctx context.Context, ds []core.Digest) error {
	if err := m.flush(ctx); err != nil {
		return err
	}
	switch m.breaks {
	case "delete-absent-fails":
		for _, d := range ds {
			if _, err := m.BlockStore.Stat(ctx, d); err != nil {
				return err
			}
		}
	case "delete-first-only":
		ds = ds[:min(len(ds), 1)]
	}
	return m.BlockStore.Delete(ctx, ds)
}

func (m *mutant) Walk(ctx context.Context, from core.Digest, fn func(d core.Digest, size int64) error) error {
	if err := m.flush(ctx); err != nil {
		return err
	}
	switch m.breaks {
	case "walk-wrong-size":
		return m.BlockStore.Walk(ctx, from, func(d core.Digest, size int64) error { return fn(d, size+1) })
	case "walk-from-exclusive":
		return m.BlockStore.Walk(ctx, from, func(d core.Digest, size int64) error {
			if d == from {
				return nil
			}
			return fn(d, size)
		})
	case "walk-ignores-from":
		return m.BlockStore.Walk(ctx, core.Digest{}, fn)
	case "walk-swallows-fn-error":
		_ = m.BlockStore.Walk(ctx, from, fn)
		return nil
	case "walk-ctx-at-start-only":
		if err := ctx.Err(); err != nil {
			return err
		}
		return m.BlockStore.Walk(context.WithoutCancel(ctx), from, fn)
	}
	return m.BlockStore.Walk(ctx, from, fn)
}

func (m *mutant) Sync(ctx context.Context) error {
	if err := m.flush(ctx); err != nil {
		return err
	}
	if m.breaks == "sync-fails" {
		return errMutant
	}
	return m.BlockStore.Sync(ctx)
}
