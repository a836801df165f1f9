package main

import (
	"errors"
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// dataBlocks asks the file system which blocks of an image hold data, with SEEK_DATA
// and SEEK_HOLE, so that the holes of a sparse image (most of a typical volume) are
// never read: reading them costs page-cache pages, a copy and a scan for zeros per
// block, which is most of an incremental upload's time. It returns a bitset with a bit
// per block that overlaps data; nil when the file system cannot tell (no hole is
// assumed then). A file system may report a hole as data, never data as a hole, so a
// clear bit means zeros.
func dataBlocks(f *os.File, size int64) []uint64 {
	n := (size + blockSize - 1) / blockSize
	set := make([]uint64, (n+63)/64)
	for off := int64(0); off < size; {
		start, err := f.Seek(off, unix.SEEK_DATA)
		if errors.Is(err, syscall.ENXIO) {
			break // no data after off: the rest is a hole
		}
		if err != nil {
			return nil
		}
		end, err := f.Seek(start, unix.SEEK_HOLE)
		if err != nil || end <= start {
			return nil
		}
		end = min(end, size)
		for b := start / blockSize; b*blockSize < end; b++ {
			set[b/64] |= 1 << (b % 64)
		}
		off = end
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil
	}
	return set
}
