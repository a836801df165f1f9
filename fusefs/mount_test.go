package fusefs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ebsd/ebsd/cas"
)

// The accounts of these tests.
const (
	acctDefault = "111122223333"
	acctB       = "444455556666"
	acctC       = "777788889999"
)

// Users and groups of these tests; setpriv needs no passwd or group entries for them.
const (
	nobody    = 65534
	nogroup   = 65534
	grantGID  = 4242 // the group the default account's files are granted to
	memberUID = 4243 // a user in grantGID
	ownerBUID = 4244 // the user account B's files belong to (also in grantGID, to reach the root)
)

// requireRootFUSE skips unless FUSE works and the test runs as root (the tests switch
// users); with EBSD_REQUIRE_FUSE=1 (CI) that is a failure instead.
func requireRootFUSE(t *testing.T) {
	t.Helper()
	var why string
	if f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0); err != nil {
		why = fmt.Sprintf("/dev/fuse is not usable: %v", err)
	} else {
		f.Close()
		if os.Geteuid() != 0 {
			why = "not root: the test runs commands as other users"
		} else if _, err := exec.LookPath("setpriv"); err != nil {
			why = "setpriv is not installed (util-linux)"
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("EBSD_REQUIRE_FUSE") == "1" {
		t.Fatalf("FUSE test cannot run: %s (EBSD_REQUIRE_FUSE=1 makes this a failure)", why)
	}
	t.Skipf("SKIPPING FUSE TEST: %s. Set EBSD_REQUIRE_FUSE=1 to make this fail.", why)
}

// openStore is a real store and block cache on a temp dir, closed when the test ends.
func openStore(t *testing.T) (*cas.Store, *cas.BlockCache) {
	t.Helper()
	store, err := cas.Open(cas.Options{Dir: t.TempDir(), ExpireInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	cache := cas.NewBlockCache(store, 16*cas.BlockSize, 2)
	t.Cleanup(func() {
		cache.Close()
		if err := store.Close(); err != nil {
			t.Error(err)
		}
	})
	return store, cache
}

// completed writes a 1 GiB snapshot of owner with block 0 filled with b.
func completed(t *testing.T, store *cas.Store, owner string, b byte) string {
	t.Helper()
	ctx := context.Background()
	snap, err := store.StartSnapshot(ctx, cas.StartParams{OwnerID: owner, VolumeSize: 1, TimeoutMinutes: 60})
	if err != nil {
		t.Fatal(err)
	}
	blk := bytes.Repeat([]byte{b}, cas.BlockSize)
	if err := store.PutBlock(ctx, owner, snap.ID, 0, blk, cas.Sum(blk)); err != nil {
		t.Fatal(err)
	}
	if _, err := store.CompleteSnapshot(ctx, owner, snap.ID, 1, nil); err != nil {
		t.Fatal(err)
	}
	return snap.ID
}

// mountDir is a mount point every user may reach, so that a refusal the tests see
// comes from the mount and not from a private temp dir on the way to it.
func mountDir(t *testing.T) string {
	t.Helper()
	base, err := os.MkdirTemp("", "ebsd-fusefs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) }) // registered first: runs after the unmount
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(base, "mnt")
}

func mount(t *testing.T, src Source, blocks Blocks, opts Options) *Mount {
	t.Helper()
	if opts.MountPoint == "" {
		opts.MountPoint = mountDir(t)
	}
	m, err := New(src, blocks, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := m.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	return m
}

// user is whom a command runs as.
type user struct {
	uid, gid int
	groups   []int // supplementary groups
}

func (u user) String() string { return fmt.Sprintf("uid %d gid %d groups %v", u.uid, u.gid, u.groups) }

// runAs runs a command as u and returns its stdout, and its stderr in the error.
// The deadline only keeps a broken mount from hanging the test.
func runAs(t *testing.T, u user, name string, args ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	priv := []string{fmt.Sprintf("--reuid=%d", u.uid), fmt.Sprintf("--regid=%d", u.gid)}
	if len(u.groups) == 0 {
		priv = append(priv, "--clear-groups")
	} else {
		g := make([]string, len(u.groups))
		for i, gid := range u.groups {
			g[i] = fmt.Sprint(gid)
		}
		priv = append(priv, "--groups="+strings.Join(g, ","))
	}
	cmd := exec.CommandContext(ctx, "setpriv", append(append(priv, "--"), append([]string{name}, args...)...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s as %v: %w: %s", name, strings.Join(args, " "), u, err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// wantDenied fails unless the command, run as u, fails with "Permission denied".
func wantDenied(t *testing.T, u user, name string, args ...string) {
	t.Helper()
	out, err := runAs(t, u, name, args...)
	if err == nil || !strings.Contains(err.Error(), "Permission denied") {
		t.Fatalf("%s %v as %v: %v (output %q); want Permission denied", name, args, u, err, out)
	}
}

func wantAttr(t *testing.T, path string, mode, uid, gid uint32) syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode != mode || st.Uid != uid || st.Gid != gid {
		t.Fatalf("%s: mode %o owner %d:%d, want mode %o owner %d:%d", path, st.Mode, st.Uid, st.Gid, mode, uid, gid)
	}
	return st
}

func mountOptions(t *testing.T, dir string) string {
	t.Helper()
	raw, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		fields := strings.Fields(line)
		if len(fields) > 4 && unescapeMountPath(fields[4]) == dir {
			return line
		}
	}
	t.Fatalf("%s is not mounted", dir)
	return ""
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// By default only the daemon's user opens the mount: no allow_other, so the kernel
// refuses everyone else before any mode is looked at.
func TestMountDefaultRefusesOtherUsers(t *testing.T) {
	requireRootFUSE(t)
	store, cache := openStore(t)
	id := completed(t, store, acctDefault, 'A')
	m := mount(t, store, cache, Options{Owner: acctDefault})
	if info := mountOptions(t, m.Dir()); strings.Contains(info, "allow_other") {
		t.Fatalf("mounted with allow_other by default:\n%s", info)
	}
	// The root's owner and mode follow the zero Default: the daemon's user, 0400.
	wantAttr(t, m.Dir(), syscall.S_IFDIR|0o500, uint32(os.Getuid()), uint32(os.Getgid()))
	wantAttr(t, filepath.Join(m.Dir(), id), syscall.S_IFREG|0o400, uint32(os.Getuid()), uint32(os.Getgid()))

	other := user{uid: nobody, gid: nogroup}
	if _, err := runAs(t, other, "ls", filepath.Dir(m.Dir())); err != nil {
		t.Fatalf("the mount point's parent must be reachable for the refusal to mean anything: %v", err)
	}
	wantDenied(t, other, "ls", m.Dir())
	wantDenied(t, other, "head", "-c", "16", filepath.Join(m.Dir(), id))
	got, err := os.ReadFile(filepath.Join(m.Dir(), id+metaSuffix))
	if err != nil || !bytes.Contains(got, []byte(id)) {
		t.Fatalf("root reading the metadata: %v\n%s", err, got)
	}
}

// With AllowOther the kernel enforces the owners and modes: the default account's
// files are granted to a group, another account's appear only in its own directory,
// owned as its AccountDir says, and deleting one there makes it disappear at once.
func TestMountAllowOtherOwnersAndModes(t *testing.T) {
	requireRootFUSE(t)
	store, cache := openStore(t)
	idA := completed(t, store, acctDefault, 'A')
	idB := completed(t, store, acctB, 'B')
	idC := completed(t, store, acctC, 'C')

	var mu sync.Mutex
	accounts := []AccountDir{
		{ID: acctB, Access: Access{UID: ownerBUID, GID: ownerBUID, FileMode: 0o400}},
		{ID: "not-an-account", Access: Access{FileMode: 0o444}}, // ignored: not 12 digits
		{ID: acctDefault, Access: Access{FileMode: 0o444}},      // ignored: it is the root
	}
	m := mount(t, store, cache, Options{
		Owner:      acctDefault,
		AllowOther: true,
		Default:    Access{UID: 0, GID: grantGID, FileMode: 0o440},
		Accounts: func() []AccountDir {
			mu.Lock()
			defer mu.Unlock()
			return append([]AccountDir(nil), accounts...)
		},
	})
	store.OnDelete(m.Forget)
	info := mountOptions(t, m.Dir())
	if !strings.Contains(info, "allow_other") || !strings.Contains(info, "default_permissions") {
		t.Fatalf("want allow_other and default_permissions:\n%s", info)
	}
	root, dirB := m.Dir(), filepath.Join(m.Dir(), acctB)

	// What is where, as root sees it.
	top := names(t, root)
	if !contains(top, idA) || !contains(top, idA+metaSuffix) || !contains(top, acctB) ||
		contains(top, idB) || contains(top, idC) || contains(top, "not-an-account") || contains(top, acctDefault) {
		t.Fatalf("root lists %v; want %s, its .json and the directory %s only", top, idA, acctB)
	}
	if inB := names(t, dirB); len(inB) != 2 || !contains(inB, idB) || !contains(inB, idB+metaSuffix) {
		t.Fatalf("%s lists %v; want %s and its .json only", acctB, inB, idB)
	}
	for _, p := range []string{filepath.Join(root, idB), filepath.Join(dirB, idA), filepath.Join(dirB, idC), filepath.Join(root, acctC)} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("stat %s: %v; want it not to exist", p, err)
		}
	}
	// statfs answers on every kind of path, with a name length programs can size by.
	for _, p := range []string{root, dirB, filepath.Join(root, idA), filepath.Join(root, idA+metaSuffix)} {
		var sf syscall.Statfs_t
		if err := syscall.Statfs(p, &sf); err != nil || sf.Namelen != 255 || sf.Bsize != 4096 {
			t.Fatalf("statfs %s: %v, name length %d, block size %d; want 255 and 4096", p, err, sf.Namelen, sf.Bsize)
		}
	}
	wantAttr(t, root, syscall.S_IFDIR|0o550, 0, grantGID)
	stA := wantAttr(t, filepath.Join(root, idA), syscall.S_IFREG|0o440, 0, grantGID)
	wantAttr(t, filepath.Join(root, idA+metaSuffix), syscall.S_IFREG|0o440, 0, grantGID)
	stDirB := wantAttr(t, dirB, syscall.S_IFDIR|0o500, ownerBUID, ownerBUID)
	stB := wantAttr(t, filepath.Join(dirB, idB), syscall.S_IFREG|0o400, ownerBUID, ownerBUID)
	wantAttr(t, filepath.Join(dirB, idB+metaSuffix), syscall.S_IFREG|0o400, ownerBUID, ownerBUID)
	if stA.Ino == stB.Ino || stDirB.Ino == stA.Ino || stDirB.Ino == stB.Ino || stDirB.Ino == 1 {
		t.Fatalf("inodes: root image %d, account directory %d, its image %d; want them distinct", stA.Ino, stDirB.Ino, stB.Ino)
	}

	// Who may read what.
	member := user{uid: memberUID, gid: memberUID, groups: []int{grantGID}}
	ownerB := user{uid: ownerBUID, gid: ownerBUID, groups: []int{grantGID}}
	other := user{uid: nobody, gid: nogroup}
	if _, err := runAs(t, other, "ls", filepath.Dir(root)); err != nil {
		t.Fatalf("the mount point's parent must be reachable for the refusals to mean anything: %v", err)
	}
	got, err := runAs(t, member, "head", "-c", fmt.Sprint(cas.BlockSize+1), filepath.Join(root, idA))
	if want := append(bytes.Repeat([]byte{'A'}, cas.BlockSize), 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("a member of the granted group reading %s: %v (%d bytes, want block 0 then a zero)", idA, err, len(got))
	}
	if got, err := runAs(t, member, "cat", filepath.Join(root, idA+metaSuffix)); err != nil || !bytes.Contains(got, []byte(`"ownerId": "`+acctDefault)) {
		t.Fatalf("a member reading the metadata: %v\n%s", err, got)
	}
	if got, err := runAs(t, member, "ls", root); err != nil || !strings.Contains(string(got), idA) {
		t.Fatalf("a member listing the root: %v\n%s", err, got)
	}
	wantDenied(t, other, "ls", root)
	wantDenied(t, other, "head", "-c", "16", filepath.Join(root, idA))
	wantDenied(t, member, "ls", dirB) // B's directory is its owner's only
	wantDenied(t, member, "head", "-c", "16", filepath.Join(dirB, idB))
	if got, err := runAs(t, ownerB, "head", "-c", "4", filepath.Join(dirB, idB)); err != nil || string(got) != "BBBB" {
		t.Fatalf("B's owner reading its image: %v %q", err, got)
	}

	// Deleting B's snapshot drops its cached names at once.
	if err := store.DeleteSnapshot(context.Background(), acctB, idB); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(dirB, idB), filepath.Join(dirB, idB+metaSuffix)} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("stat %s after deleting it: %v; want it gone", p, err)
		}
	}

	// A reloaded account list shows at once: C appears (the zero Access is the
	// daemon's user, 0400), B disappears from the listing and from new lookups.
	mu.Lock()
	accounts = []AccountDir{{ID: acctC}}
	mu.Unlock()
	if top := names(t, root); !contains(top, acctC) || contains(top, acctB) {
		t.Fatalf("after the reload the root lists %v; want %s and not %s", top, acctC, acctB)
	}
	wantAttr(t, filepath.Join(root, acctC), syscall.S_IFDIR|0o500, uint32(os.Getuid()), uint32(os.Getgid()))
	wantAttr(t, filepath.Join(root, acctC, idC), syscall.S_IFREG|0o400, uint32(os.Getuid()), uint32(os.Getgid()))
	if _, err := os.Stat(filepath.Join(dirB, "snap-0123456789abcdef0")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a lookup in a removed account's directory: %v", err)
	}
}

// recorder keeps the records a logger gets.
type recorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec.Clone())
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

func (r *recorder) find(level slog.Level, msg string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range r.records {
		if rec.Level == level && strings.Contains(rec.Message, msg) {
			return true
		}
	}
	return false
}

// panicking is a Source whose listing panics.
type panicking struct{ Source }

func (panicking) Snapshots(string) []cas.Snapshot { panic("listing exploded") }

// A panic in a FUSE handler reaches the export's logger as an error (go-fuse would
// print it with the standard log package), and the caller gets EIO.
func TestMountPanicIsLoggedAsError(t *testing.T) {
	requireRootFUSE(t)
	store, cache := openStore(t)
	rec := &recorder{}
	m := mount(t, panicking{store}, cache, Options{Owner: acctDefault, Logger: slog.New(rec)})
	if _, err := os.ReadDir(m.Dir()); !errors.Is(err, syscall.EIO) {
		t.Fatalf("listing with a panicking source: %v, want EIO", err)
	}
	if !rec.find(slog.LevelError, "panic in FUSE handler") {
		t.Fatal("the panic was not logged as an error through the export's logger")
	}
}

// go-fuse's own messages (standard log package) arrive as warnings.
func TestGoFuseLogIsWarning(t *testing.T) {
	rec := &recorder{}
	l, _ := goFuseLogging(slog.New(rec))
	l.Printf("writer: Write/Writev failed, err: %v", syscall.ENOENT)
	if !rec.find(slog.LevelWarn, "Write/Writev failed") {
		t.Fatalf("records %v; want the message as a warning", rec.records)
	}
}
