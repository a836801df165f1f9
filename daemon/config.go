package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/ebsd/ebsd/cas"
	"github.com/ebsd/ebsd/fusefs"
)

// config is everything the daemon is told at start. Every flag can also come from an
// EBSD_ environment variable (flag wins).
type config struct {
	dataDir      string
	listen       string
	mount        string
	region       string
	accountID    string
	compression  cas.Compression
	cacheMB      int
	readAheadKB  int
	fuseTuning   fusefs.Options // benchmark-only overrides of the mount options
	gcInterval   time.Duration
	vlogFileSize int64 // tests make value-log files small to see space come back
	logLevel     slog.Level

	// Set by tests, not by flags.
	clock          cas.Clock
	expireInterval int64 // nanoseconds; 0 = store default
	maxPending     int
}

const (
	defaultDataDir   = "ebsd-data"
	defaultListen    = "127.0.0.1:8600"
	defaultRegion    = "us-east-1"
	defaultAccountID = "111122223333"
)

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("ebsd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	env := func(name, def string) string {
		if v := getenv("EBSD_" + name); v != "" {
			return v
		}
		return def
	}
	var c config
	var level, compression string
	fs.StringVar(&c.dataDir, "data-dir", env("DATA_DIR", defaultDataDir), "directory of the Badger store (env EBSD_DATA_DIR)")
	fs.StringVar(&c.listen, "listen", env("LISTEN", defaultListen), "HOST:PORT of the HTTP API (env EBSD_LISTEN)")
	fs.StringVar(&c.mount, "mount", env("MOUNT", ""), "directory to mount the FUSE export on; empty for none (env EBSD_MOUNT)")
	fs.StringVar(&c.region, "region", env("REGION", defaultRegion), "region used when a request is not SigV4-signed (env EBSD_REGION)")
	fs.StringVar(&c.accountID, "account-id", env("ACCOUNT_ID", defaultAccountID), "12-digit owner id of all snapshots (env EBSD_ACCOUNT_ID)")
	fs.StringVar(&compression, "compression", env("COMPRESSION", string(cas.CompressZstd)), "codec for new blocks: zstd (best ratio), s2 (faster) or none (env EBSD_COMPRESSION)")
	fs.IntVar(&c.cacheMB, "cache-mb", envInt(getenv, "CACHE_MB", 256), "MiB of decompressed blocks cached for reads, shared by API and FUSE (env EBSD_CACHE_MB)")
	fs.IntVar(&c.readAheadKB, "fuse-readahead-kb", envInt(getenv, "FUSE_READAHEAD_KB", 4096), "kernel readahead of the FUSE mount in KiB; 0 keeps the kernel's 128 (env EBSD_FUSE_READAHEAD_KB)")
	vlogMB := fs.Int64("vlog-file-mb", int64(envInt(getenv, "VLOG_FILE_MB", 256)), "size of Badger value-log files in MiB; space comes back a file at a time (env EBSD_VLOG_FILE_MB)")
	fs.DurationVar(&c.gcInterval, "gc-interval", envDuration(getenv, "GC_INTERVAL", time.Hour), "how often garbage collection runs in the background; 0 disables it (env EBSD_GC_INTERVAL)")
	fs.StringVar(&level, "log-level", env("LOG_LEVEL", "info"), "debug, info, warn or error (env EBSD_LOG_LEVEL)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: ebsd [flags]\n\nServes the Amazon EBS direct APIs on a local Badger store.\n\nFlags:")
		fs.PrintDefaults()
	}
	err := fs.Parse(args)
	if err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if err := c.logLevel.UnmarshalText([]byte(level)); err != nil {
		return c, fmt.Errorf("--log-level: %w", err)
	}
	c.vlogFileSize = *vlogMB << 20
	if c.compression, err = cas.ParseCompression(compression); err != nil {
		return c, fmt.Errorf("--compression: %w", err)
	}
	if len(c.accountID) != 12 || strings.Trim(c.accountID, "0123456789") != "" {
		return c, fmt.Errorf("--account-id %q is not a 12-digit account id", c.accountID)
	}
	return c, nil
}

func envInt(getenv func(string) string, name string, def int) int {
	if v, err := strconv.Atoi(getenv("EBSD_" + name)); err == nil {
		return v
	}
	return def
}

func envDuration(getenv func(string) string, name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(getenv("EBSD_" + name)); err == nil {
		return v
	}
	return def
}
