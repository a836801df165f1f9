package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"time"

	"github.com/ebsd/ebsd/api"
	"github.com/ebsd/ebsd/api/statuspage"
	"github.com/ebsd/ebsd/cas"
	"github.com/ebsd/ebsd/cas/pgcatalog"
	"github.com/ebsd/ebsd/fusefs"
)

// daemon is one running ebsd: the store, the HTTP server and (later) the FUSE mount.
type daemon struct {
	log   *slog.Logger
	ids   *identity
	cert  *certificate // nil without --tls-cert
	store *cas.Store
	// catalog is the shared catalog (--catalog), closed after the store; nil when the
	// records live in the store's own Badger DB.
	catalog *pgcatalog.Catalog
	cache   *cas.BlockCache
	mount   *fusefs.Mount // nil without --mount
	ops     *opsListener  // --metrics-listen: metrics, health, pprof, status page
	ln      net.Listener
	srv     *http.Server
	done    chan error // the HTTP server's exit
	grace   time.Duration
	// cancelRequests cancels the context of every request (the server's BaseContext).
	cancelRequests context.CancelFunc
}

const shutdownGrace = 30 * time.Second

// start opens the store and begins serving. The caller owns the daemon and must stop it.
func start(cfg config, log *slog.Logger) (d *daemon, err error) {
	// What start has opened so far, closed in reverse if a later step fails.
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	if err := privateDir(cfg.dataDir, log); err != nil {
		return nil, err
	}
	ids, err := newIdentity(cfg, log)
	if err != nil {
		return nil, err
	}
	if cfg.auth == authNone {
		log.Warn("--auth none: requests are not authenticated; anyone who can reach " + cfg.listen + " acts as account " + cfg.accountID)
	}
	var cert *certificate
	if cfg.tlsCert != "" {
		if cert, err = loadCertificate(cfg.tlsCert, cfg.tlsKey); err != nil {
			return nil, err
		}
	}
	blocks, err := openBlocks(context.Background(), cfg, log)
	if err != nil {
		return nil, err
	}
	catalog, err := openCatalog(context.Background(), cfg, log)
	if err != nil {
		return nil, err
	}
	var sharedCatalog cas.Catalog // nil: the embedded one (a nil *pgcatalog.Catalog is not)
	if catalog != nil {
		sharedCatalog = catalog
		undo = append(undo, catalog.Close)
	}
	store, err := cas.Open(cas.Options{
		Blocks:                blocks,
		Catalog:               sharedCatalog,
		GCGrace:               cfg.gcGrace,
		Dir:                   cfg.dataDir,
		Clock:                 cfg.clock,
		Logger:                log,
		ExpireInterval:        time.Duration(cfg.expireInterval),
		MaxPendingPerOwner:    cfg.maxPending,
		Compression:           cfg.compression,
		GCInterval:            cfg.gcInterval,
		ScrubInterval:         cfg.scrubInterval,
		ScrubBytesPerSec:      scrubRate(cfg.scrubMBPerSec),
		Recompress:            cfg.recompress,
		RecompressBytesPerSec: scrubRate(cfg.recompressMBPerSec), // the same 0-is-no-bound mapping
		RecompressIdle:        cfg.recompressIdle,
		ValueLogFileSize:      cfg.vlogFileSize,
		WrapBlocks:            cfg.wrapBlocks,
		WrapCatalog:           cfg.wrapCatalog,
	})
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { _ = store.Close() })
	tokenKey, err := store.Secret("api-tokens")
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.listen, err)
	}
	undo = append(undo, func() { _ = ln.Close() })
	addr := ln.Addr().String()
	if cfg.maxConnections > 0 {
		ln = newLimitListener(ln, cfg.maxConnections)
	}
	if cert != nil {
		ln = tls.NewListener(ln, cert.tlsConfig())
	} else {
		ln = prefaceListener{ln}
	}
	cache := cas.NewBlockCache(store, int64(cfg.cacheMB)<<20, runtime.GOMAXPROCS(0)*4)
	undo = append(undo, cache.Close)
	status := statuspage.New(store, statuspage.Options{Logger: log.With("component", "statuspage")})
	opsL, err := startOps(cfg, store, cache, status, log)
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { _ = opsL.stop(context.Background()) })
	var limit api.RateLimiter
	if cfg.rateLimit > 0 {
		limit = api.NewAccountLimiter(cfg.rateLimit, cfg.rateBurst, nil)
	}
	handler := api.New(store, api.Config{
		Auth: ids.authenticator(), AllowedHosts: ids.allowedHosts(addr), Limit: limit,
		Observer: opsL.observer(), Logger: log, Blocks: cache, TokenKey: tokenKey, Clock: cfg.clock,
	})
	var serve http.Handler = handler
	if cfg.onRequest != nil {
		serve = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			cfg.onRequest(r)
			handler.ServeHTTP(w, r)
		})
	}
	baseCtx, cancelRequests := context.WithCancel(context.Background())
	undo = append(undo, cancelRequests)
	d = &daemon{
		log:            log,
		ids:            ids,
		cert:           cert,
		grace:          cfg.shutdownGrace,
		cancelRequests: cancelRequests,
		store:          store,
		catalog:        catalog,
		cache:          cache,
		ops:            opsL,
		ln:             ln,
		done:           make(chan error, 1),
		srv: &http.Server{
			Handler:           serve,
			ReadHeaderTimeout: 10 * time.Second,
			// A block is 512 KiB: a minute allows a 9 KB/s client.
			ReadTimeout:    time.Minute,
			WriteTimeout:   2 * time.Minute,
			IdleTimeout:    2 * time.Minute,
			MaxHeaderBytes: 4 * api.MaxHeaderBytes, // beyond api's limit: see api.MaxHeaderBytes
			BaseContext:    func(net.Listener) context.Context { return baseCtx },
			ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
	}
	if cfg.mount != "" {
		opts := cfg.fuseTuning
		opts.MountPoint, opts.Owner, opts.Logger, opts.ReadAheadKB = cfg.mount, cfg.accountID, log, cfg.readAheadKB
		opts.AllowOther = cfg.mountAllowOther
		opts.Default = fusefs.Access{UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), FileMode: cfg.mountMode}
		if cfg.mountUID >= 0 {
			opts.Default.UID = uint32(cfg.mountUID)
		}
		if cfg.mountGID >= 0 {
			opts.Default.GID = uint32(cfg.mountGID)
		}
		opts.Accounts = ids.mountAccounts
		opts.Reads = opsL.observer()
		if d.mount, err = fusefs.New(store, cache, opts); err != nil {
			return nil, err
		}
		store.OnDelete(d.mount.Forget)
	}
	go func() { d.done <- d.srv.Serve(ln) }()
	scheme := "http"
	if cert != nil {
		scheme = "https"
	}
	log.Info("listening", "addr", addr, "scheme", scheme, "data_dir", cfg.dataDir, "region", cfg.region, "account_id", cfg.accountID, "auth", cfg.auth)
	if cfg.addrFile != "" {
		if werr := writeAddrFile(cfg.addrFile, addr); werr != nil {
			return nil, errors.Join(fmt.Errorf("--addr-file: %w", werr), d.stop())
		}
	}
	return d, nil
}

// reload re-reads what SIGHUP promises to: the credentials file and the TLS
// certificate. What fails to load is logged and the old one stays in force.
func (d *daemon) reload() {
	if err := d.ids.reload(); err != nil {
		d.log.Error("reload: credentials kept as they were", "err", err)
	} else {
		d.log.Info("reload: credentials loaded")
	}
	if d.cert != nil {
		if err := d.cert.reload(); err != nil {
			d.log.Error("reload: TLS certificate kept as it was", "err", err)
		} else {
			d.log.Info("reload: TLS certificate loaded")
		}
	}
}

func (d *daemon) addr() string { return d.ln.Addr().String() }

// run serves until ctx is cancelled (SIGINT/SIGTERM) or the server fails, then stops.
// Each value on hup reloads credentials and certificate.
func (d *daemon) run(ctx context.Context, hup <-chan os.Signal) error {
	var serveErr error
	for serving := true; serving; {
		select {
		case <-ctx.Done():
			serving = false
		case serveErr = <-d.done:
			serving = false
		case <-hup:
			d.reload()
		}
	}
	return errors.Join(serveErr, d.stop())
}

// stop stops accepting, lets in-flight requests finish for the grace period, then
// syncs and closes the store. It returns within about twice the grace period whatever
// a request is doing: requests still running then have their connections closed and
// contexts cancelled, and a store that cannot close in time is left as a crash would
// leave it (which it survives).
func (d *daemon) stop() error {
	grace := d.grace
	if grace <= 0 {
		grace = shutdownGrace
	}
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	defer d.cancelRequests()
	d.log.Info("shutting down")
	err := d.srv.Shutdown(ctx)
	if err != nil {
		d.log.Warn("requests still running after the shutdown grace period: closing their connections", "grace", grace)
		err = fmt.Errorf("http shutdown: %w", errors.Join(err, d.srv.Close()))
		d.cancelRequests()
	}
	closed := make(chan error, 1)
	go func() { closed <- d.closeBackends() }()
	select {
	case cerr := <-closed:
		err = errors.Join(err, cerr)
	case <-time.After(grace):
		err = errors.Join(err, fmt.Errorf("the store did not close within %s; it recovers on the next start as after a crash", grace))
	}
	if err == nil {
		d.log.Info("shutdown complete")
	}
	return err
}

// closeBackends unmounts, then closes the cache and the store.
func (d *daemon) closeBackends() error {
	var err error
	ctx, cancel := context.WithTimeout(context.Background(), d.grace+shutdownGrace)
	defer cancel()
	stillServing := false
	if d.mount != nil {
		if merr := d.mount.Close(ctx); merr != nil {
			err = errors.Join(err, merr)
			stillServing = errors.Is(merr, fusefs.ErrStillServing)
		}
	}
	// After the unmount: a mount check still in flight ends with it.
	if oerr := d.ops.stop(ctx); oerr != nil {
		err = errors.Join(err, oerr)
	}
	if stillServing {
		// A read may still reach the store: closing it would unmap the value log
		// under that read. Left open, it recovers at the next start as after a
		// crash, which loses nothing acknowledged (DESIGN.md).
		return errors.Join(err, errors.New("the store was left open; it recovers on the next start as after a crash"))
	}
	d.cache.Close()
	if cerr := d.store.Close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	if d.catalog != nil {
		d.catalog.Close()
	}
	return err
}

// scrubRate turns --scrub-mb-per-sec into cas.Options.ScrubBytesPerSec, where 0 is the
// default rate and a negative value no bound.
func scrubRate(mbPerSec int64) int64 {
	if mbPerSec == 0 {
		return -1
	}
	return mbPerSec << 20
}

// privateDir makes the data directory the daemon's alone: it holds every disk image
// (the value log is readable with any tool) and the generated credential, so a local
// user must not even list it. A directory others could enter is tightened, loudly.
func privateDir(dir string, log *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		if err := os.Chmod(dir, perm&0o700); err != nil {
			return fmt.Errorf("data directory %s has mode %04o, which lets other users read the stored disk images, and cannot be made private: %w", dir, perm, err)
		}
		log.Warn("data directory was readable by other users: made it private", "dir", dir, "was", fmt.Sprintf("%04o", perm), "now", fmt.Sprintf("%04o", perm&0o700))
	}
	return nil
}
