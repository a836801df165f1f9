package ops

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ebsd/ebsd/cas"
	"github.com/ebsd/ebsd/cas/castest"
)

const owner = "111122223333"

// fixture is a real store and cache behind an ops server on a loopback port.
type fixture struct {
	t     *testing.T
	dir   string // the store's data directory
	store *cas.Store
	cache *cas.BlockCache
	ops   *Server
	srv   *httptest.Server
}

func newFixture(t *testing.T, adjust func(*Options)) *fixture {
	t.Helper()
	dir := t.TempDir()
	store, err := cas.Open(cas.Options{Dir: dir, ExpireInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	cache := cas.NewBlockCache(store, cas.BlockSize, 1) // one block: a second one evicts
	opts := Options{Store: store, Cache: cache, DataDir: dir}
	if adjust != nil {
		adjust(&opts)
	}
	f := &fixture{t: t, dir: dir, store: store, cache: cache, ops: New(opts)}
	f.srv = httptest.NewServer(f.ops) // loopback
	t.Cleanup(func() {
		f.srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := f.ops.Close(ctx); err != nil {
			t.Error(err)
		}
		cache.Close()
		if err := store.Close(); err != nil && !errors.Is(err, cas.ErrClosed) {
			t.Error(err)
		}
	})
	return f
}

func (f *fixture) get(path string) (int, string) {
	f.t.Helper()
	resp, err := f.srv.Client().Get(f.srv.URL + path)
	if err != nil {
		f.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(b)
}

func randomBlock(t *testing.T) []byte {
	b := make([]byte, cas.BlockSize)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// traffic writes, reads and collects through the real store and cache, and reports
// API requests and FUSE reads to the observer as the API and the mount would.
func (f *fixture) traffic() {
	t := f.t
	ctx := context.Background()
	snap, err := f.store.StartSnapshot(ctx, cas.StartParams{OwnerID: owner, VolumeSize: 1, TimeoutMinutes: 60})
	if err != nil {
		t.Fatal(err)
	}
	a, b, zero := randomBlock(t), randomBlock(t), make([]byte, cas.BlockSize)
	for i, data := range [][]byte{a, b, a, zero} {
		if err := f.store.PutBlock(ctx, owner, snap.ID, int64(i), data, cas.Sum(data)); err != nil {
			t.Fatal(err)
		}
		f.ops.ObserveRequest("PutSnapshotBlock", http.StatusCreated, time.Millisecond, cas.BlockSize, 0)
	}
	if _, err := f.store.CompleteSnapshot(ctx, owner, snap.ID, 4, nil); err != nil {
		t.Fatal(err)
	}
	f.ops.ObserveRequest("CompleteSnapshot", http.StatusAccepted, 3*time.Millisecond, 0, 25)
	for _, d := range []cas.Digest{cas.Sum(a), cas.Sum(a), cas.Sum(b)} { // miss, hit, miss + eviction
		if _, err := f.cache.Block(ctx, d); err != nil {
			t.Fatal(err)
		}
		f.ops.ObserveRequest("GetSnapshotBlock", http.StatusOK, time.Millisecond, 0, cas.BlockSize)
	}
	f.ops.ObserveRequest("GetSnapshotBlock", http.StatusNotFound, time.Millisecond, 0, 120)
	f.ops.ObserveFUSERead(1<<20, 200*time.Microsecond, false)
	f.ops.ObserveFUSERead(0, time.Millisecond, true)
	if _, err := f.store.GC(ctx, true); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.GC(ctx, false); err != nil {
		t.Fatal(err)
	}
	<-f.store.ContentsCounted()
}

func parse(t *testing.T, text string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parsing the exposition: %v\n%s", err, text)
	}
	return fams
}

// value returns the sample of a counter, gauge or untyped metric whose labels include
// the given name=value pairs, failing if there is none.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	fam, ok := fams[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range fam.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.Label {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no sample of %s with labels %v", name, labels)
	return 0
}

// After real traffic, /metrics says what happened: requests by operation and status,
// bytes, put outcomes, store sizes and ratios, cache, group commits, GC, FUSE reads and
// free space.
func TestMetricsCountTraffic(t *testing.T) {
	f := newFixture(t, nil)
	f.traffic()
	code, body := f.get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	fams := parse(t, body)
	want := func(name string, v float64, labels ...string) {
		t.Helper()
		if got := value(t, fams, name, labels...); got != v {
			t.Errorf("%s%v = %v, want %v", name, labels, got, v)
		}
	}
	want("ebsd_api_requests_total", 4, "operation", "PutSnapshotBlock", "code", "201")
	want("ebsd_api_requests_total", 3, "operation", "GetSnapshotBlock", "code", "200")
	want("ebsd_api_requests_total", 1, "operation", "GetSnapshotBlock", "code", "404")
	want("ebsd_api_request_duration_seconds", 4, "operation", "GetSnapshotBlock") // sample count
	want("ebsd_api_received_bytes_total", 4*cas.BlockSize, "operation", "PutSnapshotBlock")
	want("ebsd_api_sent_bytes_total", 3*cas.BlockSize+120, "operation", "GetSnapshotBlock")
	want("ebsd_block_puts_total", 2, "outcome", "stored")
	want("ebsd_block_puts_total", 1, "outcome", "deduplicated")
	want("ebsd_block_puts_total", 1, "outcome", "zero")
	want("ebsd_group_commit_batch_size", 4) // one commit per put: they came one at a time
	want("ebsd_store_contents_counted", 1)
	want("ebsd_store_unique_blocks", 2)
	want("ebsd_store_unique_bytes", 2*cas.BlockSize)
	want("ebsd_store_mapped_blocks", 4)
	want("ebsd_store_zero_mapped_blocks", 1)
	want("ebsd_store_written_bytes", 3*cas.BlockSize)
	want("ebsd_store_dedup_ratio", 1.5)
	want("ebsd_store_logical_bytes", 1<<30)
	st, err := f.store.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want("ebsd_store_stored_bytes", float64(st.StoredBytes))
	want("ebsd_store_compression_ratio", 2*cas.BlockSize/float64(st.StoredBytes))
	want("ebsd_snapshots", 1, "state", "completed")
	want("ebsd_snapshots", 0, "state", "pending")
	want("ebsd_cache_hits_total", 1)
	want("ebsd_cache_misses_total", 2)
	want("ebsd_cache_evictions_total", 1)
	want("ebsd_cache_reused_buffers_total", 0) // API reads keep their buffers: Block hands them out
	want("ebsd_cache_capacity_blocks", 1)
	want("ebsd_gc_runs_total", 1, "dry_run", "true", "result", "ok")
	want("ebsd_gc_runs_total", 1, "dry_run", "false", "result", "ok")
	want("ebsd_gc_runs_total", 0, "dry_run", "false", "result", "error")
	want("ebsd_gc_reclaimed_blocks_total", 0)
	want("ebsd_fuse_reads_total", 1, "result", "ok")
	want("ebsd_fuse_reads_total", 1, "result", "error")
	want("ebsd_fuse_read_bytes_total", 1<<20)
	want("ebsd_fuse_read_duration_seconds", 2)
	if free := value(t, fams, "ebsd_data_dir_free_bytes"); free <= 0 {
		t.Errorf("ebsd_data_dir_free_bytes = %v", free)
	}
	if ts := value(t, fams, "ebsd_gc_last_success_timestamp_seconds"); ts <= 0 {
		t.Errorf("ebsd_gc_last_success_timestamp_seconds = %v", ts)
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("no %s: the Go and process collectors are missing", name)
		}
	}
	// Nothing on this listener names a snapshot.
	if strings.Contains(body, "snap-") {
		t.Error("/metrics mentions a snapshot id")
	}
}

// promtool (Debian package prometheus) finds nothing wrong with the exposition after
// traffic. Without promtool the test skips, unless EBSD_REQUIRE_PROMTOOL=1 (CI), which
// makes a missing promtool a failure.
func TestMetricsPassPromtoolCheck(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("EBSD_REQUIRE_PROMTOOL") == "1" {
			t.Fatal("promtool not found and EBSD_REQUIRE_PROMTOOL=1: apt-get install prometheus")
		}
		t.Skip("promtool not found (apt-get install prometheus); EBSD_REQUIRE_PROMTOOL=1 makes this a failure")
	}
	f := newFixture(t, nil)
	f.traffic()
	_, body := f.get("/metrics")
	checkWithPromtool(t, promtool, body)
}

func checkWithPromtool(t *testing.T, promtool, exposition string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(exposition)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil || strings.TrimSpace(out.String()) != "" {
		t.Fatalf("promtool check metrics: %v\n%s", err, out.String())
	}
}

// /readyz is 200 when every part is fine and 503 naming the part that is not: writes
// below the free-space floor, a mount point that is not a FUSE mount, a closed store.
func TestReadyzNamesTheFailingPart(t *testing.T) {
	f := newFixture(t, nil)
	code, body := f.get("/readyz")
	if code != http.StatusOK || !strings.HasPrefix(body, "ready\n") || !strings.Contains(body, "store: ok") || !strings.Contains(body, "writes: ok") {
		t.Fatalf("healthy store: %d\n%s", code, body)
	}
	if strings.Contains(body, "mount:") {
		t.Fatalf("no mount configured, yet the mount is checked:\n%s", body)
	}

	full := newFixture(t, func(o *Options) { o.MinFreeBytes = 1 << 62 })
	code, body = full.get("/readyz")
	if code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "not ready: writes\n") ||
		!strings.Contains(body, "writes: FAIL:") || !strings.Contains(body, "below the floor") || !strings.Contains(body, "store: ok") {
		t.Fatalf("data directory below the floor: %d\n%s", code, body)
	}

	plain := t.TempDir() // a directory, not a FUSE mount: the export is not there
	unmounted := newFixture(t, func(o *Options) { o.MountDir = plain })
	code, body = unmounted.get("/readyz")
	if code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "not ready: mount\n") || !strings.Contains(body, "not a FUSE mount") {
		t.Fatalf("mount point without a mount: %d\n%s", code, body)
	}

	if err := f.store.Close(); err != nil {
		t.Fatal(err)
	}
	code, body = f.get("/readyz")
	if code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "not ready: store, writes\n") ||
		!strings.Contains(body, "store: FAIL: closed") || !strings.Contains(body, "writes: FAIL: the store is closed") {
		t.Fatalf("closed store: %d\n%s", code, body)
	}
	if code, _ := f.get("/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz with a closed store: %d; the process still answers", code)
	}
}

// A mount that never answers statfs fails the check at its deadline instead of
// hanging it; later checks wait on the same statfs rather than start more; closing
// waits for the one in flight.
func TestMountCheckHasADeadlineAndOneStatfsAtATime(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int32
	p := &mountProbe{dir: "/hung", statfs: func(string) error {
		calls.Add(1)
		<-release
		return nil
	}}
	for range 3 {
		err := p.check(context.Background(), time.Millisecond)
		if err == nil || !strings.Contains(err.Error(), "has not answered statfs") {
			t.Fatalf("check of a hung mount: %v", err)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d statfs calls in flight, want 1", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.close(ctx); err == nil {
		t.Fatal("close returned while the statfs is still blocked")
	}
	close(release)
	if err := p.close(context.Background()); err != nil {
		t.Fatalf("close after the statfs returned: %v", err)
	}
	if err := p.check(context.Background(), time.Hour); err == nil {
		t.Fatal("a check after close started a statfs")
	}
}

// /healthz answers; pprof is served from this mux, without cmdline (the command line
// may carry a secret key); an extra handler gets "/" and what nothing else claims,
// but never the ops endpoints.
func TestHealthzPprofAndExtraHandler(t *testing.T) {
	extra := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "status page at "+r.URL.Path) })
	f := newFixture(t, func(o *Options) { o.Extra = extra })
	for path, want := range map[string]string{
		"/healthz":                       "ok\n",
		"/":                              "status page at /",
		"/snapshots":                     "status page at /snapshots",
		"/debug/pprof/goroutine?debug=1": "goroutine profile:",
	} {
		code, body := f.get(path)
		if code != http.StatusOK || !strings.HasPrefix(body, want) {
			t.Errorf("GET %s: %d %q, want 200 starting %q", path, code, body[:min(len(body), 80)], want)
		}
	}
	if code, body := f.get("/metrics"); code != http.StatusOK || !strings.Contains(body, "ebsd_block_puts_total") {
		t.Errorf("/metrics with an extra handler: %d", code)
	}
	if code, body := f.get("/debug/pprof/cmdline"); code == http.StatusOK {
		t.Errorf("/debug/pprof/cmdline is served: %q", body)
	}
	if code, _ := f.get("/debug/pprof/"); code != http.StatusOK {
		t.Errorf("/debug/pprof/: %d", code)
	}
}

// Operation names cannot make series without end: past a bound they count as "other".
func TestOperationLabelIsBounded(t *testing.T) {
	f := newFixture(t, nil)
	for i := range maxOperations + 20 {
		f.ops.ObserveRequest(fmt.Sprintf("Op%d", i), http.StatusOK, time.Millisecond, 0, 0)
	}
	f.ops.ObserveRequest("bad\xffutf8", http.StatusOK, time.Millisecond, 0, 0)
	_, body := f.get("/metrics")
	fams := parse(t, body)
	if n := len(fams["ebsd_api_requests_total"].Metric); n != maxOperations+1 {
		t.Fatalf("%d request series, want %d named and one other", n, maxOperations)
	}
	if got := value(t, fams, "ebsd_api_requests_total", "operation", "other"); got != 21 {
		t.Fatalf("other = %v, want 21", got)
	}
}

// *cas.Store is what the daemon hands the ops server.
var _ Store = (*cas.Store)(nil)

// The scrub metrics follow a real store through a scrub that finds a rotten block, a
// cancelled scrub, a put that heals the block and a clean scrub; before any scrub the
// counters are at zero and the last-run gauges absent.
func TestScrubMetricsFollowScrubsAndHeals(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	scrape := func() map[string]*dto.MetricFamily {
		t.Helper()
		code, body := f.get("/metrics")
		if code != http.StatusOK {
			t.Fatalf("/metrics: %d\n%s", code, body)
		}
		return parse(t, body)
	}
	type want struct {
		runs, failures, blocks, bytes, corruptBlocks, corruptRecords, known, healed float64
	}
	check := func(step string, w want) map[string]*dto.MetricFamily {
		t.Helper()
		fams := scrape()
		for name, v := range map[string]float64{
			"ebsd_scrub_runs_total":                  w.runs,
			"ebsd_scrub_failures_total":              w.failures,
			"ebsd_scrub_blocks_checked_total":        w.blocks,
			"ebsd_scrub_bytes_checked_total":         w.bytes,
			"ebsd_scrub_corrupt_blocks_found_total":  w.corruptBlocks,
			"ebsd_scrub_corrupt_records_found_total": w.corruptRecords,
			"ebsd_corrupt_blocks_known":              w.known,
			"ebsd_blocks_healed_total":               w.healed,
		} {
			if got := value(t, fams, name); got != v {
				t.Errorf("%s: %s = %v, want %v", step, name, got, v)
			}
		}
		return fams
	}

	fams := check("before any scrub", want{})
	for _, name := range []string{"ebsd_scrub_last_duration_seconds", "ebsd_scrub_last_success_timestamp_seconds"} {
		if _, ok := fams[name]; ok {
			t.Errorf("%s is present before any scrub", name)
		}
	}

	snap, err := f.store.StartSnapshot(ctx, cas.StartParams{OwnerID: owner, VolumeSize: 1, TimeoutMinutes: 60})
	if err != nil {
		t.Fatal(err)
	}
	blocks := [][]byte{randomBlock(t), randomBlock(t), randomBlock(t)}
	for i, data := range blocks {
		if err := f.store.PutBlock(ctx, owner, snap.ID, int64(i), data, cas.Sum(data)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.store.CompleteSnapshot(ctx, owner, snap.ID, int64(len(blocks)), nil); err != nil {
		t.Fatal(err)
	}
	castest.RotInValueLog(t, f.dir, blocks[0])

	rep, err := f.store.Scrub(ctx, cas.ScrubOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.BlocksChecked != 3 || rep.CorruptBlockCount != 1 || rep.BytesChecked < 3*cas.BlockSize {
		t.Fatalf("scrub of the rotten store: %+v, want 3 blocks checked and 1 corrupt", rep)
	}
	found := f.store.ScrubHistory()[0]
	fams = check("after a scrub that found the rotten block", want{runs: 1, blocks: 3, bytes: float64(rep.BytesChecked), corruptBlocks: 1, known: 1})
	if got, w := value(t, fams, "ebsd_scrub_last_success_timestamp_seconds"), float64(found.Start.UnixNano())/1e9; got != w {
		t.Errorf("ebsd_scrub_last_success_timestamp_seconds = %v, want the scrub's start %v", got, w)
	}
	if got := value(t, fams, "ebsd_scrub_last_duration_seconds"); got != found.Duration.Seconds() || got <= 0 {
		t.Errorf("ebsd_scrub_last_duration_seconds = %v, want %v", got, found.Duration.Seconds())
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := f.store.Scrub(cancelled, cas.ScrubOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled scrub: %v", err)
	}
	failed := f.store.ScrubHistory()[0]
	fams = check("after a cancelled scrub", want{runs: 1, failures: 1, blocks: 3, bytes: float64(rep.BytesChecked), corruptBlocks: 1, known: 1})
	if got := value(t, fams, "ebsd_scrub_last_duration_seconds"); got != failed.Duration.Seconds() {
		t.Errorf("ebsd_scrub_last_duration_seconds = %v, want the cancelled run's %v", got, failed.Duration.Seconds())
	}
	if got, w := value(t, fams, "ebsd_scrub_last_success_timestamp_seconds"), float64(found.Start.UnixNano())/1e9; got != w {
		t.Errorf("a failed scrub moved ebsd_scrub_last_success_timestamp_seconds to %v, want %v", got, w)
	}

	// A put of the rotten block's bytes, to another snapshot, replaces the stored copy.
	heal, err := f.store.StartSnapshot(ctx, cas.StartParams{OwnerID: owner, VolumeSize: 1, TimeoutMinutes: 60})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.store.PutBlock(ctx, owner, heal.ID, 0, blocks[0], cas.Sum(blocks[0])); err != nil {
		t.Fatal(err)
	}
	check("after the healing put", want{runs: 1, failures: 1, blocks: 3, bytes: float64(rep.BytesChecked), corruptBlocks: 1, known: 0, healed: 1})

	clean, err := f.store.Scrub(ctx, cas.ScrubOptions{})
	if err != nil || clean.CorruptBlockCount != 0 || clean.BlocksChecked != 3 {
		t.Fatalf("scrub after the heal: %+v, %v", clean, err)
	}
	check("after a clean scrub", want{runs: 2, failures: 1, blocks: 6, bytes: float64(rep.BytesChecked + clean.BytesChecked), corruptBlocks: 1, known: 0, healed: 1})

	if promtool, err := exec.LookPath("promtool"); err == nil {
		_, body := f.get("/metrics")
		checkWithPromtool(t, promtool, body)
	}
}

// TestSettleMetricsFollowSettling: a settling pass shows in the settle series, since
// start and since the store was created, and a scrape scans nothing for it.
func TestSettleMetricsFollowSettling(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	snap, err := f.store.StartSnapshot(ctx, cas.StartParams{OwnerID: owner, VolumeSize: 1, TimeoutMinutes: 60})
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, cas.BlockSize)
	castest.CompressibleBlock(data, 42)
	if err := f.store.PutBlock(ctx, owner, snap.ID, 0, data, cas.Sum(data)); err != nil {
		t.Fatal(err)
	}
	_, body := f.get("/metrics")
	if v := value(t, parse(t, body), "ebsd_settle_blocks_total"); v != 0 {
		t.Fatalf("settled blocks before any pass: %v", v)
	}
	rep, err := f.store.Settle(ctx, cas.SettleOptions{Level: cas.RecompressBest})
	if err != nil || rep.BlocksSettled != 1 {
		t.Fatalf("settle pass: %+v, %v; want one block settled", rep, err)
	}
	_, body = f.get("/metrics")
	fams := parse(t, body)
	if v := value(t, fams, "ebsd_settle_blocks_total"); v != 1 {
		t.Fatalf("ebsd_settle_blocks_total %v, want 1", v)
	}
	if v := value(t, fams, "ebsd_settled_blocks"); v != 1 {
		t.Fatalf("ebsd_settled_blocks %v, want 1", v)
	}
	if saved, total := value(t, fams, "ebsd_settle_saved_bytes_total"), value(t, fams, "ebsd_settled_saved_bytes"); saved <= 0 || total != saved {
		t.Fatalf("saved bytes since start %v, since creation %v: want the same positive number", saved, total)
	}
}
