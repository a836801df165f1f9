// Package ops serves what an operator needs to watch ebsd, on a listener of its own
// apart from the AWS API: /metrics (Prometheus text format), /healthz, /readyz,
// pprof under /debug/pprof/, and an optional extra handler (the status page) at "/".
//
// Nothing here needs a signature, so nothing here may expose snapshot data or a
// secret: metrics carry operation names and numbers only, and pprof's cmdline handler
// is left out because the daemon's command line may hold --secret-access-key.
// Nothing here scans the store either: the store and the cache keep running counters
// (cas.Counters, cas.ScrubTotals), read on each scrape.
package ops

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ebsd/ebsd/cas"
)

// Store is what the ops endpoints read of the block store (a *cas.Store). Both are
// running totals: reading them scans nothing.
type Store interface {
	Counters() cas.Counters
	ScrubTotals() cas.ScrubTotals
}

// Cache is what they read of the block cache (a *cas.BlockCache).
type Cache interface {
	Stats() cas.CacheStats
}

// Options configure a Server.
type Options struct {
	Store Store
	Cache Cache // nil: no cache metrics
	// DataDir is the store's directory. A store with a free-space rule of its own
	// (Space(), as *cas.Store has) reports whether writes are accepted; MinFreeBytes,
	// when set, is a plain floor of free space instead.
	DataDir      string
	MinFreeBytes int64
	// MountDir is the FUSE mount point; empty when there is no mount.
	MountDir string
	// MountTimeout bounds how long /readyz waits for the mount to answer statfs
	// (default 2s): a hung FUSE server must make the check fail, not hang it.
	MountTimeout time.Duration
	// Extra, when set, serves every path the ops endpoints do not (the status page at "/").
	Extra  http.Handler
	Logger *slog.Logger
}

const defaultMountTimeout = 2 * time.Second

// Server is the ops HTTP handler. It is also the api.Observer of the AWS API's
// requests and the observer of FUSE reads, so it can be handed to both before it
// serves anything.
type Server struct {
	opts  Options
	log   *slog.Logger
	reg   *prometheus.Registry
	mux   *http.ServeMux
	mount *mountProbe // nil without a mount

	requests        *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec
	bytesIn         *prometheus.CounterVec
	bytesOut        *prometheus.CounterVec
	ops             opLabels

	fuseReads        *prometheus.CounterVec
	fuseBytes        prometheus.Counter
	fuseReadDuration prometheus.Histogram
}

// New returns the ops handler. Close it after the FUSE mount is unmounted, to wait for
// a mount check still in flight.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MountTimeout <= 0 {
		opts.MountTimeout = defaultMountTimeout
	}
	s := &Server{opts: opts, log: opts.Logger, reg: prometheus.NewRegistry(), mux: http.NewServeMux()}
	if opts.MountDir != "" {
		s.mount = &mountProbe{dir: opts.MountDir, statfs: statfsFUSE}
	}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ebsd_api_requests_total",
		Help: "Requests answered by the AWS API (EBS direct and EC2 Query), by operation and HTTP status code.",
	}, []string{"operation", "code"})
	s.requestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "ebsd_api_request_duration_seconds",
		Help: "Time from a request's arrival to the end of its answer, by operation.",
		// From a cached GetSnapshotBlock to a CompleteSnapshot over a large volume.
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"operation"})
	s.bytesIn = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ebsd_api_received_bytes_total",
		Help: "Request body bytes read by the AWS API, by operation.",
	}, []string{"operation"})
	s.bytesOut = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ebsd_api_sent_bytes_total",
		Help: "Response body bytes written by the AWS API, by operation.",
	}, []string{"operation"})
	s.fuseReads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ebsd_fuse_reads_total",
		Help: "Reads of snapshot image files through the FUSE mount, by result (ok or error).",
	}, []string{"result"})
	s.fuseBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ebsd_fuse_read_bytes_total",
		Help: "Bytes returned by reads of snapshot image files through the FUSE mount.",
	})
	s.fuseReadDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "ebsd_fuse_read_duration_seconds",
		Help: "Time ebsd took to answer a FUSE read (the kernel's own queueing not included).",
		// A read from the cache takes microseconds; one that decompresses blocks, milliseconds.
		Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
	})
	// Ahead of the first request, so a scrape shows the series at zero (rate() needs
	// a first sample) rather than missing.
	s.fuseReads.WithLabelValues("ok")
	s.fuseReads.WithLabelValues("error")
	s.reg.MustRegister(s.requests, s.requestDuration, s.bytesIn, s.bytesOut,
		s.fuseReads, s.fuseBytes, s.fuseReadDuration,
		&storeCollector{s: s},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)

	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{
		ErrorLog:      promLogger{s.log},
		ErrorHandling: promhttp.ContinueOnError, // one failed collector must not hide the rest
	}))
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /readyz", s.readyz)
	// pprof on this mux, not http.DefaultServeMux; no cmdline (see the package comment).
	s.mux.HandleFunc("/debug/pprof/", pprof.Index)
	s.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	s.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	s.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	if opts.Extra != nil {
		s.mux.Handle("/", opts.Extra)
	} else {
		s.mux.HandleFunc("GET /{$}", s.index)
	}
	return s
}

// ServeHTTP serves the ops endpoints.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Close waits for a mount check still in flight, or for ctx. A check stuck on a hung
// FUSE server ends when the mount is unmounted, which is why the daemon closes this
// after the mount.
func (s *Server) Close(ctx context.Context) error {
	if s.mount == nil {
		return nil
	}
	return s.mount.close(ctx)
}

// ObserveRequest records one answered AWS API request (api.Observer).
func (s *Server) ObserveRequest(op string, status int, d time.Duration, bytesIn, bytesOut int64) {
	op = s.ops.label(op)
	s.requests.WithLabelValues(op, statusCode(status)).Inc()
	s.requestDuration.WithLabelValues(op).Observe(d.Seconds())
	if bytesIn > 0 {
		s.bytesIn.WithLabelValues(op).Add(float64(bytesIn))
	}
	if bytesOut > 0 {
		s.bytesOut.WithLabelValues(op).Add(float64(bytesOut))
	}
}

// ObserveFUSERead records one read of an image file through the FUSE mount: the bytes
// it returned, how long ebsd took, and whether it failed (EIO, EINTR).
func (s *Server) ObserveFUSERead(bytes int, d time.Duration, failed bool) {
	if failed {
		s.fuseReads.WithLabelValues("error").Inc()
	} else {
		s.fuseReads.WithLabelValues("ok").Inc()
	}
	s.fuseBytes.Add(float64(bytes))
	s.fuseReadDuration.Observe(d.Seconds())
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

func (s *Server) index(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ebsd operations endpoint: /metrics /healthz /readyz /debug/pprof/")
}

// statusCode spells the common statuses without an allocation per request.
func statusCode(code int) string {
	switch code {
	case http.StatusOK:
		return "200"
	case http.StatusCreated:
		return "201"
	case http.StatusBadRequest:
		return "400"
	case http.StatusForbidden:
		return "403"
	case http.StatusNotFound:
		return "404"
	case http.StatusInternalServerError:
		return "500"
	}
	return strconv.Itoa(code)
}

// promLogger sends the Prometheus handler's errors (a failed collection, a client gone
// mid-scrape) to slog.
type promLogger struct{ l *slog.Logger }

func (p promLogger) Println(v ...any) {
	p.l.Error("metrics: " + strings.TrimSpace(fmt.Sprintln(v...)))
}
