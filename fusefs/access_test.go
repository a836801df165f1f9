package fusefs

import (
	"os"
	"testing"
)

func TestAccessModes(t *testing.T) {
	for _, tc := range []struct{ file, wantFile, wantDir uint32 }{
		{0o400, 0o400, 0o500},
		{0o440, 0o440, 0o550},
		{0o444, 0o444, 0o555},
		{0o404, 0o404, 0o505},
		{0o644, 0o444, 0o555},  // no write bits on a read-only mount
		{0o4755, 0o555, 0o555}, // no setuid either
		{0o000, 0o000, 0o000},  // only root
		{0o100, 0o100, 0o000},  // x without r reaches nothing
	} {
		a := Access{UID: 1, FileMode: tc.file}
		if got := a.fileMode(); got != tc.wantFile {
			t.Errorf("file mode %o: files %o, want %o", tc.file, got, tc.wantFile)
		}
		if got := a.dirMode(); got != tc.wantDir {
			t.Errorf("file mode %o: directory %o, want %o", tc.file, got, tc.wantDir)
		}
	}
}

func TestZeroAccessIsTheDaemonsOnly(t *testing.T) {
	want := Access{UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), FileMode: 0o400}
	if got := (Access{}).orDaemon(); got != want {
		t.Fatalf("zero Access became %+v, want %+v", got, want)
	}
	set := Access{UID: 7, GID: 8, FileMode: 0o440}
	if got := set.orDaemon(); got != set {
		t.Fatalf("a set Access changed: %+v", got)
	}
}

func TestInodesOfDirectoriesAndFilesNeverMeet(t *testing.T) {
	for _, id := range []string{"111122223333", "snap-0123456789abcdef0", "", "x"} {
		img, meta, dir := inodeOf(id, false), inodeOf(id, true), dirInodeOf(id)
		if img&dirInodeBit != 0 || meta&dirInodeBit != 0 || dir&dirInodeBit == 0 {
			t.Errorf("%q: image %x, meta %x, directory %x: only the directory may carry the top bit", id, img, meta, dir)
		}
		if img == meta || img < 2 || meta < 2 || meta != img|1 {
			t.Errorf("%q: image %x and meta %x must differ in the lowest bit only and avoid the root", id, img, meta)
		}
		if img != inodeOf(id, false) || dir != dirInodeOf(id) {
			t.Errorf("%q: inode numbers are not stable", id)
		}
	}
}

func TestOtherAccounts(t *testing.T) {
	listed := []AccountDir{
		{ID: acctB, Access: Access{UID: 5, FileMode: 0o440}},
		{ID: acctB, Access: Access{UID: 6, FileMode: 0o444}}, // a duplicate: the first wins
		{ID: acctDefault},              // the root already
		{ID: "../etc"},                 // not an account id
		{ID: "snap-0123456789abcdef0"}, // not an account id
		{ID: acctC},                    // zero Access
	}
	e := &export{owner: acctDefault, def: Access{UID: 9, FileMode: 0o400}, accounts: func() []AccountDir { return listed }}
	got := e.otherAccounts()
	if len(got) != 2 || got[0].ID != acctB || got[0].Access.UID != 5 || got[1].ID != acctC || got[1].Access != (Access{}).orDaemon() {
		t.Fatalf("otherAccounts %+v", got)
	}
	if a, ok := e.accessOf(acctDefault); !ok || a != e.def {
		t.Fatalf("the default account's access %+v %v", a, ok)
	}
	if _, ok := e.accessOf("999999999999"); ok {
		t.Fatal("an unlisted account has access")
	}
	if got := (&export{owner: acctDefault}).otherAccounts(); len(got) != 0 {
		t.Fatalf("nil Accounts lists %+v", got)
	}
}
