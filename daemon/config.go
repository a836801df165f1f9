package main

import (
	"cmp"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ebsd/ebsd/cas"
	"github.com/ebsd/ebsd/cas/engines"
	"github.com/ebsd/ebsd/fusefs"
)

// config is everything the daemon is told at start. Every flag can also come from an
// EBSD_ environment variable named after it (--metrics-listen ↔ EBSD_METRICS_LISTEN);
// a flag on the command line wins. A malformed value is an error either way, never
// silently the default.
type config struct {
	dataDir     string
	listen      string
	addrFile    string
	mount       string
	region      string
	compression cas.Compression
	cacheMB     int // the in-memory cache of decompressed blocks
	// Where blocks live (--blocks; empty: the embedded store), and the on-disk read
	// cache in front of a remote one (--cache-dir, --cache-mb).
	blocks      string
	cacheDir    string
	diskCacheMB int
	// Where records live (--catalog; empty: the embedded store), and how long a block a
	// put used is kept from collection when daemons share them (--gc-grace).
	catalog      string
	gcGrace      time.Duration
	readAheadKB  int
	fuseTuning   fusefs.Options // benchmark-only overrides of the mount options
	gcInterval   time.Duration
	vlogFileSize int64 // 0: derived from the file system's size (cas.Options); tests make it small to see space come back
	logLevel     slog.Level

	// Background scrub (cas/scrub.go): how often, and at most how many MiB/s it reads
	// (0: no bound).
	scrubInterval time.Duration
	scrubMBPerSec int64

	// Settling (cas/settle.go): the zstd level stored blocks are re-encoded at while no
	// puts flow, at most how many MiB/s of blocks (0: no bound), after how long without puts.
	recompress         cas.RecompressLevel
	recompressMBPerSec int64
	recompressIdle     time.Duration

	// Identity (see README "Credentials and accounts").
	auth            string // authSigV4 or authNone
	accountID       string // the default account
	accessKeyID     string // the default account's credential; generated when empty
	secretAccessKey string
	credentialsFile string // more accounts; reloaded on SIGHUP
	publicHost      string // with --auth none: a Host other than the listen address to accept

	// Who may open the FUSE mount.
	mountAllowOther bool
	mountUID        int // -1: the daemon's user
	mountGID        int // -1: the daemon's group
	mountMode       uint32

	// Transport and load.
	tlsCert        string
	tlsKey         string
	rateLimit      float64 // requests per second per account; 0 = unlimited
	rateBurst      int
	maxConnections int

	metricsListen    string // /metrics, /healthz, /readyz, pprof, status page; empty: none
	metricsListenSet bool   // given by flag or environment, not the default

	// shutdownGrace is how long a stop waits for requests in flight; 0 = 30 s.
	shutdownGrace time.Duration

	// Set by tests, not by flags.
	onRequest      func(*http.Request)                 // told of every request as its handling starts
	wrapBlocks     func(cas.BlockStore) cas.BlockStore // decorates the block store (fault injection)
	wrapCatalog    func(cas.Catalog) cas.Catalog       // decorates the catalog (fault injection)
	clock          cas.Clock
	expireInterval int64 // nanoseconds; 0 = store default
	maxPending     int
}

const (
	defaultDataDir       = "ebsd-data"
	defaultListen        = "127.0.0.1:8600"
	defaultMetricsListen = "127.0.0.1:8601"
	defaultRegion        = "us-east-1"
	defaultAccountID     = "111122223333"

	authSigV4 = "sigv4"
	authNone  = "none"
)

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("ebsd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := config{mountUID: -1, mountGID: -1}
	var level, compression, mountMode, recompress string
	var vlogMB int64
	fs.StringVar(&c.dataDir, "data-dir", defaultDataDir, "directory of the Badger store")
	fs.StringVar(&c.listen, "listen", defaultListen, "HOST:PORT of the AWS API (EBS direct and EC2 Query)")
	fs.StringVar(&c.addrFile, "addr-file", "", "write the address actually listened on (HOST:PORT) to this file once serving; for scripts using port 0")
	fs.StringVar(&c.mount, "mount", "", "directory to mount the FUSE export on; empty for none")
	fs.StringVar(&c.region, "region", defaultRegion, "region of this endpoint (requests are scoped to the region they are signed for)")
	fs.StringVar(&compression, "compression", "", "codec for new blocks: zstd (best ratio), s2 (faster) or none (default zstd, or s2 with --recompress)")
	var cacheMB, memoryCacheMB int
	fs.IntVar(&cacheMB, "cache-mb", 0, "MiB of the read cache: with --cache-dir, encoded blocks kept on that disk (default 4096); without it, decompressed blocks in memory (default 256)")
	fs.IntVar(&memoryCacheMB, "memory-cache-mb", 0, "MiB of decompressed blocks cached in memory for reads, shared by API and FUSE (default 256, or --cache-mb without --cache-dir)")
	fs.StringVar(&c.cacheDir, "cache-dir", "", "directory of an on-disk read cache in front of --blocks s3://…; empty for none")
	fs.IntVar(&c.readAheadKB, "fuse-readahead-kb", 4096, "kernel readahead of the FUSE mount in KiB; 0 keeps the kernel's 128")
	fs.Int64Var(&vlogMB, "vlog-file-mb", 0, "size of Badger value-log files in MiB; space comes back a file at a time. 0: 64 (a put waits for one file rewrite during GC), or a sixteenth of the data directory's file system when that is smaller")
	fs.DurationVar(&c.gcInterval, "gc-interval", time.Hour, "how often garbage collection runs in the background; 0 disables it")
	fs.DurationVar(&c.scrubInterval, "scrub-interval", 24*time.Hour, "how often every stored block and record is re-read and verified in the background; 0 disables it")
	fs.Int64Var(&c.scrubMBPerSec, "scrub-mb-per-sec", cas.DefaultScrubBytesPerSec>>20, "MiB of stored blocks the background scrub reads per second at most; 0: no bound")
	fs.StringVar(&recompress, "recompress", string(cas.RecompressOff), "zstd level stored blocks are re-encoded at in the background while no puts flow: off, default, better or best (smallest; see BENCHMARKS.md)")
	fs.Int64Var(&c.recompressMBPerSec, "recompress-mb-per-sec", cas.DefaultRecompressBytesPerSec>>20, "MiB of blocks (uncompressed) --recompress re-encodes per second at most; 0: no bound")
	fs.DurationVar(&c.recompressIdle, "recompress-idle", cas.DefaultRecompressIdle, "how long no block put must have committed before --recompress starts or resumes")
	fs.StringVar(&level, "log-level", "info", "debug, info, warn or error")

	fs.StringVar(&c.auth, "auth", authSigV4, "sigv4: every request must be signed by a known account; none: no signatures (loopback only, for a quick try)")
	fs.StringVar(&c.accountID, "account-id", defaultAccountID, "12-digit id of the default account")
	fs.StringVar(&c.accessKeyID, "access-key-id", "", "access key id of the default account; empty: one is generated on first start and kept in the data directory")
	fs.StringVar(&c.secretAccessKey, "secret-access-key", "", "secret access key of the default account (prefer the environment variable)")
	fs.StringVar(&c.credentialsFile, "credentials", "", "JSON file of further accounts and keys (mode 0600; reloaded on SIGHUP)")
	fs.StringVar(&c.publicHost, "public-host", "", "with --auth none, a Host header to accept besides the listen address")

	fs.BoolVar(&c.mountAllowOther, "mount-allow-other", false, "let users other than the daemon's open the FUSE mount, as --mount-uid/--mount-gid/--mount-mode and the credentials file grant")
	fs.IntVar(&c.mountUID, "mount-uid", -1, "owner of the default account's files in the mount (-1: the daemon's user)")
	fs.IntVar(&c.mountGID, "mount-gid", -1, "group of the default account's files in the mount (-1: the daemon's group)")
	fs.StringVar(&mountMode, "mount-mode", "0400", "permission bits of the default account's image files (directories get x where r is set)")

	fs.StringVar(&c.tlsCert, "tls-cert", "", "PEM certificate (chain) to serve HTTPS with; reloaded on SIGHUP")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.Float64Var(&c.rateLimit, "rate-limit", 2000, "requests per second each account may make (token bucket); 0 for no limit")
	fs.IntVar(&c.rateBurst, "rate-burst", 4000, "requests an account may make at once above --rate-limit")
	fs.IntVar(&c.maxConnections, "max-connections", 1024, "open connections the API accepts at once; more wait in the kernel's backlog")

	fs.DurationVar(&c.shutdownGrace, "shutdown-grace", shutdownGrace, "how long a stop (SIGTERM) waits for requests in flight before closing their connections")
	fs.StringVar(&c.catalog, "catalog", "", "where snapshot records live: empty for the embedded Badger store, or postgres://USER:PASSWORD@HOST:PORT/DB (shared by every daemon given the same one; needs --blocks s3://…)")
	fs.DurationVar(&c.gcGrace, "gc-grace", cas.DefaultGCGrace, "with --catalog: how long a block a put used is kept from garbage collection; longer than the longest put and the daemons' clock skew")
	fs.StringVar(&c.blocks, "blocks", "", "where blocks live: empty for the embedded Badger store, or s3://BUCKET/PREFIX (endpoint, region and credentials the AWS way: AWS_ENDPOINT_URL_S3, AWS_REGION, AWS_ACCESS_KEY_ID, profiles)")
	fs.StringVar(&c.metricsListen, "metrics-listen", defaultMetricsListen, "HOST:PORT for /metrics, /healthz, /readyz, pprof and the status page (no signatures: keep it on loopback); empty for none")

	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: ebsd [flags]\n\nServes the Amazon EBS direct APIs on a local Badger store.\nEvery flag can also be set as EBSD_<NAME> (--data-dir ↔ EBSD_DATA_DIR).\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := applyEnv(fs, getenv); err != nil {
		return c, err
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	c.metricsListenSet = getenv("EBSD_METRICS_LISTEN") != ""
	fs.Visit(func(f *flag.Flag) { c.metricsListenSet = c.metricsListenSet || f.Name == "metrics-listen" })
	switch {
	case c.catalog != "" && c.blocks == "":
		// Records every daemon reads would name blocks only this disk holds.
		return c, fmt.Errorf("--catalog %s: a shared catalog needs shared blocks: give --blocks s3://… too", engines.Redact(c.catalog))
	case c.catalog != "" && !engines.IsPostgres(c.catalog):
		return c, fmt.Errorf("--catalog %s: want postgres://…, or nothing for the embedded store", engines.Redact(c.catalog))
	case c.gcGrace <= 0:
		return c, fmt.Errorf("--gc-grace %v: want a positive duration", c.gcGrace)
	}
	switch {
	case memoryCacheMB < 0 || cacheMB < 0:
		return c, fmt.Errorf("--cache-mb %d / --memory-cache-mb %d: want sizes of 0 (the default) or more", cacheMB, memoryCacheMB)
	case c.cacheDir != "" && c.blocks == "":
		return c, fmt.Errorf("--cache-dir %s: an on-disk read cache is for --blocks s3://…; the embedded store reads its own disk", c.cacheDir)
	case c.cacheDir != "":
		c.diskCacheMB = cmp.Or(cacheMB, 4096)
		c.cacheMB = cmp.Or(memoryCacheMB, 256)
	default:
		c.cacheMB = cmp.Or(memoryCacheMB, cacheMB, 256)
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if err := c.logLevel.UnmarshalText([]byte(level)); err != nil {
		return c, fmt.Errorf("--log-level: %w", err)
	}
	c.vlogFileSize = vlogMB << 20
	if c.scrubMBPerSec < 0 || c.scrubMBPerSec > 1<<20 {
		return c, fmt.Errorf("--scrub-mb-per-sec %d: want 0 (no bound) to %d", c.scrubMBPerSec, 1<<20)
	}
	if c.recompressMBPerSec < 0 || c.recompressMBPerSec > 1<<20 {
		return c, fmt.Errorf("--recompress-mb-per-sec %d: want 0 (no bound) to %d", c.recompressMBPerSec, 1<<20)
	}
	if c.recompressIdle <= 0 {
		return c, fmt.Errorf("--recompress-idle %v: want a positive duration", c.recompressIdle)
	}
	var err error
	if c.recompress, err = cas.ParseRecompress(recompress); err != nil {
		return c, fmt.Errorf("--recompress: %w", err)
	}
	if compression == "" {
		// With settling on, every block is re-encoded at the settling level once puts are
		// idle, so what a put stores only has to be cheap to write and to decode again:
		// s2 (ingest ≈1.4× zstd's fastest level; BENCHMARKS.md). Without it, the put's
		// codec is what the block keeps.
		compression = string(cas.CompressZstd)
		if c.recompress != cas.RecompressOff {
			compression = string(cas.CompressS2)
		}
	}
	if c.compression, err = cas.ParseCompression(compression); err != nil {
		return c, fmt.Errorf("--compression: %w", err)
	}
	if len(c.accountID) != 12 || strings.Trim(c.accountID, "0123456789") != "" {
		return c, fmt.Errorf("--account-id %q is not a 12-digit account id", c.accountID)
	}
	mode, err := strconv.ParseUint(mountMode, 8, 32)
	if err != nil || mode&^0o777 != 0 {
		return c, fmt.Errorf("--mount-mode %q is not octal permission bits such as 0440", mountMode)
	}
	c.mountMode = uint32(mode)
	if err := c.validate(); err != nil {
		return c, err
	}
	return c, nil
}

// validate checks what no single flag can: combinations, and a refusal to serve
// unauthenticated beyond this machine.
func (c *config) validate() error {
	switch c.auth {
	case authSigV4:
	case authNone:
		if !isLoopback(c.listen) {
			return fmt.Errorf("--auth none serves every request unsigned: refused on %s, which is not a loopback address", c.listen)
		}
	default:
		return fmt.Errorf("--auth %q: want %s or %s", c.auth, authSigV4, authNone)
	}
	if (c.accessKeyID == "") != (c.secretAccessKey == "") {
		return fmt.Errorf("--access-key-id and --secret-access-key (EBSD_ACCESS_KEY_ID, EBSD_SECRET_ACCESS_KEY) go together")
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return fmt.Errorf("--tls-cert and --tls-key go together")
	}
	if c.rateLimit < 0 || c.rateBurst < 1 {
		return fmt.Errorf("--rate-limit must be ≥ 0 and --rate-burst ≥ 1")
	}
	if c.maxConnections < 1 {
		return fmt.Errorf("--max-connections must be ≥ 1")
	}
	if (c.mountUID >= 0 || c.mountGID >= 0) && !c.mountAllowOther && c.mount != "" {
		// Owners other than the daemon's user mean nothing without allow_other: say so.
		return fmt.Errorf("--mount-uid/--mount-gid grant access to other users only with --mount-allow-other")
	}
	return nil
}

// applyEnv sets every flag whose EBSD_<NAME> variable is set, through the flag's own
// parser, so a malformed value is an error that names the variable.
func applyEnv(fs *flag.FlagSet, getenv func(string) string) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		name := "EBSD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		v, set := getenv(name), getenv(name) != ""
		if !set || err != nil {
			return
		}
		if serr := fs.Set(f.Name, v); serr != nil {
			err = fmt.Errorf("%s=%q: %w", name, v, serr)
		}
	})
	return err
}

// isLoopback says whether HOST:PORT names only this machine.
func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
