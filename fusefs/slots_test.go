package fusefs

import (
	"context"
	"errors"
	"testing"

	"github.com/ebsd/ebsd/cas"
)

// data is a digest with data in it (any digest but the zero block's).
var data = cas.Sum([]byte("data"))

// fakeMap is a block map for the pure read-path logic: slots by index, ascending.
type fakeMap struct {
	slots   []cas.Slot
	calls   int     // how many times the map was resolved
	visited int     // slots handed out, over all calls
	starts  []int64 // where each resolution started
	err     error
}

// mapOf builds a map: each index gets data, except those in zeros, which get the zero
// block's digest (written zeros).
func mapOf(indices []int64, zeros ...int64) *fakeMap {
	m := &fakeMap{}
	isZero := map[int64]bool{}
	for _, z := range zeros {
		isZero[z] = true
	}
	for _, i := range indices {
		d := data
		if isZero[i] {
			d = cas.ZeroDigest
		}
		m.slots = append(m.slots, cas.Slot{Index: i, Digest: d})
	}
	return m
}

func (m *fakeMap) from(_ context.Context, start int64, fn func(cas.Slot) bool) error {
	m.calls++
	m.starts = append(m.starts, start)
	if m.err != nil {
		return m.err
	}
	for _, s := range m.slots {
		if s.Index < start {
			continue
		}
		m.visited++
		if !fn(s) {
			return nil
		}
	}
	return nil
}

func indices(slots []cas.Slot) []int64 {
	out := []int64{}
	for _, s := range slots {
		out = append(out, s.Index)
	}
	return out
}

func equal(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestSlotWindowBetween(t *testing.T) {
	const W = windowBlocks
	for _, tc := range []struct {
		name        string
		slots       []int64
		reads       [][2]int64 // [first, last] per call, in order
		want        []int64    // slots returned by the last call
		wantStarts  []int64    // where the map was resolved, over all calls
		wantVisited int        // slots the map handed out, over all calls
	}{
		{"first block", []int64{0, 1, 5}, [][2]int64{{0, 0}}, []int64{0}, []int64{0}, 3},
		{"a hole inside the window", []int64{0, 1, 5}, [][2]int64{{2, 4}}, []int64{}, []int64{2}, 1},
		{"last block of a 1 GiB volume", []int64{0, 2047}, [][2]int64{{2047, 2047}}, []int64{2047}, []int64{2047}, 1},
		{"empty map", nil, [][2]int64{{0, 3}}, []int64{}, []int64{0}, 0},
		{"sequential reads inside one window resolve once", []int64{0, 1, 2, 3, W - 1},
			[][2]int64{{0, 1}, {2, 3}, {W - 1, W - 1}}, []int64{W - 1}, []int64{0}, 5},
		{"a read crossing the window's end resolves anew from its first block", []int64{W - 2, W - 1, W, W + 1},
			[][2]int64{{0, 0}, {W - 1, W}}, []int64{W - 1, W}, []int64{0, W - 1}, 3 + 3},
		{"the window stops at its end: the slot after it is read but not kept", []int64{0, W, W + 1},
			[][2]int64{{0, 0}, {W - 1, W - 1}}, []int64{}, []int64{0}, 2},
		{"a read before the window resolves anew", []int64{3, 10},
			[][2]int64{{5, 5}, {3, 3}}, []int64{3}, []int64{5, 3}, 1 + 2},
		{"a range longer than a window is resolved whole", []int64{0, W, 2 * W},
			[][2]int64{{0, 2 * W}}, []int64{0, W, 2 * W}, []int64{0}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := mapOf(tc.slots)
			var w slotWindow
			var got []cas.Slot
			for _, r := range tc.reads {
				var err error
				if got, err = w.between(context.Background(), m.from, r[0], r[1]); err != nil {
					t.Fatal(err)
				}
			}
			if !equal(indices(got), tc.want) {
				t.Errorf("slots %v, want %v", indices(got), tc.want)
			}
			if !equal(m.starts, tc.wantStarts) || m.visited != tc.wantVisited {
				t.Errorf("map resolved from %v visiting %d slots, want from %v visiting %d", m.starts, m.visited, tc.wantStarts, tc.wantVisited)
			}
		})
	}
}

func TestSlotWindowErrorKeepsNothing(t *testing.T) {
	m := mapOf([]int64{0, 1})
	var w slotWindow
	if _, err := w.between(context.Background(), m.from, 0, 0); err != nil {
		t.Fatal(err)
	}
	m.err = errors.New("disk on fire")
	if _, err := w.between(context.Background(), m.from, 2000, 2000); !errors.Is(err, m.err) {
		t.Fatalf("err %v, want the map's", err)
	}
	// The failed resolution left the old window in place, still correct for its range.
	m.err = nil
	got, err := w.between(context.Background(), m.from, 1, 1)
	if err != nil || !equal(indices(got), []int64{1}) || m.calls != 2 {
		t.Fatalf("after a failure: %v %v, %d resolutions (want [1] from the kept window, 2)", indices(got), err, m.calls)
	}
}

func TestUpTo(t *testing.T) {
	slots := mapOf([]int64{1, 3, 5}).slots
	for last, want := range map[int64][]int64{0: {}, 1: {1}, 2: {1}, 5: {1, 3, 5}, 100: {1, 3, 5}} {
		if got := indices(upTo(slots, last)); !equal(got, want) {
			t.Errorf("upTo(%d) = %v, want %v", last, got, want)
		}
	}
}
