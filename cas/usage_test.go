package cas

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

const otherOwner = "444455556666"

// usageSnap starts a snapshot of owner, puts blocks (index → content) and, when
// complete, completes it.
func usageSnap(t *testing.T, s *Store, owner, parent string, blocks map[int64][]byte, complete bool) string {
	t.Helper()
	ctx := context.Background()
	snap, err := s.StartSnapshot(ctx, StartParams{OwnerID: owner, VolumeSize: 1, ParentID: parent, TimeoutMinutes: 60})
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range blocks {
		if err := s.PutBlock(ctx, owner, snap.ID, i, b, Sum(b)); err != nil {
			t.Fatal(err)
		}
	}
	if complete {
		if _, err := s.CompleteSnapshot(ctx, owner, snap.ID, int64(len(blocks)), nil); err != nil {
			t.Fatal(err)
		}
	}
	return snap.ID
}

// storedSize is what the store charges for a block: its value size in Badger.
func storedSize(t *testing.T, s *Store, seeds ...uint64) int64 {
	t.Helper()
	var n int64
	err := s.db.View(func(txn *badger.Txn) error {
		for _, seed := range seeds {
			item, err := txn.Get(blockKey(Sum(testBlock(seed))))
			if err != nil {
				return err
			}
			n += valueLen(item)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// usageFixture builds two accounts' lineages with shared, overwritten, zero, deleted and
// pending data, and returns the live snapshots by name.
//
//	owner:      A {0:1 1:2 2:3 3:4}
//	            ├── B (deleted) {1:12 2:13 5:1 6:zero}
//	            │   └── C {2:23}
//	            ├── D {3:34}
//	            └── F (deleted) {7:70}
//	            P (pending) {0:80}
//	otherOwner: E {0:1 1:50 2:50}
func usageFixture(t *testing.T, s *Store) map[string]string {
	t.Helper()
	ctx := context.Background()
	b := func(seed uint64) []byte { return testBlock(seed) }
	a := usageSnap(t, s, owner, "", map[int64][]byte{0: b(1), 1: b(2), 2: b(3), 3: b(4)}, true)
	bb := usageSnap(t, s, owner, a, map[int64][]byte{1: b(12), 2: b(13), 5: b(1), 6: make([]byte, BlockSize)}, true)
	c := usageSnap(t, s, owner, bb, map[int64][]byte{2: b(23)}, true)
	d := usageSnap(t, s, owner, a, map[int64][]byte{3: b(34)}, true)
	f := usageSnap(t, s, owner, a, map[int64][]byte{7: b(70)}, true)
	p := usageSnap(t, s, owner, "", map[int64][]byte{0: b(80)}, false)
	e := usageSnap(t, s, otherOwner, "", map[int64][]byte{0: b(1), 1: b(50), 2: b(50)}, true)
	for _, id := range []string{bb, f} {
		if err := s.DeleteSnapshot(ctx, owner, id); err != nil {
			t.Fatal(err)
		}
	}
	return map[string]string{"A": a, "C": c, "D": d, "E": e, "P": p}
}

// Every live view is accounted for: written counts own non-zero writes, unique only the
// blocks no other live view shows (across accounts), and blocks only deleted
// snapshots hold are "other".
func TestUsageWrittenUniqueStoredPerSnapshotAndTotals(t *testing.T) {
	s := openGCStore(t)
	ids := usageFixture(t, s)
	u, err := s.Usage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Views: A {1 2 3 4}, C {1 12 23 4 1 zero}, D {1 2 3 34}, E {1 50 50}, P {80}.
	want := map[string]struct {
		written int64
		unique  []uint64
	}{
		"A": {4, nil},              // every block of A is in C's or D's view too
		"C": {1, []uint64{12, 23}}, // B's 12 reaches only C; C wrote 23
		"D": {1, []uint64{34}},
		"E": {3, []uint64{50}}, // 1 is shared with the other account's views
		"P": {1, []uint64{80}}, // pending snapshots count
	}
	if len(u.Snapshots) != len(want) {
		t.Fatalf("usage of %d snapshots, want %d: %+v", len(u.Snapshots), len(want), u.Snapshots)
	}
	for name, w := range want {
		got, ok := u.Snapshots[ids[name]]
		if !ok {
			t.Fatalf("no usage for %s", name)
		}
		wantStored := int64(0)
		if len(w.unique) > 0 {
			wantStored = storedSize(t, s, w.unique...)
		}
		if got.WrittenBlocks != w.written || got.WrittenBytes != w.written*BlockSize ||
			got.UniqueBlocks != int64(len(w.unique)) || got.UniqueBytes != int64(len(w.unique))*BlockSize ||
			got.StoredBytes != wantStored {
			t.Errorf("%s: %+v, want written %d, unique %v (stored %d)", name, got, w.written, w.unique, wantStored)
		}
	}
	live := []uint64{1, 2, 3, 4, 12, 23, 34, 50, 80}
	if u.LogicalBytes != 5<<30 || u.WrittenBytes != 10*BlockSize ||
		u.UniqueBlocks != int64(len(live)) || u.UniqueBytes != int64(len(live))*BlockSize ||
		u.StoredBytes != storedSize(t, s, live...) {
		t.Errorf("totals %+v, want logical 5 GiB, written 10 blocks, unique %d blocks stored in %d bytes",
			u, len(live), storedSize(t, s, live...))
	}
	// B's 13 is hidden under C; F's 70 is in no live lineage at all.
	if u.OtherBlocks != 2 || u.OtherStoredBytes != storedSize(t, s, 13, 70) {
		t.Errorf("other: %d blocks, %d bytes; want 13 and 70", u.OtherBlocks, u.OtherStoredBytes)
	}
	if u.DiskBytes <= 0 || u.Passes != 1 || u.Computed.IsZero() {
		t.Errorf("disk %d, passes %d, computed %v", u.DiskBytes, u.Passes, u.Computed)
	}

	// Collection drops F and its block; B's map stays, C reads through it.
	if _, err := s.GC(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	after, err := s.Usage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if after.OtherBlocks != 1 || after.OtherStoredBytes != storedSize(t, s, 13) || after.UniqueBlocks != u.UniqueBlocks {
		t.Errorf("after GC: other %d blocks %d bytes, unique %d; want only 13 left over", after.OtherBlocks, after.OtherStoredBytes, after.UniqueBlocks)
	}
}

// A scan allowed to hold only a few digests at once makes more passes, never holds more
// than it may, and finds exactly what one pass finds.
func TestUsageInBoundedPassesMatchesOnePass(t *testing.T) {
	s := openGCStore(t)
	usageFixture(t, s)
	one, err := s.usage(context.Background(), usageMaxTracked)
	if err != nil {
		t.Fatal(err)
	}
	const limit = 3
	many, err := s.usage(context.Background(), limit)
	if err != nil {
		t.Fatal(err)
	}
	// 11 blocks are stored (9 in live views, 13 and 70): at least 4 passes of 3.
	if many.Passes < 4 || many.PeakTracked > limit {
		t.Fatalf("%d passes holding up to %d digests; want ≥ 4 passes of ≤ %d", many.Passes, many.PeakTracked, limit)
	}
	if one.PeakTracked != 9 {
		t.Errorf("one pass held %d digests, want the 9 live ones", one.PeakTracked)
	}
	many.Computed, many.Duration, many.Passes, many.PeakTracked, many.DiskBytes = one.Computed, one.Duration, one.Passes, one.PeakTracked, one.DiskBytes
	if many.LogicalBytes != one.LogicalBytes || many.WrittenBytes != one.WrittenBytes || many.UniqueBlocks != one.UniqueBlocks ||
		many.StoredBytes != one.StoredBytes || many.OtherBlocks != one.OtherBlocks || many.OtherStoredBytes != one.OtherStoredBytes {
		t.Fatalf("bounded passes %+v\none pass %+v", many, one)
	}
	for id, w := range one.Snapshots {
		if many.Snapshots[id] != w {
			t.Errorf("%s: bounded %+v, one pass %+v", id, many.Snapshots[id], w)
		}
	}
}

// A cancelled scan stops with the context's error.
func TestUsageHonoursCancellation(t *testing.T) {
	s := openGCStore(t)
	usageFixture(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Usage(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled usage: %v", err)
	}
}

// AllSnapshots lists every account's live snapshots and no deleted one.
func TestAllSnapshotsEveryAccountNoDeleted(t *testing.T) {
	s := openGCStore(t)
	ids := usageFixture(t, s)
	var got, want []string
	owners := map[string]bool{}
	for _, snap := range s.AllSnapshots() {
		got = append(got, snap.ID)
		owners[snap.OwnerID] = true
	}
	for _, id := range ids {
		want = append(want, id)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) || !owners[owner] || !owners[otherOwner] {
		t.Fatalf("AllSnapshots %v (owners %v), want %v", got, owners, want)
	}
}
