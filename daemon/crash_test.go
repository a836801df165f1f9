package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
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
		os.Exit(runMain(nil, os.Getenv, os.Stderr))
	}
	if os.Getenv("EBSD_TEST_HELPER") == "lseek" {
		os.Exit(lseekHelper(os.Stdout))
	}
	os.Exit(m.Run())
}

// childDaemon is the daemon running as a separate process.
type childDaemon struct {
	cmd  *exec.Cmd
	addr string
	log  *bytes.Buffer
	mu   *sync.Mutex
	done chan error
}

var listeningLine = regexp.MustCompile(`msg=listening addr=(\S+)`)

func startChild(t *testing.T, dataDir string, env ...string) *childDaemon {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "EBSD_TEST_RUN_AS_DAEMON=1", "EBSD_DATA_DIR="+dataDir, "EBSD_LISTEN=127.0.0.1:0", "EBSD_LOG_LEVEL=info")
	cmd.Env = append(cmd.Env, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &childDaemon{cmd: cmd, log: &bytes.Buffer{}, mu: &sync.Mutex{}, done: make(chan error, 1)}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			c.mu.Lock()
			c.log.WriteString(sc.Text() + "\n")
			c.mu.Unlock()
			if m := listeningLine.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		c.done <- cmd.Wait()
	}()
	select {
	case c.addr = <-addr:
	case err := <-c.done:
		t.Fatalf("daemon exited before listening: %v\n%s", err, c.logText())
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("daemon did not start listening:\n%s", c.logText())
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-c.done
		}
	})
	return c
}

func (c *childDaemon) logText() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.log.String()
}

func (c *childDaemon) client() *ebs.Client { return newEBSClient("http://"+c.addr, "us-east-1", 1) }

func (c *childDaemon) kill9(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-c.done
}

// terminate stops the daemon with SIGTERM and expects a clean exit.
func (c *childDaemon) terminate(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-c.done:
		if err != nil {
			t.Fatalf("daemon exit after SIGTERM: %v\n%s", err, c.logText())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("daemon did not stop on SIGTERM:\n%s", c.logText())
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
	<-child.done
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
