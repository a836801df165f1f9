package cas

import (
	"context"
	"strconv"
	"testing"
)

// fillMap records n written blocks (zero data, so nothing is stored) in a snapshot's
// block map directly, then completes it the normal way.
func fillMap(b *testing.B, s *Store, n int64) string {
	b.Helper()
	ctx := context.Background()
	snap, err := s.StartSnapshot(ctx, StartParams{OwnerID: owner, VolumeSize: 65536, TimeoutMinutes: 60})
	if err != nil {
		b.Fatal(err)
	}
	wb := s.db.NewWriteBatch()
	for i := range n {
		if err := wb.Set(mapKey(snap.ID, i*7), ZeroDigest[:]); err != nil {
			b.Fatal(err)
		}
	}
	if err := wb.Flush(); err != nil {
		b.Fatal(err)
	}
	if _, err := s.CompleteSnapshot(ctx, owner, snap.ID, n, nil); err != nil {
		b.Fatal(err)
	}
	return snap.ID
}

// BenchmarkViewPage reads one page of 1000 slots from the start and from the middle of
// snapshots of 10 thousand and 1 million written blocks: the cost must not grow with the
// snapshot (ListSnapshotBlocks is this plus token signing).
func BenchmarkViewPage(b *testing.B) {
	s, err := Open(Options{Dir: b.TempDir(), ExpireInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for _, n := range []int64{10_000, 1_000_000} {
		id := fillMap(b, s, n)
		for _, where := range []string{"start", "middle"} {
			start := int64(0)
			if where == "middle" {
				start = n / 2 * 7
			}
			b.Run("blocks="+strconv.FormatInt(n, 10)+"/"+where, func(b *testing.B) {
				for b.Loop() {
					got := 0
					if err := s.ViewFrom(ctx, owner, id, start, func(Slot) bool { got++; return got < 1000 }); err != nil || got != 1000 {
						b.Fatalf("page of %d: %v", got, err)
					}
				}
			})
		}
	}
}
