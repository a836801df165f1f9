package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

const region = "us-east-1"

// startTimeout bounds how long one daemon start may take to report its address (store
// open after a crash, stale mount detached, FUSE mounted).
const startTimeout = 90 * time.Second

// generation is one run of the daemon process, between a start and a kill. Clients
// belong to it: a new process listens on a new port, and a kept-alive connection to the
// dead one must never be reused.
type generation struct {
	n        int
	endpoint string
	ebs      *ebs.Client
	ec2      *ec2.Client
	http     *http.Client
	cmd      *exec.Cmd
	exited   chan struct{} // closed once the process is reaped
	exitErr  error         // set before exited is closed
}

// supervisor owns the daemon process: it starts it, kills it and tells workers which
// generation is serving. Workers never touch the process.
type supervisor struct {
	bin, dataDir, mount, logPath string
	akid, secret                 string
	log                          *slog.Logger

	mu     sync.Mutex
	cur    *generation   // nil while the daemon is down
	up     chan struct{} // closed when cur is set
	starts int
	kills  int
}

func newSupervisor(bin, dataDir, mount, logPath string, log *slog.Logger) (*supervisor, error) {
	// A fresh credential only this run knows, as restore-test.sh makes one.
	var k [8]byte
	var s [30]byte
	if _, err := rand.Read(k[:]); err != nil {
		return nil, fmt.Errorf("generating an access key: %w", err)
	}
	if _, err := rand.Read(s[:]); err != nil {
		return nil, fmt.Errorf("generating a secret: %w", err)
	}
	return &supervisor{
		bin: bin, dataDir: dataDir, mount: mount, logPath: logPath, log: log,
		akid:   "AKIA" + strings.ToUpper(hex.EncodeToString(k[:])),
		secret: base64.StdEncoding.EncodeToString(s[:]),
		up:     make(chan struct{}),
	}, nil
}

// start runs a new daemon process on the same data directory and mount point and waits
// for it to report its address through --addr-file (a pipe: it is written once the API
// serves and the FUSE export is mounted).
func (s *supervisor) start(ctx context.Context) error {
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("daemon log: %w", err)
	}
	defer logf.Close() // the child has its own copy
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("addr pipe: %w", err)
	}
	defer r.Close()
	fmt.Fprintf(logf, "--- soak: start %d at %s\n", s.starts+1, time.Now().UTC().Format(time.RFC3339Nano))
	// The run's context bounds the child: it is killed if the soak is cancelled.
	cmd := exec.CommandContext(ctx, s.bin,
		"--data-dir", s.dataDir, "--listen", "127.0.0.1:0", "--addr-file", "/dev/fd/3",
		"--mount", s.mount, "--metrics-listen", "", "--gc-interval", "0", "--rate-limit", "0",
		"--vlog-file-mb", "16", "--cache-mb", "64", "--log-level", "warn", "--shutdown-grace", "10s")
	cmd.Env = append(withoutEBSD(os.Environ()), "EBSD_ACCESS_KEY_ID="+s.akid, "EBSD_SECRET_ACCESS_KEY="+s.secret)
	cmd.ExtraFiles = []*os.File{w}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("starting %s: %w", s.bin, err)
	}
	w.Close() // only the child writes; EOF if it dies before reporting
	g := &generation{cmd: cmd, exited: make(chan struct{})}
	go func() { // owned by the supervisor: every kill and stop waits for exited
		g.exitErr = cmd.Wait()
		close(g.exited)
	}()
	if err := r.SetReadDeadline(time.Now().Add(startTimeout)); err != nil {
		return errors.Join(fmt.Errorf("addr pipe deadline: %w", err), s.reap(g))
	}
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil {
		return errors.Join(fmt.Errorf("the daemon did not report its address (see %s): %w", s.logPath, err), s.reap(g))
	}
	g.endpoint = "http://" + strings.TrimSpace(line)
	g.http = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	creds := credentials.NewStaticCredentialsProvider(s.akid, s.secret, "")
	// No SDK retries: the soak decides what a failure means (a kill, or a bug).
	g.ebs = ebs.New(ebs.Options{Region: region, BaseEndpoint: aws.String(g.endpoint), Credentials: creds, RetryMaxAttempts: 1, HTTPClient: g.http})
	g.ec2 = ec2.New(ec2.Options{Region: region, BaseEndpoint: aws.String(g.endpoint), Credentials: creds, RetryMaxAttempts: 1, HTTPClient: g.http})

	s.mu.Lock()
	s.starts++
	g.n = s.starts
	s.cur = g
	close(s.up)
	s.mu.Unlock()
	return nil
}

// reap kills a process that failed to start and waits for it.
func (s *supervisor) reap(g *generation) error {
	_ = g.cmd.Process.Kill()
	select {
	case <-g.exited:
		return nil
	case <-time.After(startTimeout):
		return fmt.Errorf("pid %d did not exit after SIGKILL", g.cmd.Process.Pid)
	}
}

// down marks the daemon as not serving, before it is signalled: an error a worker sees
// after this point may come from the kill, one before it cannot.
func (s *supervisor) down() *generation {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.cur
	s.cur = nil
	s.up = make(chan struct{})
	return g
}

// kill9 kills the serving daemon with SIGKILL and reaps it.
func (s *supervisor) kill9() error {
	g := s.down()
	if g == nil {
		return nil
	}
	s.mu.Lock()
	s.kills++
	s.mu.Unlock()
	if err := g.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill -9: %w", err)
	}
	select {
	case <-g.exited:
		return nil
	case <-time.After(startTimeout):
		return fmt.Errorf("pid %d still running %s after SIGKILL", g.cmd.Process.Pid, startTimeout)
	}
}

// stop stops the serving daemon with SIGTERM (a clean stop) and says how it exited.
func (s *supervisor) stop() error {
	g := s.down()
	if g == nil {
		return nil
	}
	if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("SIGTERM: %w", err)
	}
	select {
	case <-g.exited:
		if g.exitErr != nil {
			return fmt.Errorf("the daemon's clean stop failed (see %s): %w", s.logPath, g.exitErr)
		}
		return nil
	case <-time.After(2 * startTimeout):
		_ = g.cmd.Process.Kill()
		<-g.exited
		return fmt.Errorf("the daemon did not stop within %s of SIGTERM", 2*startTimeout)
	}
}

// current waits until a daemon serves and returns its generation.
func (s *supervisor) current(ctx context.Context) (*generation, error) {
	for {
		s.mu.Lock()
		g, up := s.cur, s.up
		s.mu.Unlock()
		if g != nil {
			return g, nil
		}
		select {
		case <-up:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// changedSince reports whether generation n has been marked down since: a failure seen
// now may be the kill's doing.
func (s *supervisor) changedSince(n int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur == nil || s.cur.n != n
}

func (s *supervisor) counts() (starts, kills int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.starts, s.kills
}

// withoutEBSD drops the caller's EBSD_* settings: the soak's daemon is configured by
// flags and its own credential only.
func withoutEBSD(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "EBSD_") {
			out = append(out, kv)
		}
	}
	return out
}
