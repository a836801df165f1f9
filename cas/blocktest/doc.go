// Package blocktest tests core.BlockStore implementations and the code built on them.
//
// Run is the conformance suite: every engine (Badger, S3) and every decorator (cache,
// retry) calls it from its own tests with a function that opens a fresh, empty store,
// so the MUST rules written on core.BlockStore are checked the same way everywhere.
// The suite is small in time and bytes so a network engine can run it too.
//
// Memory is an in-memory BlockStore: the suite's own self-check, and the inner store
// for tests of decorators. Faulty wraps any BlockStore and makes chosen calls fail
// (the n-th Put, every Stat, a Read of one digest), so the code above a store can be
// tested on the failures a real engine only shows under load or on a bad network.
//
// An engine's test runs the suite like this:
//
//	func TestConformance(t *testing.T) {
//		blocktest.Run(t, func(t *testing.T) core.BlockStore {
//			s := open(t.TempDir())
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// and a decorator's test arms faults on a Faulty beneath it:
//
//	inner := blocktest.NewFaulty(blocktest.NewMemory())
//	inner.FailNth(blocktest.OpPut, 2, nil) // the second Put from now fails once
//
// The package imports testing and is meant only for tests.
package blocktest
