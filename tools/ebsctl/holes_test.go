package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// writeSparse writes data as a sparse file: only its non-zero 4 KiB pages are written,
// the rest stays holes, as make-image.sh, cp --sparse and ebsctl download leave images.
func writeSparse(t *testing.T, path string, data []byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(int64(len(data))); err != nil {
		t.Fatal(err)
	}
	const page = 4096
	for off := 0; off < len(data); off += page {
		p := data[off:min(off+page, len(data))]
		if isZeroSlice(p) {
			continue
		}
		if _, err := f.WriteAt(p, int64(off)); err != nil {
			t.Fatal(err)
		}
	}
}

// reportsHoles says whether the file system of dir reports a file that was only
// truncated to its size as one hole.
func reportsHoles(t *testing.T, dir string) bool {
	t.Helper()
	f, err := os.CreateTemp(dir, "probe")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	off, err := f.Seek(0, unix.SEEK_HOLE)
	return err == nil && off == 0
}

// The data map marks every block that holds a written byte and leaves the blocks of
// holes clear, so those read as zeros without touching the file; a hole may end the
// file too (SEEK_DATA then finds nothing more).
func TestDataBlocksFindsHoles(t *testing.T) {
	dataEnd := make([]byte, 10*blockSize+1000)
	dataEnd[2*blockSize+100] = 1                          // inside block 2
	copy(dataEnd[6*blockSize-10:], "across the boundary") // the end of 5 and the start of 6
	dataEnd[10*blockSize+999] = 7                         // the partial last block
	holeEnd := make([]byte, 6*blockSize)
	holeEnd[blockSize] = 3
	for _, tc := range []struct {
		name     string
		data     []byte
		withData map[int64]bool
	}{
		{"data at the end", dataEnd, map[int64]bool{2: true, 5: true, 6: true, 10: true}},
		{"a hole at the end", holeEnd, map[int64]bool{1: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if !reportsHoles(t, dir) {
				t.Skipf("the file system of %s does not report holes (SEEK_HOLE)", dir)
			}
			path := filepath.Join(dir, "sparse.img")
			writeSparse(t, path, tc.data)
			im, err := openImage(path)
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			if im.data == nil {
				t.Fatal("no data map for a sparse file on a file system that reports holes")
			}
			buf := make([]byte, blockSize)
			for i := range im.blocks() {
				if im.hole(i) == tc.withData[i] {
					t.Errorf("block %d: hole %v, want %v", i, im.hole(i), !tc.withData[i])
				}
				if err := im.block(i, buf); err != nil {
					t.Fatal(err)
				}
				want := make([]byte, blockSize)
				copy(want, tc.data[i*blockSize:])
				if !bytes.Equal(buf, want) {
					t.Errorf("block %d reads wrong", i)
				}
			}
			if im.hole(im.blocks()) {
				t.Error("a block past the end counts as a hole")
			}
		})
	}
}

// A file system that cannot tell holes, or a device, leaves no hole assumed.
func TestDataBlocksOfADeviceAssumeData(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a loop device needs root (CI runs as root)")
	}
	file := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(file, 4<<20); err != nil { // all hole
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-r", "-f", "--show", file).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })
	im, err := openImage(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if im.size != 4<<20 || im.data != nil || im.hole(0) {
		t.Fatalf("a block device over a sparse file: size %d, hole map %v: want 4 MiB and no map", im.size, im.data != nil)
	}
	// A character device has no size: it is refused, not read as an empty image.
	if im, err := openImage("/dev/zero"); err == nil {
		im.Close()
		t.Fatal("/dev/zero opened as an image")
	}
}
