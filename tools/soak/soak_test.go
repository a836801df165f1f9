package main

import (
	"crypto/sha256"
	"encoding/base64"
	"os"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"
)

// The scrub report's problem counts are findings; its other numbers are not.
func TestScrubFindingsNamesProblemCounts(t *testing.T) {
	body := []byte(`{"blocksChecked":12,"bytesChecked":99,"corruptBlockCount":2,"corruptBlocks":[{"digest":"ab"}],"corruptRecordCount":0,"marksCleared":1}`)
	if got, want := scrubFindings(body), []string{"corruptBlockCount=2"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("findings %q, want %q", got, want)
	}
	if got := scrubFindings([]byte(`{"blocksChecked":12,"corruptBlockCount":0}`)); len(got) != 0 {
		t.Fatalf("a clean report has findings %q", got)
	}
	if got := scrubFindings([]byte(`not json`)); len(got) != 1 {
		t.Fatalf("an unreadable report has findings %q, want one", got)
	}
}

// The LINEAR aggregate is SHA-256 over the blocks' digests in index order, whatever
// order the map gives them in.
func TestLinearAggregateInIndexOrder(t *testing.T) {
	a, b := sha256.Sum256([]byte("a")), sha256.Sum256([]byte("b"))
	n, sum := linear(map[int32]digest{9: b, 2: a})
	h := sha256.New()
	h.Write(a[:])
	h.Write(b[:])
	if want := base64.StdEncoding.EncodeToString(h.Sum(nil)); n != 2 || sum != want {
		t.Fatalf("linear = %d, %s; want 2, %s", n, sum, want)
	}
}

// Only what a killed daemon leaves behind excuses a FUSE error; EIO is an answer.
func TestKilledMountExcusesOnlyADeadMount(t *testing.T) {
	for err, want := range map[error]bool{
		&os.PathError{Op: "read", Err: syscall.ENOTCONN}:     true,
		&os.PathError{Op: "read", Err: syscall.ECONNABORTED}: true,
		&os.PathError{Op: "open", Err: syscall.ENOENT}:       true,
		&os.PathError{Op: "read", Err: syscall.EIO}:          false,
	} {
		if got := killedMount(err); got != want {
			t.Errorf("killedMount(%v) = %v, want %v", err, got, want)
		}
	}
}

// Error lines and panics of the daemon's log are picked out; other lines are not.
func TestLogErrorsPicksErrorsAndPanics(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ebsd.log")
	log := "time=x level=WARN msg=\"detaching stale FUSE mount\"\n" +
		"time=x level=ERROR msg=\"reading block\" err=\"stored block is corrupt\"\n" +
		"panic: boom\n"
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	_, lines := logErrors(path)
	if len(lines) != 2 || lines[1] != "panic: boom" {
		t.Fatalf("picked %q", lines)
	}
}

// Block data is reproducible from its seed, seed 0 is the zero block, and different
// seeds give different blocks.
func TestBlockDataFromSeed(t *testing.T) {
	if sha256.Sum256(blockData(0)) != zeroDigest {
		t.Fatal("seed 0 is not the zero block")
	}
	a, b := sha256.Sum256(blockData(7)), sha256.Sum256(blockData(7))
	if a != b || a == sha256.Sum256(blockData(8)) {
		t.Fatal("block data is not a function of its seed")
	}
}
