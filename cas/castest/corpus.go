package castest

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// RealCorpus returns size bytes of real file-system content (the files under /usr, in
// walk order), the closest thing on this machine to the data of a volume snapshot.
func RealCorpus(tb testing.TB, size int) []byte {
	tb.Helper()
	out := make([]byte, 0, size)
	_ = filepath.WalkDir("/usr", func(path string, d fs.DirEntry, err error) error {
		if err != nil || len(out) >= size {
			return filepath.SkipDir
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err == nil {
			out = append(out, b[:min(len(b), size-len(out))]...)
		}
		return nil
	})
	if len(out) < size {
		tb.Skipf("only %d bytes of files under /usr", len(out))
	}
	return out
}
