package main

import (
	"context"
	"log/slog"

	"github.com/ebsd/ebsd/cas"
	"github.com/ebsd/ebsd/cas/engines"
	"github.com/ebsd/ebsd/cas/pgcatalog"
)

// openBlocks opens the block store --blocks names (cas/engines), with the on-disk read
// cache of --cache-dir in front of it; nil for the embedded store.
func openBlocks(ctx context.Context, cfg config, log *slog.Logger) (cas.BlockStore, error) {
	blocks, err := engines.OpenBlocks(ctx, cfg.blocks, cfg.cacheDir, cfg.diskCacheMB, log)
	if err != nil || blocks == nil {
		return blocks, err
	}
	log.Info("blocks live in object storage", "blocks", cfg.blocks, "cache_dir", cfg.cacheDir)
	if cfg.cacheDir == "" {
		log.Warn("--blocks without --cache-dir: every block read the memory cache misses is a GET")
	}
	return blocks, nil
}

// openCatalog opens the catalog --catalog names (cas/engines); nil for the embedded one.
func openCatalog(ctx context.Context, cfg config, log *slog.Logger) (*pgcatalog.Catalog, error) {
	cat, err := engines.OpenCatalog(ctx, cfg.catalog, log)
	if err == nil && cat != nil {
		log.Info("records live in PostgreSQL, shared with every daemon on it", "catalog", engines.Redact(cfg.catalog))
	}
	return cat, err
}
