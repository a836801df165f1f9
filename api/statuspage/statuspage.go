// Package statuspage serves ebsd's status page: every snapshot of every account with
// its sizes, the lineage trees, the store's efficiency (logical → written → unique →
// stored) as a chart, and the garbage-collection and scrub history.
//
// It is for the operator of the daemon, so it shows every account's metadata, and is
// meant for the operator-only metrics listener, never the API port. It is read-only
// (no forms, no actions) and shows no snapshot data. The page is rendered on the
// server, chart included, and carries no script at all: it reads the same with
// JavaScript off. Everything it needs is inline, and the Content-Security-Policy
// allows exactly that inline style sheet and nothing else.
package statuspage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"html/template"
	"log/slog"
	"net/http"
	"time"

	"github.com/ebsd/ebsd/cas"
)

// Source is what the page reads. *cas.Store satisfies it.
type Source interface {
	// AllSnapshots returns every account's snapshots that are not deleted.
	AllSnapshots() []cas.Snapshot
	// Usage scans the store for per-snapshot and total sizes; it may be slow, and the
	// page caches it.
	Usage(ctx context.Context) (cas.Usage, error)
	// GCHistory returns the recent garbage collections.
	GCHistory() []cas.GCRun
	// ScrubHistory returns the recent scrubs; ScrubTotals the running totals, of which
	// the page shows the blocks known to be corrupt now and those healed.
	ScrubHistory() []cas.ScrubRun
	ScrubTotals() cas.ScrubTotals
}

// Options tune the page. The zero value is ready to use.
type Options struct {
	Logger *slog.Logger
	// Now is the clock for "how long ago"; time.Now when nil.
	Now func() time.Time
	// UsageMaxAge is the shortest time a usage scan is reused (default 15 s). A scan is
	// reused for at least 10× as long as it took, so a slow store is scanned seldom.
	UsageMaxAge time.Duration
	// Refresh is how often the browser reloads the page (meta refresh, no script);
	// default 60 s, negative never.
	Refresh time.Duration
}

//go:embed assets/status.html.tmpl assets/status.css
var assets embed.FS

// The template and style sheet are parsed and hashed once: they are constants of the
// binary, not state.
var (
	pageTemplate = template.Must(template.New("status").Funcs(template.FuncMap{
		"box": func(r *row, chain bool) nodeBox { return nodeBox{r, chain} },
		"bar": func(c chart, b bar) chartBar { return chartBar{c, b} },
	}).ParseFS(assets, "assets/status.html.tmpl"))
	styleSheet = mustRead("assets/status.css")
	// contentSecurityPolicy allows the one inline style sheet (by its hash) and nothing
	// else: no script, no images or fonts from anywhere, no framing, no form targets.
	contentSecurityPolicy = "default-src 'none'; style-src '" + cspHash(styleSheet) + "'; " +
		"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

func mustRead(name string) string {
	b, err := assets.ReadFile(name)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func cspHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "sha256-" + base64.StdEncoding.EncodeToString(sum[:])
}

// nodeBox is one snapshot's box in the lineage tree; Chain marks an only child drawn
// under its parent rather than indented.
type nodeBox struct {
	Row   *row
	Chain bool
}

// chartBar is one bar with the chart's geometry, for the "bar" template.
type chartBar struct {
	Chart chart
	Bar   bar
}

type handler struct {
	src     Source
	log     *slog.Logger
	now     func() time.Time
	refresh time.Duration
	usage   *usageCache
}

// New returns the status page handler. It answers GET and HEAD of "/" and 404 for any
// other path, so it can be mounted as the listener's fallback.
func New(src Source, opts Options) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.UsageMaxAge <= 0 {
		opts.UsageMaxAge = 15 * time.Second
	}
	if opts.Refresh == 0 {
		opts.Refresh = time.Minute
	}
	return &handler{
		src:     src,
		log:     opts.Logger,
		now:     opts.Now,
		refresh: max(opts.Refresh, 0),
		usage:   newUsageCache(src.Usage, opts.Now, opts.UsageMaxAge, opts.Logger),
	}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Content-Security-Policy", contentSecurityPolicy)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("Cache-Control", "no-store")
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hdr.Set("Allow", "GET, HEAD")
		http.Error(w, "the status page is read-only", http.StatusMethodNotAllowed)
		return
	}
	u, err := h.usage.get(r.Context())
	if err != nil && r.Context().Err() != nil {
		return // the client left; nobody reads the answer
	}
	now := h.now()
	p := buildPage(now, h.src.AllSnapshots(), u, err, h.src.GCHistory(), h.refresh)
	p.addScrub(now, h.src.ScrubHistory(), h.src.ScrubTotals())
	var buf bytes.Buffer
	if err := pageTemplate.ExecuteTemplate(&buf, "page", struct {
		CSS         template.CSS
		RefreshSecs int
		Page        *page
	}{template.CSS(styleSheet), p.RefreshSecs, p}); err != nil {
		h.log.Error("status page: render", "err", err)
		http.Error(w, "the status page could not be rendered", http.StatusInternalServerError)
		return
	}
	hdr.Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(buf.Bytes())
}
