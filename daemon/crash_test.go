package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ebs/types"

	"github.com/ebsd/ebsd/cas"
)

// TestMain lets the test binary run as the daemon itself, so crash tests can kill a
// real daemon process without building one first.
func TestMain(m *testing.M) {
	if os.Getenv("EBSD_TEST_RUN_AS_DAEMON") == "1" {
		if stage := os.Getenv(gcStopEnv); stage != "" {
			os.Exit(runDaemonStoppingGC(cas.GCStage(stage)))
		}
		os.Exit(runMain(nil, os.Getenv, os.Stderr))
	}
	if os.Getenv("EBSD_TEST_HELPER") == "lseek" {
		os.Exit(lseekHelper(os.Stdout))
	}
	os.Exit(m.Run())
}

// gcStopEnv names the collection stage at which a child daemon stops (cas.GCStage).
const gcStopEnv = "EBSD_TEST_GC_STOP"

// Lines a child started with gcStopEnv writes on stderr.
var (
	gcHookInstalled = regexp.MustCompile(`msg="gc stage hook installed"`)
	gcStageLine     = regexp.MustCompile(`(?m)^gc-stage stage=(\S+) n=(\d+)$`)
	gcStoppedLine   = regexp.MustCompile(`(?m)^gc-stopped stage=(\S+) n=(\d+)$`)
)

// runDaemonStoppingGC is the daemon of runMain with a collection hook: it reports every
// stage a collection reaches on stderr and, at the first time it reaches stop, says so
// and blocks the collection until the process is killed. The parent kills it with -9
// exactly then, so the kill lands at that point of the collection, never before or after.
func runDaemonStoppingGC(stop cas.GCStage) int {
	cfg, err := parseConfig(nil, os.Getenv, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ebsd:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.logLevel}))
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	d, err := start(cfg, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	d.store.SetGCStageHook(func(stage cas.GCStage, n int) {
		fmt.Fprintf(os.Stderr, "gc-stage stage=%s n=%d\n", stage, n)
		if stage != stop {
			return
		}
		fmt.Fprintf(os.Stderr, "gc-stopped stage=%s n=%d\n", stage, n)
		// The parent holds our stdin open; it reads EOF only once the parent is gone,
		// so a child whose parent died does not block forever.
		_, _ = io.Copy(io.Discard, os.Stdin)
		fmt.Fprintln(os.Stderr, "parent gone while the collection was stopped")
		os.Exit(3)
	})
	log.Info("gc stage hook installed", "stop", stop)
	<-ctx.Done()
	if err := d.stop(); err != nil {
		log.Error("stopped with error", "err", err)
		return 1
	}
	return 0
}

// childDaemon is the daemon running as a separate process.
type childDaemon struct {
	cmd   *exec.Cmd
	addr  string
	stdin io.WriteCloser // held open for the child's life (see runDaemonStoppingGC)

	mu      sync.Mutex
	log     bytes.Buffer
	watches []lineWatch

	exited  chan struct{} // closed when the process has exited and its stderr is read
	waitErr error         // cmd.Wait's result; read after exited is closed
}

// lineWatch is a pattern awaited in the child's log.
type lineWatch struct {
	re *regexp.Regexp
	ch chan []string // gets the first matching line's submatches
}

// childDeadline bounds every wait on a child process.
const childDeadline = 60 * time.Second

func startChild(t *testing.T, dataDir string, env ...string) *childDaemon {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	// The daemon says where it listens on a pipe (--addr-file /dev/fd/3): nothing parses
	// its log for that.
	addrR, addrW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer addrR.Close()
	cmd.ExtraFiles = []*os.File{addrW}
	cmd.Env = append(os.Environ(), "EBSD_TEST_RUN_AS_DAEMON=1", "EBSD_DATA_DIR="+dataDir, "EBSD_LISTEN=127.0.0.1:0", "EBSD_LOG_LEVEL=info", "EBSD_ADDR_FILE=/dev/fd/3")
	cmd.Env = append(cmd.Env, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrW.Close() // the child has its own copy; EOF on addrR once the child is gone
	c := &childDaemon{cmd: cmd, stdin: stdin, exited: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			c.addLine(sc.Text())
		}
		_, _ = io.Copy(io.Discard, stderr)
		c.waitErr = cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-c.exited:
		default:
			_ = cmd.Process.Kill()
			<-c.exited // a killed process always exits
		}
	})
	addr := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(addrR).ReadString('\n')
		addr <- strings.TrimSpace(line)
	}()
	select {
	case a := <-addr:
		if a == "" {
			<-c.exited
			t.Fatalf("the daemon exited before listening: %v\n%s", c.waitErr, c.logText())
		}
		c.addr = a
	case <-time.After(childDeadline):
		_ = cmd.Process.Kill()
		t.Fatalf("waited %s for the daemon to listen:\n%s", childDeadline, c.logText())
	}
	return c
}

// addLine records a line of the child's stderr and hands it to the watches it matches.
func (c *childDaemon) addLine(line string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.log.WriteString(line + "\n")
	kept := c.watches[:0]
	for _, w := range c.watches {
		if m := w.re.FindStringSubmatch(line); m != nil {
			w.ch <- m
			continue
		}
		kept = append(kept, w)
	}
	c.watches = kept
}

// expect returns a channel that receives the submatches of the first line of the
// child's log, already written or still to come, that matches re. Registering before
// causing the line makes the wait free of races.
func (c *childDaemon) expect(re *regexp.Regexp) <-chan []string {
	ch := make(chan []string, 1)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, line := range strings.Split(c.log.String(), "\n") {
		if m := re.FindStringSubmatch(line); m != nil {
			ch <- m
			return ch
		}
	}
	c.watches = append(c.watches, lineWatch{re: re, ch: ch})
	return ch
}

// await waits for a line from expect; it fails if the child exits first or after
// childDeadline, with the child's log.
func (c *childDaemon) await(t *testing.T, ch <-chan []string, what string) []string {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-c.exited:
		t.Fatalf("daemon exited (%v) while waiting for %s:\n%s", c.waitErr, what, c.logText())
	case <-time.After(childDeadline):
		t.Fatalf("timed out waiting for %s:\n%s", what, c.logText())
	}
	return nil
}

func (c *childDaemon) logText() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.log.String()
}

func (c *childDaemon) client() *ebs.Client { return newEBSClient("http://"+c.addr, "us-east-1", 1) }

// wait waits for the child to exit and returns cmd.Wait's error.
func (c *childDaemon) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-c.exited:
		return c.waitErr
	case <-time.After(childDeadline):
		t.Fatalf("daemon did not exit:\n%s", c.logText())
		return nil
	}
}

func (c *childDaemon) kill9(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = c.wait(t) // "signal: killed"
}

// terminate stops the daemon with SIGTERM and expects a clean exit.
func (c *childDaemon) terminate(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := c.wait(t); err != nil {
		t.Fatalf("daemon exit after SIGTERM: %v\n%s", err, c.logText())
	}
}

// crashBlock is the content of block i in the crash test: mostly unique and
// compressible, some duplicates, some zeros.
func crashBlock(i int32) []byte {
	b := make([]byte, cas.BlockSize)
	switch {
	case i%10 == 9:
		return b
	case i%10 == 8:
		return block(0xDD)
	}
	copy(b, fmt.Sprintf("block %d of the crash test", i))
	for j := 4096; j < len(b); j += 4096 {
		b[j] = byte(i) ^ byte(j>>12)
	}
	return b
}

// An acknowledged PutSnapshotBlock and a client token survive kill -9 of the daemon.
func TestKill9MidUpload(t *testing.T) {
	dir := t.TempDir()
	const token, total, killAfter = "crash-token", 600, 200
	ctx := context.Background()
	child := startChild(t, dir)
	c := child.client()
	id := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), ClientToken: aws.String(token)}).SnapshotId)

	var mu sync.Mutex
	acked := map[int32]bool{}
	work := make(chan int32)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range work {
				if err := putBlock(ctx, c, id, i, crashBlock(i)); err != nil {
					continue // the daemon is gone; unacknowledged puts prove nothing
				}
				mu.Lock()
				acked[i] = true
				n := len(acked)
				mu.Unlock()
				if n == killAfter {
					_ = child.cmd.Process.Signal(syscall.SIGKILL) // waited for below
				}
			}
		})
	}
	for i := range int32(total) {
		work <- i
	}
	close(work)
	wg.Wait()
	_ = child.wait(t) // killed by the worker that saw the killAfter-th acknowledgement
	if len(acked) < killAfter {
		t.Fatalf("only %d puts acknowledged", len(acked))
	}
	t.Logf("%d of %d puts acknowledged before kill -9", len(acked), total)

	// Restarted, the token still names the same pending snapshot.
	child = startChild(t, dir)
	c = child.client()
	out := startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), ClientToken: aws.String(token)})
	if aws.ToString(out.SnapshotId) != id || out.Status != types.StatusPending {
		t.Fatalf("after kill -9 the token gives %s %s, want %s pending", aws.ToString(out.SnapshotId), out.Status, id)
	}
	child.terminate(t)

	// Every acknowledged block is in the store, at its index, with its content.
	store, err := cas.Open(cas.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for i := range acked {
		want := crashBlock(i)
		d, found, err := store.BlockDigest(ctx, defaultAccountID, id, int64(i))
		if err != nil || !found || d != cas.Sum(want) {
			t.Fatalf("acknowledged block %d: found=%v err=%v", i, found, err)
		}
		got, err := store.ReadBlock(nil, d)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("acknowledged block %d reads back wrong: %v", i, err)
		}
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}

	// The upload resumes and completes; the LINEAR aggregate proves the whole content.
	child = startChild(t, dir)
	c = child.client()
	all := map[int32][]byte{}
	for i := range int32(total) {
		all[i] = crashBlock(i)
		if !acked[i] {
			if err := putBlock(ctx, c, id, i, all[i]); err != nil {
				t.Fatal(err)
			}
		}
	}
	if status, err := complete(ctx, c, id, all); err != nil || status != types.StatusCompleted {
		t.Fatalf("complete after resume: %v %v", status, err)
	}
	// Completed means durable: another kill -9 right after the reply changes nothing.
	child.kill9(t)
	child = startChild(t, dir)
	out = startSnapshot(t, child.client(), &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), ClientToken: aws.String(token)})
	if out.Status != types.StatusCompleted {
		t.Fatalf("after kill -9 following completion: %s", out.Status)
	}
	child.terminate(t)
}
