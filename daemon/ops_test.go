package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// startTestOps serves the ops endpoints of a test daemon's store, cache and mount on a
// loopback port, and stops them when the test ends (before the daemon).
func startTestOps(t *testing.T, td *testDaemon) *opsListener {
	t.Helper()
	cfg := td.cfg
	cfg.metricsListen = "127.0.0.1:0"
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	o, err := startOps(cfg, td.store(), td.d.cache, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := o.stop(ctx); err != nil {
			t.Errorf("stopping ops: %v", err)
		}
	})
	return o
}

func opsGet(t *testing.T, o *opsListener, path string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get("http://" + o.addr() + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(b)
}

// After uploads through the AWS SDK, the daemon's ops listener reports them and its
// exposition passes `promtool check metrics` (skipped without promtool unless
// EBSD_REQUIRE_PROMTOOL=1, as in CI).
func TestOpsMetricsAfterUploadsPassPromtool(t *testing.T) {
	td := newTestDaemon(t)
	o := startTestOps(t, td)
	ctx := context.Background()
	c := td.client()
	snap := startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), Timeout: aws.Int32(60)})
	blocks := map[int32][]byte{0: block(1), 1: block(1), 2: block(0)}
	for i, b := range blocks {
		if err := putBlock(ctx, c, *snap.SnapshotId, i, b); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := complete(ctx, c, *snap.SnapshotId, blocks); err != nil {
		t.Fatal(err)
	}
	select {
	case <-td.store().ContentsCounted():
	case <-time.After(time.Minute): // a count that never ends fails here, not at the test timeout
		t.Fatal("the store's count of its contents at start did not end within a minute")
	}

	code, body := opsGet(t, o, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	for _, line := range []string{
		`ebsd_block_puts_total{outcome="stored"} 1`,
		`ebsd_block_puts_total{outcome="deduplicated"} 1`,
		`ebsd_block_puts_total{outcome="zero"} 1`,
		`ebsd_snapshots{state="completed"} 1`,
		`ebsd_store_unique_blocks 1`,
		`ebsd_store_mapped_blocks 3`,
		`ebsd_store_logical_bytes 1.073741824e+09`,
	} {
		if !strings.Contains(body, "\n"+line+"\n") {
			t.Errorf("/metrics lacks %q", line)
		}
	}
	if strings.Contains(body, *snap.SnapshotId) {
		t.Error("/metrics names a snapshot")
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("EBSD_REQUIRE_PROMTOOL") == "1" {
			t.Fatal("promtool not found and EBSD_REQUIRE_PROMTOOL=1: apt-get install prometheus")
		}
		t.Skip("promtool not found (apt-get install prometheus); EBSD_REQUIRE_PROMTOOL=1 makes this a failure")
	}
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(pctx, promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil || strings.TrimSpace(out.String()) != "" {
		t.Fatalf("promtool check metrics: %v\n%s", err, out.String())
	}
}

// /readyz checks the real FUSE mount: ready while it is mounted; once the daemon has
// stopped, not ready, naming the store, the mount and writes.
func TestOpsReadyzFollowsStoreAndMount(t *testing.T) {
	td := newFUSEDaemon(t)
	o := startTestOps(t, td)
	code, body := opsGet(t, o, "/readyz")
	if code != http.StatusOK || !strings.Contains(body, "mount: ok") || !strings.Contains(body, "writes: ok") {
		t.Fatalf("running daemon: %d\n%s", code, body)
	}
	if err := td.d.stop(); err != nil {
		t.Fatal(err)
	}
	td.d = nil
	code, body = opsGet(t, o, "/readyz")
	if code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "not ready: store, mount, writes\n") ||
		!strings.Contains(body, "not a FUSE mount") {
		t.Fatalf("stopped daemon: %d\n%s", code, body)
	}
	if code, _ := opsGet(t, o, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d", code)
	}
}

// Without --metrics-listen nothing listens, yet the observer exists for the API and
// the mount to report to.
func TestOpsWithoutListenAddressServesNothing(t *testing.T) {
	td := newTestDaemon(t)
	o, err := startOps(td.cfg, td.store(), td.d.cache, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if o.addr() != "" || o.observer() == nil {
		t.Fatalf("addr %q, observer %v", o.addr(), o.observer())
	}
	if err := o.stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// The daemon's own listener (--metrics-listen) counts the AWS API's requests by
// operation and status, the bytes they carried, and reads through the FUSE mount.
func TestOpsListenerCountsRequestsAndFUSEReads(t *testing.T) {
	requireFUSE(t)
	mnt := filepath.Join(t.TempDir(), "mnt")
	td := newTestDaemon(t, func(c *config) { c.mount = mnt; c.metricsListen = "127.0.0.1:0" })
	o := td.d.ops
	ctx := context.Background()
	c := td.client()
	snap := startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), Timeout: aws.Int32(60)})
	id := *snap.SnapshotId
	blocks := map[int32][]byte{0: block(1), 1: block(2), 2: block(0)}
	for i, b := range blocks {
		if err := putBlock(ctx, c, id, i, b); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := complete(ctx, c, id, blocks); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(mnt, id))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	if _, err := f.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	code, body := opsGet(t, o, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, line := range []string{
		`ebsd_api_requests_total{code="201",operation="StartSnapshot"} 1`,
		`ebsd_api_requests_total{code="201",operation="PutSnapshotBlock"} 3`,
		`ebsd_api_requests_total{code="202",operation="CompleteSnapshot"} 1`,
		`ebsd_api_received_bytes_total{operation="PutSnapshotBlock"} 1.572864e+06`,
		`ebsd_api_request_duration_seconds_count{operation="PutSnapshotBlock"} 3`,
	} {
		if !strings.Contains(body, "\n"+line+"\n") {
			t.Errorf("/metrics lacks %q", line)
		}
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var reads float64
	for _, m := range fams["ebsd_fuse_reads_total"].GetMetric() {
		if m.GetLabel()[0].GetValue() == "ok" {
			reads = m.GetCounter().GetValue()
		}
	}
	readBytes := fams["ebsd_fuse_read_bytes_total"].GetMetric()[0].GetCounter().GetValue()
	if reads < 1 || readBytes < 1<<20 {
		t.Errorf("FUSE reads %v, bytes %v: want at least one read and the 1 MiB read", reads, readBytes)
	}
	if code, body := opsGet(t, o, "/readyz"); code != http.StatusOK || !strings.Contains(body, "mount: ok") {
		t.Errorf("/readyz: %d\n%s", code, body)
	}
	// The status page is served at / of the same listener.
	if code, body := opsGet(t, o, "/"); code != http.StatusOK || !strings.Contains(body, id) {
		t.Errorf("status page: %d, snapshot %s not shown", code, id)
	}
}
