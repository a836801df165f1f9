package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/ebsd/ebsd/api/ops"
	"github.com/ebsd/ebsd/cas"
)

// opsListener serves the operator's endpoints (/metrics, /healthz, /readyz, pprof and
// the status page) on --metrics-listen, apart from the AWS API: Prometheus scrapes
// without signatures, and nothing there exposes snapshot data. Its server is also the
// metrics Observer of the API and of the FUSE mount, whether or not it listens.
type opsListener struct {
	log  *slog.Logger
	ops  *ops.Server
	ln   net.Listener // nil when --metrics-listen is empty
	srv  *http.Server
	done chan error // the server's exit; nil without a listener
}

// startOps builds the ops server over the store, the cache and the mount point
// (cfg.mount, checked by /readyz once mounted) and, unless cfg.metricsListen is empty,
// starts serving it. extra, when not nil, is served at "/" (the status page). The
// caller owns the result and must stop it, after unmounting the FUSE export.
func startOps(cfg config, store *cas.Store, cache *cas.BlockCache, extra http.Handler, log *slog.Logger) (*opsListener, error) {
	o := &opsListener{log: log, ops: ops.New(ops.Options{
		Store:    store,
		Cache:    cache,
		DataDir:  cfg.dataDir,
		MountDir: cfg.mount,
		Extra:    extra,
		Logger:   log,
	})}
	if cfg.metricsListen == "" {
		return o, nil
	}
	ln, err := net.Listen("tcp", cfg.metricsListen)
	if err != nil && !cfg.metricsListenSet && errors.Is(err, syscall.EADDRINUSE) {
		// Only the default address is taken (another ebsd on this host): the API still
		// serves; the operator who wants the ops endpoints names an address.
		log.Warn("ops listener not started: its default address is in use; set --metrics-listen (or EBSD_METRICS_LISTEN) to serve /metrics, /readyz and the status page",
			"addr", cfg.metricsListen)
		return o, nil
	}
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen %s: %w", cfg.metricsListen, err)
	}
	if !isLoopback(cfg.metricsListen) {
		log.Warn("--metrics-listen is not a loopback address: metrics, readiness and pprof are served without authentication to whoever reaches it",
			"addr", ln.Addr().String())
	}
	o.ln, o.done = ln, make(chan error, 1)
	o.srv = &http.Server{
		Handler:           o.ops,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		// pprof's CPU profile and trace run 30 s by default and refuse to run longer
		// than the server's write timeout.
		WriteTimeout:   2 * time.Minute,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 16 << 10,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go func() {
		err := o.srv.Serve(ln)
		if !errors.Is(err, http.ErrServerClosed) {
			// The AWS API keeps serving; say why scrapes stopped.
			log.Error("metrics listener failed", "addr", ln.Addr().String(), "err", err)
		}
		o.done <- err
	}()
	log.Info("serving metrics, health and pprof", "addr", ln.Addr().String())
	return o, nil
}

// observer is what api.Config.Observer and the FUSE mount report to.
func (o *opsListener) observer() *ops.Server { return o.ops }

// addr is the address listened on; empty without a listener.
func (o *opsListener) addr() string {
	if o.ln == nil {
		return ""
	}
	return o.ln.Addr().String()
}

// opsDrain is how long stop lets requests in flight finish: scrapes take milliseconds,
// but a pprof profile or trace may have 30 s to go, and shutdown must not wait for it.
const opsDrain = 5 * time.Second

// stop lets scrapes in flight finish (for at most opsDrain, then cuts connections),
// closes the listener and waits for its server, then for a mount check still in flight
// (which ends once the mount is gone: stop after unmounting).
func (o *opsListener) stop(ctx context.Context) error {
	var err error
	if o.srv != nil {
		drain, cancel := context.WithTimeout(ctx, opsDrain)
		serr := o.srv.Shutdown(drain)
		cancel()
		if serr != nil {
			o.log.Warn("ops requests still running at shutdown: closing their connections", "err", serr)
			if cerr := o.srv.Close(); cerr != nil {
				err = fmt.Errorf("ops shutdown: %w", cerr)
			}
		}
		if serr := <-o.done; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, fmt.Errorf("ops server: %w", serr))
		}
	}
	return errors.Join(err, o.ops.Close(ctx))
}
