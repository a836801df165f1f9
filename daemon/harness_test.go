package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ebs/types"

	"github.com/ebsd/ebsd/cas"
)

// The default account's credential in every test daemon. init puts it in the
// environment too, so daemons started as child processes (the test binary re-executed,
// or bin/ebsd) get the same one, and their ops listeners take free ports.
const (
	testAccessKeyID     = "AKIAEBSDTESTDEFAULT1"
	testSecretAccessKey = "ebsd/test/secret/key/of/the/default/acct"
	testRegion          = "us-east-1"
)

func init() {
	for k, v := range map[string]string{
		"EBSD_ACCESS_KEY_ID":     testAccessKeyID,
		"EBSD_SECRET_ACCESS_KEY": testSecretAccessKey,
		"EBSD_METRICS_LISTEN":    "127.0.0.1:0",
	} {
		if os.Getenv(k) == "" {
			_ = os.Setenv(k, v)
		}
	}
}

// testDaemon is a real daemon on a temp data dir and a loopback port.
type testDaemon struct {
	t   testing.TB
	cfg config
	d   *daemon
}

func newTestDaemon(t testing.TB, adjust ...func(*config)) *testDaemon {
	t.Helper()
	cfg := config{
		dataDir:     t.TempDir(),
		listen:      "127.0.0.1:0",
		region:      defaultRegion,
		accountID:   defaultAccountID,
		logLevel:    slog.LevelWarn,
		cacheMB:     64,
		readAheadKB: 4096,
		auth:        authSigV4,

		accessKeyID:     testAccessKeyID,
		secretAccessKey: testSecretAccessKey,
		mountUID:        -1,
		mountGID:        -1,
		mountMode:       0o400,
		rateBurst:       1,
		maxConnections:  1024,
	}
	for _, f := range adjust {
		f(&cfg)
	}
	td := &testDaemon{t: t, cfg: cfg}
	td.start()
	t.Cleanup(func() {
		if td.d != nil {
			if err := td.d.stop(); err != nil {
				t.Errorf("stopping daemon: %v", err)
			}
		}
	})
	return td
}

func (td *testDaemon) start() {
	td.t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{td.t}, &slog.HandlerOptions{Level: td.cfg.logLevel}))
	d, err := start(td.cfg, log)
	if err != nil {
		td.t.Fatalf("starting daemon: %v", err)
	}
	td.d = d
}

// restart stops the daemon cleanly and starts a new one on the same data directory.
func (td *testDaemon) restart() {
	td.t.Helper()
	if err := td.d.stop(); err != nil {
		td.t.Fatalf("stopping daemon: %v", err)
	}
	td.d = nil
	td.start()
}

func (td *testDaemon) url() string { return "http://" + td.d.addr() }

func (td *testDaemon) store() *cas.Store { return td.d.store }

// client is the real aws-sdk-go-v2 EBS client pointed at the daemon, with retries off
// so each test sees the server's first answer.
func (td *testDaemon) client() *ebs.Client { return newEBSClient(td.url(), "us-east-1", 1) }

func newEBSClient(endpoint, region string, attempts int) *ebs.Client {
	return ebs.New(ebs.Options{
		Region:           region,
		BaseEndpoint:     aws.String(endpoint),
		Credentials:      credentials.NewStaticCredentialsProvider(testAccessKeyID, testSecretAccessKey, ""),
		RetryMaxAttempts: attempts,
		HTTPClient:       &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
	})
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// block returns a block filled with b.
func block(b byte) []byte { return bytes.Repeat([]byte{b}, cas.BlockSize) }

func checksum(data []byte) string {
	s := sha256.Sum256(data)
	return base64.StdEncoding.EncodeToString(s[:])
}

func putBlock(ctx context.Context, c *ebs.Client, id string, index int32, data []byte) error {
	_, err := c.PutSnapshotBlock(ctx, &ebs.PutSnapshotBlockInput{
		SnapshotId:        aws.String(id),
		BlockIndex:        aws.Int32(index),
		BlockData:         bytes.NewReader(data),
		DataLength:        aws.Int32(int32(len(data))),
		Checksum:          aws.String(checksum(data)),
		ChecksumAlgorithm: types.ChecksumAlgorithmChecksumAlgorithmSha256,
	})
	return err
}

func startSnapshot(t testing.TB, c *ebs.Client, in *ebs.StartSnapshotInput) *ebs.StartSnapshotOutput {
	t.Helper()
	out, err := c.StartSnapshot(context.Background(), in)
	if err != nil {
		t.Fatalf("StartSnapshot: %v", err)
	}
	return out
}

// linear computes the LINEAR aggregate of blocks keyed by index, as a client would.
func linear(blocks map[int32][]byte) (count int32, sum string) {
	idx := make([]int32, 0, len(blocks))
	for i := range blocks {
		idx = append(idx, i)
	}
	for i := 1; i < len(idx); i++ { // insertion sort: test sizes are small
		for j := i; j > 0 && idx[j] < idx[j-1]; j-- {
			idx[j], idx[j-1] = idx[j-1], idx[j]
		}
	}
	h := sha256.New()
	for _, i := range idx {
		d := sha256.Sum256(blocks[i])
		h.Write(d[:])
	}
	return int32(len(idx)), base64.StdEncoding.EncodeToString(h.Sum(nil))
}

func complete(ctx context.Context, c *ebs.Client, id string, blocks map[int32][]byte) (types.Status, error) {
	n, sum := linear(blocks)
	out, err := c.CompleteSnapshot(ctx, &ebs.CompleteSnapshotInput{
		SnapshotId:                aws.String(id),
		ChangedBlocksCount:        aws.Int32(n),
		Checksum:                  aws.String(sum),
		ChecksumAlgorithm:         types.ChecksumAlgorithmChecksumAlgorithmSha256,
		ChecksumAggregationMethod: types.ChecksumAggregationMethodChecksumAggregationLinear,
	})
	if err != nil {
		return "", err
	}
	return out.Status, nil
}

// wantValidation fails unless err is a ValidationException with the given reason.
func wantValidation(t testing.TB, err error, reason types.ValidationExceptionReason) {
	t.Helper()
	var ve *types.ValidationException
	if !errors.As(err, &ve) {
		t.Fatalf("want ValidationException %s, got %v", reason, err)
	}
	if ve.Reason != reason {
		t.Fatalf("want ValidationException reason %s, got %s (%s)", reason, ve.Reason, aws.ToString(ve.Message))
	}
	if aws.ToString(ve.Message) == "" {
		t.Fatalf("ValidationException %s has no message", reason)
	}
}

// wantError fails unless err is (or wraps) an error of type T.
func wantError[T error](t testing.TB, err error) T {
	t.Helper()
	var target T
	if !errors.As(err, &target) {
		t.Fatalf("want %T, got %v", target, err)
	}
	return target
}

// rawResponse is an HTTP answer read whole.
type rawResponse struct {
	status int
	header http.Header
	body   []byte
}

// raw sends a request the SDK would refuse to send, signed with the test account's
// credential (the signature covers the headers given, not the body: UNSIGNED-PAYLOAD).
func (td *testDaemon) raw(method, path string, header map[string]string, body io.Reader, contentLength int64) rawResponse {
	td.t.Helper()
	return td.rawSigned(method, path, header, body, contentLength, true)
}

func (td *testDaemon) rawSigned(method, path string, header map[string]string, body io.Reader, contentLength int64, sign bool) rawResponse {
	td.t.Helper()
	req, err := http.NewRequest(method, td.url()+path, body)
	if err != nil {
		td.t.Fatal(err)
	}
	req.ContentLength = contentLength
	for k, v := range header {
		req.Header.Set(k, v)
	}
	if sign {
		signWith(td.t, req, serviceOfPath(path), unsignedPayload, testAccessKeyID, testSecretAccessKey, time.Now())
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		td.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		td.t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return rawResponse{status: resp.StatusCode, header: resp.Header, body: b}
}

// wantAWSError checks the full AWS error shape of a raw response.
func wantAWSError(t testing.TB, r rawResponse, status int, errType, reason string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d (body %s)", r.status, status, r.body)
	}
	if got := r.header.Get("x-amzn-ErrorType"); got != errType {
		t.Fatalf("x-amzn-ErrorType %q, want %q", got, errType)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	if r.header.Get("x-amzn-RequestId") == "" {
		t.Fatal("no x-amzn-RequestId")
	}
	var body struct{ Type, Message, Reason string }
	if err := json.Unmarshal(bytes.ReplaceAll(r.body, []byte(`"__type"`), []byte(`"Type"`)), &body); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	if body.Type != errType || body.Reason != reason || body.Message == "" {
		t.Fatalf("error body %s, want type %s reason %q and a message", r.body, errType, reason)
	}
}

func bufioReader(r io.Reader) *bufio.Reader { return bufio.NewReader(r) }

const unsignedPayload = "UNSIGNED-PAYLOAD"

// serviceOfPath is the signing name of a path: "ec2" for the EC2 Query endpoint "/"
// (with or without a query), "ebs" for everything else.
func serviceOfPath(path string) string {
	if path == "/" || strings.HasPrefix(path, "/?") {
		return "ec2"
	}
	return "ebs"
}

// signHTTP signs req as an AWS SDK would, with the test account's credential for
// service ("ebs" or "ec2"), region us-east-1. A body is read, hashed into the
// signature and put back.
func signHTTP(t testing.TB, req *http.Request, service string) {
	t.Helper()
	hash := sha256.Sum256(nil)
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(req.Body)
		if err != nil {
			t.Fatalf("reading body to sign: %v", err)
		}
		hash = sha256.Sum256(b)
		req.Body = io.NopCloser(bytes.NewReader(b))
		req.ContentLength = int64(len(b))
	}
	signWith(t, req, service, hex.EncodeToString(hash[:]), testAccessKeyID, testSecretAccessKey, time.Now())
}

// signWith signs req with any credential, payload hash and time: the auth tests use
// it to make every kind of wrong request.
func signWith(t testing.TB, req *http.Request, service, payloadHash, akid, secret string, at time.Time) {
	t.Helper()
	req.Header.Set("X-Amz-Content-Sha256", payloadHash)
	err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: akid, SecretAccessKey: secret},
		req, payloadHash, service, testRegion, at)
	if err != nil {
		t.Fatalf("signing: %v", err)
	}
}
