package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/ebsd/ebsd/cas"
	"github.com/ebsd/ebsd/cas/castest"
)

// requireFUSE skips a FUSE test only where FUSE cannot work, and says so loudly;
// with EBSD_REQUIRE_FUSE=1 (CI) that is a failure instead.
func requireFUSE(t testing.TB, tools ...string) {
	t.Helper()
	var why string
	if f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0); err != nil {
		why = fmt.Sprintf("/dev/fuse is not usable: %v", err)
	} else {
		f.Close()
		if os.Geteuid() != 0 {
			if _, err := exec.LookPath("fusermount3"); err != nil {
				why = "not root and no fusermount3"
			}
		}
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil && why == "" {
			why = tool + " is not installed (make deps installs it)"
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

// newFUSEDaemon is a test daemon with its FUSE export mounted in a temp dir.
func newFUSEDaemon(t testing.TB, tools ...string) *testDaemon {
	t.Helper()
	requireFUSE(t, tools...)
	mnt := filepath.Join(t.TempDir(), "mnt")
	return newTestDaemon(t, func(c *config) { c.mount = mnt })
}

// cmdTimeout bounds every child process a FUSE test runs: a hung mount or a child that
// waits for a signal that never comes fails the test instead of hanging it.
const cmdTimeout = 5 * time.Minute

// command is exec.Command under cmdTimeout: the child is killed when it runs out, and
// Wait gives up on output pipes a grandchild still holds 10 s after that.
func command(t testing.TB, name string, args ...string) *exec.Cmd {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := command(t, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// makeTree writes a reproducible directory tree of text, binary, empty and nested files.
func makeTree(t testing.TB, dir string, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	for i := range 40 {
		sub := filepath.Join(dir, fmt.Sprintf("d%d", i%5), fmt.Sprintf("e%d", i%3))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		size := rng.IntN(3 << 20)
		data := make([]byte, size)
		if i%2 == 0 {
			for j := 0; j < size; j += cas.BlockSize {
				blk := make([]byte, cas.BlockSize)
				castest.CompressibleBlock(blk, seed*1000+uint64(i*100+j/cas.BlockSize))
				copy(data[j:], blk)
			}
		} else {
			for j := range data {
				data[j] = byte(rng.Uint32())
			}
		}
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%d.bin", i)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "empty"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("d0/e0", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
}

// makeExt4 builds a 1 GiB sparse ext4 image holding the tree at src.
func makeExt4(t testing.TB, src, image string) {
	t.Helper()
	f, err := os.Create(image)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	run(t, "mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0,lazy_itable_init=0", "-d", src, image)
}

// uploadImage writes an image file as a snapshot through the SDK, skipping zero
// blocks; with a base image it sends only the blocks that differ from it.
func uploadImage(t testing.TB, c *ebs.Client, image, parent, base string) string {
	t.Helper()
	data, err := os.ReadFile(image)
	if err != nil {
		t.Fatal(err)
	}
	var old []byte
	if base != "" {
		if old, err = os.ReadFile(base); err != nil {
			t.Fatal(err)
		}
	}
	gib := (int64(len(data)) + 1<<30 - 1) >> 30
	in := &ebs.StartSnapshotInput{VolumeSize: aws.Int64(gib)}
	if parent != "" {
		in.ParentSnapshotId = aws.String(parent)
	}
	id := aws.ToString(startSnapshot(t, c, in).SnapshotId)
	zero := make([]byte, cas.BlockSize)
	sent := map[int32][]byte{}
	for i := 0; i*cas.BlockSize < len(data); i++ {
		b := data[i*cas.BlockSize : (i+1)*cas.BlockSize]
		if old != nil {
			if bytes.Equal(b, old[i*cas.BlockSize:(i+1)*cas.BlockSize]) {
				continue
			}
		} else if bytes.Equal(b, zero) {
			continue
		}
		sent[int32(i)] = b
	}
	work := make(chan int32)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range work {
				if err := putBlock(context.Background(), c, id, i, sent[i]); err != nil {
					t.Error(err)
				}
			}
		})
	}
	for i := range sent {
		work <- i
	}
	close(work)
	wg.Wait()
	if status, err := complete(context.Background(), c, id, sent); err != nil || status != types.StatusCompleted {
		t.Fatalf("complete: %v %v", status, err)
	}
	t.Logf("uploaded %s: %d blocks sent", id, len(sent))
	return id
}

// loopMount mounts an image read-only through a loop device until the test ends.
func loopMount(t *testing.T, image string) string {
	t.Helper()
	dir := t.TempDir()
	run(t, "mount", "-o", "loop,ro", image, dir)
	t.Cleanup(func() {
		// Cleanups cannot register cleanups: this child gets its own deadline.
		ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
		defer cancel()
		_ = exec.CommandContext(ctx, "umount", dir).Run()
	})
	return dir
}

func TestFUSEImageEndToEnd(t *testing.T) {
	td := newFUSEDaemon(t, "mkfs.ext4", "e2fsck", "cmp", "diff", "cp", "du", "dd")
	c := td.client()
	work := t.TempDir()
	src := filepath.Join(work, "src")
	makeTree(t, src, 1)
	image := filepath.Join(work, "base.img")
	makeExt4(t, src, image)

	mnt := td.cfg.mount
	pending := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId)
	id := uploadImage(t, c, image, "", "")
	names := run(t, "ls", mnt)
	if !strings.Contains(names, id+"\n") || !strings.Contains(names, id+".json") || strings.Contains(names, pending) {
		t.Fatalf("mount lists:\n%s\nwant %s and its .json, not pending %s", names, id, pending)
	}
	fuseImage := filepath.Join(mnt, id)

	// Byte-identical, read by cmp and by dd with 1 MiB requests.
	run(t, "cmp", image, fuseImage)
	copyPath := filepath.Join(work, "dd.img")
	run(t, "dd", "if="+fuseImage, "of="+copyPath, "bs=1M", "status=none")
	run(t, "cmp", image, copyPath)
	// A file system checker finds it clean.
	run(t, "e2fsck", "-fn", fuseImage)
	// The kernel mounts it through a loop device and sees the same files.
	lp := loopMount(t, fuseImage)
	run(t, "diff", "-r", "--no-dereference", "-x", "lost+found", src, lp)
	run(t, "umount", lp)
	// SEEK_DATA/SEEK_HOLE and st_blocks let cp make a sparse copy and du tell the truth.
	sparse := filepath.Join(work, "sparse.img")
	run(t, "cp", "--sparse=always", fuseImage, sparse)
	run(t, "cmp", image, sparse)
	fuseKB := duKB(t, fuseImage)
	sparseKB := duKB(t, sparse)
	if fuseKB <= 0 || fuseKB > 256<<10 || sparseKB > 256<<10 {
		t.Fatalf("du says %d KiB through FUSE and %d KiB for the sparse copy of a mostly empty 1 GiB image", fuseKB, sparseKB)
	}
	snap, err := td.store().Snapshot(context.Background(), defaultAccountID, id)
	if err != nil || fuseKB != snap.DataBlocks*cas.BlockSize/1024 {
		t.Fatalf("du %d KiB, snapshot has %d data blocks (%v)", fuseKB, snap.DataBlocks, err)
	}
	meta := run(t, "cat", fuseImage+".json")
	if !strings.Contains(meta, `"volumeSizeGiB": 1`) || !strings.Contains(meta, `"dataBlocks": `+strconv.FormatInt(snap.DataBlocks, 10)) {
		t.Fatalf("metadata file:\n%s", meta)
	}
	if err := command(t, "sh", "-c", "echo x > "+fuseImage).Run(); err == nil {
		t.Fatal("writing into an image succeeded")
	}

	// An incremental child: the base plus changes, made through a read-write loop mount.
	next := filepath.Join(work, "next.img")
	run(t, "cp", "--sparse=always", image, next)
	rw := t.TempDir()
	run(t, "mount", "-o", "loop", next, rw)
	newData := bytes.Repeat([]byte("new data\n"), 300000)
	expected := filepath.Join(work, "new-file")
	for _, p := range []string{filepath.Join(rw, "new-file"), expected} {
		if err := os.WriteFile(p, newData, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(filepath.Join(rw, "d1", "e1", "f1.bin")); err != nil {
		t.Fatal(err)
	}
	run(t, "umount", rw)
	child := uploadImage(t, c, next, id, image)
	run(t, "cmp", next, filepath.Join(mnt, child))
	run(t, "cmp", image, fuseImage) // the parent is unchanged
	run(t, "e2fsck", "-fn", filepath.Join(mnt, child))
	lp = loopMount(t, filepath.Join(mnt, child))
	run(t, "cmp", filepath.Join(lp, "new-file"), expected)
	if _, err := os.Stat(filepath.Join(lp, "d1", "e1", "f1.bin")); !os.IsNotExist(err) {
		t.Fatalf("deleted file still in the child: %v", err)
	}
}

func duKB(t testing.TB, path string) int64 {
	t.Helper()
	fields := strings.Fields(run(t, "du", "-k", path))
	n, err := strconv.ParseInt(fields[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// SEEK_DATA and SEEK_HOLE, asked by a child process: holes are never-written and
// zero blocks alike.
func TestFUSESeekDataHole(t *testing.T) {
	td := newFUSEDaemon(t)
	c := td.client()
	zero := make([]byte, cas.BlockSize)
	id := writeSnapshot(t, c, "", 1, map[int32][]byte{2: block(1), 3: block(2), 4: zero, 7: block(3)})
	path := filepath.Join(td.cfg.mount, id)
	const bs = cas.BlockSize
	for _, tc := range []struct {
		whence     int
		off, want  int64
		wantErrnum syscall.Errno
	}{
		{seekDataWhence, 0, 2 * bs, 0},
		{seekDataWhence, 2*bs + 10, 2*bs + 10, 0},
		{seekDataWhence, 4 * bs, 7 * bs, 0},
		{seekDataWhence, 8 * bs, -1, syscall.ENXIO},
		{seekHoleWhence, 0, 0, 0},
		{seekHoleWhence, 2 * bs, 4 * bs, 0},
		{seekHoleWhence, 7 * bs, 8 * bs, 0},
		{seekHoleWhence, 1<<30 - 1, 1<<30 - 1, 0},
	} {
		got, errno := childLseek(t, path, tc.off, tc.whence)
		if got != tc.want || errno != tc.wantErrnum {
			t.Errorf("lseek(%d, %d) = %d, %v; want %d, %v", tc.off, tc.whence, got, errno, tc.want, tc.wantErrnum)
		}
	}
}

const (
	seekDataWhence = 3
	seekHoleWhence = 4
)

// childLseek runs lseek in a child process (the test binary as a helper).
func childLseek(t *testing.T, path string, off int64, whence int) (int64, syscall.Errno) {
	t.Helper()
	cmd := command(t, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "EBSD_TEST_HELPER=lseek", "EBSD_LSEEK="+fmt.Sprintf("%s|%d|%d", path, off, whence))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("lseek helper: %v", err)
	}
	var pos int64
	var errno int
	if _, err := fmt.Sscanf(string(out), "%d %d", &pos, &errno); err != nil {
		t.Fatalf("lseek helper printed %q", out)
	}
	return pos, syscall.Errno(errno)
}

// lseekHelper is the child side of childLseek.
func lseekHelper(w io.Writer) int {
	parts := strings.Split(os.Getenv("EBSD_LSEEK"), "|")
	off, _ := strconv.ParseInt(parts[1], 10, 64)
	whence, _ := strconv.Atoi(parts[2])
	f, err := os.Open(parts[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer f.Close()
	pos, err := syscall.Seek(int(f.Fd()), off, whence)
	errno := 0
	if err != nil {
		errno = int(err.(syscall.Errno))
	}
	fmt.Fprintf(w, "%d %d\n", pos, errno)
	return 0
}

// Deleting a snapshot removes its image from the mount at once; a reader that has it
// open keeps reading the same bytes, even across a garbage collection.
func TestFUSEDeleteWhileOpen(t *testing.T) {
	td := newFUSEDaemon(t, "cmp", "sh")
	c := td.client()
	blocks := map[int32][]byte{0: block(1), 1: block(2), 5: block(3)}
	id := writeSnapshot(t, c, "", 1, blocks)
	work := t.TempDir()
	expected := filepath.Join(work, "expected")
	want := make([]byte, 1<<30)
	for i, b := range blocks {
		copy(want[int(i)*cas.BlockSize:], b)
	}
	if err := os.WriteFile(expected, want, 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(td.cfg.mount, id)
	run(t, "ls", img) // the kernel now caches the name
	// A child opens the image, says so on its stdout, waits for a line on its stdin,
	// then copies the image out. The pipes are the only synchronisation: the delete and
	// the collection below happen while it holds the file open, every time.
	out := filepath.Join(work, "out")
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	reader := exec.CommandContext(ctx, "sh", "-c", `exec 3<"$1" || exit 1; echo opened; read -r go || exit 2; cat <&3 >"$2"`, "sh", img, out)
	reader.WaitDelay = 10 * time.Second
	// Pipes as *os.File ends, so the parent's reads and writes can have deadlines.
	childIn, toChild, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer toChild.Close()
	fromChild, childOut, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer fromChild.Close()
	// stderr goes to a file, so reading it while the child runs is no data race.
	childErr, err := os.Create(filepath.Join(work, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer childErr.Close()
	stderr := func() string { b, _ := os.ReadFile(childErr.Name()); return string(b) }
	reader.Stdin, reader.Stdout, reader.Stderr = childIn, childOut, childErr
	if err := reader.Start(); err != nil {
		t.Fatal(err)
	}
	// The child holds its own copies: the parent sees EOF if it exits early, and the
	// child sees EOF if the parent goes away.
	childIn.Close()
	childOut.Close()
	if err := fromChild.SetReadDeadline(time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if line, err := bufioReader(fromChild).ReadString('\n'); line != "opened\n" {
		t.Fatalf("the reader did not open the image: %q, %v (stderr %q)", line, err, stderr())
	}
	e := newEC2Client(td.url())
	if _, err := e.DeleteSnapshot(context.Background(), &ec2.DeleteSnapshotInput{SnapshotId: aws.String(id)}); err != nil {
		t.Fatal(err)
	}
	if names := run(t, "ls", td.cfg.mount); strings.Contains(names, id) {
		t.Fatalf("deleted snapshot still listed:\n%s", names)
	}
	if err := command(t, "stat", img).Run(); err == nil {
		t.Fatal("deleted image still resolves by name")
	}
	if rep := gcNow(t, td, false); rep.BlocksReclaimed != 0 {
		t.Fatalf("a collection took the blocks of an image still open: %+v", rep)
	}
	// The go-ahead; the child's deadline (ctx) bounds Wait.
	if err := toChild.SetWriteDeadline(time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(toChild, "go\n"); err != nil {
		t.Fatalf("telling the reader to go on: %v (stderr %q)", err, stderr())
	}
	if err := toChild.Close(); err != nil {
		t.Fatal(err)
	}
	if err := reader.Wait(); err != nil {
		t.Fatalf("open reader: %v (stderr %q)", err, stderr())
	}
	run(t, "cmp", expected, out)
	// With the reader gone the next collection takes the blocks.
	if rep := gcNow(t, td, false); rep.BlocksReclaimed != 3 {
		t.Fatalf("after the reader closed: %+v", rep)
	}
}

// requireRoot skips a test that runs commands as other users unless it runs as root;
// with EBSD_REQUIRE_FUSE=1 (CI) that is a failure instead.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("EBSD_REQUIRE_FUSE") == "1" {
		t.Fatal("FUSE access test cannot run: not root (EBSD_REQUIRE_FUSE=1 makes this a failure)")
	}
	t.Skip("SKIPPING FUSE ACCESS TEST: not root, cannot run commands as other users. Set EBSD_REQUIRE_FUSE=1 to make this fail.")
}

// publicMountPoint is a mount point every user may reach, so a refusal a test sees
// comes from the mount, not from a private temp dir on the way to it.
func publicMountPoint(t *testing.T) string {
	t.Helper()
	base, err := os.MkdirTemp("", "ebsd-mnt-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) }) // registered before the daemon: runs after it stops
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(base, "mnt")
}

// asUser runs a command as uid/gid with the given supplementary groups (none: cleared)
// and returns its stdout, with its stderr in the error.
func asUser(t *testing.T, uid, gid int, groups []int, name string, args ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // only against a hung mount
	defer cancel()
	priv := []string{"--reuid=" + strconv.Itoa(uid), "--regid=" + strconv.Itoa(gid), "--clear-groups"}
	if len(groups) > 0 {
		g := make([]string, len(groups))
		for i, gid := range groups {
			g[i] = strconv.Itoa(gid)
		}
		priv[2] = "--groups=" + strings.Join(g, ",")
	}
	cmd := exec.CommandContext(ctx, "setpriv", append(append(priv, "--", name), args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s as uid %d: %w: %s", name, strings.Join(args, " "), uid, err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

func wantPermissionDenied(t *testing.T, out []byte, err error) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), "Permission denied") {
		t.Fatalf("got %v (output %q); want Permission denied", err, out)
	}
}

const (
	nobodyUID  = 65534
	nogroupGID = 65534
)

// defaultMountConfig sets the mount fields of c as the daemon's flags default them.
func defaultMountConfig(t *testing.T, c *config) {
	t.Helper()
	d, err := parseConfig(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c.mountAllowOther, c.mountUID, c.mountGID, c.mountMode = d.mountAllowOther, d.mountUID, d.mountGID, d.mountMode
}

// With the default mount options only the daemon's user opens the mount: user nobody
// can neither list it nor read an image or its tags, while root reads them.
func TestFUSEDefaultRefusesOtherUsers(t *testing.T) {
	requireFUSE(t, "setpriv", "ls", "head")
	requireRoot(t)
	mnt := publicMountPoint(t)
	td := newTestDaemon(t, func(c *config) {
		defaultMountConfig(t, c)
		c.mount = mnt
	})
	id := writeSnapshot(t, td.client(), "", 1, map[int32][]byte{0: block(7)})
	img := filepath.Join(mnt, id)

	if _, err := asUser(t, nobodyUID, nogroupGID, nil, "ls", filepath.Dir(mnt)); err != nil {
		t.Fatalf("nobody must reach the mount point's parent for the refusal to mean anything: %v", err)
	}
	out, err := asUser(t, nobodyUID, nogroupGID, nil, "ls", mnt)
	wantPermissionDenied(t, out, err)
	out, err = asUser(t, nobodyUID, nogroupGID, nil, "head", "-c", "16", img)
	wantPermissionDenied(t, out, err)
	out, err = asUser(t, nobodyUID, nogroupGID, nil, "cat", img+".json")
	wantPermissionDenied(t, out, err)

	got, err := asUser(t, 0, 0, nil, "head", "-c", strconv.Itoa(cas.BlockSize), img)
	if err != nil || !bytes.Equal(got, block(7)) {
		t.Fatalf("root reading the image: %v (%d bytes)", err, len(got))
	}
	if names := run(t, "ls", mnt); !strings.Contains(names, id) {
		t.Fatalf("root lists:\n%s", names)
	}
}

// --mount-allow-other with --mount-gid and --mount-mode 0440 lets that group's members
// read the default account's images; others still cannot. (Needs the daemon to pass
// mountAllowOther, mountUID/GID and mountMode to fusefs.Options.)
func TestFUSEAllowOtherGrantsAGroup(t *testing.T) {
	requireFUSE(t, "setpriv", "ls", "head")
	requireRoot(t)
	const grantGID, memberUID = 4242, 4243
	mnt := publicMountPoint(t)
	td := newTestDaemon(t, func(c *config) {
		defaultMountConfig(t, c)
		c.mount, c.mountAllowOther, c.mountGID, c.mountMode = mnt, true, grantGID, 0o440
	})
	id := writeSnapshot(t, td.client(), "", 1, map[int32][]byte{0: block(7)})
	img := filepath.Join(mnt, id)

	var st syscall.Stat_t
	if err := syscall.Stat(img, &st); err != nil || st.Mode != syscall.S_IFREG|0o440 || st.Uid != 0 || st.Gid != grantGID {
		t.Fatalf("image mode %o owner %d:%d (%v), want 0440 owned by 0:%d", st.Mode, st.Uid, st.Gid, err, grantGID)
	}
	got, err := asUser(t, memberUID, memberUID, []int{grantGID}, "head", "-c", strconv.Itoa(cas.BlockSize), img)
	if err != nil || !bytes.Equal(got, block(7)) {
		t.Fatalf("a member of the granted group reading the image: %v (%d bytes)", err, len(got))
	}
	if names, err := asUser(t, memberUID, memberUID, []int{grantGID}, "ls", mnt); err != nil || !strings.Contains(string(names), id) {
		t.Fatalf("a member listing the mount: %v\n%s", err, names)
	}
	out, err := asUser(t, nobodyUID, nogroupGID, nil, "ls", mnt)
	wantPermissionDenied(t, out, err)
	out, err = asUser(t, nobodyUID, nogroupGID, nil, "head", "-c", "16", img)
	wantPermissionDenied(t, out, err)
}

// A loop device over an image keeps the FUSE mount busy when the daemon stops: the
// unmount fails, the lazy detach leaves the connection serving the device, and the
// daemon must end it before it closes the store. It aborts the connection through the
// FUSE control file system, mounting that first where nothing has (a container), and
// stops cleanly; the device then reads nothing more from a store that is gone.
func TestFUSEStopWhileALoopDeviceHoldsAnImage(t *testing.T) {
	td := newFUSEDaemon(t, "losetup")
	id := writeSnapshot(t, td.client(), "", 1, map[int32][]byte{0: block(7)})
	dev := strings.TrimSpace(run(t, "losetup", "-r", "-f", "--show", filepath.Join(td.cfg.mount, id)))
	t.Cleanup(func() { _ = command(t, "losetup", "-d", dev).Run() })
	if got := run(t, "dd", "if="+dev, "bs=4096", "count=1", "status=none"); got != string(block(7)[:4096]) {
		t.Fatalf("the loop device reads %d bytes that are not the image's first page", len(got))
	}
	err := td.d.stop()
	td.d = nil
	if err != nil {
		t.Fatalf("stopping while a loop device holds an image: %v", err)
	}
}

// The metadata file beside an image follows the snapshot's tags, which CreateTags and
// DeleteTags change after completion: each open reads the record as it is then, even
// after the kernel has cached the file (a read through the page cache would have kept
// the old bytes for as long as it kept the inode).
func TestFUSEMetadataFollowsTags(t *testing.T) {
	td := newFUSEDaemon(t, "cat")
	id := writeSnapshot(t, td.client(), "", 1, map[int32][]byte{0: block(1)})
	meta := filepath.Join(td.cfg.mount, id+".json")
	if got := run(t, "cat", meta); strings.Contains(got, `"tags"`) {
		t.Fatalf("an untagged snapshot's metadata lists tags:\n%s", got)
	}
	ctx := context.Background()
	e := newEC2Client(td.url())
	if _, err := e.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: []ec2types.Tag{ec2Tag("purpose", "restore-test")}}); err != nil {
		t.Fatal(err)
	}
	if got := run(t, "cat", meta); !strings.Contains(got, `"key": "purpose"`) || !strings.Contains(got, `"value": "restore-test"`) {
		t.Fatalf("after CreateTags the metadata file says:\n%s", got)
	}
	if _, err := e.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{id}, Tags: []ec2types.Tag{{Key: aws.String("purpose")}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: []ec2types.Tag{ec2Tag("owner", "ops")}}); err != nil {
		t.Fatal(err)
	}
	if got := run(t, "cat", meta); strings.Contains(got, "purpose") || !strings.Contains(got, `"key": "owner"`) {
		t.Fatalf("after DeleteTags and CreateTags the metadata file says:\n%s", got)
	}
}
