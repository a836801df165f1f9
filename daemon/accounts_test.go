package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// Account B of the credentials file the isolation tests use.
const (
	accountB       = "444455556666"
	accountBKey    = "AKIAEBSDTESTACCOUNTB"
	accountBSecret = "secret/of/account/b/for/tests/only/xyz"
)

// writeCredentials writes a --credentials file with the given accounts' JSON.
func writeCredentials(t *testing.T, path, accountsJSON string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(`{"accounts": [`+accountsJSON+`]}`), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func accountJSON(id, akid, secret string, admin bool) string {
	a := "false"
	if admin {
		a = "true"
	}
	return `{"accountId": "` + id + `", "admin": ` + a + `, "keys": [{"accessKeyId": "` + akid + `", "secretAccessKey": "` + secret + `"}]}`
}

func ebsClientAs(endpoint, akid, secret string, attempts int) *ebs.Client {
	return ebs.New(ebs.Options{
		Region: testRegion, BaseEndpoint: aws.String(endpoint),
		Credentials:      credentials.NewStaticCredentialsProvider(akid, secret, ""),
		RetryMaxAttempts: attempts,
	})
}

func ec2ClientAs(endpoint, akid, secret string) *ec2.Client {
	return ec2.New(ec2.Options{
		Region: testRegion, BaseEndpoint: aws.String(endpoint),
		Credentials:      credentials.NewStaticCredentialsProvider(akid, secret, ""),
		RetryMaxAttempts: 1,
	})
}

func wantAccessDenied(t *testing.T, what string, err error) {
	t.Helper()
	var ad *types.AccessDeniedException
	if !errors.As(err, &ad) || ad.Reason != types.AccessDeniedExceptionReasonUnauthorizedAccount {
		t.Fatalf("%s by another account: want AccessDeniedException UNAUTHORIZED_ACCOUNT, got %v", what, err)
	}
}

// TestAccountIsolation: account B gets nothing of account A's snapshots through any
// operation, while blocks are still deduplicated across accounts.
func TestAccountIsolation(t *testing.T) {
	creds := filepath.Join(t.TempDir(), "credentials.json")
	writeCredentials(t, creds, accountJSON(accountB, accountBKey, accountBSecret, false), 0o600)
	td := newTestDaemon(t, func(c *config) { c.credentialsFile = creds })
	ctx := context.Background()
	a := td.client()
	b := ebsClientAs(td.url(), accountBKey, accountBSecret, 1)

	// A's completed snapshot and A's pending one.
	sa := aws.ToString(startSnapshot(t, a, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), ClientToken: aws.String("same-token")}).SnapshotId)
	if err := putBlock(ctx, a, sa, 0, block(9)); err != nil {
		t.Fatal(err)
	}
	if _, err := complete(ctx, a, sa, map[int32][]byte{0: block(9)}); err != nil {
		t.Fatal(err)
	}
	pending := aws.ToString(startSnapshot(t, a, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId)
	list, err := a.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: aws.String(sa)})
	if err != nil {
		t.Fatal(err)
	}

	// Every EBS call of B on A's snapshots is refused.
	_, err = b.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: aws.String(sa)})
	wantAccessDenied(t, "ListSnapshotBlocks", err)
	_, err = b.GetSnapshotBlock(ctx, &ebs.GetSnapshotBlockInput{SnapshotId: aws.String(sa), BlockIndex: aws.Int32(0), BlockToken: list.Blocks[0].BlockToken})
	wantAccessDenied(t, "GetSnapshotBlock", err)
	wantAccessDenied(t, "PutSnapshotBlock", putBlock(ctx, b, pending, 0, block(1)))
	_, err = complete(ctx, b, pending, map[int32][]byte{})
	wantAccessDenied(t, "CompleteSnapshot", err)
	_, err = b.StartSnapshot(ctx, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), ParentSnapshotId: aws.String(sa)})
	wantAccessDenied(t, "StartSnapshot with a parent", err)
	_, err = b.ListChangedBlocks(ctx, &ebs.ListChangedBlocksInput{SecondSnapshotId: aws.String(sa)})
	wantAccessDenied(t, "ListChangedBlocks", err)

	// B's own snapshot: the same client token is B's own (tokens are per account), and
	// B may write the very block A holds, with the same answer as any new block.
	sb := aws.ToString(startSnapshot(t, b, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), ClientToken: aws.String("same-token")}).SnapshotId)
	if sb == sa {
		t.Fatal("account B's client token returned account A's snapshot")
	}
	out, err := b.PutSnapshotBlock(ctx, &ebs.PutSnapshotBlockInput{SnapshotId: aws.String(sb), BlockIndex: aws.Int32(0),
		BlockData: bytes.NewReader(block(9)), DataLength: aws.Int32(int32(len(block(9)))), Checksum: aws.String(checksum(block(9))),
		ChecksumAlgorithm: types.ChecksumAlgorithmChecksumAlgorithmSha256})
	if err != nil || aws.ToString(out.Checksum) != checksum(block(9)) {
		t.Fatalf("B's put of a block A holds: %v", err)
	}
	if _, err := complete(ctx, b, sb, map[int32][]byte{0: block(9)}); err != nil {
		t.Fatal(err)
	}
	_, err = b.ListChangedBlocks(ctx, &ebs.ListChangedBlocksInput{FirstSnapshotId: aws.String(sa), SecondSnapshotId: aws.String(sb)})
	wantAccessDenied(t, "ListChangedBlocks across accounts", err)
	if st, _ := td.store().Stats(ctx); st.UniqueBlocks != 1 {
		t.Fatalf("unique blocks %d: the block both accounts wrote is stored once", st.UniqueBlocks)
	}

	// EC2: B does not see, tag or delete A's snapshots.
	e := ec2ClientAs(td.url(), accountBKey, accountBSecret)
	ds, err := e.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ds.Snapshots {
		if aws.ToString(s.OwnerId) != accountB {
			t.Fatalf("B's DescribeSnapshots lists %s of %s", aws.ToString(s.SnapshotId), aws.ToString(s.OwnerId))
		}
	}
	if len(ds.Snapshots) != 1 {
		t.Fatalf("B sees %d snapshots, want its own 1", len(ds.Snapshots))
	}
	_, err = e.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{sa}})
	wantEC2Error(t, err, "InvalidSnapshot.NotFound")
	_, err = e.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{sa}, Tags: []ec2types.Tag{{Key: aws.String("k"), Value: aws.String("v")}}})
	wantEC2Error(t, err, "InvalidSnapshot.NotFound")
	_, err = e.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(sa)})
	wantEC2Error(t, err, "InvalidSnapshot.NotFound")
	if _, err := td.store().Snapshot(ctx, defaultAccountID, sa); err != nil {
		t.Fatalf("A's snapshot after B's delete: %v", err)
	}

	// ebsd's own endpoints need an admin account: B is not one, A (the default) is.
	req := newReq(t, "GET", td.url()+"/ebsd/v1/stats", nil)
	signWith(t, req, "ebs", sha(nil), accountBKey, accountBSecret, time.Now())
	sendAuthCase(t, td.url(), authCase{status: 403, code: "AccessDeniedException", build: func(*testing.T, string) *http.Request { return req }})
	if r := td.raw("GET", "/ebsd/v1/stats", nil, nil, 0); r.status != 200 {
		t.Fatalf("admin stats: %d %s", r.status, r.body)
	}
}

// TestCredentialsFileMustBePrivate: a credentials file others can read is refused.
func TestCredentialsFileMustBePrivate(t *testing.T) {
	creds := filepath.Join(t.TempDir(), "credentials.json")
	writeCredentials(t, creds, accountJSON(accountB, accountBKey, accountBSecret, false), 0o644)
	cfg := config{dataDir: t.TempDir(), listen: "127.0.0.1:0", auth: authSigV4, accountID: defaultAccountID,
		accessKeyID: testAccessKeyID, secretAccessKey: testSecretAccessKey, credentialsFile: creds}
	d, err := start(cfg, slog.New(slog.DiscardHandler))
	if err == nil {
		_ = d.stop()
		t.Fatal("a daemon started with a credentials file of mode 0644")
	}
	if !strings.Contains(err.Error(), "0644") || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("refusal does not say what to do: %v", err)
	}
}

// TestCredentialsReloadKeepsServing: reloading the credentials file (what SIGHUP
// does) swaps keys without failing a request of a key that stays.
func TestCredentialsReloadKeepsServing(t *testing.T) {
	creds := filepath.Join(t.TempDir(), "credentials.json")
	writeCredentials(t, creds, accountJSON(accountB, accountBKey, accountBSecret, false), 0o600)
	td := newTestDaemon(t, func(c *config) { c.credentialsFile = creds })
	ctx := context.Background()
	const cKey, cSecret = "AKIAEBSDTESTACCOUNTC", "secret/of/account/c/for/tests/only/xyz"
	c := ebsClientAs(td.url(), cKey, cSecret, 1)
	if _, err := c.StartSnapshot(ctx, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}); err == nil {
		t.Fatal("an unknown key was accepted")
	}

	b := ebsClientAs(td.url(), accountBKey, accountBSecret, 1)
	stop := make(chan struct{})
	var failures atomic.Int64
	var calls atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := b.StartSnapshot(ctx, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), ClientToken: aws.String("reload")}); err != nil {
					failures.Add(1)
					t.Errorf("request during reload: %v", err)
				}
				calls.Add(1)
			}
		}()
	}
	for i := 0; i <= 50; i++ {
		more := ""
		if i%2 == 0 {
			more = ", " + accountJSON("777788889999", cKey, cSecret, false)
		}
		writeCredentials(t, creds, accountJSON(accountB, accountBKey, accountBSecret, false)+more, 0o600)
		td.d.reload()
	}
	// A broken file is refused and the keys in force stay.
	if err := os.WriteFile(creds, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	td.d.reload()
	close(stop)
	wg.Wait()
	if failures.Load() > 0 || calls.Load() == 0 {
		t.Fatalf("%d of %d requests failed during reloads", failures.Load(), calls.Load())
	}
	// The last good file (i = 50) had C.
	if _, err := c.StartSnapshot(ctx, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}); err != nil {
		t.Fatalf("key added by a reload: %v", err)
	}
}

// TestGeneratedCredential: with no credential configured, the daemon makes one on
// first start, keeps it 0600 in the data directory and keeps using it.
func TestGeneratedCredential(t *testing.T) {
	td := newTestDaemon(t, func(c *config) { c.accessKeyID, c.secretAccessKey = "", "" })
	path := filepath.Join(td.cfg.dataDir, generatedCredentialsFile)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("generated credential file mode %04o, want 0600", st.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	akid, secret, err := parseExports(b)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(akid, "AKIA") || len(akid) != 20 || len(secret) != 40 {
		t.Fatalf("generated key %q / secret of %d characters", akid, len(secret))
	}
	ctx := context.Background()
	if _, err := ebsClientAs(td.url(), akid, secret, 1).StartSnapshot(ctx, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}); err != nil {
		t.Fatalf("generated credential: %v", err)
	}
	if _, err := td.client().StartSnapshot(ctx, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}); err == nil {
		t.Fatal("a key that is not the generated one was accepted")
	}
	td.restart()
	if again, _ := os.ReadFile(path); !bytes.Equal(again, b) {
		t.Fatal("the generated credential changed on restart")
	}
	if _, err := ebsClientAs(td.url(), akid, secret, 1).StartSnapshot(ctx, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}); err != nil {
		t.Fatalf("generated credential after restart: %v", err)
	}
}

// TestBrowserCannotGetIn: what a web page can make a browser send fails before any
// work is done, with signatures on and with --auth none.
func TestBrowserCannotGetIn(t *testing.T) {
	ctx := context.Background()
	t.Run("signatures on", func(t *testing.T) {
		td := newTestDaemon(t)
		id := aws.ToString(startSnapshot(t, td.client(), &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId)
		// Even correctly signed, a request carrying Origin is refused.
		req := newReq(t, "GET", td.url()+"/snapshots/"+id+"/blocks", nil)
		signWith(t, req, "ebs", sha(nil), testAccessKeyID, testSecretAccessKey, time.Now())
		req.Header.Set("Origin", "http://attacker.example")
		sendAuthCase(t, td.url(), authCase{status: 403, code: "AccessDeniedException", build: func(*testing.T, string) *http.Request { return req }})
		// A form POST and a foreign Host carry no signature.
		form := newReq(t, "POST", td.url()+"/snapshots", []byte(`{"VolumeSize":1}`))
		form.Header.Set("Content-Type", "text/plain")
		sendAuthCase(t, td.url(), authCase{status: 403, code: "MissingAuthenticationTokenException", build: func(*testing.T, string) *http.Request { return form }})
		del := newReq(t, "GET", td.url()+"/?Action=DeleteSnapshot&Version=2016-11-15&SnapshotId="+id, nil)
		del.Host = "attacker.example"
		sendAuthCase(t, td.url(), authCase{status: 401, code: "MissingAuthenticationToken", build: func(*testing.T, string) *http.Request { return del }})
		if n := len(td.store().Snapshots(defaultAccountID)); n != 1 {
			t.Fatalf("%d snapshots after the browser's requests, want 1", n)
		}
	})
	t.Run("auth none", func(t *testing.T) {
		td := newTestDaemon(t, func(c *config) { c.auth = authNone })
		id := aws.ToString(startSnapshot(t, td.client(), &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId)
		del := url.Values{"Action": {"DeleteSnapshot"}, "Version": {"2016-11-15"}, "SnapshotId": {id}}.Encode()
		refused := []func() *http.Request{
			func() *http.Request { return newReq(t, "GET", td.url()+"/?"+del, nil) }, // an <img>
			func() *http.Request { // a form, cross-origin
				r := newReq(t, "POST", td.url()+"/", []byte(del))
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				r.Header.Set("Origin", "http://attacker.example")
				return r
			},
			func() *http.Request { // DNS rebinding: the page's own name on loopback
				r := newReq(t, "POST", td.url()+"/", []byte(del))
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				r.Host = "attacker.example:" + td.d.addr()[strings.LastIndex(td.d.addr(), ":")+1:]
				return r
			},
			func() *http.Request { // a text/plain form filling the pending limit
				r := newReq(t, "POST", td.url()+"/snapshots", []byte(`{"VolumeSize":1}`))
				r.Header.Set("Content-Type", "text/plain")
				return r
			},
		}
		for i, mk := range refused {
			resp, err := http.DefaultClient.Do(mk())
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 403 {
				t.Fatalf("browser request %d: status %d, want 403", i, resp.StatusCode)
			}
		}
		if n := len(td.store().Snapshots(defaultAccountID)); n != 1 {
			t.Fatalf("%d snapshots after the browser's requests, want 1", n)
		}
		// What the AWS tools send still works, unsigned.
		r := newReq(t, "POST", td.url()+"/", []byte(del))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("unsigned DeleteSnapshot by POST form: %d", resp.StatusCode)
		}
		if _, err := td.store().Snapshot(ctx, defaultAccountID, id); err == nil {
			t.Fatal("snapshot still there after DeleteSnapshot")
		}
	})
	t.Run("auth none refuses to serve beyond loopback", func(t *testing.T) {
		_, err := parseConfig([]string{"--auth", "none", "--listen", "0.0.0.0:8600"}, func(string) string { return "" }, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), "loopback") {
			t.Fatalf("--auth none on 0.0.0.0: %v", err)
		}
	})
}

// TestThrottledRequestsAreRetried: over the account's rate the answer is
// RequestThrottledException, which the Go SDK retries until it succeeds.
func TestThrottledRequestsAreRetried(t *testing.T) {
	td := newTestDaemon(t, func(c *config) { c.rateLimit, c.rateBurst = 20, 1 })
	var throttled atomic.Int64
	client := ebs.New(ebs.Options{
		Region: testRegion, BaseEndpoint: aws.String(td.url()),
		Credentials: credentials.NewStaticCredentialsProvider(testAccessKeyID, testSecretAccessKey, ""),
		Retryer: retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = 50
			o.Backoff = retry.NewExponentialJitterBackoff(200 * time.Millisecond)
		}),
		HTTPClient: &http.Client{Transport: countingTransport{next: http.DefaultTransport, throttled: &throttled}},
	})
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := client.StartSnapshot(ctx, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a throttled request did not succeed on retry: %v", err)
		}
	}
	if throttled.Load() == 0 {
		t.Fatal("10 requests at once against a burst of 1 were never throttled")
	}
	// One attempt only: the client sees the exception itself.
	one := ebsClientAs(td.url(), testAccessKeyID, testSecretAccessKey, 1)
	var sawThrottle bool
	for i := 0; i < 5 && !sawThrottle; i++ {
		_, err := one.StartSnapshot(ctx, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)})
		var te *types.RequestThrottledException
		if errors.As(err, &te) {
			sawThrottle = te.Reason == types.RequestThrottledExceptionReasonAccountThrottled
		}
	}
	if !sawThrottle {
		t.Fatal("5 back-to-back requests over a burst of 1 never saw RequestThrottledException ACCOUNT_THROTTLED")
	}
}

type countingTransport struct {
	next      http.RoundTripper
	throttled *atomic.Int64
}

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(r)
	if err == nil && resp.Header.Get("x-amzn-ErrorType") == "RequestThrottledException" {
		c.throttled.Add(1)
	}
	return resp, err
}

// TestTLS: with --tls-cert/--tls-key the API is HTTPS; a client trusting the
// certificate works, plain HTTP does not.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := makeCertificate(t, dir)
	td := newTestDaemon(t, func(c *config) { c.tlsCert, c.tlsKey = certFile, keyFile })
	base := "https://" + td.d.addr()
	client := ebs.New(ebs.Options{
		Region: testRegion, BaseEndpoint: aws.String(base),
		Credentials:      credentials.NewStaticCredentialsProvider(testAccessKeyID, testSecretAccessKey, ""),
		RetryMaxAttempts: 1,
		HTTPClient:       &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}},
	})
	if _, err := client.StartSnapshot(context.Background(), &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}); err != nil {
		t.Fatalf("over TLS: %v", err)
	}
	resp, err := http.Get("http://" + td.d.addr() + "/")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("plain HTTP to the TLS port: %d", resp.StatusCode)
		}
	}
	// SIGHUP's reload takes a new certificate.
	certFile2, keyFile2, pool2 := makeCertificate(t, t.TempDir())
	for _, p := range [][2]string{{certFile2, certFile}, {keyFile2, keyFile}} {
		b, _ := os.ReadFile(p[0])
		if err := os.WriteFile(p[1], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	td.d.reload()
	conn, err := tls.Dial("tcp", td.d.addr(), &tls.Config{RootCAs: pool2})
	if err != nil {
		t.Fatalf("after reload, the new certificate is not served: %v", err)
	}
	conn.Close()
}

// makeCertificate writes a self-signed certificate for 127.0.0.1 and its key.
func makeCertificate(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "ebsd test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestConnectionCap: past --max-connections, Accept waits for a connection to close.
func TestConnectionCap(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := newLimitListener(inner, 1)
	full := make(chan struct{}, 1)
	ln.onFull = func() { full <- struct{}{} }
	defer ln.Close()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	dial()
	first, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	dial()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	// Accept reports that it waits for a slot; until the first connection closes it
	// cannot have accepted the second.
	select {
	case <-full:
	case c := <-accepted:
		t.Fatalf("a second connection was accepted while the only slot was taken (%v)", c)
	case <-time.After(10 * time.Second):
		t.Fatal("Accept neither waited for a slot nor accepted")
	}
	select {
	case <-accepted:
		t.Fatal("a second connection was accepted while the only slot was taken")
	default:
	}
	first.Close()
	select {
	case c, ok := <-accepted:
		if !ok {
			t.Fatal("Accept failed after a slot came free")
		}
		c.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("the second connection was not accepted after the first closed")
	}
}

// TestSIGHUPReloadsCredentials: the signal itself, sent to a running daemon process,
// reloads the credentials file.
func TestSIGHUPReloadsCredentials(t *testing.T) {
	creds := filepath.Join(t.TempDir(), "credentials.json")
	writeCredentials(t, creds, accountJSON(accountB, accountBKey, accountBSecret, false), 0o600)
	child := startChild(t, t.TempDir(), "EBSD_CREDENTIALS="+creds)
	ctx := context.Background()
	const cKey, cSecret = "AKIAEBSDTESTACCOUNTC", "secret/of/account/c/for/tests/only/xyz"
	c := ebsClientAs("http://"+child.addr, cKey, cSecret, 1)
	if _, err := c.StartSnapshot(ctx, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}); err == nil {
		t.Fatal("a key not in the file was accepted")
	}
	writeCredentials(t, creds, accountJSON(accountB, accountBKey, accountBSecret, false)+", "+accountJSON("777788889999", cKey, cSecret, false), 0o600)
	reloaded := child.expect(regexp.MustCompile(`msg="reload: credentials loaded"`))
	if err := child.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	child.await(t, reloaded, "the reload after SIGHUP")
	if _, err := c.StartSnapshot(ctx, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}); err != nil {
		t.Fatalf("key added before SIGHUP: %v", err)
	}
	child.terminate(t)
}

// TestDataDirectoryIsPrivate: the data directory holds every disk image; a local user
// other than the daemon's cannot read it, even if it was created open.
func TestDataDirectoryIsPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	td := newTestDaemon(t, func(c *config) { c.dataDir = dir })
	if err := putBlock(context.Background(), td.client(), aws.ToString(startSnapshot(t, td.client(), &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId), 0, block(3)); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		t.Fatalf("data directory mode %04o after start", st.Mode().Perm())
	}
	if os.Geteuid() != 0 {
		return // the setpriv check below needs root
	}
	out, err := exec.Command("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "ls", dir).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Permission denied") {
		t.Fatalf("user nobody listed the data directory: %v %s", err, out)
	}
}
