package fusefs

import (
	"context"
	"math"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/ebsd/ebsd/cas"
)

// imageFile is a completed snapshot as a disk image: VolumeSize GiB, read-only.
type imageFile struct {
	fs.Inode
	exp   *export
	owner string       // the account whose directory holds it
	snap  cas.Snapshot // completed, so immutable
}

var (
	_ fs.NodeGetattrer = (*imageFile)(nil)
	_ fs.NodeOpener    = (*imageFile)(nil)
)

func (f *imageFile) size() int64 { return f.snap.VolumeSize << 30 }

func (f *imageFile) attr(a *fuse.Attr, acc Access) {
	a.Mode = syscall.S_IFREG | acc.fileMode()
	a.Uid, a.Gid = acc.UID, acc.GID
	a.Size = uint64(f.size())
	// st_blocks counts 512-byte units of blocks with data only, so du and
	// cp --sparse tell the truth about a mostly empty volume.
	a.Blocks = uint64(f.snap.DataBlocks) * (cas.BlockSize / 512)
	a.Blksize = cas.BlockSize
	a.Nlink = 1
	setTimes(a, f.snap.CompleteTime)
}

func (f *imageFile) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	acc, ok := f.exp.accessOf(f.owner)
	if !ok {
		return syscall.ENOENT // the account was removed
	}
	f.attr(&out.Attr, acc)
	out.SetTimeout(f.exp.attrTimeout(f.owner))
	return 0
}

func (f *imageFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR) != 0 {
		return nil, 0, syscall.EROFS
	}
	if _, ok := f.exp.accessOf(f.owner); !ok {
		return nil, 0, syscall.ENOENT // the account was removed since the lookup
	}
	// The view pins the snapshot: deleting it later does not pull the data from under
	// this open file.
	view, err := f.exp.src.OpenView(ctx, f.owner, f.snap.ID)
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

	mu     sync.Mutex
	window slotWindow
	ahead  readAhead
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

// zeroes answers reads of holes. Nothing writes to it after it is made: go-fuse only
// copies a read's result to the kernel.
var zeroes = residentZeroes(maxRequest)

// residentZeroes returns n zero bytes backed by pages of their own. A fresh allocation
// is untouched memory, which the kernel maps to its shared zero page when read; the
// FUSE device must pin the pages a reply is copied from, and pinning the zero page
// takes the slow path page by page (get_user_pages instead of the lockless walk): a
// third of the daemon's CPU in a hole-phase profile. Writing the bytes once gives the
// buffer ordinary pages.
func residentZeroes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 0
	}
	return b
}

// Read answers a read, telling the observer (metrics) what it returned.
func (h *imageHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	obs := h.file.exp.reads
	if obs == nil {
		return h.read(ctx, dest, off)
	}
	start := time.Now()
	res, errno := h.read(ctx, dest, off)
	n := 0
	if res != nil {
		n = res.Size()
	}
	obs.ObserveFUSERead(n, time.Since(start), errno != 0)
	return res, errno
}

func (h *imageHandle) read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	size := h.file.size()
	if off >= size || len(dest) == 0 {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), size)
	first, last := off/cas.BlockSize, (end-1)/cas.BlockSize

	h.mu.Lock()
	h.ahead.observe(off, end)
	slots, err := h.window.between(ctx, h.view.From, first, last+h.ahead.depth())
	var prefetch []cas.Slot
	if err == nil {
		prefetch = h.ahead.plan(last, slots)
		slots = upTo(slots, last)
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
			h.ahead.refused(s.Index)
			h.mu.Unlock()
			break
		}
	}

	if noData(slots) && end-off <= int64(len(zeroes)) {
		// Never written or written as zeros, the most common read (most of a volume is
		// holes): one slice of the shared zeros answers it.
		return fuse.ReadResultData(zeroes[:end-off]), 0
	}
	reply := &blockReply{}
	for pos := off; pos < end; {
		idx := pos / cas.BlockSize
		inBlock := pos - idx*cas.BlockSize
		n := min(cas.BlockSize-inBlock, end-pos)
		d := cas.ZeroDigest // never written: a hole
		if len(slots) > 0 && slots[0].Index == idx {
			d, slots = slots[0].Digest, slots[1:]
		}
		if d == cas.ZeroDigest {
			reply.add(zeroes[:n], nil)
		} else {
			data, release, err := h.file.exp.blocks.Borrow(ctx, d)
			if err != nil {
				reply.Done()
				if ctx.Err() != nil {
					return nil, syscall.EINTR
				}
				h.file.exp.log.Error("reading block", "snapshot", h.file.snap.ID, "index", idx, "digest", d.String(), "err", err)
				return nil, syscall.EIO
			}
			reply.add(data[inBlock:inBlock+n], release)
		}
		pos += n
	}
	return reply, 0
}

// noData says whether none of the slots holds data (written zeros do not).
func noData(slots []cas.Slot) bool {
	for _, s := range slots {
		if s.Digest != cas.ZeroDigest {
			return false
		}
	}
	return true
}

// Lseek answers SEEK_DATA and SEEK_HOLE from the block map: blocks never written and
// blocks written as zeros are holes.
func (h *imageHandle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	if off > math.MaxInt64 {
		return 0, syscall.ENXIO
	}
	pos, err := seek(ctx, h.view.From, h.file.size(), int64(off), whence)
	if errno, ok := err.(syscall.Errno); ok { // seek's own answer, never a store error
		return 0, errno
	}
	if err != nil {
		if ctx.Err() != nil {
			return 0, syscall.EINTR
		}
		h.file.exp.log.Error("seeking", "snapshot", h.file.snap.ID, "offset", off, "whence", whence, "err", err)
		return 0, syscall.EIO
	}
	return uint64(pos), 0
}
