package cas

import (
	"testing"

	"github.com/ebsd/ebsd/cas/blocktest"
	"github.com/ebsd/ebsd/cas/core"
)

// The embedded engine passes the same conformance suite as every other block store.
func TestBadgerBlocksConformance(t *testing.T) {
	blocktest.Run(t, func(t *testing.T) core.BlockStore {
		s, err := Open(Options{Dir: t.TempDir(), ExpireInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		if s.local == nil {
			t.Fatal("a store opened without Blocks does not use the embedded engine")
		}
		return s.blocks
	})
}
