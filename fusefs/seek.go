package fusefs

import (
	"context"
	"fmt"
	"syscall"

	"github.com/ebsd/ebsd/cas"
)

// SEEK_DATA and SEEK_HOLE, as lseek(2) numbers them.
const (
	seekData = 3
	seekHole = 4
)

// seek answers lseek(2)'s SEEK_DATA and SEEK_HOLE at off in an image of size bytes
// whose block map src lists: blocks never written and blocks written as zeros are
// holes, and the end of the image is a hole. It visits only the slots from off's block
// to the answer, never the whole volume.
func seek(ctx context.Context, src slotSource, size, off int64, whence uint32) (int64, error) {
	if whence != seekData && whence != seekHole {
		return 0, syscall.EINVAL
	}
	if off < 0 || off >= size {
		return 0, syscall.ENXIO
	}
	start := off / cas.BlockSize
	result := int64(-1)
	expect := start // the next index that would continue a run of data from start
	err := src(ctx, start, func(s cas.Slot) bool {
		hasData := s.Digest != cas.ZeroDigest
		if whence == seekData {
			if hasData {
				result = s.Index
				return false
			}
			return true
		}
		if s.Index > expect || !hasData {
			result = expect // a gap before this slot, or this slot holds zeros
			return false
		}
		expect = s.Index + 1
		return true
	})
	if err != nil {
		// Wrapped, so a store error is never mistaken for one of the answers above.
		return 0, fmt.Errorf("fusefs: seek in block map: %w", err)
	}
	if whence == seekData {
		if result < 0 || result*cas.BlockSize >= size {
			return 0, syscall.ENXIO
		}
		return max(off, result*cas.BlockSize), nil
	}
	if result < 0 {
		result = expect
	}
	return min(size, max(off, result*cas.BlockSize)), nil
}
