package cas

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestRottenTableNeverMapsAnIndexToAnotherBlock: block maps live in Badger's tables,
// which carry no SHA-256 of their own. If a table block rots so that a map entry names
// another stored block, that block's bytes would verify, and a read would serve the
// wrong data. Table blocks' checksums are verified when read, so the index fails
// instead.
func TestRottenTableNeverMapsAnIndexToAnotherBlock(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, ExpireInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	a, b := bytes.Repeat([]byte{0xA1}, BlockSize), bytes.Repeat([]byte{0xB2}, BlockSize)
	id := start(t, s, "")
	put(t, s, id, 0, a)
	put(t, s, id, 1, b)
	complete(t, s, id, 2)
	// Closing flushes the memtable: the map entries are now in a table file.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	da, db := Sum(a), Sum(b)
	tables, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	patched := 0
	for _, f := range tables {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// Index 0's map entry is digest a as a value; block a's own key is the same
		// digest after the block prefix. Only the value is rotted, into digest b.
		for off := 0; ; {
			i := bytes.Index(raw[off:], da[:])
			if i < 0 {
				break
			}
			i += off
			if i > 0 && raw[i-1] != prefixBlock {
				copy(raw[i:], db[:])
				patched++
			}
			off = i + 1
		}
		if patched > 0 {
			if err := os.WriteFile(f, raw, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	if patched == 0 {
		t.Fatal("no table file holds index 0's map entry")
	}
	s, err = Open(Options{Dir: dir, ExpireInterval: -1})
	if err != nil {
		return // refusing to open the rotten table is as good as refusing the read
	}
	defer s.Close()
	d, found, err := s.BlockDigest(context.Background(), owner, id, 0)
	if err == nil && found && d == db {
		t.Fatalf("index 0 of %s now reads block b: a rotten table served the wrong bytes", id)
	}
	if err == nil {
		t.Fatalf("reading index 0 from a rotten table: digest %s found %v, want an error", d, found)
	}
}
