package catalogtest

import (
	"context"
	"errors"
	"testing"

	"github.com/ebsd/ebsd/cas/core"
)

// Faulty with nothing armed is a catalog like any other.
func TestFaultyPassesTheSuite(t *testing.T) {
	Run(t, func(t *testing.T) core.Catalog { return NewFaulty(NewMemory()) })
}

// A commit failed on cue writes nothing, fails exactly the chosen call, and the same
// transaction succeeds when run again; FailAlways holds until cleared.
func TestFaultyFailsTheChosenCommitAndWritesNothing(t *testing.T) {
	ctx := context.Background()
	f := NewFaulty(NewMemory())
	set := func(k string) error {
		return f.Update(ctx, func(tx core.CatalogTx) error { return tx.Set([]byte(k), []byte("v")) })
	}
	has := func(k string) bool {
		err := f.View(ctx, func(tx core.CatalogTx) error { _, err := tx.Get([]byte(k)); return err })
		return err == nil
	}
	f.FailNth(OpUpdate, 2, nil)
	if err := set("a"); err != nil {
		t.Fatalf("first commit: %v", err)
	}
	if err := set("b"); !errors.Is(err, ErrInjected) {
		t.Fatalf("second commit: %v, want the injected fault", err)
	}
	if has("b") {
		t.Fatal("a failed commit wrote its key")
	}
	if err := set("b"); err != nil || !has("b") {
		t.Fatalf("the commit run again: %v", err)
	}
	mine := errors.New("disk on fire")
	f.FailAlways(OpView, mine)
	if err := f.View(ctx, func(core.CatalogTx) error { return nil }); !errors.Is(err, mine) {
		t.Fatalf("view with FailAlways: %v", err)
	}
	f.ClearAll()
	if !has("a") || f.Calls(OpUpdate) != 3 {
		t.Fatalf("after ClearAll: a present %v, %d commits counted (want 3)", has("a"), f.Calls(OpUpdate))
	}
}
