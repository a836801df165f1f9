// Package s3blocks is a core.BlockStore on S3-compatible object storage: AWS S3, or a
// self-hosted server such as versitygw, MinIO or SeaweedFS.
//
// # Object layout
//
// A store lives under s3://BUCKET/PREFIX. Each block is one immutable object:
//
//	PREFIX/blocks/ab/abcdef0123…(the digest as 64 lower-case hex digits)
//
// where "ab" is the first byte of the digest in hex. The body is the tag byte followed
// by the block's data, so a read is one GET and the stored size is the object's length
// minus one. Keys have a fixed shape for a reason each:
//   - No key is a path prefix of another ("a" and "a/b" never both exist): servers that
//     map keys onto a file system (versitygw's posix backend, MinIO in FS mode) cannot
//     hold a file and a directory under one name.
//   - The fan-out directory keeps directories of such servers to 1/256 of the blocks.
//   - S3 lists keys in ascending UTF-8 byte order. Every key has the same length and
//     the fan-out is a function of the digest, and '0'-'9' sort before 'a'-'f', so key
//     order is digest order and Walk needs no sorting.
//   - "blocks/" under PREFIX leaves room beside the blocks for other kinds of object.
//
// Objects whose keys do not have this shape are not blocks and are skipped by Walk.
//
// # Durability and errors
//
// S3 answers a PUT only once the object is stored; there is no flush to call, so Sync
// does nothing. (A self-hosted server is as durable as it is configured to be: whether
// it fsyncs before answering is its business, not a client's.) Requests are retried
// with capped exponential back-off by the SDK's standard retryer; what still fails is
// returned wrapped, and only a "no such key" answer is core.ErrBlockNotFound.
//
// This package does not hash what it reads: the cas store verifies every block it
// decodes. The SDK's checksums guard the wire both ways: an upload carries a CRC32 the
// server checks (versitygw answers BadDigest to a wrong one), and a download whose
// server returns the stored CRC32 is checked by the SDK as it is read.
package s3blocks

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"

	"github.com/ebsd/ebsd/cas/core"
)

// Defaults for the zero values of Config's tuning fields.
const (
	DefaultMaxConns       = 64
	DefaultPutParallelism = 16
	DefaultMaxAttempts    = 5
	DefaultMaxBackoff     = 3 * time.Second
	DefaultAttemptTimeout = time.Minute
)

// maxObjectSize bounds what Read buffers: a block's encoding is about BlockSize, so an
// object far larger under a block's key is not a block, and must not exhaust memory.
const maxObjectSize = 16 * core.BlockSize

// deleteBatch is the most keys S3 takes in one DeleteObjects request.
const deleteBatch = 1000

// Config says where the store is and how to reach it. Endpoint, region and credentials
// are found the AWS way (config.LoadDefaultConfig: AWS_ENDPOINT_URL_S3 or
// AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, profiles in
// the shared files) unless the fields below override them.
type Config struct {
	// URL is s3://BUCKET or s3://BUCKET/PREFIX.
	URL string
	// Log receives the store's and the SDK's messages; nil discards them.
	Log *slog.Logger

	// Endpoint, when set, overrides the endpoint the SDK finds (http://127.0.0.1:9000).
	Endpoint string
	// Region, when set, overrides the region the SDK finds; with none found, us-east-1
	// (self-hosted servers accept any, but SigV4 needs one).
	Region string
	// Profile, when set, picks a profile of the shared configuration files.
	Profile string
	// Credentials, when set, replace the SDK's credential chain.
	Credentials aws.CredentialsProvider

	// HTTPClient, when set, carries every request (MaxConns and AttemptTimeout are then
	// the client's business). The SDK cannot add a custom CA bundle (AWS_CA_BUNDLE) to
	// it: Open then fails.
	HTTPClient *http.Client
	// MaxConns bounds the connections to the server; 0 is DefaultMaxConns.
	MaxConns int
	// AttemptTimeout bounds one HTTP attempt, so a server that stops answering costs
	// a retry, not a hang; 0 is DefaultAttemptTimeout.
	AttemptTimeout time.Duration
	// PutParallelism bounds the concurrent uploads of one Put (and deletes when the
	// server has no DeleteObjects); 0 is DefaultPutParallelism.
	PutParallelism int
	// MaxAttempts is how often a request is tried; 0 is DefaultMaxAttempts.
	MaxAttempts int
	// MaxBackoff caps the wait between attempts; 0 is DefaultMaxBackoff.
	MaxBackoff time.Duration
}

// Store is a core.BlockStore on one bucket and prefix. It is safe for concurrent use.
type Store struct {
	client   *s3.Client
	bucket   string
	prefix   string
	root     string // prefix + "blocks/": every block key starts with it
	log      *slog.Logger
	parallel int
	attempts int
	backoff  retry.BackoffDelayer

	bufs sync.Pool // *[]byte, for Read

	// noMultiDelete is set once the server has refused DeleteObjects: deletes then go
	// key by key without asking again.
	noMultiDelete atomic.Bool
}

var _ core.BlockStore = (*Store)(nil)

// ParseURL splits s3://BUCKET/PREFIX. The prefix has no leading or trailing slash and
// may be empty; empty segments, "." and ".." are refused because servers that map keys
// onto a file system cannot store them faithfully.
func ParseURL(raw string) (bucket, prefix string, err error) {
	rest, ok := strings.CutPrefix(raw, "s3://")
	if !ok {
		return "", "", fmt.Errorf("s3blocks: %q is not an s3://BUCKET/PREFIX URL", raw)
	}
	if strings.ContainsAny(rest, "?#") {
		return "", "", fmt.Errorf("s3blocks: %q: an s3:// URL takes no query or fragment", raw)
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	if bucket == "" {
		return "", "", fmt.Errorf("s3blocks: %q names no bucket", raw)
	}
	for _, r := range bucket {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return "", "", fmt.Errorf("s3blocks: %q: bucket name %q has a %q", raw, bucket, r)
		}
	}
	prefix = strings.TrimSuffix(prefix, "/")
	if prefix != "" {
		for _, seg := range strings.Split(prefix, "/") {
			if seg == "" || seg == "." || seg == ".." {
				return "", "", fmt.Errorf("s3blocks: %q: prefix %q has an empty, \".\" or \"..\" segment", raw, prefix)
			}
		}
	}
	return bucket, prefix, nil
}

// Open connects to the bucket of cfg.URL and checks that it answers (so that a wrong
// endpoint, bucket or credential fails here rather than at the first block).
func Open(ctx context.Context, cfg Config) (*Store, error) {
	bucket, prefix, err := ParseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	attempts := orDefault(cfg.MaxAttempts, DefaultMaxAttempts)
	maxBackoff := orDefault(cfg.MaxBackoff, DefaultMaxBackoff)
	backoff := equalJitter{base: min(time.Second, maxBackoff), max: maxBackoff}

	opts := []func(*config.LoadOptions) error{
		config.WithLogger(sdkLogger{log}),
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = attempts
				o.MaxBackoff = maxBackoff
				o.Backoff = backoff
				// The token bucket exists to stop retry storms against AWS; here it
				// would fail the 16 parallel uploads of a Put with "retry quota
				// exceeded" during the seconds a self-hosted server restarts.
				o.RateLimiter = ratelimit.None
			})
		}),
	}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	if cfg.Profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(cfg.Profile))
	}
	if cfg.Credentials != nil {
		opts = append(opts, config.WithCredentialsProvider(cfg.Credentials))
	}
	if cfg.HTTPClient != nil {
		opts = append(opts, config.WithHTTPClient(cfg.HTTPClient))
	} else {
		conns := orDefault(cfg.MaxConns, DefaultMaxConns)
		// The SDK's own client, because it alone takes a custom CA bundle
		// (AWS_CA_BUNDLE), with its transport defaults except that it keeps 10 idle
		// connections per host: parallel uploads beyond that would open and close a
		// connection each.
		hc := awshttp.NewBuildableClient().
			WithTimeout(orDefault(cfg.AttemptTimeout, DefaultAttemptTimeout)).
			WithTransportOptions(func(tr *http.Transport) {
				tr.MaxConnsPerHost = conns
				tr.MaxIdleConnsPerHost = conns
				tr.MaxIdleConns = conns
			})
		opts = append(opts, config.WithHTTPClient(hc))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("s3blocks: loading the AWS configuration: %w", err)
	}
	if awsCfg.Region == "" {
		awsCfg.Region = "us-east-1"
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		// Self-hosted servers on an address (127.0.0.1:port) have no per-bucket
		// host names: the bucket goes in the path.
		o.UsePathStyle = true
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		// Servers that store no checksum answer GETs without one; the cas store
		// hashes every block it reads, so the SDK's warning would be noise.
		o.DisableLogOutputChecksumValidationSkipped = true
	})

	s := &Store{
		client:   client,
		bucket:   bucket,
		prefix:   prefix,
		root:     blockRoot(prefix),
		log:      log.With("bucket", bucket, "prefix", prefix),
		parallel: orDefault(cfg.PutParallelism, DefaultPutParallelism),
		attempts: attempts,
		backoff:  backoff,
	}
	if _, err := client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(bucket)}); err != nil {
		return nil, fmt.Errorf("s3blocks: bucket %q does not answer (endpoint, region, credentials?): %w", bucket, err)
	}
	s.log.Debug("s3blocks: opened", "root", s.root)
	return s, nil
}

// equalJitter is the wait between attempts: it doubles from base up to max, and half
// of it is random. The SDK's default draws the whole wait at random, so its attempts
// sometimes all fall within a second, less than a self-hosted server takes to restart;
// this way 5 attempts span at least 4.5 s (with base 1 s, max 3 s), at most 9 s.
type equalJitter struct{ base, max time.Duration }

func (j equalJitter) BackoffDelay(attempt int, _ error) (time.Duration, error) {
	d := j.max
	if attempt >= 1 && attempt < 32 {
		d = min(j.base<<(attempt-1), j.max)
	}
	return d/2 + rand.N(d/2+1), nil
}

func orDefault[T int | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

func blockRoot(prefix string) string {
	if prefix == "" {
		return "blocks/"
	}
	return prefix + "/blocks/"
}

// Key is the object key of the block with digest d.
func (s *Store) Key(d core.Digest) string { return blockKey(s.root, d) }

func blockKey(root string, d core.Digest) string {
	h := d.String()
	return root + h[:2] + "/" + h
}

// parseKey is blockKey's inverse; ok is false for any key blockKey does not make.
func parseKey(root, key string) (d core.Digest, ok bool) {
	rest, ok := strings.CutPrefix(key, root)
	if !ok || len(rest) != 3+2*len(d) || rest[2] != '/' || rest[:2] != rest[3:5] {
		return d, false
	}
	h := rest[3:]
	if _, err := hex.Decode(d[:], []byte(h)); err != nil {
		return d, false
	}
	// hex.Decode takes upper case too; such a key would sort apart from its digest.
	return d, hex.EncodeToString(d[:]) == h
}

// Put uploads the blocks, up to PutParallelism at once. The first failure cancels the
// uploads not yet done and is returned; blocks uploaded before it stay stored.
func (s *Store) Put(ctx context.Context, blocks []core.StoredBlock) error {
	blocks = lastOfEach(blocks)
	return s.forEach(ctx, len(blocks), func(ctx context.Context, i int) error {
		b := &blocks[i]
		key := s.Key(b.Digest)
		_, err := s.client.PutObject(ctx, &s3.PutObjectInput{
			Bucket:        aws.String(s.bucket),
			Key:           aws.String(key),
			Body:          &tagReader{tag: b.Tag, data: b.Data},
			ContentLength: aws.Int64(int64(1 + len(b.Data))),
		})
		if err != nil {
			return fmt.Errorf("s3blocks: putting block %s (s3://%s/%s): %w", b.Digest, s.bucket, key, err)
		}
		return nil
	})
}

// lastOfEach drops all but the last of blocks with one digest: concurrent uploads of
// one key could land in any order, and the last of a call is the one that must stay.
func lastOfEach(blocks []core.StoredBlock) []core.StoredBlock {
	if len(blocks) < 2 {
		return blocks
	}
	last := make(map[core.Digest]int, len(blocks))
	for i, b := range blocks {
		last[b.Digest] = i
	}
	if len(last) == len(blocks) {
		return blocks
	}
	out := make([]core.StoredBlock, 0, len(last))
	for i, b := range blocks {
		if last[b.Digest] == i {
			out = append(out, b)
		}
	}
	return out
}

// forEach runs fn for 0..n-1 on up to s.parallel goroutines, all finished when it
// returns. The first error cancels the rest and is returned.
func (s *Store) forEach(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	if n == 1 {
		return fn(ctx, 0)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next  atomic.Int64
		once  sync.Once
		first error
		wg    sync.WaitGroup
	)
	fail := func(err error) {
		once.Do(func() { first = err; cancel() })
	}
	for range min(n, s.parallel) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := ctx.Err(); err != nil {
					fail(fmt.Errorf("s3blocks: %w", context.Cause(ctx)))
					return
				}
				if err := fn(ctx, i); err != nil {
					fail(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

// tagReader reads the tag byte and then data, without copying them into one buffer.
// It seeks because the SDK rewinds a body to hash it, to sign it over plain HTTP and to
// send it again on a retry.
type tagReader struct {
	tag  byte
	data []byte
	off  int64
}

func (r *tagReader) Read(p []byte) (int, error) {
	size := int64(1 + len(r.data))
	if r.off >= size {
		return 0, io.EOF
	}
	n := 0
	if r.off == 0 && len(p) > 0 {
		p[0] = r.tag
		n, r.off = 1, 1
	}
	m := copy(p[n:], r.data[r.off-1:])
	r.off += int64(m)
	return n + m, nil
}

func (r *tagReader) Seek(offset int64, whence int) (int64, error) {
	size := int64(1 + len(r.data))
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		offset += size
	default:
		return 0, fmt.Errorf("s3blocks: seek whence %d", whence)
	}
	if offset < 0 {
		return 0, fmt.Errorf("s3blocks: seek to %d", offset)
	}
	r.off = offset
	return offset, nil
}

// Read fetches the block with one GET into a pooled buffer and calls fn with it.
func (s *Store) Read(ctx context.Context, d core.Digest, fn func(tag byte, data []byte) error) error {
	key := s.Key(d)
	bp, n, err := s.get(ctx, key)
	if err != nil {
		return s.fail("reading", d, key, err)
	}
	defer s.bufs.Put(bp)
	buf := (*bp)[:n]
	if n < 1 {
		return fmt.Errorf("s3blocks: %w: %s (s3://%s/%s) is an empty object", core.ErrCorruptBlock, d, s.bucket, key)
	}
	return fn(buf[0], buf[1:])
}

// get reads the object at key into a pooled buffer. The SDK retries a request until
// its response starts; a body cut off after that (a server restarting) is retried
// here, with the same attempts and back-off.
func (s *Store) get(ctx context.Context, key string) (*[]byte, int, error) {
	for attempt := 1; ; attempt++ {
		out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
		if err != nil {
			return nil, 0, err
		}
		bp := s.buffer(aws.ToInt64(out.ContentLength))
		n, err := readBody(out.Body, bp)
		out.Body.Close()
		if err == nil {
			return bp, n, nil
		}
		s.bufs.Put(bp)
		if errors.Is(err, errTooLarge) || attempt >= s.attempts || ctx.Err() != nil {
			return nil, 0, err
		}
		delay, derr := s.backoff.BackoffDelay(attempt, err)
		if derr != nil {
			return nil, 0, err
		}
		s.log.Debug("s3blocks: GET body failed, retrying", "key", key, "attempt", attempt, "err", err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, 0, fmt.Errorf("%w (after: %w)", context.Cause(ctx), err)
		case <-t.C:
		}
	}
}

var errTooLarge = fmt.Errorf("%w: object larger than %d bytes", core.ErrCorruptBlock, maxObjectSize)

// buffer returns a pooled buffer with room for size bytes and one more, so that the
// read that meets EOF (where the SDK checks the response checksum) needs no growth.
func (s *Store) buffer(size int64) *[]byte {
	want := int(min(max(size, 0), maxObjectSize)) + 1
	if bp, ok := s.bufs.Get().(*[]byte); ok && cap(*bp) >= want {
		*bp = (*bp)[:cap(*bp)]
		return bp
	}
	b := make([]byte, max(want, core.BlockSize+1))
	return &b
}

// readBody reads r to its end into *bp, growing it up to maxObjectSize+1.
func readBody(r io.Reader, bp *[]byte) (int, error) {
	buf := (*bp)[:cap(*bp)]
	n := 0
	for {
		if n == len(buf) {
			if n > maxObjectSize {
				return n, errTooLarge
			}
			buf = append(buf, make([]byte, len(buf))...)
			buf = buf[:cap(buf)]
			*bp = buf
		}
		m, err := r.Read(buf[n:])
		n += m
		if err == io.EOF {
			if n > maxObjectSize {
				return n, errTooLarge
			}
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// Stat returns the size of the block's data (the object's length minus the tag byte).
func (s *Store) Stat(ctx context.Context, d core.Digest) (int64, error) {
	key := s.Key(d)
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if err != nil {
		return 0, s.fail("looking up", d, key, err)
	}
	size := aws.ToInt64(out.ContentLength)
	if size < 1 {
		return 0, fmt.Errorf("s3blocks: %w: %s (s3://%s/%s) is an empty object", core.ErrCorruptBlock, d, s.bucket, key)
	}
	return size - 1, nil
}

// fail wraps err of an operation on one block: ErrBlockNotFound when the server said
// that the key does not exist, and err itself otherwise.
func (s *Store) fail(op string, d core.Digest, key string, err error) error {
	if isNoSuchKey(err) {
		return fmt.Errorf("s3blocks: %s block %s (s3://%s/%s): %w", op, d, s.bucket, key, core.ErrBlockNotFound)
	}
	return fmt.Errorf("s3blocks: %s block %s (s3://%s/%s): %w", op, d, s.bucket, key, err)
}

// isNoSuchKey tells "the key does not exist" from every other failure, a missing
// bucket included. A GET says NoSuchKey in its body; a HEAD has no body, so its 404
// is NotFound whatever was missing: Open's HeadBucket makes the bucket the likely
// culprit only if it is deleted while the store runs.
func isNoSuchKey(err error) bool {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	if errors.As(err, &nsk) || errors.As(err, &nf) {
		return true
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NoSuchKey", "NotFound":
			return true
		}
	}
	return false
}

// Delete removes the blocks with DeleteObjects, 1000 keys a request, or key by key on
// a server that refuses DeleteObjects. Keys already absent are no error.
func (s *Store) Delete(ctx context.Context, ds []core.Digest) error {
	for len(ds) > 0 {
		n := min(len(ds), deleteBatch)
		batch := ds[:n]
		ds = ds[n:]
		if !s.noMultiDelete.Load() {
			err := s.deleteBatch(ctx, batch)
			if err == nil {
				continue
			}
			if !refused(err) {
				return err
			}
			if !s.noMultiDelete.Swap(true) {
				s.log.Warn("s3blocks: the server refuses DeleteObjects; deleting one key a request", "err", err)
			}
		}
		if err := s.deleteEach(ctx, batch); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) deleteBatch(ctx context.Context, ds []core.Digest) error {
	objs := make([]types.ObjectIdentifier, len(ds))
	for i, d := range ds {
		objs[i] = types.ObjectIdentifier{Key: aws.String(s.Key(d))}
	}
	out, err := s.client.DeleteObjects(ctx, &s3.DeleteObjectsInput{
		Bucket: aws.String(s.bucket),
		Delete: &types.Delete{Objects: objs, Quiet: aws.Bool(true)},
	})
	if err != nil {
		return fmt.Errorf("s3blocks: deleting %d blocks from s3://%s/%s: %w", len(ds), s.bucket, s.root, err)
	}
	var errs []error
	for _, e := range out.Errors {
		if aws.ToString(e.Code) == "NoSuchKey" {
			continue
		}
		errs = append(errs, fmt.Errorf("%s: %s: %s", aws.ToString(e.Key), aws.ToString(e.Code), aws.ToString(e.Message)))
		if len(errs) == 10 {
			errs = append(errs, fmt.Errorf("and %d more", len(out.Errors)-10))
			break
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("s3blocks: deleting blocks from s3://%s: %w", s.bucket, errors.Join(errs...))
	}
	return nil
}

// refused says a DeleteObjects failed because the server does not do it at all.
func refused(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NotImplemented", "MethodNotAllowed":
			return true
		}
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		switch re.HTTPStatusCode() {
		case http.StatusNotImplemented, http.StatusMethodNotAllowed:
			return true
		}
	}
	return false
}

func (s *Store) deleteEach(ctx context.Context, ds []core.Digest) error {
	return s.forEach(ctx, len(ds), func(ctx context.Context, i int) error {
		key := s.Key(ds[i])
		_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
		if err != nil && !isNoSuchKey(err) {
			return fmt.Errorf("s3blocks: deleting block %s (s3://%s/%s): %w", ds[i], s.bucket, key, err)
		}
		return nil
	})
}

// Walk lists the blocks from digest from on. The listing starts after a key just below
// from's (S3's StartAfter is exclusive) and skips the few digests below from that it
// still returns. A listing out of order is an error rather than a silent break of
// Walk's promise.
func (s *Store) Walk(ctx context.Context, from core.Digest, fn func(d core.Digest, size int64) error) error {
	fromKey := s.Key(from)
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{
		Bucket:     aws.String(s.bucket),
		Prefix:     aws.String(s.root),
		StartAfter: aws.String(fromKey[:len(fromKey)-1]),
	})
	var last core.Digest
	seen := false
	for p.HasMorePages() {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("s3blocks: listing s3://%s/%s: %w", s.bucket, s.root, context.Cause(ctx))
		}
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("s3blocks: listing s3://%s/%s: %w", s.bucket, s.root, err)
		}
		for _, o := range page.Contents {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("s3blocks: listing s3://%s/%s: %w", s.bucket, s.root, context.Cause(ctx))
			}
			key := aws.ToString(o.Key)
			d, ok := parseKey(s.root, key)
			if !ok {
				s.log.Debug("s3blocks: not a block key, skipped", "key", key)
				continue
			}
			if bytes.Compare(d[:], from[:]) < 0 {
				continue
			}
			if seen && bytes.Compare(d[:], last[:]) <= 0 {
				return fmt.Errorf("s3blocks: the server listed %s after %s: not in ascending order", key, s.Key(last))
			}
			last, seen = d, true
			if err := fn(d, max(aws.ToInt64(o.Size)-1, 0)); err != nil {
				return err
			}
		}
	}
	return nil
}

// Sync does nothing: S3 answers a PUT once the object is stored, and has no flush.
func (s *Store) Sync(ctx context.Context) error { return nil }

// sdkLogger sends the SDK's messages (retries, clock skew, checksum notes) to slog.
type sdkLogger struct{ log *slog.Logger }

func (l sdkLogger) Logf(c logging.Classification, format string, v ...any) {
	level := slog.LevelDebug
	if c == logging.Warn {
		level = slog.LevelWarn
	}
	if l.log.Enabled(context.Background(), level) {
		l.log.Log(context.Background(), level, "s3blocks: aws sdk: "+fmt.Sprintf(format, v...))
	}
}
