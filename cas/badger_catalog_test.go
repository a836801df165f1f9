package cas

import (
	"testing"

	"github.com/ebsd/ebsd/cas/catalogtest"
	"github.com/ebsd/ebsd/cas/core"
)

// The embedded catalog passes the same conformance suite as every other catalog.
func TestBadgerCatalogConformance(t *testing.T) {
	catalogtest.Run(t, func(t *testing.T) core.Catalog {
		s, err := Open(Options{Dir: t.TempDir(), ExpireInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		if s.localCat == nil {
			t.Fatal("a store opened without Catalog does not use the embedded one")
		}
		// The suite's keys start with bytes the store's own layout does not use, but
		// an open store holds a few records (secrets, settings): the suite gets a
		// catalog whose keys it owns alone.
		return s.cat
	})
}
