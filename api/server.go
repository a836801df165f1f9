// Package api serves the Amazon EBS direct APIs over HTTP on top of a cas store.
package api

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/ebsd/ebsd/cas"
)

// Store is what the API needs of the block store and catalog.
type Store interface {
	StartSnapshot(ctx context.Context, p cas.StartParams) (cas.Snapshot, error)
	PutBlock(ctx context.Context, owner, id string, index int64, data []byte, claimed cas.Digest) error
	CompleteSnapshot(ctx context.Context, owner, id string, changedBlocks int64, aggregate *cas.Digest) (cas.Status, error)
	Snapshot(ctx context.Context, owner, id string) (cas.Snapshot, error)
	ViewFrom(ctx context.Context, owner, id string, start int64, fn func(cas.Slot) bool) error
	Changes(ctx context.Context, owner, first, second string, start int64, examine int, fn func(cas.Change) bool) (int64, error)
	Snapshots(owner string) []cas.Snapshot
	DeleteSnapshot(ctx context.Context, owner, id string) error
	ChangeTags(ctx context.Context, owner, id string, ch cas.TagChange) error
}

// Config configures the API.
type Config struct {
	// Auth decides who sent each request. Nil refuses every request: there is no
	// unauthenticated default.
	Auth Authenticator
	// AllowedHosts, when set, pins the Host header and turns on the checks of what a
	// browser form could send (guard.go): for --auth none, where no signature covers
	// the request. Origin headers are refused always.
	AllowedHosts []string
	// Limit, when set, is asked before each authenticated request (per-account rates).
	Limit RateLimiter
	// Observer, when set, is told about every answered request (metrics).
	Observer Observer
	Logger   *slog.Logger
	// Blocks serves block reads (the shared block cache).
	Blocks cas.BlockReader
	// TokenKey signs page and block tokens; keep it across restarts.
	TokenKey []byte
	// Clock dates token expiry; the system clock when nil.
	Clock cas.Clock
}

// Server is the HTTP handler of the EBS direct APIs.
type Server struct {
	store  Store
	cfg    Config
	log    *slog.Logger
	mux    *http.ServeMux
	bufs   sync.Pool // *[]byte of BlockSize, for request bodies
	blocks cas.BlockReader
	tokens tokenSigner
}

// New returns the API handler.
func New(store Store, cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = cas.SystemClock{}
	}
	s := &Server{store: store, cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), blocks: cfg.Blocks,
		tokens: tokenSigner{key: cfg.TokenKey, clock: cfg.Clock}}
	s.bufs.New = func() any { b := make([]byte, cas.BlockSize); return &b }
	s.handle("POST /snapshots", "StartSnapshot", s.startSnapshot)
	s.handle("PUT /snapshots/{id}/blocks/{index}", "PutSnapshotBlock", s.putSnapshotBlock)
	s.handle("POST /snapshots/completion/{id}", "CompleteSnapshot", s.completeSnapshot)
	s.handle("GET /snapshots/{id}/blocks", "ListSnapshotBlocks", s.listSnapshotBlocks)
	s.handle("GET /snapshots/{id}/changedblocks", "ListChangedBlocks", s.listChangedBlocks)
	s.handle("GET /snapshots/{id}/blocks/{index}", "GetSnapshotBlock", s.getSnapshotBlock)
	s.handle("GET "+AdminPrefix+"stats", "ebsd:Stats", s.stats)
	s.handle("POST "+AdminPrefix+"gc", "ebsd:GC", s.collectGarbage)
	s.handle("POST "+AdminPrefix+"scrub", "ebsd:Scrub", s.scrub)
	s.handle("GET "+AdminPrefix+"snapshots/{id}/digests", "ebsd:Digests", s.digests)
	s.handle("POST /{$}", "EC2", s.ec2)
	s.handle("GET /{$}", "EC2", s.ec2)
	s.mux.HandleFunc("/", s.unknownOperation)
	return s
}

// handle registers a handler under an operation name, which the access log and the
// request metrics carry (the EC2 handler refines it with the action).
func (s *Server) handle(pattern, op string, h http.HandlerFunc) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		info(r).op = op
		h(w, r)
	})
}

// requestInfo travels in the request context so handlers can add what the access log
// line should carry.
type requestInfo struct {
	id       string
	snapshot string
	account  string
	op       string // operation name; "" when no route matched
}

type infoKey struct{}

func info(r *http.Request) *requestInfo {
	if ri, ok := r.Context().Value(infoKey{}).(*requestInfo); ok {
		return ri
	}
	return &requestInfo{}
}

// ServeHTTP gives every request an id (x-amzn-RequestId) and one log line.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ri := &requestInfo{id: newRequestID()}
	w.Header().Set("x-amzn-RequestId", ri.id)
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	// A copy carries the counting body: the server's own request must keep its body,
	// which it inspects after the handler (to discard or close an unread one).
	r = r.WithContext(context.WithValue(r.Context(), infoKey{}, ri))
	body := &countingReader{r: r.Body}
	r.Body = body
	if e := malformedRequest(r); e != nil {
		writeError(sw, e)
	} else if r, ok := s.admit(sw, r); ok {
		s.mux.ServeHTTP(sw, r)
	}
	if s.cfg.Observer != nil {
		op := ri.op
		if op == "" {
			op = "unknown"
		}
		s.cfg.Observer.ObserveRequest(op, sw.status, time.Since(start), body.n, sw.n)
	}
	level := slog.LevelInfo
	if sw.status >= 500 {
		level = slog.LevelError
	}
	s.log.Log(r.Context(), level, "request",
		"request_id", ri.id, "op", ri.op, "account", ri.account, "snapshot", ri.snapshot, "method", r.Method, "path", r.URL.Path,
		"status", sw.status, "error_type", errorType(sw.Header()),
		"duration_ms", float64(time.Since(start).Microseconds())/1000)
}

// MaxHeaderBytes is the most header bytes a request may carry. The HTTP server's own
// limit is set higher (it answers in plain text), so that requests between the two
// get an AWS-shaped refusal.
const MaxHeaderBytes = 64 << 10

// malformedRequest refuses, before anything else, what no AWS client sends: a path
// that is not clean (ServeMux would answer it with a redirect) and oversized headers.
func malformedRequest(r *http.Request) *Error {
	if p := r.URL.Path; p != "/" && (path.Clean(p) != p || strings.Contains(r.URL.RawPath, "%2F") || strings.Contains(r.URL.RawPath, "%2f")) {
		return &Error{Status: http.StatusNotFound, Type: "UnknownOperationException",
			Message: "no EBS direct API operation at this path: paths have no empty, . or .. segments"}
	}
	n := len(r.Method) + len(r.RequestURI) + len(r.Host)
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	if n > MaxHeaderBytes {
		return &Error{Status: http.StatusRequestHeaderFieldsTooLarge, Type: validationException, Reason: reasonInvalidParameterValue,
			Message: fmt.Sprintf("the request line and headers are %d bytes; at most %d are accepted", n, MaxHeaderBytes)}
	}
	return nil
}

func (s *Server) unknownOperation(w http.ResponseWriter, r *http.Request) {
	writeError(w, &Error{Status: http.StatusNotFound, Type: "UnknownOperationException",
		Message: fmt.Sprintf("no EBS direct API operation at %s %s", r.Method, r.URL.Path)})
}

// fail writes e, logging the underlying error of internal failures.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	e := fromStore(err)
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client went away (or the daemon is stopping): nobody is there to read
		// the answer, and nothing failed inside.
		s.log.Debug("request cancelled", "request_id", info(r).id, "snapshot", info(r).snapshot, "err", err)
	} else if e.Status >= 500 {
		s.log.Error("request failed", "request_id", info(r).id, "snapshot", info(r).snapshot, "err", err)
	}
	writeError(w, e)
}

// statusWriter remembers the status and counts the body bytes of a response.
type statusWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

// countingReader counts the request body bytes a handler read.
type countingReader struct {
	r io.ReadCloser
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) Close() error { return c.r.Close() }

// Observer is told about each answered request: its operation, HTTP status, duration
// and the body bytes read and written.
type Observer interface {
	ObserveRequest(op string, status int, d time.Duration, bytesIn, bytesOut int64)
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// errorType reads the exception name back from the response headers; it is stored
// under AWS's spelling, which Header.Get would not find.
func errorType(h http.Header) string {
	if v := h["x-amzn-ErrorType"]; len(v) > 0 {
		return v[0]
	}
	return ""
}
