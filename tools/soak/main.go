// Command soak runs a real bin/ebsd under mixed load for a while, killing it with
// SIGKILL every few seconds and restarting it on the same data directory, and checks at
// the end that everything the daemon acknowledged is still there, bit-exact, through the
// API and the FUSE export.
//
//	go run ./tools/soak --ebsd bin/ebsd --duration 10m
//
// Workers upload snapshots (new and incremental, zero and duplicate blocks), read them
// through GetSnapshotBlock and the FUSE files, delete them (EC2 DeleteSnapshot), collect
// garbage and scrub. A ledger keeps every acknowledged fact: completed snapshots with the
// SHA-256 of each block of their view, deletes, client tokens and the ids they answered.
// After a last clean restart every fact is checked; "lost: 0" or the list of losses is
// printed, and the exit status is non-zero when anything was lost or went wrong outside
// a kill.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

type options struct {
	ebsd      string
	duration  time.Duration
	killEvery time.Duration
	seed      uint64
	workDir   string
	keep      bool
	uploaders int
	readers   int
	maxLive   int
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.ebsd, "ebsd", "bin/ebsd", "the daemon binary to soak (make build)")
	fs.DurationVar(&o.duration, "duration", 10*time.Minute, "how long the load and the kills go on (the final check comes after)")
	fs.DurationVar(&o.killEvery, "kill-every", 4*time.Second, "mean time between kill -9s; each interval is drawn uniformly from half to one and a half times it (0: no kills)")
	fs.Uint64Var(&o.seed, "seed", 0, "seed of every random choice (0: from the clock; printed, so a run can be repeated)")
	fs.StringVar(&o.workDir, "work-dir", "", "directory for the data dir, mount point and daemon log (default: a new temp dir, removed after a clean run)")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory after a clean run")
	fs.IntVar(&o.uploaders, "uploaders", 3, "upload workers")
	fs.IntVar(&o.readers, "readers", 2, "read workers (API and FUSE)")
	fs.IntVar(&o.maxLive, "max-live", 40, "completed, undeleted snapshots at most (uploads wait for deletes beyond it)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if o.seed == 0 {
		o.seed = uint64(time.Now().UnixNano())
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ok, err := soakRun(ctx, o, stdout, log)
	if err != nil {
		fmt.Fprintln(stderr, "soak:", err)
		return 1
	}
	if !ok {
		return 1
	}
	return 0
}

func soakRun(ctx context.Context, o options, out io.Writer, log *slog.Logger) (ok bool, err error) {
	bin, err := filepath.Abs(o.ebsd)
	if err != nil {
		return false, err
	}
	if _, err := os.Stat(bin); err != nil {
		return false, fmt.Errorf("the daemon binary (make build): %w", err)
	}
	work := o.workDir
	if work == "" {
		if work, err = os.MkdirTemp("", "ebsd-soak-"); err != nil {
			return false, err
		}
	}
	mount := filepath.Join(work, "mnt")
	if err := os.MkdirAll(mount, 0o755); err != nil {
		return false, err
	}
	sup, err := newSupervisor(bin, filepath.Join(work, "data"), mount, filepath.Join(work, "ebsd.log"), log)
	if err != nil {
		return false, err
	}
	fmt.Fprintf(out, "soak: seed %d, duration %s, kill -9 every %s (±50%%), work dir %s\n", o.seed, o.duration, o.killEvery, work)
	defer func() {
		if ok && !o.keep && o.workDir == "" {
			_ = os.RemoveAll(work)
		} else {
			fmt.Fprintf(out, "soak: work dir kept: %s (daemon log: %s)\n", work, sup.logPath)
		}
	}()

	// The processes' context outlives the load: the final check needs a daemon. It ends
	// at a hard limit so that no child outlives a soak that went wrong.
	procCtx, cancelProcs := context.WithTimeout(ctx, o.duration+30*time.Minute)
	defer cancelProcs()
	defer func() {
		// Whatever happened, no daemon (or mount) stays behind.
		if serr := sup.stop(); serr != nil && err == nil {
			err = serr
		}
		_ = syscall.Unmount(mount, syscall.MNT_DETACH)
	}()
	if err := sup.start(procCtx); err != nil {
		return false, err
	}

	s := &soak{sup: sup, led: newLedger(), mount: mount, seed: o.seed, maxLive: o.maxLive,
		scrubState: scrubAvailability{unavailable: make(chan struct{})}}
	loadCtx, endLoad := context.WithTimeout(procCtx, o.duration)
	defer endLoad()
	began := time.Now()

	var wg sync.WaitGroup
	spawn := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	for i := 0; i < o.uploaders; i++ {
		spawn(func() { s.uploader(loadCtx, i) })
	}
	for i := 0; i < o.readers; i++ {
		spawn(func() { s.reader(loadCtx, i) })
	}
	spawn(func() { s.deleter(loadCtx) })
	spawn(func() { s.collector(loadCtx) })
	spawn(func() { s.scrubber(loadCtx) })
	spawn(func() { s.progress(loadCtx, out, began) })

	killErr := s.killer(loadCtx, procCtx, o)
	// The load has ended (or the killer failed): workers stop at their next step.
	endLoad()
	workersDone := make(chan struct{})
	go func() { wg.Wait(); close(workersDone) }()
	select {
	case <-workersDone:
	case <-time.After(2*opTimeout + time.Minute):
		return false, errors.New("workers did not stop within 3 minutes of the end of the load (a request or FUSE read hangs)")
	}
	if killErr != nil {
		return false, killErr
	}
	if ctx.Err() != nil {
		return false, fmt.Errorf("interrupted: %w", ctx.Err())
	}
	return s.finalCheck(procCtx, out, began, o)
}

// killer kills the daemon with SIGKILL at random moments and restarts it, until the
// load ends; the daemon is serving when it returns without error. A daemon that exits
// on its own is a failure of the run.
func (s *soak) killer(loadCtx, procCtx context.Context, o options) error {
	if o.killEvery <= 0 {
		<-loadCtx.Done()
		return nil
	}
	rng := rand.New(rand.NewPCG(o.seed, 1))
	for {
		g, err := s.sup.current(procCtx)
		if err != nil {
			return err
		}
		wait := o.killEvery/2 + time.Duration(rng.Int64N(int64(o.killEvery)))
		t := time.NewTimer(wait)
		select {
		case <-loadCtx.Done():
			t.Stop()
			return nil
		case <-g.exited:
			t.Stop()
			exit := g.exitErr
			if exit == nil {
				exit = errors.New("exit status 0")
			}
			return fmt.Errorf("the daemon (generation %d) exited by itself: %w (see %s)", g.n, exit, s.sup.logPath)
		case <-t.C:
		}
		if err := s.sup.kill9(); err != nil {
			return err
		}
		if err := s.sup.start(procCtx); err != nil {
			return fmt.Errorf("restart after kill -9: %w", err)
		}
	}
}

// progress prints a line every 15 seconds.
func (s *soak) progress(ctx context.Context, out io.Writer, began time.Time) {
	tick := time.NewTicker(15 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		starts, kills := s.sup.counts()
		l := s.led
		losses, unexpected := l.problems()
		l.mu.Lock()
		completed := len(l.completed)
		l.mu.Unlock()
		fmt.Fprintf(out, "%6s  kills %d (starts %d)  completed %d, live %d, deleted %d  puts %d (%.0f MiB)  reads api %d/fuse %d (interrupted %d)  gc %d  scrub %d  kill-window errors %d  unexpected %d  lost %d\n",
			time.Since(began).Round(time.Second), kills, starts, completed, l.live(), l.deletes.Load(),
			l.puts.Load(), float64(l.putBytes.Load())/(1<<20), l.apiSnapReads.Load(), l.fuseSnapReads.Load(), l.interruptedReads.Load(),
			l.gcRuns.Load(), l.scrubRuns.Load(), l.expected.Load(), len(unexpected), len(losses))
	}
}
