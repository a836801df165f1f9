package fusefs

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"syscall"
	"testing"
	"unsafe"

	"github.com/ebsd/ebsd/cas"
)

// Reads of every shape return the image's bytes: data, written zeros and holes, alone
// and mixed, block-aligned or not. Requests with no data in them are answered from the
// shared zeros, which no read ever writes to.
func TestReadDataZerosAndHoles(t *testing.T) {
	store, cache := openStore(t)
	ctx := context.Background()
	snap, err := store.StartSnapshot(ctx, cas.StartParams{OwnerID: acctDefault, VolumeSize: 1, TimeoutMinutes: 60})
	if err != nil {
		t.Fatal(err)
	}
	const blocks = 8
	image := make([]byte, blocks*cas.BlockSize)
	put := func(i int64, b []byte) {
		t.Helper()
		copy(image[i*cas.BlockSize:], b)
		if err := store.PutBlock(ctx, acctDefault, snap.ID, i, b, cas.Sum(b)); err != nil {
			t.Fatal(err)
		}
	}
	for _, i := range []int64{0, 3, 5} {
		b := bytes.Repeat([]byte{byte(i + 1), 0, 7}, cas.BlockSize/3+1)[:cas.BlockSize]
		put(i, b)
	}
	put(1, make([]byte, cas.BlockSize)) // written zeros; 2, 4, 6 and 7 are never written
	if _, err := store.CompleteSnapshot(ctx, acctDefault, snap.ID, 4, nil); err != nil {
		t.Fatal(err)
	}
	rec, err := store.Snapshot(ctx, acctDefault, snap.ID)
	if err != nil {
		t.Fatal(err)
	}
	exp := &export{src: store, blocks: cache, owner: acctDefault, log: slog.New(slog.DiscardHandler)}
	fh, _, errno := (&imageFile{exp: exp, owner: acctDefault, snap: rec}).Open(ctx, 0)
	if errno != 0 {
		t.Fatal(errno)
	}
	h := fh.(*imageHandle)
	defer h.Release(ctx)

	const bs = cas.BlockSize
	for _, rd := range []struct {
		name     string
		off, len int64
	}{
		{"a block of data", 0, bs},
		{"written zeros", bs, bs},
		{"a hole", 2 * bs, bs},
		{"two holes", 6 * bs, 2 * bs},
		{"a hole, unaligned", 2*bs + 4096, 100_000},
		{"zeros then a hole", bs, 2 * bs},
		{"data then zeros", bs / 2, bs},
		{"a hole then data", 2 * bs, 2 * bs},
		{"hole, data, hole", 4*bs - 4096, bs + 8192},
		{"across everything", 0, blocks * bs},
		{"the last byte of data", 6*bs - 1, 1},
		{"sequential 128 KiB reads", 0, 128 << 10},
	} {
		t.Run(rd.name, func(t *testing.T) {
			size := rd.len
			if rd.name == "sequential 128 KiB reads" {
				size = blocks * bs
			}
			for off := rd.off; off < rd.off+size; off += rd.len {
				n := min(rd.len, rd.off+size-off)
				dest := bytes.Repeat([]byte{0xAA}, int(n)) // a reused buffer is never clean
				res, errno := h.Read(ctx, dest, off)
				if errno != 0 {
					t.Fatalf("read %d at %d: %v", n, off, errno)
				}
				got, _ := res.Bytes(make([]byte, n))
				if !bytes.Equal(got, image[off:off+n]) {
					t.Fatalf("read %d at %d: wrong bytes", n, off)
				}
			}
		})
	}
	if bytes.ContainsFunc(zeroes, func(r rune) bool { return r != 0 }) {
		t.Fatal("the shared zeros were written to")
	}
}

// The shared zeros sit on pages of their own, all resident before anything reads them,
// so the FUSE device pins them on its fast path instead of faulting in the kernel's
// zero page for every reply.
func TestZeroesAreResident(t *testing.T) {
	b := residentZeroes(1 << 20)
	page := os.Getpagesize()
	start := uintptr(unsafe.Pointer(&b[0])) &^ uintptr(page-1)
	end := uintptr(unsafe.Pointer(&b[len(b)-1])) + 1
	vec := make([]byte, (end-start+uintptr(page)-1)/uintptr(page))
	// Asked before any read of b: reading untouched memory would map the zero page.
	if _, _, errno := syscall.Syscall(syscall.SYS_MINCORE, start, end-start, uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	for i, v := range vec {
		if v&1 == 0 {
			t.Fatalf("page %d of %d of the zeros is not resident", i, len(vec))
		}
	}
	if !bytes.Equal(b, make([]byte, 1<<20)) {
		t.Fatal("residentZeroes holds a non-zero byte")
	}
}
