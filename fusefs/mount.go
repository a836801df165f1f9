package fusefs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Options configure the export.
type Options struct {
	// MountPoint is the directory to mount on; created if missing.
	MountPoint string
	// Owner is the default account: its snapshots are at the root of the mount.
	Owner string
	// AllowOther lets users other than the daemon's open the mount; the kernel then
	// checks the owners and modes below (default_permissions).
	AllowOther bool
	// Default is who owns the default account's files, at the root of the mount.
	Default Access
	// Accounts lists the other accounts whose snapshots appear, each in a directory
	// named after its account id. Called on each directory listing and lookup, so a
	// reloaded credentials file shows at once. Nil: none.
	Accounts func() []AccountDir
	// Logger receives the export's logs and go-fuse's (warnings, and panics in a
	// handler as errors).
	Logger *slog.Logger
	// ReadAheadKB, when > 0, sets the kernel's readahead for the mount (bdi
	// read_ahead_kb); 0 leaves the kernel's default.
	ReadAheadKB int
	// MaxRequest, MaxBackground and NoKeepCache override the measured defaults below;
	// they exist so the benchmark can show what each one is worth.
	MaxRequest    int
	MaxBackground int
	NoKeepCache   bool
	// Reads, when set, is told about every read of an image file (metrics).
	Reads ReadObserver
}

// ReadObserver is told, for each read of an image file, the bytes it returned, how
// long ebsd took to answer and whether it failed (EIO, EINTR).
type ReadObserver interface {
	ObserveFUSERead(bytes int, d time.Duration, failed bool)
}

// export is the state every node shares.
type export struct {
	reads        ReadObserver // nil: reads are not observed
	src          Source
	blocks       Blocks
	owner        string // the default account
	def          Access // the default account's, never zero
	accounts     func() []AccountDir
	log          *slog.Logger
	cacheTimeout time.Duration
	keepCache    bool
	mounted      time.Time // the root directory's times
}

// Mount is a mounted export.
type Mount struct {
	root   *root
	dir    string
	dev    uint64 // the mount's device number; its minor names the FUSE connection
	server *fuse.Server
	log    *slog.Logger
}

// Mount options, chosen by measurement (BENCHMARKS.md):
const (
	// maxRequest is the largest read the kernel sends: 1 MiB, two blocks.
	maxRequest = 1 << 20
	// maxBackground lets the kernel keep many readahead requests in flight.
	maxBackground = 64
	// cacheTimeout: names and attributes of completed snapshots never change.
	cacheTimeout = time.Hour
)

// New mounts the export. A stale mount left on the directory by a crashed daemon
// (ENOTCONN) is detached first. When running as root the kernel is asked directly
// (no fusermount needed).
func New(src Source, blocks Blocks, opts Options) (*Mount, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir, err := filepath.Abs(opts.MountPoint)
	if err != nil {
		return nil, err
	}
	if err := detachStale(dir, log); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("fusefs: create mount point: %w", err)
	}
	if opts.MaxRequest == 0 {
		opts.MaxRequest = maxRequest
	}
	if opts.MaxBackground == 0 {
		opts.MaxBackground = maxBackground
	}
	exp := &export{reads: opts.Reads,
		src: src, blocks: blocks, owner: opts.Owner, def: opts.Default.orDaemon(), accounts: opts.Accounts,
		log: log, cacheTimeout: cacheTimeout, keepCache: !opts.NoKeepCache, mounted: time.Now(),
	}
	mountOpts := []string{"ro"}
	if opts.AllowOther {
		// Others may open the mount only as the owners and modes say.
		mountOpts = append(mountOpts, "default_permissions")
	}
	goFuseLog, onPanic := goFuseLogging(log)
	timeout, negative := cacheTimeout, time.Duration(0)
	root := &root{exp: exp}
	asRoot := os.Geteuid() == 0
	server, err := fs.Mount(dir, root, &fs.Options{
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &negative, // a snapshot must show up as soon as it completes
		// Mode 0 means what it says (only root), not go-fuse's 0644 fill-in.
		NullPermissions: true,
		Logger:          goFuseLog,
		MountOptions: fuse.MountOptions{
			FsName:           "ebsd",
			Name:             "ebsd",
			Options:          mountOpts,
			MaxWrite:         opts.MaxRequest,
			MaxReadAhead:     opts.MaxRequest,
			MaxBackground:    opts.MaxBackground,
			DirectMount:      asRoot,
			DirectMountFlags: syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV,
			AllowOther:       opts.AllowOther,
			DisableXAttrs:    true,
			Logger:           goFuseLog,
			PanicHandler:     onPanic,
			// Read results are in memory already; splicing a 1 MiB reply into a pipe
			// also fails against the default pipe-max-size and logs on every read.
			DisableSplice: true,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("fusefs: mount on %s: %w", dir, err)
	}
	m := &Mount{root: root, dir: dir, server: server, log: log}
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err == nil {
		m.dev = st.Dev
	}
	if opts.ReadAheadKB > 0 {
		if err := m.setReadAhead(opts.ReadAheadKB); err != nil {
			log.Warn("cannot set FUSE readahead", "kb", opts.ReadAheadKB, "err", err)
		}
	}
	log.Info("FUSE export mounted", "dir", dir)
	return m, nil
}

// detachStale lazily unmounts a dead FUSE mount left on dir by a crashed daemon. The
// kernel may still answer stat from its attribute cache, so the check is statfs, which
// always reaches the file system's server. A live ebsd mount there is an error: two
// daemons must not share a mount point.
func detachStale(dir string, log *slog.Logger) error {
	fstype, ok := mountedType(dir)
	if !ok {
		return nil
	}
	var st syscall.Statfs_t
	err := syscall.Statfs(dir, &st)
	switch {
	case errors.Is(err, syscall.ENOTCONN):
		log.Warn("detaching stale FUSE mount left by a previous daemon", "dir", dir)
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			return fmt.Errorf("fusefs: detach stale mount on %s: %w", dir, err)
		}
		return nil
	case err == nil && fstype == "fuse.ebsd":
		return fmt.Errorf("fusefs: %s is already mounted by a running ebsd", dir)
	}
	return nil
}

// mountedType reports whether dir is a mount point, and its file-system type.
func mountedType(dir string) (string, bool) {
	raw, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", false
	}
	var fstype string
	found := false
	for _, line := range strings.Split(string(raw), "\n") {
		// id parent major:minor root mountpoint options ... - fstype source superopts
		fields := strings.Fields(line)
		if len(fields) < 5 || unescapeMountPath(fields[4]) != dir {
			continue
		}
		for i, f := range fields {
			if f == "-" && i+1 < len(fields) {
				fstype, found = fields[i+1], true // the last one listed is on top
			}
		}
	}
	return fstype, found
}

// unescapeMountPath undoes the octal escapes (\040 for space…) of /proc mount paths.
func unescapeMountPath(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// setReadAhead writes the mount's backing-device readahead in KiB.
func (m *Mount) setReadAhead(kb int) error {
	path := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", devMajor(m.dev), devMinor(m.dev))
	return os.WriteFile(path, []byte(strconv.Itoa(kb)), 0o644)
}

// Forget makes the kernel drop a deleted snapshot's names at once, instead of when its
// entry timeout runs out. Open files keep reading. The deleting account is not known
// here, so the names are dropped from the root and from every account directory the
// kernel knows (one it does not know holds no names to drop).
func (m *Mount) Forget(id string) {
	dirs := []*fs.Inode{&m.root.Inode}
	for _, ch := range m.root.Children() {
		if _, ok := ch.Operations().(*accountDir); ok {
			dirs = append(dirs, ch)
		}
	}
	for _, dir := range dirs {
		for _, name := range []string{id, id + metaSuffix} {
			if errno := dir.NotifyEntry(name); errno != 0 && errno != syscall.ENOENT {
				m.log.Warn("FUSE entry invalidation failed", "name", name, "errno", errno)
			}
		}
	}
}

// Dir is the mount point.
func (m *Mount) Dir() string { return m.dir }

// Close unmounts. When the mount is busy (an image is open, a loop device holds it)
// it is detached lazily: it disappears from the namespace at once and the kernel lets
// go of it when the last user does.
func (m *Mount) Close(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- m.server.Unmount() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		m.log.Warn("FUSE unmount failed, detaching lazily", "dir", m.dir, "err", err)
		if derr := syscall.Unmount(m.dir, syscall.MNT_DETACH); derr != nil && !errors.Is(derr, syscall.EINVAL) {
			return fmt.Errorf("fusefs: unmount %s: %w: %w", m.dir, ErrStillServing, errors.Join(err, derr))
		}
	}
	served := make(chan struct{})
	go func() { m.server.Wait(); close(served) }()
	select {
	case <-served:
	case <-time.After(5 * time.Second):
		// Something (a loop device, an open image) still holds the detached mount:
		// abort the connection so no request reaches a store that is closing.
		m.log.Warn("aborting FUSE connection still in use", "dir", m.dir)
		if aerr := m.abort(); aerr != nil {
			return fmt.Errorf("fusefs: %s still in use and cannot abort it: %w: %w", m.dir, ErrStillServing, aerr)
		}
		<-served
	}
	m.log.Info("FUSE export unmounted", "dir", m.dir)
	return nil
}

// ErrStillServing says Close could not stop the FUSE server: requests may still come
// in, so whatever serves them must stay open.
var ErrStillServing = errors.New("the FUSE export may still be serving requests")

// fuseControl is where the kernel's FUSE control file system is mounted.
const fuseControl = "/sys/fs/fuse/connections"

// abort ends the FUSE connection through its control file. The control file system
// is mounted by systemd on most machines but not in most containers: where nothing
// has mounted it, abort mounts it (as root, which aborting needs anyway) and leaves
// it mounted, as systemd would.
func (m *Mount) abort() error {
	file := fmt.Sprintf("%s/%d/abort", fuseControl, devMinor(m.dev))
	err := os.WriteFile(file, []byte("1"), 0o200)
	if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if merr := syscall.Mount("fusectl", fuseControl, "fusectl", 0, ""); merr != nil && !errors.Is(merr, syscall.EBUSY) {
		return errors.Join(err, fmt.Errorf("mount the FUSE control file system on %s: %w", fuseControl, merr))
	}
	m.log.Info("mounted the FUSE control file system to abort the connection", "dir", fuseControl)
	return os.WriteFile(file, []byte("1"), 0o200)
}

func devMajor(dev uint64) uint64 { return (dev>>8)&0xfff | (dev>>32)&^0xfff }
func devMinor(dev uint64) uint64 { return dev&0xff | (dev>>12)&^0xff }
