package fusefs

import (
	"testing"

	"github.com/ebsd/ebsd/cas"
)

const bs = cas.BlockSize

func TestReadAheadDepth(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reads [][2]int64 // [off, end) in bytes, in arrival order
		want  []int64    // depth after each read
	}{
		{"the first read is not sequential, even at 0", [][2]int64{{0, 128 << 10}}, []int64{0}},
		{"doubles while sequential, capped at maxAhead",
			[][2]int64{{0, bs}, {bs, 2 * bs}, {2 * bs, 3 * bs}, {3 * bs, 4 * bs}, {4 * bs, 5 * bs}, {5 * bs, 6 * bs}, {6 * bs, 7 * bs}, {7 * bs, 8 * bs}},
			[]int64{0, 2, 4, 8, 16, 32, 32, 32}},
		{"small reads inside one block are sequential", [][2]int64{{0, 4096}, {4096, 8192}, {8192, 12288}}, []int64{0, 2, 4}},
		{"reordered within the slack stays sequential",
			[][2]int64{{0, bs}, {3 * bs, 4 * bs}, {bs, 2 * bs}, {2 * bs, 3 * bs}, {4 * bs, 5 * bs}},
			[]int64{0, 2, 4, 8, 16}},
		{"a late request does not pull the stream back",
			[][2]int64{{0, bs}, {bs, 2 * bs}, {4 * bs, 5 * bs}, {2 * bs, 3 * bs}, {5 * bs, 6 * bs}},
			[]int64{0, 2, 4, 8, 16}},
		{"a jump beyond the slack is random",
			[][2]int64{{0, bs}, {bs, 2 * bs}, {10 * bs, 11 * bs}}, []int64{0, 2, 0}},
		{"a seek back to re-read ramps up again from there",
			[][2]int64{{0, bs}, {bs, 2 * bs}, {100 * bs, 101 * bs}, {101 * bs, 102 * bs}, {0, bs}, {bs, 2 * bs}, {2 * bs, 3 * bs}},
			[]int64{0, 2, 0, 2, 0, 2, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r readAhead
			var got []int64
			for _, rd := range tc.reads {
				r.observe(rd[0], rd[1])
				got = append(got, r.depth())
			}
			if !equal(got, tc.want) {
				t.Errorf("depths %v, want %v", got, tc.want)
			}
		})
	}
}

func TestReadAheadPlan(t *testing.T) {
	// Blocks 0-9 and 40 have data, 6 holds written zeros, 10-39 were never written.
	m := mapOf([]int64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 40}, 6)
	type read struct {
		off, end int64
		want     []int64 // blocks to prefetch
	}
	for _, tc := range []struct {
		name  string
		reads []read
	}{
		{"nothing on a random read", []read{{5 * bs, 6 * bs, []int64{}}}},
		{"the next blocks with data, skipping zeros and holes, never twice", []read{
			{0, bs, []int64{}},
			{bs, 2 * bs, []int64{2, 3}},        // depth 2
			{2 * bs, 3 * bs, []int64{4, 5}},    // depth 4: 3 was asked for already, 6 is zeros
			{3 * bs, 4 * bs, []int64{7, 8, 9}}, // depth 8: 10-11 are holes
			{4 * bs, 5 * bs, []int64{}},        // depth 16: up to 20, nothing new with data
			{5 * bs, 6 * bs, []int64{}},        // depth 32: up to 37
			{6 * bs, 7 * bs, []int64{}},        // up to 38
			{7*bs + 10, 8 * bs, []int64{}},     // an offset inside a block; up to 39
			{8 * bs, 8*bs + 4096, []int64{40}}, // up to 40: the last block with data
			{8*bs + 4096, 9 * bs, []int64{}},   // same block again: nothing new
		}},
		{"after a random read the plan starts over", []read{
			{0, bs, []int64{}},
			{bs, 2 * bs, []int64{2, 3}},
			{20 * bs, 21 * bs, []int64{}},
			{0, bs, []int64{}},
			{bs, 2 * bs, []int64{2, 3}}, // asked for again: the reset forgot them
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r readAhead
			for i, rd := range tc.reads {
				r.observe(rd.off, rd.end)
				last := (rd.end - 1) / bs
				var slots []cas.Slot
				for _, s := range m.slots {
					if s.Index >= rd.off/bs && s.Index <= last+r.depth() {
						slots = append(slots, s)
					}
				}
				if got := indices(r.plan(last, slots)); !equal(got, rd.want) {
					t.Errorf("read %d [%d, %d): prefetch %v, want %v", i, rd.off, rd.end, got, rd.want)
				}
			}
		})
	}
}

func TestReadAheadRefusedIsPlannedAgain(t *testing.T) {
	m := mapOf([]int64{0, 1, 2, 3, 4, 5, 6, 7})
	var r readAhead
	r.observe(0, bs)
	r.observe(bs, 2*bs)
	if got := indices(r.plan(1, m.slots)); !equal(got, []int64{2, 3}) {
		t.Fatalf("prefetch %v, want [2 3]", got)
	}
	r.refused(3) // 2 started, 3 found every prefetch slot busy
	r.observe(2*bs, 3*bs)
	if got := indices(r.plan(2, m.slots)); !equal(got, []int64{3, 4, 5, 6}) {
		t.Fatalf("after a refusal: prefetch %v, want [3 4 5 6]", got)
	}
}
