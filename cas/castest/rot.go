package castest

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// RotInValueLog flips two bytes in the middle of the one stored copy of data in the
// value-log files of the Badger store in dir, as a failing disk would. data must be
// stored raw (random data is: no codec shrinks it), so its bytes are there as sent.
func RotInValueLog(t testing.TB, dir string, data []byte) {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		off := bytes.Index(b, data)
		if off < 0 {
			continue
		}
		found++
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		mid := int64(off + len(data)/2)
		if _, err := f.WriteAt([]byte{b[mid] ^ 0xff, b[mid+1] ^ 0x5a}, mid); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if found != 1 {
		t.Fatalf("the block is in %d value-log files, want exactly 1", found)
	}
}
