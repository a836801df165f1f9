// Package engines opens the storage engines a store can run on from the names an
// operator gives them (--blocks s3://…, --catalog postgres://…), for every program that
// opens a store: the daemon, and ebsctl's offline commands (move).
package engines

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"

	"github.com/ebsd/ebsd/cas/core"
	"github.com/ebsd/ebsd/cas/diskcache"
	"github.com/ebsd/ebsd/cas/pgcatalog"
	"github.com/ebsd/ebsd/cas/s3blocks"
)

// OpenBlocks opens the block store named by blocks: nil for the embedded Badger store
// (the store opens that itself), or S3-compatible object storage found the AWS way
// (AWS_ENDPOINT_URL_S3, AWS_REGION, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or a
// profile), with an on-disk read cache of cacheMB MiB in cacheDir in front of it when
// cacheDir is set. Nothing it opens needs closing: S3 is HTTP requests, the cache files.
func OpenBlocks(ctx context.Context, blocks, cacheDir string, cacheMB int, log *slog.Logger) (core.BlockStore, error) {
	if blocks == "" {
		return nil, nil
	}
	if !strings.HasPrefix(blocks, "s3://") {
		return nil, fmt.Errorf("blocks %q: want s3://BUCKET/PREFIX, or nothing for the embedded store", blocks)
	}
	remote, err := s3blocks.Open(ctx, s3blocks.Config{URL: blocks, Log: log.With("component", "s3blocks")})
	if err != nil {
		return nil, fmt.Errorf("blocks %s: %w", blocks, err)
	}
	if cacheDir == "" {
		return remote, nil
	}
	if err := os.MkdirAll(cacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("cache directory: %w", err)
	}
	cache, err := diskcache.New(remote, cacheDir, int64(cacheMB)<<20, log.With("component", "diskcache"))
	if err != nil {
		return nil, fmt.Errorf("cache directory %s: %w", cacheDir, err)
	}
	return cache, nil
}

// OpenCatalog opens the catalog named by catalog: nil for the embedded Badger store,
// or PostgreSQL, shared by every store opened on the same URL. The caller closes it
// after the store.
func OpenCatalog(ctx context.Context, catalog string, log *slog.Logger) (*pgcatalog.Catalog, error) {
	if catalog == "" {
		return nil, nil
	}
	if !IsPostgres(catalog) {
		return nil, fmt.Errorf("catalog %s: want postgres://…, or nothing for the embedded store", Redact(catalog))
	}
	cat, err := pgcatalog.Open(ctx, catalog, log.With("component", "pgcatalog"))
	if err != nil {
		return nil, fmt.Errorf("catalog %s: %w", Redact(catalog), err)
	}
	return cat, nil
}

// IsPostgres says whether a catalog name is a PostgreSQL URL.
func IsPostgres(catalog string) bool {
	return strings.HasPrefix(catalog, "postgres://") || strings.HasPrefix(catalog, "postgresql://")
}

// Redact hides a URL's password, for messages and logs.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(a URL that does not parse)"
	}
	return u.Redacted()
}
