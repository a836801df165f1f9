package ops

import (
	"context"
	"errors"
	"fmt"
	"github.com/ebsd/ebsd/cas"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"
)

// readyz answers 200 when ebsd can do its work and 503 when it cannot, naming the
// part that fails: the store (open), the mount (answers, when there is one) and writes
// (the store is open and the data directory has room).
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	parts := s.readiness(r.Context())
	var failing []string
	for _, p := range parts {
		if p.err != nil {
			failing = append(failing, p.name)
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	var b strings.Builder
	if len(failing) == 0 {
		b.WriteString("ready\n")
	} else {
		fmt.Fprintf(&b, "not ready: %s\n", strings.Join(failing, ", "))
	}
	for _, p := range parts {
		if p.err != nil {
			fmt.Fprintf(&b, "%s: FAIL: %v\n", p.name, p.err)
		} else {
			fmt.Fprintf(&b, "%s: ok (%s)\n", p.name, p.detail)
		}
	}
	if len(failing) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_, _ = w.Write([]byte(b.String()))
}

type readyPart struct {
	name   string
	detail string // what was found, when it is fine
	err    error  // what is wrong; nil when it is fine
}

func (s *Server) readiness(ctx context.Context) []readyPart {
	closed := s.opts.Store.Counters().Closed
	store := readyPart{name: "store", detail: "open"}
	if closed {
		store.err = errors.New("closed")
	}
	parts := []readyPart{store}
	if s.mount != nil {
		mount := readyPart{name: "mount", detail: s.mount.dir + " answers"}
		mount.err = s.mount.check(ctx, s.opts.MountTimeout)
		parts = append(parts, mount)
	}
	writes := readyPart{name: "writes", detail: "accepted"}
	switch {
	case closed:
		writes.err = errors.New("the store is closed")
	case s.spaceRule() != nil && s.opts.MinFreeBytes <= 0:
		// The store's own free-space rule (cas/space.go) decides what it accepts:
		// report that, so /readyz and a put never disagree.
		st, err := s.spaceRule().Space()
		switch {
		case err != nil:
			writes.err = fmt.Errorf("cannot tell the free space of %s: %w", st.Dir, err)
		case !st.Accepting:
			writes.err = fmt.Errorf("new data refused: %s free in %s, below the floor %s plus the reserve %s (held %s); delete snapshots and run GC, or free space",
				iec(uint64(max(st.Free, 0))), st.Dir, iec(uint64(max(st.Floor, 0))), iec(uint64(max(st.Reserve, 0))), iec(uint64(max(st.Held, 0))))
		default:
			writes.detail = fmt.Sprintf("%s free in %s, floor %s, reserve %s (held %s)",
				iec(uint64(max(st.Free, 0))), st.Dir, iec(uint64(max(st.Floor, 0))), iec(uint64(max(st.Reserve, 0))), iec(uint64(max(st.Held, 0))))
		}
	case s.opts.DataDir != "":
		free, _, err := diskSpace(s.opts.DataDir)
		switch {
		case err != nil:
			writes.err = fmt.Errorf("cannot tell the free space of %s: %w", s.opts.DataDir, err)
		case free < uint64(max(s.opts.MinFreeBytes, 0)):
			writes.err = fmt.Errorf("%s free in %s, below the floor of %s", iec(free), s.opts.DataDir, iec(uint64(s.opts.MinFreeBytes)))
		default:
			writes.detail = fmt.Sprintf("%s free in %s, floor %s", iec(free), s.opts.DataDir, iec(uint64(max(s.opts.MinFreeBytes, 0))))
		}
	}
	return append(parts, writes)
}

// iec spells a byte count for people.
func iec(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// mountProbe checks that the FUSE mount answers. statfs of the mount point always
// reaches the file system's server (the kernel caches no statfs answer), and the answer
// must come from a FUSE file system, not from the bare directory under a mount that is
// gone. A hung server makes statfs block past any deadline, so the call runs on a
// goroutine of its own: one at a time (later checks wait on the one in flight instead
// of piling up), owned by the probe, which Close waits for.
type mountProbe struct {
	dir    string
	statfs func(dir string) error // statfsFUSE; tests stand in a hung mount
	mu     sync.Mutex
	cur    *probe // in flight; nil when none
	closed bool   // no probe starts after Close
}

type probe struct {
	started time.Time
	done    chan struct{}
	err     error // set before done is closed
}

func (p *mountProbe) check(ctx context.Context, timeout time.Duration) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return errors.New("the ops server is closing")
	}
	pr := p.cur
	if pr == nil {
		pr = &probe{started: time.Now(), done: make(chan struct{})}
		p.cur = pr
		go func() {
			pr.err = p.statfs(p.dir)
			p.mu.Lock()
			p.cur = nil
			p.mu.Unlock()
			close(pr.done)
		}()
	}
	p.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-pr.done:
		return pr.err
	case <-t.C:
		return fmt.Errorf("%s has not answered statfs for %s", p.dir, time.Since(pr.started).Round(time.Millisecond))
	case <-ctx.Done():
		return fmt.Errorf("check of %s abandoned: %w", p.dir, ctx.Err())
	}
}

// close stops new checks and waits for the one in flight, if any.
func (p *mountProbe) close(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	pr := p.cur
	p.mu.Unlock()
	if pr == nil {
		return nil
	}
	select {
	case <-pr.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("ops: a statfs of %s is still waiting for the FUSE server: %w", p.dir, ctx.Err())
	}
}

// fuseSuperMagic is the f_type statfs reports for FUSE file systems.
const fuseSuperMagic = 0x65735546

func statfsFUSE(dir string) error {
	var st syscall.Statfs_t
	var err error
	for {
		// A FUSE request can come back EINTR when the runtime signals the thread.
		if err = syscall.Statfs(dir, &st); !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("statfs %s: %w", dir, err)
	}
	if st.Type != fuseSuperMagic {
		return fmt.Errorf("%s is not a FUSE mount (file system type %#x): the export is not mounted", dir, st.Type)
	}
	return nil
}

// spaceReporter is a store that applies a free-space rule of its own (*cas.Store).
type spaceReporter interface {
	Space() (cas.SpaceStatus, error)
}

// spaceRule returns the store's free-space rule, or nil when it has none (then
// Options.MinFreeBytes is the floor).
func (s *Server) spaceRule() spaceReporter {
	sp, _ := s.opts.Store.(spaceReporter)
	return sp
}
