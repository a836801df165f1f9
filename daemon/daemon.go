package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"time"

	"github.com/ebsd/ebsd/api"
	"github.com/ebsd/ebsd/cas"
	"github.com/ebsd/ebsd/fusefs"
)

// daemon is one running ebsd: the store, the HTTP server and (later) the FUSE mount.
type daemon struct {
	log   *slog.Logger
	store *cas.Store
	cache *cas.BlockCache
	mount *fusefs.Mount // nil without --mount
	ln    net.Listener
	srv   *http.Server
	done  chan error // the HTTP server's exit
}

const shutdownGrace = 30 * time.Second

// start opens the store and begins serving. The caller owns the daemon and must stop it.
func start(cfg config, log *slog.Logger) (*daemon, error) {
	store, err := cas.Open(cas.Options{
		Dir:                cfg.dataDir,
		Clock:              cfg.clock,
		Logger:             log,
		ExpireInterval:     time.Duration(cfg.expireInterval),
		MaxPendingPerOwner: cfg.maxPending,
		Compression:        cfg.compression,
		GCInterval:         cfg.gcInterval,
		ValueLogFileSize:   cfg.vlogFileSize,
	})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		_ = store.Close()
		return nil, fmt.Errorf("listen on %s: %w", cfg.listen, err)
	}
	tokenKey, err := store.Secret("api-tokens")
	if err != nil {
		_ = ln.Close()
		_ = store.Close()
		return nil, err
	}
	cache := cas.NewBlockCache(store, int64(cfg.cacheMB)<<20, runtime.GOMAXPROCS(0)*4)
	handler := api.New(store, api.Config{
		Auth:   api.Unsigned{AccountID: cfg.accountID, Region: cfg.region}, // TODO(auth): SigV4
		Logger: log, Blocks: cache, TokenKey: tokenKey, Clock: cfg.clock,
	})
	d := &daemon{
		log:   log,
		store: store,
		cache: cache,
		ln:    ln,
		done:  make(chan error, 1),
		srv: &http.Server{
			Handler:           handler,
			ReadHeaderTimeout: 10 * time.Second,
			// A block is 512 KiB: a minute allows a 9 KB/s client.
			ReadTimeout:    time.Minute,
			WriteTimeout:   2 * time.Minute,
			IdleTimeout:    2 * time.Minute,
			MaxHeaderBytes: 64 << 10,
			ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
	}
	if cfg.mount != "" {
		opts := cfg.fuseTuning
		opts.MountPoint, opts.Owner, opts.Logger, opts.ReadAheadKB = cfg.mount, cfg.accountID, log, cfg.readAheadKB
		d.mount, err = fusefs.New(store, cache, opts)
		if err != nil {
			_ = ln.Close()
			cache.Close()
			_ = store.Close()
			return nil, err
		}
		store.OnDelete(d.mount.Forget)
	}
	go func() { d.done <- d.srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "data_dir", cfg.dataDir, "region", cfg.region, "account_id", cfg.accountID)
	return d, nil
}

func (d *daemon) addr() string { return d.ln.Addr().String() }

// run serves until ctx is cancelled (SIGINT/SIGTERM) or the server fails, then stops.
func (d *daemon) run(ctx context.Context) error {
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-d.done:
	}
	return errors.Join(serveErr, d.stop())
}

// stop stops accepting, lets in-flight requests finish, then syncs and closes the store.
func (d *daemon) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	d.log.Info("shutting down")
	err := d.srv.Shutdown(ctx)
	if err != nil {
		err = fmt.Errorf("http shutdown: %w", err)
	}
	if d.mount != nil {
		if merr := d.mount.Close(ctx); merr != nil {
			err = errors.Join(err, merr)
		}
	}
	d.cache.Close()
	if cerr := d.store.Close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	if err == nil {
		d.log.Info("shutdown complete")
	}
	return err
}
