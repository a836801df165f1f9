package statuspage

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ebsd/ebsd/cas"
)

// fixedClock is a clock tests move by hand.
type fixedClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fixedClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fixedClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func get(t *testing.T, h http.Handler, method, path string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), method, path, nil))
	return rec
}

// The server's own HTML shows everything checkStatusDOM asks for (snapshots, lineage,
// chart, collections, scrubs and the blocks known corrupt), with no browser.
func TestPageShowsSnapshotsLineageChartGCAndScrub(t *testing.T) {
	src := newFixture()
	srv := httptest.NewServer(New(src, Options{Now: func() time.Time { return fixtureNow }}))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("%s, Content-Type %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	checkStatusDOM(t, parseDOM(t, string(body)))
}

// The policy allows exactly the inline style sheet the page carries, and nothing runs:
// a description that looks like a script is shown as text.
func TestPageIsLockedDownByContentSecurityPolicy(t *testing.T) {
	rec := get(t, New(newFixture(), Options{Now: func() time.Time { return fixtureNow }}), http.MethodGet, "/")
	csp := rec.Header().Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe") || strings.Contains(csp, "script-src") || strings.Contains(csp, "http") {
		t.Errorf("CSP %q allows more than the style sheet", csp)
	}
	doc := parseDOM(t, rec.Body.String())
	styles := doc.all(tag("style"))
	if len(styles) != 1 {
		t.Fatalf("%d <style> elements, want 1", len(styles))
	}
	if hash := cspHash(styles[0].children[0].text); !strings.Contains(csp, "style-src '"+hash+"'") {
		t.Errorf("the inline style sheet hashes to %s, which CSP %q does not allow", hash, csp)
	}
	if !strings.Contains(rec.Body.String(), "restore test &lt;script&gt;") {
		t.Errorf("the description is not escaped")
	}
	for h, want := range map[string]string{"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"} {
		if got := rec.Header().Get(h); got != want {
			t.Errorf("%s: %q, want %q", h, got, want)
		}
	}
}

// Only GET and HEAD of "/" answer; the page is the listener's fallback, so any other
// path is 404.
func TestPageIsReadOnlyAndOnlyAtRoot(t *testing.T) {
	h := New(newFixture(), Options{Now: func() time.Time { return fixtureNow }})
	for _, c := range []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/", 200}, {http.MethodHead, "/", 200},
		{http.MethodPost, "/", 405}, {http.MethodDelete, "/", 405}, {http.MethodPut, "/", 405},
		{http.MethodGet, "/status/../admin", 404}, {http.MethodGet, "/favicon.ico", 404}, {http.MethodPost, "/gc", 404},
	} {
		rec := get(t, h, c.method, c.path)
		if rec.Code != c.status {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, rec.Code, c.status)
		}
		if c.status == 405 && rec.Header().Get("Allow") != "GET, HEAD" {
			t.Errorf("%s %s: Allow %q", c.method, c.path, rec.Header().Get("Allow"))
		}
	}
}

// A refresh storm costs one scan: the result is reused for the minimum age, and for ten
// times as long as a slow scan took.
func TestUsageScanIsCachedAgainstRefreshStorms(t *testing.T) {
	clock := &fixedClock{now: fixtureNow}
	src := newFixture()
	src.during = func(context.Context) { clock.Advance(3 * time.Second) } // a slow store
	h := New(src, Options{Now: clock.Now, UsageMaxAge: 15 * time.Second})
	for range 50 {
		if rec := get(t, h, http.MethodGet, "/"); rec.Code != 200 {
			t.Fatalf("status %d", rec.Code)
		}
	}
	if n := src.usageCalls(); n != 1 {
		t.Fatalf("50 loads scanned %d times, want 1", n)
	}
	clock.Advance(26 * time.Second) // 26 s after the scan ended: past 15 s, within 10 × 3 s
	get(t, h, http.MethodGet, "/")
	if n := src.usageCalls(); n != 1 {
		t.Fatalf("a 3 s scan was repeated %d times within 30 s", n)
	}
	clock.Advance(5 * time.Second)
	get(t, h, http.MethodGet, "/")
	if n := src.usageCalls(); n != 2 {
		t.Fatalf("%d scans after the result aged, want 2", n)
	}
}

// Requests arriving while a scan runs wait for it instead of starting their own.
func TestConcurrentLoadsShareOneScan(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFixture()
		release := make(chan struct{})
		src.during = func(context.Context) { <-release }
		h := New(src, Options{Now: func() time.Time { return fixtureNow }})
		var wg sync.WaitGroup
		codes := make([]int, 20)
		for i := range codes {
			wg.Go(func() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
				codes[i] = rec.Code
			})
		}
		synctest.Wait() // all 20 are blocked: one in the scan, the rest waiting for it
		if n := src.usageCalls(); n != 1 {
			t.Fatalf("%d scans running at once, want 1", n)
		}
		close(release)
		wg.Wait()
		if n := src.usageCalls(); n != 1 {
			t.Fatalf("%d scans for 20 concurrent loads, want 1", n)
		}
		for i, c := range codes {
			if c != 200 {
				t.Fatalf("request %d: %d", i, c)
			}
		}
	})
}

// A load that gives up while another runs the scan leaves without waiting for it.
func TestWaitingLoadHonoursItsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFixture()
		release := make(chan struct{})
		src.during = func(context.Context) { <-release }
		c := newUsageCache(src.Usage, func() time.Time { return fixtureNow }, time.Minute, slog.New(slog.DiscardHandler))
		go func() { _, _ = c.get(context.Background()) }()
		synctest.Wait()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { _, err := c.get(ctx); done <- err }()
		synctest.Wait()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("a cancelled wait returned %v", err)
		}
		close(release)
	})
}

// When the scan fails the page still shows every snapshot, says why the sizes are
// missing, and shows dashes instead of numbers; a later failure keeps the last good
// numbers and says they are stale.
func TestPageDegradesWhenUsageFails(t *testing.T) {
	clock := &fixedClock{now: fixtureNow}
	src := newFixture()
	src.usageErr = errScan
	h := New(src, Options{Now: clock.Now})
	body := get(t, h, http.MethodGet, "/").Body.String()
	doc := parseDOM(t, body)
	if s := doc.one(t, "#sizes-error", attr("p", "id", "sizes-error")).textContent(); !strings.Contains(s, errScan.Error()) {
		t.Errorf("sizes error says %q", s)
	}
	if n := doc.all(attr("svg", "id", "efficiency-chart")); len(n) != 0 {
		t.Errorf("a chart without numbers")
	}
	rows := doc.all(func(n *domNode) bool { return n.tag == "tr" && n.attrs["data-snapshot"] != "" })
	if len(rows) != 8 || !strings.HasSuffix(rows[0].textContent(), "— — —") {
		t.Errorf("%d rows, first %q", len(rows), rows[0].textContent())
	}

	// The store recovers, then fails again: the numbers stay, with the error.
	src.mu.Lock()
	src.usageErr = nil
	src.mu.Unlock()
	clock.Advance(time.Minute)
	if body := get(t, h, http.MethodGet, "/").Body.String(); strings.Contains(body, "sizes-error") || !strings.Contains(body, "efficiency-chart") {
		t.Fatalf("after recovery the page still shows the error or no chart")
	}
	src.mu.Lock()
	src.usageErr = errScan
	src.mu.Unlock()
	clock.Advance(time.Minute)
	doc = parseDOM(t, get(t, h, http.MethodGet, "/").Body.String())
	if len(doc.all(attr("p", "id", "sizes-error"))) != 1 || len(doc.all(attr("svg", "id", "efficiency-chart"))) != 1 {
		t.Errorf("a failed renewal should keep the last numbers and say so")
	}
}

// An empty store renders, saying there is nothing yet: no snapshot, no collection, no
// scrub, and no block known corrupt (no banner, nothing red).
func TestPageOfEmptyStore(t *testing.T) {
	rec := get(t, New(&fakeSource{}, Options{}), http.MethodGet, "/")
	body := rec.Body.String()
	if rec.Code != 200 || !strings.Contains(body, "No snapshots yet.") || !strings.Contains(body, "No collection has run") {
		t.Fatalf("%d: %s", rec.Code, body)
	}
	doc := parseDOM(t, body)
	if s := doc.one(t, "#scrub-none", attr("p", "id", "scrub-none")).textContent(); s != "No scrub has run since the daemon started." {
		t.Errorf("scrub section: %q", s)
	}
	if n := doc.all(attr("p", "id", "corrupt-alert")); len(n) != 0 {
		t.Errorf("a corrupt-block banner with no block known corrupt")
	}
	known := doc.one(t, "#corrupt-known", attr("p", "id", "corrupt-known"))
	if s := known.textContent(); hasClass(known, "bad") || s != "No block is known to be corrupt." {
		t.Errorf("corrupt-block notice (class %q): %q", known.attrs["class"], s)
	}
	card := doc.one(t, "#card-corrupt", attr("div", "id", "card-corrupt"))
	if s := card.textContent(); hasClass(card, "bad") || s != "Corrupt blocks 0 known now · no scrub since the daemon started" {
		t.Errorf("corrupt-blocks card (class %q): %q", card.attrs["class"], s)
	}
	if n := doc.all(func(n *domNode) bool { return hasClass(n, "bad") }); len(n) != 0 {
		t.Errorf("%d elements marked bad on an empty store", len(n))
	}
}

// Blocks are known corrupt before any scrub runs (a read found one, or the marks were
// kept from before a restart): the banner and the red card show, with what to do.
func TestCorruptBlocksShowBeforeAnyScrub(t *testing.T) {
	src := &fakeSource{scrubTotals: cas.ScrubTotals{CorruptBlocksKnown: 1}}
	doc := parseDOM(t, get(t, New(src, Options{}), http.MethodGet, "/").Body.String())
	if s := doc.one(t, "#corrupt-alert", attr("p", "id", "corrupt-alert")).textContent(); !strings.HasPrefix(s, "1 block known corrupt. Run "+healHint) {
		t.Errorf("banner: %q", s)
	}
	card := doc.one(t, "#card-corrupt", attr("div", "id", "card-corrupt"))
	if s := card.textContent(); !hasClass(card, "bad") || s != "Corrupt blocks 1 known now · no scrub since the daemon started" {
		t.Errorf("card (class %q): %q", card.attrs["class"], s)
	}
	known := doc.one(t, "#corrupt-known", attr("p", "id", "corrupt-known"))
	if s := known.textContent(); !hasClass(known, "bad") || !strings.HasPrefix(s, "1 block known corrupt (") || strings.Contains(s, "healed by puts") {
		t.Errorf("notice (class %q): %q", known.attrs["class"], s)
	}
	if len(doc.all(attr("p", "id", "scrub-none"))) != 1 || len(doc.all(attr("table", "id", "scrub-table"))) != 0 {
		t.Errorf("the scrub history is not empty")
	}
}
