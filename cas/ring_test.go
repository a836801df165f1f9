package cas

import (
	"slices"
	"testing"
)

// TestRingKeepsTheLastNewestFirst: past its size the ring drops the oldest, and lists
// what it holds newest first.
func TestRingKeepsTheLastNewestFirst(t *testing.T) {
	r := newRing[int](3)
	if got := r.newestFirst(); len(got) != 0 {
		t.Fatalf("empty ring holds %v", got)
	}
	for i := 1; i <= 2; i++ {
		r.push(i)
	}
	if got := r.newestFirst(); !slices.Equal(got, []int{2, 1}) {
		t.Fatalf("after 2 pushes: %v", got)
	}
	for i := 3; i <= 7; i++ {
		r.push(i)
	}
	if got := r.newestFirst(); !slices.Equal(got, []int{7, 6, 5}) {
		t.Fatalf("after 7 pushes into 3: %v", got)
	}
}
