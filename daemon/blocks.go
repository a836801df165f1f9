package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/ebsd/ebsd/cas"
	"github.com/ebsd/ebsd/cas/diskcache"
	"github.com/ebsd/ebsd/cas/s3blocks"
)

// openBlocks opens the block store --blocks names: nil for the embedded Badger store
// (the store opens that itself), or S3-compatible object storage found the AWS way
// (AWS_ENDPOINT_URL_S3, AWS_REGION, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or a
// profile), with the on-disk read cache of --cache-dir in front of it. Nothing it opens
// needs closing: S3 is HTTP requests, and the cache is files.
func openBlocks(ctx context.Context, cfg config, log *slog.Logger) (cas.BlockStore, error) {
	if cfg.blocks == "" {
		return nil, nil
	}
	if !strings.HasPrefix(cfg.blocks, "s3://") {
		return nil, fmt.Errorf("--blocks %q: want s3://BUCKET/PREFIX, or nothing for the embedded store", cfg.blocks)
	}
	remote, err := s3blocks.Open(ctx, s3blocks.Config{URL: cfg.blocks, Log: log.With("component", "s3blocks")})
	if err != nil {
		return nil, fmt.Errorf("--blocks %s: %w", cfg.blocks, err)
	}
	log.Info("blocks live in object storage", "blocks", cfg.blocks)
	if cfg.cacheDir == "" {
		log.Warn("--blocks without --cache-dir: every block read the memory cache misses is a GET")
		return remote, nil
	}
	if err := os.MkdirAll(cfg.cacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("--cache-dir: %w", err)
	}
	cache, err := diskcache.New(remote, cfg.cacheDir, int64(cfg.diskCacheMB)<<20, log.With("component", "diskcache"))
	if err != nil {
		return nil, fmt.Errorf("--cache-dir %s: %w", cfg.cacheDir, err)
	}
	return cache, nil
}
