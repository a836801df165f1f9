package cas

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// salvageSession opens the store in dir with small value-log files (so that blocks
// written early are not in the newest file, which Badger checks at open), runs fn and
// closes it: every session leaves its keys in a table file of its own.
func salvageSession(t *testing.T, dir string, fn func(s *Store)) {
	t.Helper()
	s, err := Open(Options{Dir: dir, ExpireInterval: -1, ValueLogFileSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	fn(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// flipInFile flips two bytes of a file at off.
func flipInFile(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 2)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{b[0] ^ 0xff, b[1] ^ 0x5a}, off); err != nil {
		t.Fatal(err)
	}
}

// A damaged table file: Open names it and says what to do; Salvage copies every
// snapshot whose blocks still verify (ids, tags, lineage, client tokens and the token
// secret kept) and reports the ones it could not save and why.
func TestSalvageAfterCorruptTableFile(t *testing.T) {
	ctx := context.Background()
	from := t.TempDir()
	to := filepath.Join(t.TempDir(), "new")
	blocks := map[string][]byte{"a0": randomBlock(t), "a1": randomBlock(t), "child": randomBlock(t), "rot": randomBlock(t), "rotkid": randomBlock(t)}
	var a, child, rot, rotKid, lost string
	var secret []byte
	salvageSession(t, from, func(s *Store) {
		var err error
		if secret, err = s.Secret("api-tokens"); err != nil {
			t.Fatal(err)
		}
		snap, err := s.StartSnapshot(ctx, StartParams{OwnerID: owner, Region: "r", VolumeSize: 1, TimeoutMinutes: 60,
			ClientToken: "tok-a", Tags: []Tag{{Key: "k", Value: "v"}}, Description: "base"})
		if err != nil {
			t.Fatal(err)
		}
		a = snap.ID
		put(t, s, a, 0, blocks["a0"])
		put(t, s, a, 1, blocks["a1"])
		put(t, s, a, 2, make([]byte, BlockSize))
		complete(t, s, a, 3)
		child = start(t, s, a)
		put(t, s, child, 1, blocks["child"])
		complete(t, s, child, 1)
		rot = start(t, s, "")
		put(t, s, rot, 5, blocks["rot"])
		complete(t, s, rot, 1)
		rotKid = start(t, s, rot)
		put(t, s, rotKid, 6, blocks["rotkid"])
		complete(t, s, rotKid, 1)
	})
	salvageSession(t, from, func(s *Store) {
		lost = start(t, s, "")
		for i := range int64(3) { // more value-log files after the rotten block's
			put(t, s, lost, i, randomBlock(t))
		}
		complete(t, s, lost, 3)
	})
	ssts, err := filepath.Glob(filepath.Join(from, "*.sst"))
	if err != nil || len(ssts) != 2 {
		t.Fatalf("table files %v (%v), want one per session", ssts, err)
	}
	slices.Sort(ssts)
	damaged := ssts[1] // the second session's: it holds the snapshot "lost"
	fi, err := os.Stat(damaged)
	if err != nil {
		t.Fatal(err)
	}
	flipInFile(t, damaged, fi.Size()-40) // in the index, whose checksum Badger checks at open
	vlogs, _ := filepath.Glob(filepath.Join(from, "*.vlog"))
	rotted := 0
	for _, p := range vlogs {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if off := bytes.Index(b, blocks["rot"]); off >= 0 {
			flipInFile(t, p, int64(off+BlockSize/2))
			rotted++
		}
	}
	if rotted != 1 {
		t.Fatalf("rotten block found in %d value-log files, want 1", rotted)
	}

	_, err = Open(Options{Dir: from, ExpireInterval: -1})
	if err == nil {
		t.Fatal("a store with a damaged table file opened")
	}
	if msg := err.Error(); !strings.Contains(msg, damaged) || !strings.Contains(msg, "ebsctl salvage --from "+from+" --to NEWDIR") {
		t.Fatalf("open error does not name the file and the way out: %v", err)
	}

	rep, err := Salvage(ctx, SalvageOptions{From: from, To: to})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.CorruptTables, []string{damaged}) {
		t.Fatalf("corrupt tables %v, want [%s]", rep.CorruptTables, damaged)
	}
	wantSaved := []string{a, child}
	slices.Sort(wantSaved)
	if !slices.Equal(rep.Saved, wantSaved) {
		t.Fatalf("saved %v, want %v", rep.Saved, wantSaved)
	}
	lostWhy := map[string]LostSnapshot{}
	for _, l := range rep.Lost {
		lostWhy[l.ID] = l
	}
	if l := lostWhy[rot]; len(rep.Lost) != 2 || !slices.Equal(l.BadIndexes, []int64{5}) || l.OwnerID != owner ||
		!strings.Contains(lostWhy[rotKid].Reason, "parent "+rot+" is not saved") {
		t.Fatalf("lost %+v, want %s (index 5) and its child %s", rep.Lost, rot, rotKid)
	}
	if rep.BlocksCopied != 3 || rep.TokensCopied != 1 || rep.CorruptBlocksFound != 1 {
		t.Fatalf("report %+v, want 3 blocks and 1 token copied, 1 corrupt block", rep)
	}
	if _, err := os.Stat(from); err != nil {
		t.Fatalf("the damaged store is gone: %v", err)
	}

	s, err := Open(Options{Dir: to, ExpireInterval: -1})
	if err != nil {
		t.Fatalf("salvaged store: %v", err)
	}
	defer s.Close()
	snap, err := s.Snapshot(ctx, owner, a)
	if err != nil || snap.Status != StatusCompleted || snap.Description != "base" || !slices.Equal(snap.Tags, []Tag{{Key: "k", Value: "v"}}) {
		t.Fatalf("salvaged %s: %+v, %v", a, snap, err)
	}
	again, err := s.StartSnapshot(ctx, StartParams{OwnerID: owner, Region: "r", VolumeSize: 1, TimeoutMinutes: 60,
		ClientToken: "tok-a", Tags: []Tag{{Key: "k", Value: "v"}}, Description: "base"})
	if err != nil || again.ID != a {
		t.Fatalf("client token retry after salvage: %s, %v, want %s", again.ID, err, a)
	}
	if got, err := s.Secret("api-tokens"); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("token secret not kept: %v", err)
	}
	want := map[int64][]byte{0: blocks["a0"], 1: blocks["child"], 2: make([]byte, BlockSize)}
	n := 0
	if err := s.ViewFrom(ctx, owner, child, 0, func(sl Slot) bool {
		n++
		got, err := s.ReadBlock(nil, sl.Digest)
		if err != nil || !bytes.Equal(got, want[sl.Index]) {
			t.Errorf("child block %d after salvage: %v", sl.Index, err)
		}
		return true
	}); err != nil || n != len(want) {
		t.Fatalf("view of the child: %d blocks, %v", n, err)
	}
	for _, id := range []string{rot, rotKid, lost} {
		if _, err := s.Snapshot(ctx, owner, id); err == nil {
			t.Fatalf("%s was not saved but is in the new store", id)
		}
	}
	if rep, err := s.Scrub(ctx, ScrubOptions{}); err != nil || rep.CorruptBlockCount != 0 || rep.CorruptRecordCount != 0 {
		t.Fatalf("scrub of the salvaged store: %+v, %v", rep, err)
	}
}

// Salvage never writes into a directory that holds something.
func TestSalvageRefusesNonEmptyDestination(t *testing.T) {
	to := t.TempDir()
	if err := os.WriteFile(filepath.Join(to, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Salvage(context.Background(), SalvageOptions{From: t.TempDir(), To: to}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("salvage into a non-empty directory: %v", err)
	}
}

// A damaged data block of a table file (not its index, which Badger checks at open)
// made an iteration end early without an error: a snapshot's block map lost its tail
// and read as zeros. A scrub finds the damage while the store runs, and the store
// refuses to open with it, naming the file and the way out.
func TestDamagedTableBlockIsFoundByScrubAndAtOpen(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Dir: dir, ExpireInterval: -1, ValueLogFileSize: 1 << 20, Compression: CompressNone}
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		putNoise(t, s, 40, uint64(1000*i))
	}
	if err := s.settleDiscards(); err != nil { // the memtable into a table file
		t.Fatal(err)
	}
	ssts, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil || len(ssts) == 0 {
		t.Fatalf("table files %v (%v)", ssts, err)
	}
	slices.Sort(ssts)
	damaged := ssts[len(ssts)-1]
	flipInFile(t, damaged, 100) // the first data block, read by nothing yet
	rep, err := s.Scrub(context.Background(), ScrubOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.CorruptRecordCount != 1 || !strings.Contains(rep.CorruptRecords[0].Key, filepath.Base(damaged)) {
		t.Fatalf("scrub of a store with a damaged table: %d corrupt records %+v", rep.CorruptRecordCount, rep.CorruptRecords)
	}
	_ = s.Close()
	_, err = Open(opts)
	if err == nil {
		t.Fatal("a store with a damaged table block opened")
	}
	if msg := err.Error(); !strings.Contains(msg, damaged) || !strings.Contains(msg, "ebsctl salvage --from "+dir+" --to NEWDIR") {
		t.Fatalf("open error does not name the file and the way out: %v", err)
	}
}
