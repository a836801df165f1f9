package fusefs

import (
	"context"
	"errors"
	"syscall"
	"testing"
)

func TestSeekDataHole(t *testing.T) {
	const size = 16 * bs // a 16-block image
	for _, tc := range []struct {
		name    string
		slots   []int64
		zeros   []int64 // of slots, those written as zeros
		off     int64
		whence  uint32
		want    int64
		wantErr error
		// visitMax bounds the slots the map may hand out: the answer costs what it
		// skips, not the volume.
		visitMax int
	}{
		// Holes at the start.
		{"data after a leading hole", []int64{2, 3}, nil, 0, seekData, 2 * bs, nil, 1},
		{"a leading hole is a hole at 0", []int64{2, 3}, nil, 0, seekHole, 0, nil, 1},
		{"written zeros at the start are a hole", []int64{0, 1, 2}, []int64{0, 1}, 0, seekData, 2 * bs, nil, 3},
		// Data at the start.
		{"data at 0", []int64{0, 1, 5}, nil, 0, seekData, 0, nil, 1},
		{"the hole after the first run", []int64{0, 1, 5}, nil, 0, seekHole, 2 * bs, nil, 3},
		{"a run ends at written zeros", []int64{0, 1, 2}, []int64{2}, 0, seekHole, 2 * bs, nil, 3},
		// Offsets inside a block.
		{"inside a data block, data is here", []int64{4}, nil, 4*bs + 10, seekData, 4*bs + 10, nil, 1},
		{"inside a hole block, data is at the next block", []int64{4}, nil, 3*bs + 10, seekData, 4 * bs, nil, 1},
		{"inside a hole block, the hole is here", []int64{4}, nil, 3*bs + 10, seekHole, 3*bs + 10, nil, 1},
		{"inside a data block, the hole is after the run", []int64{4, 5}, nil, 4*bs + 10, seekHole, 6 * bs, nil, 3},
		// Holes and data at the end.
		{"no data after off", []int64{0, 1}, nil, 2 * bs, seekData, 0, syscall.ENXIO, 0},
		{"only zeros after off", []int64{0, 9, 10}, []int64{9, 10}, bs, seekData, 0, syscall.ENXIO, 2},
		{"a trailing hole starts after the last data", []int64{0, 1}, nil, bs, seekHole, 2 * bs, nil, 1},
		{"data up to the last block: the end of file is the hole", []int64{14, 15}, nil, 14 * bs, seekHole, size, nil, 2},
		{"the last block's last byte has data", []int64{15}, nil, size - 1, seekData, size - 1, nil, 1},
		{"the last block's last byte, hole is EOF", []int64{15}, nil, size - 1, seekHole, size, nil, 1},
		{"in the trailing hole, the hole is here", []int64{0}, nil, size - 1, seekHole, size - 1, nil, 0},
		{"empty map: no data", nil, nil, 0, seekData, 0, syscall.ENXIO, 0},
		{"empty map: all hole", nil, nil, 5, seekHole, 5, nil, 0},
		// Past the end, and what lseek refuses.
		{"data at EOF", []int64{0}, nil, size, seekData, 0, syscall.ENXIO, 0},
		{"hole at EOF", []int64{0}, nil, size, seekHole, 0, syscall.ENXIO, 0},
		{"past EOF", []int64{0}, nil, size + bs, seekHole, 0, syscall.ENXIO, 0},
		{"negative", []int64{0}, nil, -1, seekData, 0, syscall.ENXIO, 0},
		{"SEEK_SET is not ours", []int64{0}, nil, 0, 0, 0, syscall.EINVAL, 0},
		{"a slot past the image's end is not data", []int64{16}, nil, 0, seekData, 0, syscall.ENXIO, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := mapOf(tc.slots, tc.zeros...)
			got, err := seek(context.Background(), m.from, size, tc.off, tc.whence)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && got != tc.want) {
				t.Fatalf("seek(%d, %d) = %d, %v; want %d, %v", tc.off, tc.whence, got, err, tc.want, tc.wantErr)
			}
			if tc.wantErr != nil {
				if _, bare := err.(syscall.Errno); !bare {
					t.Fatalf("seek's own answer %v is wrapped: Lseek would call it a store error", err)
				}
			}
			if m.visited > tc.visitMax {
				t.Errorf("visited %d slots, want at most %d", m.visited, tc.visitMax)
			}
		})
	}
}

func TestSeekStoreErrorIsNotAnAnswer(t *testing.T) {
	m := mapOf([]int64{0})
	m.err = syscall.ENXIO // even a store error that happens to be an Errno
	_, err := seek(context.Background(), m.from, 4*bs, 0, seekData)
	if !errors.Is(err, syscall.ENXIO) {
		t.Fatalf("err %v, want the store's error wrapped", err)
	}
	if _, bare := err.(syscall.Errno); bare {
		t.Fatal("a store error came back bare: Lseek would answer it as ENXIO instead of EIO")
	}
}
