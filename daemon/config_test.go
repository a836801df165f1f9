package main

import (
	"bufio"
	"bytes"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ebsd/ebsd/cas"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// TestMalformedEnvironmentIsAnError: a malformed EBSD_* value stops the start with a
// message naming the variable, instead of silently becoming the default.
func TestMalformedEnvironmentIsAnError(t *testing.T) {
	for name, val := range map[string]string{
		"EBSD_CACHE_MB":          "lots",
		"EBSD_GC_INTERVAL":       "5",
		"EBSD_MOUNT_ALLOW_OTHER": "maybe",
		"EBSD_RATE_LIMIT":        "fast",
		"EBSD_VLOG_FILE_MB":      "1e3",
	} {
		_, err := parseConfig(nil, envOf(map[string]string{name: val}), &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Fatalf("%s=%q: %v, want an error naming the variable", name, val, err)
		}
	}
	// Values every parser accepts but the daemon does not.
	for name, val := range map[string]string{"EBSD_AUTH": "trust-me", "EBSD_MOUNT_MODE": "rw", "EBSD_ACCOUNT_ID": "12"} {
		if _, err := parseConfig(nil, envOf(map[string]string{name: val}), &bytes.Buffer{}); err == nil {
			t.Fatalf("%s=%q accepted", name, val)
		}
	}
}

// TestFlagWinsOverEnvironment: every flag comes from EBSD_<NAME> unless given.
func TestFlagWinsOverEnvironment(t *testing.T) {
	env := envOf(map[string]string{"EBSD_CACHE_MB": "7", "EBSD_METRICS_LISTEN": "127.0.0.1:9999", "EBSD_GC_INTERVAL": "5m"})
	c, err := parseConfig([]string{"--cache-mb", "9"}, env, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.cacheMB != 9 || c.metricsListen != "127.0.0.1:9999" || c.gcInterval != 5*time.Minute {
		t.Fatalf("cache %d metrics %q gc %s", c.cacheMB, c.metricsListen, c.gcInterval)
	}
}

// TestAddrFile: the daemon writes the address it listens on, whole, to a regular
// file, and straight into a FIFO a reader waits on.
func TestAddrFile(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "addr")
	td := newTestDaemon(t, func(c *config) { c.addrFile = regular })
	b, err := os.ReadFile(regular)
	if err != nil || strings.TrimSpace(string(b)) != td.d.addr() {
		t.Fatalf("addr file %q (%v), want %s", b, err, td.d.addr())
	}

	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		f, err := os.Open(fifo) // blocks until the daemon opens it for writing
		if err != nil {
			got <- "open: " + err.Error()
			return
		}
		defer f.Close()
		line, _ := bufio.NewReader(f).ReadString('\n')
		got <- strings.TrimSpace(line)
	}()
	td2 := newTestDaemon(t, func(c *config) { c.addrFile = fifo })
	select {
	case a := <-got:
		if a != td2.d.addr() {
			t.Fatalf("FIFO said %q, want %s", a, td2.d.addr())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("nothing arrived on the FIFO")
	}
}

// TestDefaultMetricsAddressInUse: a second daemon on the host still serves its API when
// the default ops address is taken, but an address the operator asked for must bind.
func TestDefaultMetricsAddressInUse(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	td := newTestDaemon(t, func(c *config) { c.metricsListen = taken.Addr().String() })
	if a := td.d.ops.addr(); a != "" {
		t.Fatalf("ops listener on %s, want none", a)
	}
	if r := td.raw("GET", "/ebsd/v1/stats", nil, nil, 0); r.status != 200 {
		t.Fatalf("API without the ops listener: %d", r.status)
	}
	cfg := td.cfg
	cfg.dataDir, cfg.metricsListen, cfg.metricsListenSet = t.TempDir(), taken.Addr().String(), true
	if d, err := start(cfg, slog.New(slog.DiscardHandler)); err == nil {
		_ = d.stop()
		t.Fatal("a daemon started without the ops address it was given")
	}
}

// TestSharedCatalogNeedsSharedBlocks: a PostgreSQL catalog without S3 blocks would
// name blocks only one disk holds, so it stops the start; with both it is accepted, and
// the password never appears in a message.
func TestSharedCatalogNeedsSharedBlocks(t *testing.T) {
	pg := "postgres://ebsd:sekrit@127.0.0.1:5432/ebsd"
	_, err := parseConfig(nil, envOf(map[string]string{"EBSD_CATALOG": pg}), &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "--blocks") || strings.Contains(err.Error(), "sekrit") {
		t.Fatalf("--catalog alone: %v, want a refusal asking for --blocks without the password", err)
	}
	_, err = parseConfig([]string{"--blocks", "s3://b/p"}, envOf(map[string]string{"EBSD_CATALOG": "mysql://x"}), &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "postgres://") {
		t.Fatalf("--catalog mysql://: %v, want a refusal", err)
	}
	c, err := parseConfig([]string{"--blocks", "s3://b/p", "--gc-grace", "3s"}, envOf(map[string]string{"EBSD_CATALOG": pg}), &bytes.Buffer{})
	if err != nil || c.catalog != pg || c.gcGrace != 3*time.Second {
		t.Fatalf("--catalog with --blocks: %+v %v", c, err)
	}
}

// --cache-mb sizes the on-disk cache when there is one (--cache-dir, for --blocks
// s3://…) and the memory cache otherwise, as it always has; a cache directory without
// remote blocks is refused, not ignored.
func TestCacheFlags(t *testing.T) {
	for _, tc := range []struct {
		args         []string
		memory, disk int
		err          string
	}{
		{args: nil, memory: 256},
		{args: []string{"--cache-mb", "9"}, memory: 9},
		{args: []string{"--memory-cache-mb", "7", "--cache-mb", "9"}, memory: 7},
		{args: []string{"--blocks", "s3://b/p", "--cache-dir", "/c"}, memory: 256, disk: 4096},
		{args: []string{"--blocks", "s3://b/p", "--cache-dir", "/c", "--cache-mb", "100", "--memory-cache-mb", "32"}, memory: 32, disk: 100},
		{args: []string{"--cache-dir", "/c"}, err: "is for --blocks"},
		{args: []string{"--cache-mb", "-1"}, err: "want sizes"},
	} {
		c, err := parseConfig(tc.args, envOf(nil), &bytes.Buffer{})
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%v: %v, want an error saying %q", tc.args, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("%v: %v", tc.args, err)
		case tc.err == "" && (c.cacheMB != tc.memory || c.diskCacheMB != tc.disk):
			t.Errorf("%v: memory %d MiB, disk %d MiB; want %d and %d", tc.args, c.cacheMB, c.diskCacheMB, tc.memory, tc.disk)
		}
	}
}

// New blocks are compressed with zstd unless settling will re-encode them anyway; then
// with s2, the cheapest to write. An explicit --compression always wins.
func TestCompressionFollowsRecompress(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want cas.Compression
	}{
		{args: nil, want: cas.CompressZstd},
		{args: []string{"--recompress", "off"}, want: cas.CompressZstd},
		{args: []string{"--recompress", "best"}, want: cas.CompressS2},
		{args: []string{"--recompress", "default"}, want: cas.CompressS2},
		{args: []string{"--recompress", "best", "--compression", "zstd"}, want: cas.CompressZstd},
		{args: []string{"--compression", "none"}, want: cas.CompressNone},
	} {
		c, err := parseConfig(tc.args, envOf(nil), &bytes.Buffer{})
		if err != nil || c.compression != tc.want {
			t.Errorf("%v: compression %q, %v; want %q", tc.args, c.compression, err, tc.want)
		}
	}
}
