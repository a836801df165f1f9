package fusefs

import (
	"context"
	"sort"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/ebsd/ebsd/cas"
)

// SEEK_DATA and SEEK_HOLE, as lseek(2) numbers them.
const (
	seekData = 3
	seekHole = 4
)

// imageFile is a completed snapshot as a disk image: VolumeSize GiB, read-only.
type imageFile struct {
	fs.Inode
	exp  *export
	snap cas.Snapshot // completed, so immutable
}

var (
	_ fs.NodeGetattrer = (*imageFile)(nil)
	_ fs.NodeOpener    = (*imageFile)(nil)
)

func (f *imageFile) size() int64 { return f.snap.VolumeSize << 30 }

func (f *imageFile) attr(a *fuse.Attr) {
	a.Mode = syscall.S_IFREG | 0o444
	a.Size = uint64(f.size())
	// st_blocks counts 512-byte units of blocks with data only, so du and
	// cp --sparse tell the truth about a mostly empty volume.
	a.Blocks = uint64(f.snap.DataBlocks) * (cas.BlockSize / 512)
	a.Blksize = cas.BlockSize
	a.Nlink = 1
	setTimes(a, f.snap.CompleteTime)
}

func (f *imageFile) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f.attr(&out.Attr)
	return 0
}

func (f *imageFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR) != 0 {
		return nil, 0, syscall.EROFS
	}
	// The view pins the snapshot: deleting it later does not pull the data from under
	// this open file.
	view, err := f.exp.src.OpenView(ctx, f.exp.owner, f.snap.ID)
	if err != nil {
		return nil, 0, syscall.ENOENT
	}
	// Images never change, so the kernel may keep their pages across opens.
	var fuseFlags uint32
	if f.exp.keepCache {
		fuseFlags = fuse.FOPEN_KEEP_CACHE
	}
	return &imageHandle{file: f, view: view}, fuseFlags, 0
}

// imageHandle is one open image. It remembers a window of resolved block-map slots
// (so sequential reads resolve each stretch of the lineage once) and how sequential
// its reads are (to size the prefetch).
type imageHandle struct {
	file *imageFile
	view *cas.View

	mu        sync.Mutex
	winStart  int64      // first index the window covers
	winEnd    int64      // one past the last
	slots     []cas.Slot // slots in [winStart, winEnd), ascending
	nextOff   int64      // where a sequential reader reads next
	ahead     int        // prefetch depth in blocks, doubled while reads stay sequential
	prefetchd int64      // prefetch issued up to (excluding) this index
}

var (
	_ fs.FileReader   = (*imageHandle)(nil)
	_ fs.FileLseeker  = (*imageHandle)(nil)
	_ fs.FileReleaser = (*imageHandle)(nil)
)

func (h *imageHandle) Release(context.Context) syscall.Errno {
	h.view.Close()
	return 0
}

// windowBlocks is how many block indices one block-map resolution covers (512 MiB).
const windowBlocks = 1024

// slotsFor returns the resolved slots covering [first, last] (indices), resolving a
// new window when needed. h.mu is held.
func (h *imageHandle) slotsFor(ctx context.Context, first, last int64) ([]cas.Slot, error) {
	if first < h.winStart || last >= h.winEnd {
		start, end := first, max(last+1, first+windowBlocks)
		var slots []cas.Slot
		err := h.view.From(ctx, start, func(s cas.Slot) bool {
			if s.Index >= end {
				return false
			}
			slots = append(slots, s)
			return true
		})
		if err != nil {
			return nil, err
		}
		h.winStart, h.winEnd, h.slots = start, end, slots
	}
	lo := sort.Search(len(h.slots), func(i int) bool { return h.slots[i].Index >= first })
	hi := sort.Search(len(h.slots), func(i int) bool { return h.slots[i].Index > last })
	return h.slots[lo:hi], nil
}

func (h *imageHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	size := h.file.size()
	if off >= size || len(dest) == 0 {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), size)
	first, last := off/cas.BlockSize, (end-1)/cas.BlockSize

	h.mu.Lock()
	h.trackSequential(off, end)
	slots, err := h.slotsFor(ctx, first, last+int64(h.ahead))
	var prefetch []cas.Slot
	if err == nil {
		prefetch = h.planPrefetch(last, slots)
		slots = slots[:sort.Search(len(slots), func(i int) bool { return slots[i].Index > last })]
	}
	h.mu.Unlock()
	if err != nil {
		h.file.exp.log.Error("resolving blocks", "snapshot", h.file.snap.ID, "offset", off, "err", err)
		return nil, syscall.EIO
	}
	for _, s := range prefetch {
		if !h.file.exp.blocks.Prefetch(s.Digest) {
			// Every prefetch slot is busy: ask again on the next read.
			h.mu.Lock()
			h.prefetchd = min(h.prefetchd, s.Index)
			h.mu.Unlock()
			break
		}
	}

	out := dest[:end-off]
	for pos := off; pos < end; {
		idx := pos / cas.BlockSize
		inBlock := pos - idx*cas.BlockSize
		n := min(cas.BlockSize-inBlock, end-pos)
		chunk := out[pos-off : pos-off+n]
		if len(slots) > 0 && slots[0].Index == idx {
			d := slots[0].Digest
			slots = slots[1:]
			data, err := h.file.exp.blocks.Block(ctx, d)
			if err != nil {
				if ctx.Err() != nil {
					return nil, syscall.EINTR
				}
				h.file.exp.log.Error("reading block", "snapshot", h.file.snap.ID, "index", idx, "digest", d.String(), "err", err)
				return nil, syscall.EIO
			}
			copy(chunk, data[inBlock:inBlock+n])
		} else {
			clear(chunk) // never written: a hole
		}
		pos += n
	}
	return fuse.ReadResultData(out), 0
}

// maxAhead bounds sequential prefetch (32 blocks = 16 MiB).
const maxAhead = 32

// trackSequential doubles the prefetch depth while reads stay sequential and drops it
// on a random read. h.mu is held.
func (h *imageHandle) trackSequential(off, end int64) {
	// The kernel issues readahead asynchronously, so "sequential" allows some
	// reordering around the expected offset.
	const slack = 4 * cas.BlockSize
	if h.nextOff > 0 && off >= h.nextOff-slack && off <= h.nextOff+slack {
		h.ahead = min(max(2*h.ahead, 2), maxAhead)
	} else {
		h.ahead = 0
		h.prefetchd = 0
	}
	h.nextOff = max(h.nextOff, end)
}

// planPrefetch returns the blocks to fetch ahead of a read ending in block last that
// were not asked for before. h.mu is held; slots covers [.., last+h.ahead].
func (h *imageHandle) planPrefetch(last int64, slots []cas.Slot) []cas.Slot {
	if h.ahead == 0 {
		return nil
	}
	from, to := max(last+1, h.prefetchd), last+int64(h.ahead)
	var out []cas.Slot
	for _, s := range slots {
		if s.Index >= from && s.Index <= to && s.Digest != cas.ZeroDigest {
			out = append(out, s)
		}
	}
	h.prefetchd = max(h.prefetchd, to+1)
	return out
}

// Lseek answers SEEK_DATA and SEEK_HOLE from the block map: blocks never written and
// blocks written as zeros are holes.
func (h *imageHandle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	size := uint64(h.file.size())
	if whence != seekData && whence != seekHole {
		return 0, syscall.EINVAL
	}
	if off >= size {
		return 0, syscall.ENXIO
	}
	start := int64(off / cas.BlockSize)
	result := int64(-1)
	expect := start // the next index that would continue a run of data from start
	err := h.view.From(ctx, start, func(s cas.Slot) bool {
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
		return 0, syscall.EIO
	}
	if whence == seekData {
		if result < 0 {
			return 0, syscall.ENXIO
		}
		return max(off, uint64(result)*cas.BlockSize), 0
	}
	if result < 0 {
		result = expect
	}
	return min(size, max(off, uint64(result)*cas.BlockSize)), 0
}
