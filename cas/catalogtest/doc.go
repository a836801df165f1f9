// Package catalogtest tests core.Catalog implementations.
//
// Run is the conformance suite: every engine (Badger, PostgreSQL) calls it from its
// own tests with a function that opens a fresh, empty catalog, so the MUST rules
// written on core.Catalog are checked the same way everywhere. It is small in time so
// that a network engine can run it on every test run.
//
// NewMemory returns an in-memory Catalog: the suite's own reference, and a catalog for
// tests of code built on core.Catalog that need no engine.
//
// An engine's test runs the suite like this:
//
//	func TestConformance(t *testing.T) {
//		catalogtest.Run(t, func(t *testing.T) core.Catalog {
//			c := open(t.TempDir())
//			t.Cleanup(func() { c.Close() })
//			return c
//		})
//	}
//
// The package imports testing and is meant only for tests.
package catalogtest
