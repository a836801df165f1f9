package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var ebsdBin string

// TestMain builds the real daemon once; the tests run it as a child process, as users
// do. The test binary also runs as ebsctl itself when asked, so a test can kill it.
func TestMain(m *testing.M) {
	if os.Getenv("EBSCTL_TEST_AS_CLI") == "1" {
		var args []string
		_ = json.Unmarshal([]byte(os.Getenv("EBSCTL_TEST_ARGS")), &args)
		os.Exit(run(context.Background(), args, os.Stdout, os.Stderr))
	}
	dir, err := os.MkdirTemp("", "ebsctl-test")
	if err != nil {
		panic(err)
	}
	// Should anything ask the EC2 instance metadata service for credentials, it asks
	// this loopback trap, and the run fails: no request may leave this host.
	var imdsHits atomic.Int64
	trap := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		imdsHits.Add(1)
		http.Error(w, "no IMDS here", http.StatusForbidden)
	}))
	os.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", trap.URL)
	// Nothing of the caller's AWS setup may reach the tests: each test gives ebsctl the
	// credential of the daemon it starts, and no credential source may send a request.
	for _, v := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
		"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EBS", "AWS_ENDPOINT_URL_EC2", "AWS_CA_BUNDLE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"} {
		os.Unsetenv(v)
	}
	os.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "none"))
	os.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "none"))
	ebsdBin = filepath.Join(dir, "ebsd")
	if out, err := exec.Command("go", "build", "-o", ebsdBin, "../../daemon").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building ebsd: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	trap.Close()
	os.RemoveAll(dir)
	if n := imdsHits.Load(); n > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: ebsctl asked the EC2 instance metadata service %d times\n", n)
		code = 1
	}
	os.Exit(code)
}

type daemonProc struct {
	url       string
	accessKey string // the default account's credential, also in ebsctl's environment
	secretKey string
	cmd       *exec.Cmd
	done      chan error
	log       string // the daemon's stderr
}

// startDaemon runs the real daemon binary with a fresh credential for its default
// account, gives ebsctl the same one through the environment (AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY), and learns the address from --addr-file: the write end of a
// pipe as fd 3, read with a deadline, so nothing polls and nothing can hang.
func startDaemon(t *testing.T, extraArgs ...string) *daemonProc {
	t.Helper()
	d := &daemonProc{accessKey: "AKID" + strings.ToUpper(randomHex(t, 8)), secretKey: randomHex(t, 20),
		done: make(chan error, 1), log: filepath.Join(t.TempDir(), "ebsd.log")}
	scheme := "http"
	if slices.Contains(extraArgs, "--tls-cert") {
		scheme = "https"
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	logFile, err := os.Create(d.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	args := append([]string{"--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--gc-interval", "0",
		"--metrics-listen", "", "--addr-file", "/dev/fd/3"}, extraArgs...)
	cmd := exec.Command(ebsdBin, args...)
	cmd.Env = append(os.Environ(), "EBSD_ACCESS_KEY_ID="+d.accessKey, "EBSD_SECRET_ACCESS_KEY="+d.secretKey)
	cmd.ExtraFiles = []*os.File{w} // fd 3 in the child
	cmd.Stdout, cmd.Stderr = logFile, logFile
	err = cmd.Start()
	w.Close() // the child holds the write end now: its exit ends our read with EOF
	if err != nil {
		t.Fatal(err)
	}
	d.cmd = cmd
	go func() { d.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
			<-d.done
			t.Errorf("ebsd did not stop within a minute of SIGTERM")
		}
	})
	if err := r.SetReadDeadline(time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	addr, err := bufio.NewReader(r).ReadString('\n')
	if err != nil {
		logged, _ := os.ReadFile(d.log)
		t.Fatalf("ebsd wrote no address to --addr-file: %v\n%s", err, logged)
	}
	d.url = scheme + "://" + strings.TrimSpace(addr)
	t.Setenv("AWS_ACCESS_KEY_ID", d.accessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", d.secretKey)
	return d
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// ebsctl runs the command in this process and returns stdout and the exit status.
func ebsctl(t *testing.T, endpoint string, args ...string) (string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), append([]string{"--endpoint-url", endpoint, "--quiet"}, args...), &out, &errOut)
	if code != 0 {
		t.Logf("ebsctl %s: exit %d\n%s", strings.Join(args, " "), code, errOut.String())
	}
	return out.String(), code
}

func mustEbsctl(t *testing.T, endpoint string, args ...string) string {
	t.Helper()
	out, code := ebsctl(t, endpoint, args...)
	if code != 0 {
		t.Fatalf("ebsctl %s failed", strings.Join(args, " "))
	}
	return out
}

// makeImage writes a test image: random blocks, runs of zeros, and a partial last block.
func makeImage(t *testing.T, path string, blocks int, tail int) []byte {
	t.Helper()
	data := make([]byte, blocks*blockSize+tail)
	for i := 0; i < blocks; i++ {
		if i%4 == 3 {
			continue // zero block
		}
		_, _ = rand.Read(data[i*blockSize : i*blockSize+4096])
		copy(data[i*blockSize+4096:], bytes.Repeat([]byte(fmt.Sprintf("block %d ", i)), 1000))
	}
	_, _ = rand.Read(data[blocks*blockSize:])
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return data
}

func stats(t *testing.T, endpoint string) storeStats {
	t.Helper()
	var st storeStats
	if err := json.Unmarshal([]byte(mustEbsctl(t, endpoint, "--json", "stats")), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func firstLine(s string) string { return strings.SplitN(s, "\n", 2)[0] }

func TestUploadDownloadVerifyRoundTrip(t *testing.T) {
	d := startDaemon(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	data := makeImage(t, img, 40, 1000)
	out := mustEbsctl(t, d.url, "upload", "--wait", "--description", "round trip", "--tags", "env=test,team=storage", "--state-dir", dir, img)
	id := firstLine(out)
	if !strings.HasPrefix(id, "snap-") || !strings.Contains(out, "completed") {
		t.Fatalf("upload printed:\n%s", out)
	}
	if st := stats(t, d.url); st.MappedBlocks != 31 { // 30 data blocks + the partial one; zeros skipped
		t.Fatalf("daemon holds %d blocks, want 31", st.MappedBlocks)
	}
	restored := filepath.Join(dir, "restored.img")
	mustEbsctl(t, d.url, "download", id, restored)
	got, err := os.ReadFile(restored)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1<<30 || !bytes.Equal(got[:len(data)], data) || !isZeroSlice(got[len(data):]) {
		t.Fatal("downloaded image differs")
	}
	var st syscall.Stat_t
	if err := syscall.Stat(restored, &st); err != nil || st.Blocks*512 > 64<<20 {
		t.Fatalf("download is not sparse: %d bytes allocated", st.Blocks*512)
	}
	if out := mustEbsctl(t, d.url, "verify", id, img); !strings.HasPrefix(out, "identical") {
		t.Fatalf("verify: %s", out)
	}
	// A changed byte is found, with its offset, and the exit status says so.
	data[17*blockSize+123] ^= 0xff
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := ebsctl(t, d.url, "verify", id, img)
	if code == 0 || !strings.Contains(out, fmt.Sprint(17*blockSize+123)) {
		t.Fatalf("verify of a changed image: exit %d\n%s", code, out)
	}
	// ls, describe, diff, rm, gc.
	if out := mustEbsctl(t, d.url, "ls"); !strings.Contains(out, id) || !strings.Contains(out, "round trip") {
		t.Fatalf("ls:\n%s", out)
	}
	if out := mustEbsctl(t, d.url, "describe", id); !strings.Contains(out, "tag env=test") {
		t.Fatalf("describe:\n%s", out)
	}
	mustEbsctl(t, d.url, "rm", id)
	if out := mustEbsctl(t, d.url, "--json", "gc"); !strings.Contains(out, `"blocksReclaimed":31`) {
		t.Fatalf("gc: %s", out)
	}
}

func isZeroSlice(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// An incremental upload with a base image sends only the blocks that changed, and diff
// reports exactly them; the same with sparse images, whose holes are not read (a block
// of data that became a hole must still be sent, as zeros).
func TestIncrementalUploadAndDiff(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write func(t *testing.T, path string, data []byte)
	}{
		{"dense", func(t *testing.T, path string, data []byte) {
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"sparse", writeSparse},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startDaemon(t)
			dir := t.TempDir()
			base := filepath.Join(dir, "base.img")
			data := makeImage(t, base, 32, 0)
			tc.write(t, base, data)
			parent := firstLine(mustEbsctl(t, d.url, "upload", "--state-dir", dir, base))
			mustEbsctl(t, d.url, "verify", parent, base)
			before := stats(t, d.url).MappedBlocks
			next := filepath.Join(dir, "next.img")
			data[5*blockSize] ^= 1                 // changed data
			clear(data[6*blockSize : 7*blockSize]) // data that became zeros
			data[7*blockSize+10] = 9               // a zero block that got data
			copy(data[20*blockSize:], []byte("x")) // another change
			tc.write(t, next, data)
			out := mustEbsctl(t, d.url, "--json", "upload", "--parent", parent, "--base-image", base, "--state-dir", dir, next)
			var res uploadResult
			if err := json.Unmarshal([]byte(out), &res); err != nil {
				t.Fatal(err)
			}
			if res.Sent != 4 || res.SkippedSame != 28 || stats(t, d.url).MappedBlocks-before != 4 {
				t.Fatalf("incremental upload sent %d blocks and skipped %d (daemon got %d), want 4 and 28",
					res.Sent, res.SkippedSame, stats(t, d.url).MappedBlocks-before)
			}
			mustEbsctl(t, d.url, "verify", res.SnapshotID, next)
			var diff struct {
				ChangedBlocks int
				Ranges        []blockRange
			}
			if err := json.Unmarshal([]byte(mustEbsctl(t, d.url, "--json", "diff", parent, res.SnapshotID)), &diff); err != nil {
				t.Fatal(err)
			}
			if diff.ChangedBlocks != 4 || len(diff.Ranges) != 2 || diff.Ranges[0].First != 5 || diff.Ranges[0].Last != 7 {
				t.Fatalf("diff: %+v", diff)
			}
		})
	}
}

// An incremental upload of an image that ends before its parent's data does (a disk
// shrunk within the same volume) must make the child read zeros past the image's end:
// it sends zero blocks over the parent's data there, whether the base image or the
// parent's own block map tells where that data is.
func TestIncrementalUploadOfAShorterImage(t *testing.T) {
	d := startDaemon(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.img")
	data := makeImage(t, base, 40, 0)
	parent := firstLine(mustEbsctl(t, d.url, "upload", "--state-dir", dir, base))
	next := filepath.Join(dir, "next.img")
	short := append([]byte(nil), data[:20*blockSize]...)
	short[blockSize] ^= 1
	if err := os.WriteFile(next, short, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"--base-image", base}, nil} {
		upload := append([]string{"upload", "--parent", parent, "--state-dir", t.TempDir()}, args...)
		child := firstLine(mustEbsctl(t, d.url, append(upload, next)...))
		if out, code := ebsctl(t, d.url, "verify", child, next); code != 0 {
			t.Fatalf("upload %v of an image shorter than its parent's data: the child is not the image:\n%s", args, out)
		}
	}
}

// A pipe has no size, and a snapshot's volume size comes first: uploading one is
// refused (it became an empty snapshot, reported as completed), without waiting for a
// writer.
func TestUploadRefusesAPipe(t *testing.T) {
	d := startDaemon(t)
	fifo := filepath.Join(t.TempDir(), "image")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// Held open read-write, the pipe has a writer: an upload that opened it would not
	// wait for one (on Linux such an open never blocks), it would read it.
	held, err := os.OpenFile(fifo, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"--endpoint-url", d.url, "--quiet", "upload", "--state-dir", t.TempDir(), fifo}, &out, &errOut)
	if code == 0 || !strings.Contains(errOut.String(), "not a regular file or a block device") {
		t.Fatalf("upload of a pipe: exit %d, stdout %q, stderr %q", code, out.String(), errOut.String())
	}
	if st := stats(t, d.url); st.Snapshots != 0 {
		t.Fatalf("a refused upload left %d snapshots", st.Snapshots)
	}
}

// Killing ebsctl in the middle of an upload and running it again resumes the same
// snapshot: no duplicate, right content, only the missing blocks sent.
func TestUploadResumesAfterKill(t *testing.T) {
	d := startDaemon(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	makeImage(t, img, 400, 0) // 300 data blocks: long enough to kill in the middle
	args, _ := json.Marshal([]string{"--endpoint-url", d.url, "--quiet", "upload", "--workers", "1", "--state-dir", dir, img})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "EBSCTL_TEST_AS_CLI=1", "EBSCTL_TEST_ARGS="+string(args))
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill it once its resume state records some acknowledged blocks.
	recorded := 0
	deadline := time.Now().Add(30 * time.Second)
	for recorded < 20 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		recorded = ackedInState(t, dir)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	recorded = ackedInState(t, dir)
	first := stats(t, d.url).MappedBlocks
	if first >= 300 || recorded < 20 {
		t.Fatalf("could not kill the upload in the middle: %d blocks landed, %d recorded", first, recorded)
	}
	id := firstLine(out.String())
	outJSON := mustEbsctl(t, d.url, "--json", "upload", "--state-dir", dir, img)
	var res uploadResult
	if err := json.Unmarshal([]byte(outJSON), &res); err != nil {
		t.Fatal(err)
	}
	if res.SnapshotID != id || res.Status != "completed" || res.SentBefore != int64(recorded) || res.Sent+res.SentBefore != 300 {
		t.Fatalf("resumed %s (first run printed %q, %d blocks landed): %+v", res.SnapshotID, id, first, res)
	}
	if ls := mustEbsctl(t, d.url, "--json", "ls"); strings.Count(ls, "snapshotId") != 1 {
		t.Fatalf("more than one snapshot: %s", ls)
	}
	mustEbsctl(t, d.url, "verify", id, img)
}

// faultProxy sits in front of the daemon and answers some requests itself.
type faultProxy struct {
	attempts atomic.Int64
	mu       sync.Mutex
	plan     map[string][]int // path → statuses to answer before passing through
}

func (p *faultProxy) handler(target string) http.Handler {
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			p.attempts.Add(1)
		}
		p.mu.Lock()
		var status int
		if q := p.plan[r.URL.Path]; len(q) > 0 {
			status, p.plan[r.URL.Path] = q[0], q[1:]
		}
		p.mu.Unlock()
		switch status {
		case 0:
			rp.ServeHTTP(w, r)
			return
		case 429, 400:
			errType := map[int]string{429: "RequestThrottledException", 400: "ValidationException"}[status]
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header()["x-amzn-ErrorType"] = []string{errType}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(400)
			fmt.Fprintf(w, `{"__type":%q,"Message":"injected","Reason":"ACCOUNT_THROTTLED"}`, errType)
		default:
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header()["x-amzn-ErrorType"] = []string{"InternalServerException"}
			w.WriteHeader(status)
			fmt.Fprint(w, `{"__type":"InternalServerException","Message":"injected"}`)
		}
	})
}

func TestRetries(t *testing.T) {
	d := startDaemon(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	makeImage(t, img, 4, 0) // blocks 0, 1, 2 have data
	p := &faultProxy{plan: map[string][]int{}}
	srv := httptest.NewServer(p.handler(d.url))
	defer srv.Close()

	// 500, 503 and throttling are retried until the request goes through: the first two
	// attempts of each block get 503 then a throttle, block 1 a 500 before those.
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			p.mu.Lock()
			if _, seen := p.plan[r.URL.Path]; !seen {
				p.plan[r.URL.Path] = []int{503, 429}
				if strings.HasSuffix(r.URL.Path, "/blocks/1") {
					p.plan[r.URL.Path] = []int{500, 503, 429}
				}
			}
			p.mu.Unlock()
		}
		p.handler(d.url).ServeHTTP(w, r)
	})
	start := time.Now()
	out := mustEbsctl(t, srv.URL, "--json", "upload", "--state-dir", dir, img)
	var res uploadResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if res.Status != "completed" || p.attempts.Load() != 3+3+4 {
		t.Fatalf("upload through faults: %+v after %d PUT attempts (want 10) in %s", res, p.attempts.Load(), time.Since(start))
	}

	// A 400 is not retried: the upload fails at once with the server's message.
	img3 := filepath.Join(dir, "disk3.img")
	makeImage(t, img3, 4, 0)
	p.mu.Lock()
	p.plan = map[string][]int{}
	p.mu.Unlock()
	p.attempts.Store(0)
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			p.mu.Lock()
			p.plan[r.URL.Path] = []int{400}
			p.mu.Unlock()
		}
		p.handler(d.url).ServeHTTP(w, r)
	})
	var errOut bytes.Buffer
	code := run(context.Background(), []string{"--endpoint-url", srv.URL, "--quiet", "upload", "--workers", "1", "--state-dir", dir, img3}, io.Discard, &errOut)
	if code == 0 || p.attempts.Load() != 1 || !strings.Contains(errOut.String(), "injected") {
		t.Fatalf("upload against a 400: exit %d after %d PUT attempts: %s", code, p.attempts.Load(), errOut.String())
	}
}

// ackedInState counts the acknowledged blocks recorded in the one resume-state file.
func ackedInState(t *testing.T, dir string) int {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	if len(paths) != 1 {
		return 0
	}
	raw, err := os.ReadFile(paths[0])
	if err != nil {
		return 0
	}
	var st uploadState
	if json.Unmarshal(raw, &st) != nil {
		return 0
	}
	n := 0
	for _, b := range st.Acked {
		for ; b != 0; b &= b - 1 {
			n++
		}
	}
	return n
}

// The efficiency report counts zero blocks, dedup across images and the growth each
// image adds; the SVG is written.
func TestBenchSimulate(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.img")
	data := makeImage(t, base, 16, 0)                    // 12 data blocks, 4 zero
	copy(data[blockSize:2*blockSize], data[0:blockSize]) // block 1 duplicates block 0
	if err := os.WriteFile(base, data, 0o644); err != nil {
		t.Fatal(err)
	}
	next := filepath.Join(dir, "next.img")
	data[9*blockSize] ^= 1
	data[10*blockSize] ^= 1
	if err := os.WriteFile(next, data, 0o644); err != nil {
		t.Fatal(err)
	}
	svg := filepath.Join(dir, "report.svg")
	var rep efficiencyReport
	out := mustEbsctl(t, "", "--json", "bench", "--simulate", "--svg", svg, base, next)
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	b, n := rep.Rows[0], rep.Rows[1]
	if b.ZeroBlocks != 4 || b.WrittenBytes != 12*blockSize || b.NewUnique != 11*blockSize || n.NewUnique != 2*blockSize ||
		b.NewStored <= 0 || b.NewStored >= b.NewUnique || rep.Overall <= 1 {
		t.Fatalf("report: %+v", rep)
	}
	if raw, err := os.ReadFile(svg); err != nil || !strings.HasPrefix(string(raw), "<svg") || !strings.Contains(string(raw), "next.img") {
		t.Fatalf("svg: %v", err)
	}
	if table := mustEbsctl(t, "", "bench", "--simulate", base, next); !strings.Contains(table, "logical / stored") {
		t.Fatalf("table:\n%s", table)
	}
}

// bench against a daemon: the store's report, and --throughput timing a real round trip.
func TestBenchAgainstDaemon(t *testing.T) {
	d := startDaemon(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	makeImage(t, img, 8, 0)
	var rep efficiencyReport
	if err := json.Unmarshal([]byte(mustEbsctl(t, d.url, "--json", "bench", "--throughput", img)), &rep); err != nil {
		t.Fatal(err)
	}
	if r := rep.Rows[0]; r.UploadMBps <= 0 || r.ReadMBps <= 0 || r.WrittenBytes != 6*blockSize {
		t.Fatalf("throughput report: %+v", r)
	}
	if err := json.Unmarshal([]byte(mustEbsctl(t, d.url, "--json", "bench")), &rep); err != nil {
		t.Fatal(err)
	}
	if r := rep.Rows[0]; r.WrittenBytes != 6*blockSize || r.NewUnique != 6*blockSize || r.NewStored <= 0 {
		t.Fatalf("store report: %+v", r)
	}
}
