package main

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
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

	"github.com/ebsd/ebsd/cas"
)

// smallFSSize is the size of the file systems the full-disk tests fill: small enough
// to fill in seconds, large enough for a few snapshots besides Badger's reserve.
const smallFSSize = 64 << 20

// runFor runs a command that must finish within a minute (mkfs, mount, umount).
func runFor(t testing.TB, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// unmountAtEnd unmounts dir when the test ends (after the daemon using it has stopped:
// cleanups run last-registered first, and this one is registered before the daemon's).
// A lazy unmount is the fallback, so no mount outlives the test even when it fails.
func unmountAtEnd(t testing.TB, dir string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if out, err := exec.CommandContext(ctx, "umount", dir).CombinedOutput(); err != nil {
			t.Logf("umount %s: %v %s; unmounting lazily", dir, err, out)
			_ = exec.CommandContext(ctx, "umount", "-l", dir).Run()
		}
	})
}

// requireMounting skips a test that cannot mount here, unless EBSD_REQUIRE_FUSE=1 (as
// in CI, which runs as root) makes that a failure: these tests must not go quiet there.
func requireMounting(t testing.TB, tools ...string) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "mounting a small file system needs root"
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil && why == "" {
			why = tool + " is not installed"
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("EBSD_REQUIRE_FUSE") == "1" {
		t.Fatalf("full-disk test cannot run: %s (EBSD_REQUIRE_FUSE=1 makes this a failure)", why)
	}
	t.Skip(why)
}

// loopExt4 mounts a fresh ext4 file system of size bytes, on a loop device over a file
// (mount -o loop frees the device at umount), and returns its mount point.
func loopExt4(t testing.TB, size int64) string {
	t.Helper()
	requireMounting(t, "mkfs.ext4", "mount", "umount")
	img := filepath.Join(t.TempDir(), "fs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	runFor(t, "mkfs.ext4", "-q", "-F", img)
	dir := t.TempDir()
	runFor(t, "mount", "-o", "loop", img, dir)
	unmountAtEnd(t, dir)
	return dir
}

// tmpfsOf mounts a tmpfs of size bytes and returns its mount point.
func tmpfsOf(t testing.TB, size int64) string {
	t.Helper()
	requireMounting(t, "mount", "umount")
	dir := t.TempDir()
	runFor(t, "mount", "-t", "tmpfs", "-o", "size="+strconv.FormatInt(size, 10), "tmpfs", dir)
	unmountAtEnd(t, dir)
	return dir
}

// freeBytes is what statfs says an unprivileged writer may still use on dir's file system.
func freeBytes(t testing.TB, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// fill writes a file of zeros in dir until the file system has no byte left, and
// returns its path: what another program filling the disk does to the daemon.
func fill(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: %v", dir, err)
			}
			break
		}
	}
	// Page-sized leftovers too, so nothing is left for anyone.
	for {
		if _, err := f.Write(chunk[:512]); err != nil {
			break
		}
	}
	if err := f.Sync(); err != nil && !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("syncing the filler: %v", err)
	}
	return path
}

// randomBlock is an incompressible block, distinct for every seed.
func randomBlock(seed uint64) []byte {
	var key [32]byte
	key[0], key[1] = byte(seed), byte(seed>>8)
	b := make([]byte, cas.BlockSize)
	rng := rand.NewChaCha8(key)
	_, _ = rng.Read(b)
	return b
}

// wantNoSpace fails unless err is the refusal of a write for lack of space: 402
// ServiceQuotaExceededException, DEPENDENCY_SERVICE_QUOTA_EXCEEDED, naming the data
// directory.
func wantNoSpace(t testing.TB, err error, dataDir string) {
	t.Helper()
	q := wantError[*types.ServiceQuotaExceededException](t, err)
	if q.Reason != types.ServiceQuotaExceededExceptionReasonDependencyServiceQuotaExceeded {
		t.Fatalf("reason %q, want DEPENDENCY_SERVICE_QUOTA_EXCEEDED", q.Reason)
	}
	if msg := aws.ToString(q.Message); !strings.Contains(msg, dataDir) || !strings.Contains(msg, "free") {
		t.Fatalf("message %q names neither the data directory %s nor its free space", msg, dataDir)
	}
}

type fullDiskRun struct {
	t       *testing.T
	td      *testDaemon
	ctx     context.Context
	seed    uint64
	kept    string // a completed snapshot that must stay readable throughout
	keptBlk map[int32][]byte
}

func (r *fullDiskRun) newSnapshot() string {
	out, err := r.td.client().StartSnapshot(r.ctx, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)})
	if err != nil {
		r.t.Fatalf("StartSnapshot: %v", err)
	}
	return aws.ToString(out.SnapshotId)
}

// upload puts n distinct incompressible blocks (all of them, or until refused when n
// is negative) and returns what was stored and the error that stopped it.
func (r *fullDiskRun) upload(id string, n int) (map[int32][]byte, error) {
	blocks := map[int32][]byte{}
	for i := int32(0); n < 0 || int(i) < n; i++ {
		if i >= 2048 {
			r.t.Fatalf("%d blocks (%d MiB) accepted by a %d MiB file system and never refused", i, i/2, smallFSSize>>20)
		}
		r.seed++
		b := randomBlock(r.seed)
		if err := putBlock(r.ctx, r.td.client(), id, i, b); err != nil {
			return blocks, err
		}
		blocks[i] = b
	}
	return blocks, nil
}

// uploadConcurrently has workers put distinct incompressible blocks into id at once
// (so puts share group commits and are in flight together) until the daemon refuses
// them; every error must be that refusal. It returns how many blocks were stored.
func (r *fullDiskRun) uploadConcurrently(id string, workers int) (stored int, refusal error) {
	r.t.Helper()
	var (
		mu   sync.Mutex
		next int32
		errs []error
		wg   sync.WaitGroup
	)
	base := r.seed
	r.seed += 1 << 12
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := r.td.client()
			for {
				mu.Lock()
				i := next
				next++
				stop := len(errs) > 0 || i >= 2048
				mu.Unlock()
				if stop {
					return
				}
				err := putBlock(r.ctx, c, id, i, randomBlock(base+uint64(i)))
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					stored++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) == 0 {
		r.t.Fatalf("%d blocks (%d MiB) accepted by a %d MiB file system and never refused", stored, stored/2, smallFSSize>>20)
	}
	for _, err := range errs {
		wantNoSpace(r.t, err, r.td.cfg.dataDir)
	}
	return stored, errs[0]
}

func (r *fullDiskRun) completed(id string, blocks map[int32][]byte) {
	if st, err := complete(r.ctx, r.td.client(), id, blocks); err != nil || st != types.StatusCompleted {
		r.t.Fatalf("completing %s: %s %v", id, st, err)
	}
}

// readsWork checks that the kept snapshot reads bit-exact through the API and the FUSE
// mount and that DescribeSnapshots lists it completed.
func (r *fullDiskRun) readsWork(when string) {
	r.t.Helper()
	got := readSnapshot(r.t, r.td.client(), r.kept)
	if len(got) != len(r.keptBlk) {
		r.t.Fatalf("%s: %d blocks read through the API, want %d", when, len(got), len(r.keptBlk))
	}
	for i, b := range r.keptBlk {
		if !bytes.Equal(got[i], b) {
			r.t.Fatalf("%s: block %d of %s differs through the API", when, i, r.kept)
		}
	}
	f, err := os.Open(filepath.Join(r.td.cfg.mount, r.kept))
	if err != nil {
		r.t.Fatalf("%s: opening the image in the mount: %v", when, err)
	}
	defer f.Close()
	buf := make([]byte, cas.BlockSize)
	for i, b := range r.keptBlk {
		if _, err := f.ReadAt(buf, int64(i)*cas.BlockSize); err != nil {
			r.t.Fatalf("%s: reading block %d through FUSE: %v", when, i, err)
		}
		if !bytes.Equal(buf, b) {
			r.t.Fatalf("%s: block %d of %s differs through FUSE", when, i, r.kept)
		}
	}
	out, err := newEC2Client(r.td.url()).DescribeSnapshots(r.ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{r.kept}})
	if err != nil || len(out.Snapshots) != 1 || out.Snapshots[0].State != "completed" {
		r.t.Fatalf("%s: DescribeSnapshots %s: %+v %v", when, r.kept, out, err)
	}
}

func (r *fullDiskRun) deleteSnapshot(id string) {
	r.t.Helper()
	if _, err := newEC2Client(r.td.url()).DeleteSnapshot(r.ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(id)}); err != nil {
		r.t.Fatalf("DeleteSnapshot %s on a full disk: %v", id, err)
	}
}

// testFullDisk fills the small file system under fsDir through the API and checks the
// rule of DESIGN.md "Free space": new data is refused with an AWS error before the file
// system is full, the daemon stays up, reads, listings, FUSE, deletes and GC go on,
// GC gives the space back, writes come back by themselves, and the daemon starts (and
// stops) on a file system filled by someone else.
func testFullDisk(t *testing.T, fsDir string) {
	requireFUSE(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dataDir := filepath.Join(fsDir, "data")
	mnt := filepath.Join(t.TempDir(), "mnt")
	// 2 MiB value-log files (the size derived for 64 MiB would be 4): a collection gives
	// space back a whole file at a time, so small files let deleting one snapshot of a
	// few MiB show up as free space. Blocks are stored raw: they are random anyway.
	td := newTestDaemon(t, func(c *config) {
		c.dataDir, c.mount, c.vlogFileSize, c.compression, c.gcInterval = dataDir, mnt, 2<<20, cas.CompressNone, 0
		c.metricsListen = "127.0.0.1:0"
	})
	r := &fullDiskRun{t: t, td: td, ctx: ctx}

	// A snapshot to keep, one to delete later, and a pending one filled until refused.
	r.kept = r.newSnapshot()
	var err error
	if r.keptBlk, err = r.upload(r.kept, 6); err != nil {
		t.Fatalf("uploading the kept snapshot: %v", err)
	}
	r.completed(r.kept, r.keptBlk)
	doomed := r.newSnapshot()
	doomedBlk, err := r.upload(doomed, 16)
	if err != nil {
		t.Fatalf("uploading the snapshot to delete: %v", err)
	}
	r.completed(doomed, doomedBlk)
	pending := r.newSnapshot()
	filled, err := r.uploadConcurrently(pending, 8)
	if filled == 0 {
		t.Fatal("the first blocks of the pending snapshot were refused: nothing filled")
	}
	t.Logf("refused after %d more blocks with %d bytes free: %v", filled, freeBytes(t, fsDir), err)
	// Refused again, and a new snapshot too: the refusal is a state, not one accident.
	_, err = r.upload(pending, 1)
	wantNoSpace(t, err, dataDir)
	_, err = td.client().StartSnapshot(ctx, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)})
	wantNoSpace(t, err, dataDir)
	r.readsWork("after writes were refused")
	// /readyz tells the operator the same thing the put was told.
	if code, body := opsGet(t, td.d.ops, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "new data refused") {
		t.Fatalf("/readyz on a full disk: %d\n%s", code, body)
	}

	// Deleting and collecting on the full disk gives space back...
	before := freeBytes(t, fsDir)
	r.deleteSnapshot(doomed)
	r.deleteSnapshot(pending)
	rep := gcNow(t, td, false)
	after := freeBytes(t, fsDir)
	if rep.BlocksReclaimed < int64(len(doomedBlk)) || after < before+8<<20 {
		t.Fatalf("GC on a full disk: %+v; free %d → %d bytes, want ≥ 8 MiB more", rep, before, after)
	}
	r.readsWork("after GC on a full disk")
	// ...and new data is accepted again without a restart.
	again := r.newSnapshot()
	if _, err := r.upload(again, 4); err != nil {
		t.Fatalf("writes after GC gave %d bytes back: %v", after-before, err)
	}

	// Someone else fills the disk while the daemon runs; the daemon stops (flushing its
	// memtable) and starts again on the full file system.
	filler := fill(t, fsDir)
	_, err = r.upload(again, 1)
	wantNoSpace(t, err, dataDir)
	td.restart()
	r.readsWork("after a restart on a full disk")
	_, err = td.client().StartSnapshot(ctx, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)})
	wantNoSpace(t, err, dataDir)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if _, err := r.upload(r.newSnapshot(), 2); err != nil {
		t.Fatalf("writes once the filler is gone, without a restart: %v", err)
	}

	// Filled while stopped: the daemon starts on the reserve it kept, then accepts
	// writes by itself once the space comes back.
	if err := td.d.stop(); err != nil {
		t.Fatalf("stopping: %v", err)
	}
	td.d = nil
	filler = fill(t, fsDir)
	if free := freeBytes(t, fsDir); free != 0 {
		t.Fatalf("filler left %d bytes free", free)
	}
	td.start()
	r.readsWork("after starting on a disk filled while stopped")
	_, err = td.client().StartSnapshot(ctx, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)})
	wantNoSpace(t, err, dataDir)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if _, err := r.upload(r.newSnapshot(), 2); err != nil {
		t.Fatalf("writes once the filler is gone, without a restart: %v", err)
	}
	r.readsWork("at the end")
}

func TestFullDiskExt4(t *testing.T)  { testFullDisk(t, loopExt4(t, smallFSSize)) }
func TestFullDiskTmpfs(t *testing.T) { testFullDisk(t, tmpfsOf(t, smallFSSize)) }
