package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func mounted(t *testing.T, dir string) bool {
	t.Helper()
	raw, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(raw), " "+dir+" ")
}

// A daemon killed with -9 leaves a dead mount (ENOTCONN); the next one detaches it and
// mounts again. SIGTERM unmounts cleanly.
func TestFUSEStaleMountAfterKill9(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	t.Cleanup(func() { _ = syscall.Unmount(mnt, syscall.MNT_DETACH) })
	child := startChild(t, filepath.Join(dir, "data"), "EBSD_MOUNT="+mnt)
	id := writeSnapshot(t, child.client(), "", 1, map[int32][]byte{0: block(7)})
	if _, err := os.Stat(filepath.Join(mnt, id)); err != nil {
		t.Fatalf("image not visible: %v", err)
	}
	child.kill9(t)
	if _, err := os.ReadDir(mnt); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("after kill -9 the mount point gives %v, want ENOTCONN (a stale mount)", err)
	}

	child = startChild(t, filepath.Join(dir, "data"), "EBSD_MOUNT="+mnt)
	got, err := os.ReadFile(filepath.Join(mnt, id+".json"))
	if err != nil || !strings.Contains(string(got), id) {
		t.Fatalf("after restart over a stale mount: %v\n%s", err, child.logText())
	}
	if !strings.Contains(child.logText(), "detaching stale FUSE mount") {
		t.Fatalf("restart did not report the stale mount:\n%s", child.logText())
	}
	child.terminate(t)
	if mounted(t, mnt) {
		t.Fatal("mount still there after SIGTERM")
	}
}

// Two daemons cannot mount on one directory.
func TestFUSEMountPointInUse(t *testing.T) {
	td := newFUSEDaemon(t)
	cfg := td.cfg
	cfg.dataDir = t.TempDir()
	if _, err := start(cfg, td.d.log); err == nil || !strings.Contains(err.Error(), "already mounted by a running ebsd") {
		t.Fatalf("second daemon on %s: %v", cfg.mount, err)
	}
}
