package s3blocks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ebsd/ebsd/cas/blocktest"
	"github.com/ebsd/ebsd/cas/core"
	"github.com/ebsd/ebsd/cas/diskcache"
	"github.com/ebsd/ebsd/tools/clustertest"
)

// testTimeout bounds every test's calls, so that a server that stops answering fails
// a test instead of hanging it.
const testTimeout = 2 * time.Minute

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		url, bucket, prefix string
		bad                 bool
	}{
		{url: "s3://ebsd/blocks", bucket: "ebsd", prefix: "blocks"},
		{url: "s3://ebsd/blocks/", bucket: "ebsd", prefix: "blocks"},
		{url: "s3://ebsd/a/b/c", bucket: "ebsd", prefix: "a/b/c"},
		{url: "s3://ebsd", bucket: "ebsd"},
		{url: "s3://ebsd/", bucket: "ebsd"},
		{url: "s3://my.bucket-1/p", bucket: "my.bucket-1", prefix: "p"},
		{url: "", bad: true},
		{url: "ebsd/blocks", bad: true},
		{url: "http://ebsd/blocks", bad: true},
		{url: "S3://ebsd/blocks", bad: true},
		{url: "s3://", bad: true},
		{url: "s3:///blocks", bad: true},
		{url: "s3://ebsd//blocks", bad: true},
		{url: "s3://ebsd/a//b", bad: true},
		{url: "s3://ebsd/a/../b", bad: true},
		{url: "s3://ebsd/./b", bad: true},
		{url: "s3://ebsd/blocks?versionId=1", bad: true},
		{url: "s3://ebsd/blocks#x", bad: true},
		{url: "s3://user@ebsd/blocks", bad: true},
		{url: "s3://ebsd:9000/blocks", bad: true},
	} {
		bucket, prefix, err := ParseURL(tc.url)
		switch {
		case tc.bad && err == nil:
			t.Errorf("ParseURL(%q) = %q, %q; want an error", tc.url, bucket, prefix)
		case !tc.bad && err != nil:
			t.Errorf("ParseURL(%q): %v", tc.url, err)
		case !tc.bad && (bucket != tc.bucket || prefix != tc.prefix):
			t.Errorf("ParseURL(%q) = %q, %q; want %q, %q", tc.url, bucket, prefix, tc.bucket, tc.prefix)
		}
	}
}

func digestN(i int) core.Digest { return core.Sum(fmt.Appendf(nil, "digest %d", i)) }

func TestKeyLayout(t *testing.T) {
	d := core.Digest{0xab, 0xcd, 0xef}
	hexd := "abcdef" + strings.Repeat("0", 58)
	for _, tc := range []struct{ prefix, want string }{
		{"", "blocks/ab/" + hexd},
		{"p", "p/blocks/ab/" + hexd},
		{"a/b", "a/b/blocks/ab/" + hexd},
	} {
		root := blockRoot(tc.prefix)
		key := blockKey(root, d)
		if key != tc.want {
			t.Errorf("key under %q = %q, want %q", tc.prefix, key, tc.want)
		}
		if got, ok := parseKey(root, key); !ok || got != d {
			t.Errorf("parseKey(%q) = %v, %v", key, got, ok)
		}
	}
	root := blockRoot("p")
	for _, key := range []string{
		"p/blocks/ab",
		"p/blocks/ab/",
		"p/blocks/ab/abcdef",
		"p/blocks/ac/" + hexd, // the wrong fan-out
		"p/blocks/AB/ABCDEF" + strings.Repeat("0", 58), // upper case
		"p/blocks/ab/" + hexd + "0",
		"p/blocks/ab/" + hexd + "/x",
		"p/blocks/ab/abcdeg" + strings.Repeat("0", 58),
		"q/blocks/ab/" + hexd,
		"p/blocksab/" + hexd,
		"p/blocks/README",
	} {
		if got, ok := parseKey(root, key); ok {
			t.Errorf("parseKey(%q) = %v, want no block", key, got)
		}
	}

	// Key order is digest order, and no key is a path prefix of another.
	var ds []core.Digest
	var keys []string
	for i := range 2000 {
		ds = append(ds, digestN(i))
		keys = append(keys, blockKey(root, ds[i]))
	}
	ds = append(ds, core.Digest{}, core.Digest{0xff, 0xff}, core.Digest{0x0f}, core.Digest{0xf0}, core.Digest{0x9f}, core.Digest{0xa0})
	for _, d := range ds[2000:] {
		keys = append(keys, blockKey(root, d))
	}
	slices.SortFunc(ds, func(a, b core.Digest) int { return bytes.Compare(a[:], b[:]) })
	slices.Sort(keys)
	for i := range ds {
		if got, _ := parseKey(root, keys[i]); got != ds[i] {
			t.Fatalf("key %d in byte order is %s, digest %d in order is %s", i, keys[i], i, ds[i])
		}
		if i > 0 && strings.HasPrefix(keys[i], keys[i-1]+"/") {
			t.Fatalf("key %s is a directory of %s", keys[i-1], keys[i])
		}
		if len(keys[i]) != len(keys[0]) {
			t.Fatalf("keys of different lengths: %s, %s", keys[0], keys[i])
		}
	}
}

func TestTagReader(t *testing.T) {
	data := []byte("hello, block")
	r := &tagReader{tag: 0x81, data: data}
	want := append([]byte{0x81}, data...)
	for _, chunk := range []int{1, 2, 5, 100} {
		if _, err := r.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		var got []byte
		buf := make([]byte, chunk)
		for {
			n, err := r.Read(buf)
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("read in chunks of %d: %q, want %q", chunk, got, want)
		}
	}
	if n, err := r.Seek(-3, io.SeekEnd); err != nil || n != int64(len(want)-3) {
		t.Fatalf("Seek(-3, end) = %d, %v", n, err)
	}
	if got, _ := io.ReadAll(r); !bytes.Equal(got, want[len(want)-3:]) {
		t.Fatalf("read after seeking from the end: %q", got)
	}
	if _, err := r.Seek(-1, io.SeekStart); err == nil {
		t.Fatal("seek before the start was taken")
	}
	empty := &tagReader{tag: 7}
	if got, _ := io.ReadAll(empty); !bytes.Equal(got, []byte{7}) {
		t.Fatalf("empty data reads %q", got)
	}
}

func TestLastOfEach(t *testing.T) {
	a, b := digestN(1), digestN(2)
	got := lastOfEach([]core.StoredBlock{{Digest: a, Tag: 1}, {Digest: b, Tag: 2}, {Digest: a, Tag: 3}})
	if len(got) != 2 || got[0].Digest != b || got[1].Tag != 3 {
		t.Fatalf("lastOfEach = %+v", got)
	}
}

// fakeS3 is an S3 endpoint whose answers a test chooses: the bucket exists (Open's
// HeadBucket), and everything else goes to respond.
type fakeS3 struct {
	mu       sync.Mutex
	requests []string // "METHOD path?query"
	respond  func(w http.ResponseWriter, r *http.Request, body []byte)
}

func (f *fakeS3) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if r.Method == http.MethodHead && r.URL.Path == "/bkt" {
		return
	}
	f.mu.Lock()
	f.requests = append(f.requests, r.Method+" "+r.URL.Path+"?"+r.URL.RawQuery)
	respond := f.respond
	f.mu.Unlock()
	respond(w, r, body)
}

func (f *fakeS3) count(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, r := range f.requests {
		if strings.HasPrefix(r, method+" ") {
			n++
		}
	}
	return n
}

func s3Error(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>test</Message></Error>`, code)
}

// openFake opens a store on a fake server, with quick retries.
func openFake(t *testing.T, f *fakeS3) *Store {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	s, err := Open(testContext(t), Config{
		URL:         "s3://bkt/pre",
		Log:         testLog(t),
		Endpoint:    srv.URL,
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider("AK", "SK", ""),
		MaxAttempts: 3,
		MaxBackoff:  time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestErrors: only "no such key" is ErrBlockNotFound; every other failure, retried or
// not, is an error that is not.
func TestErrors(t *testing.T) {
	d := digestN(1)
	noFn := func(byte, []byte) error { return errors.New("fn called") }
	for _, tc := range []struct {
		name     string
		status   int
		code     string // "" for no body
		notFound bool
		attempts int
	}{
		{"NoSuchKey", 404, "NoSuchKey", true, 1},
		{"NoSuchBucket", 404, "NoSuchBucket", false, 1},
		{"AccessDenied", 403, "AccessDenied", false, 1},
		{"InternalError", 500, "InternalError", false, 3},
		{"SlowDown", 503, "SlowDown", false, 3},
		{"BadGateway", 502, "", false, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeS3{respond: func(w http.ResponseWriter, r *http.Request, _ []byte) {
				if tc.code == "" || r.Method == http.MethodHead {
					w.WriteHeader(tc.status)
					return
				}
				s3Error(w, tc.status, tc.code)
			}}
			s := openFake(t, f)
			err := s.Read(testContext(t), d, noFn)
			if errors.Is(err, core.ErrBlockNotFound) != tc.notFound || err == nil {
				t.Errorf("Read: %v; want not found: %v", err, tc.notFound)
			}
			if n := f.count("GET"); n != tc.attempts {
				t.Errorf("Read made %d attempts, want %d", n, tc.attempts)
			}
			// HEAD answers have no body: a 404 is NotFound, whatever was missing.
			_, err = s.Stat(testContext(t), d)
			if errors.Is(err, core.ErrBlockNotFound) != (tc.status == 404) || err == nil {
				t.Errorf("Stat: %v", err)
			}
			if tc.notFound {
				return
			}
			if err := s.Put(testContext(t), []core.StoredBlock{{Digest: d, Tag: 1, Data: []byte("x")}}); err == nil || errors.Is(err, core.ErrBlockNotFound) {
				t.Errorf("Put: %v", err)
			}
			if err := s.Walk(testContext(t), core.Digest{}, func(core.Digest, int64) error { return nil }); err == nil || errors.Is(err, core.ErrBlockNotFound) {
				t.Errorf("Walk: %v", err)
			}
		})
	}

	t.Run("Unreachable", func(t *testing.T) {
		srv := httptest.NewServer(&fakeS3{})
		endpoint := srv.URL
		srv.Close() // nothing listens there now
		_, err := Open(testContext(t), Config{
			URL: "s3://bkt", Endpoint: endpoint, Region: "us-east-1",
			Credentials: credentials.NewStaticCredentialsProvider("AK", "SK", ""),
			MaxAttempts: 2, MaxBackoff: time.Millisecond,
		})
		if err == nil || errors.Is(err, core.ErrBlockNotFound) {
			t.Fatalf("Open of an endpoint where nothing listens: %v", err)
		}
	})

	t.Run("EmptyObject", func(t *testing.T) {
		s := openFake(t, &fakeS3{respond: func(w http.ResponseWriter, r *http.Request, _ []byte) {
			w.Header().Set("Content-Length", "0")
		}})
		if err := s.Read(testContext(t), d, noFn); !errors.Is(err, core.ErrCorruptBlock) {
			t.Errorf("Read of an empty object: %v", err)
		}
		if _, err := s.Stat(testContext(t), d); !errors.Is(err, core.ErrCorruptBlock) {
			t.Errorf("Stat of an empty object: %v", err)
		}
	})
}

// TestBodyCutRetried: a GET whose body breaks off (a server going down mid-response)
// is tried again; the SDK's retryer does not cover the body.
func TestBodyCutRetried(t *testing.T) {
	want := append([]byte{0x81}, bytes.Repeat([]byte("block "), 10000)...)
	var gets atomic.Int64
	f := &fakeS3{respond: func(w http.ResponseWriter, r *http.Request, _ []byte) {
		w.Header().Set("Content-Length", fmt.Sprint(len(want)))
		if gets.Add(1) == 1 {
			w.Write(want[:len(want)/2]) // the server closes the connection: short body
			return
		}
		w.Write(want)
	}}
	s := openFake(t, f)
	err := s.Read(testContext(t), digestN(1), func(tag byte, data []byte) error {
		if tag != want[0] || !bytes.Equal(data, want[1:]) {
			return errors.New("wrong bytes")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := gets.Load(); n != 2 {
		t.Fatalf("%d GETs, want 2", n)
	}
}

// TestPutRequest checks what an upload sends: the tag byte, then the data, its length,
// and a checksum for the server to verify.
func TestPutRequest(t *testing.T) {
	var mu sync.Mutex
	got := map[string][]byte{}
	var headers http.Header
	f := &fakeS3{respond: func(w http.ResponseWriter, r *http.Request, body []byte) {
		if r.Method != http.MethodPut {
			s3Error(w, 400, "Unexpected")
			return
		}
		mu.Lock()
		got[r.URL.Path] = body
		headers = r.Header.Clone()
		mu.Unlock()
	}}
	s := openFake(t, f)
	var blocks []core.StoredBlock
	for i := range 40 {
		blocks = append(blocks, core.StoredBlock{Digest: digestN(i), Tag: byte(i), Data: bytes.Repeat([]byte{byte(i)}, i*100)})
	}
	if err := s.Put(testContext(t), blocks); err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks {
		body := got["/bkt/"+s.Key(b.Digest)]
		if !bytes.Equal(body, append([]byte{b.Tag}, b.Data...)) {
			t.Fatalf("block %s arrived as %d bytes", b.Digest, len(body))
		}
	}
	if headers.Get("Content-Length") == "" || headers.Get("X-Amz-Checksum-Crc32") == "" && headers.Get("Content-Md5") == "" {
		t.Fatalf("an upload without length or checksum: %v", headers)
	}
}

// TestDeleteFallback: a server that refuses DeleteObjects gets one DELETE per key, and
// is not asked again.
func TestDeleteFallback(t *testing.T) {
	f := &fakeS3{}
	f.respond = func(w http.ResponseWriter, r *http.Request, _ []byte) {
		switch r.Method {
		case http.MethodPost:
			s3Error(w, 501, "NotImplemented")
		case http.MethodDelete:
			if strings.HasSuffix(r.URL.Path, digestN(0).String()) {
				s3Error(w, 404, "NoSuchKey") // some servers say so for an absent key
				return
			}
			w.WriteHeader(http.StatusNoContent)
		default:
			s3Error(w, 400, "Unexpected")
		}
	}
	s := openFake(t, f)
	var ds []core.Digest
	for i := range 30 {
		ds = append(ds, digestN(i))
	}
	for range 2 {
		if err := s.Delete(testContext(t), ds); err != nil {
			t.Fatal(err)
		}
	}
	if p, d := f.count("POST"), f.count("DELETE"); p != 1 || d != 60 {
		t.Fatalf("%d DeleteObjects and %d DeleteObject requests, want 1 and 60", p, d)
	}
}

func TestDeleteObjectsErrors(t *testing.T) {
	var batches atomic.Int64
	s := openFake(t, &fakeS3{respond: func(w http.ResponseWriter, r *http.Request, body []byte) {
		if r.Method != http.MethodPost {
			s3Error(w, 400, "Unexpected")
			return
		}
		if n := strings.Count(string(body), "<Key>"); n > 1000 {
			s3Error(w, 400, "MalformedXML")
			return
		}
		batches.Add(1)
		// One absent key (fine) and, in the last batch, one refused.
		fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><DeleteResult>`+
			`<Error><Key>k1</Key><Code>NoSuchKey</Code><Message>m</Message></Error>`)
		if strings.Contains(string(body), digestN(2400).String()) {
			fmt.Fprint(w, `<Error><Key>k2</Key><Code>AccessDenied</Code><Message>m</Message></Error>`)
		}
		fmt.Fprint(w, `</DeleteResult>`)
	}})
	var ds []core.Digest
	for i := range 2500 {
		ds = append(ds, digestN(i))
	}
	if err := s.Delete(testContext(t), ds[:2000]); err != nil {
		t.Fatal(err)
	}
	if n := batches.Load(); n != 2 {
		t.Fatalf("2000 keys went in %d requests, want 2", n)
	}
	err := s.Delete(testContext(t), ds)
	if err == nil || !strings.Contains(err.Error(), "AccessDenied") {
		t.Fatalf("Delete with a key refused: %v", err)
	}
}

// TestWalkOrderChecked: a listing out of order fails the walk rather than breaking
// its promise silently; keys that are not blocks are skipped.
func TestWalkOrderChecked(t *testing.T) {
	a, b := core.Digest{0x10}, core.Digest{0x20}
	var keys []string
	f := &fakeS3{respond: func(w http.ResponseWriter, r *http.Request, _ []byte) {
		fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>bkt</Name><IsTruncated>false</IsTruncated>`)
		for _, k := range keys {
			fmt.Fprintf(w, `<Contents><Key>%s</Key><Size>11</Size></Contents>`, k)
		}
		fmt.Fprint(w, `</ListBucketResult>`)
	}}
	s := openFake(t, f)
	walk := func() ([]core.Digest, error) {
		var got []core.Digest
		err := s.Walk(testContext(t), core.Digest{}, func(d core.Digest, size int64) error {
			if size != 10 {
				return fmt.Errorf("size %d", size)
			}
			got = append(got, d)
			return nil
		})
		return got, err
	}
	keys = []string{s.Key(a), "pre/blocks/README", "pre/blocks/20/nope", s.Key(b)}
	if got, err := walk(); err != nil || !slices.Equal(got, []core.Digest{a, b}) {
		t.Fatalf("Walk = %v, %v", got, err)
	}
	keys = []string{s.Key(b), s.Key(a)}
	if _, err := walk(); err == nil {
		t.Fatal("a listing out of order was walked")
	}
}

// TestEnvironment: with only a URL, the endpoint, region and credentials come from
// the AWS variables, and requests are path-style.
func TestEnvironment(t *testing.T) {
	var auth, path string
	f := &fakeS3{respond: func(w http.ResponseWriter, r *http.Request, _ []byte) {
		auth, path = r.Header.Get("Authorization"), r.URL.Path
		s3Error(w, 404, "NoSuchKey")
	}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	t.Setenv("AWS_CONFIG_FILE", "/dev/null")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1") // the S3-specific one wins
	t.Setenv("AWS_ENDPOINT_URL_S3", srv.URL)
	t.Setenv("AWS_REGION", "eu-west-3")
	t.Setenv("AWS_ACCESS_KEY_ID", "AKENV")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "SKENV")
	s, err := Open(testContext(t), Config{URL: "s3://bkt/pre"})
	if err != nil {
		t.Fatal(err)
	}
	d := digestN(1)
	if err := s.Read(testContext(t), d, func(byte, []byte) error { return nil }); !errors.Is(err, core.ErrBlockNotFound) {
		t.Fatal(err)
	}
	if path != "/bkt/"+s.Key(d) {
		t.Errorf("request path %q, want path-style /bkt/%s", path, s.Key(d))
	}
	if !strings.Contains(auth, "Credential=AKENV/") || !strings.Contains(auth, "/eu-west-3/s3/") {
		t.Errorf("request signed as %q", auth)
	}
}

// TestCluster runs against a real S3 server (versitygw on loopback, from
// scripts/cluster.sh) when EBSD_CLUSTER=1. One cluster serves all subtests: starting
// one costs seconds. Each store gets a prefix of its own in the cluster's bucket.
func TestCluster(t *testing.T) {
	c := clustertest.Start(t)
	bucket, prefix, err := ParseURL(c.Env["EBSD_BLOCKS"])
	if err != nil {
		t.Fatal(err)
	}
	var stores atomic.Int64
	open := func(t *testing.T) *Store {
		t.Helper()
		s, err := Open(testContext(t), Config{
			URL:         fmt.Sprintf("s3://%s/%s/t%d", bucket, prefix, stores.Add(1)),
			Log:         testLog(t),
			Endpoint:    c.Env["AWS_ENDPOINT_URL_S3"],
			Region:      c.Env["AWS_REGION"],
			Credentials: credentials.NewStaticCredentialsProvider(c.Env["AWS_ACCESS_KEY_ID"], c.Env["AWS_SECRET_ACCESS_KEY"], ""),
		})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	t.Run("Conformance", func(t *testing.T) {
		blocktest.Run(t, func(t *testing.T) core.BlockStore { return open(t) })
	})
	t.Run("ConformanceDiskCache", func(t *testing.T) {
		blocktest.Run(t, func(t *testing.T) core.BlockStore {
			dc, err := diskcache.New(open(t), t.TempDir(), 4<<20, testLog(t))
			if err != nil {
				t.Fatal(err)
			}
			return dc
		})
	})
	t.Run("Layout", func(t *testing.T) { testLayout(t, open(t)) })
	t.Run("ManyBlocks", func(t *testing.T) { testManyBlocks(t, open(t)) })
	t.Run("Restart", func(t *testing.T) {
		for _, kill := range []bool{true, false} {
			testRestart(t, c, open(t), kill)
		}
	})
}

// testLayout checks the objects themselves: where a block is and what its body holds,
// and that objects under the prefix that are not blocks are left out of walks.
func testLayout(t *testing.T, s *Store) {
	ctx := testContext(t)
	b := core.StoredBlock{Digest: digestN(1), Tag: 0x81, Data: []byte("layout")}
	if err := s.Put(ctx, []core.StoredBlock{b}); err != nil {
		t.Fatal(err)
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.prefix + "/blocks/" + b.Digest.String()[:2] + "/" + b.Digest.String())})
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(out.Body)
	out.Body.Close()
	if err != nil || !bytes.Equal(body, append([]byte{b.Tag}, b.Data...)) {
		t.Fatalf("object body %q (%v), want the tag byte and the data", body, err)
	}
	for _, key := range []string{s.prefix + "/blocks/README", s.root + "ff/not-a-block", s.prefix + "/other"} {
		if _, err := s.client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key), Body: strings.NewReader("x")}); err != nil {
			t.Fatalf("putting %s: %v", key, err)
		}
	}
	var got []core.Digest
	if err := s.Walk(ctx, core.Digest{}, func(d core.Digest, size int64) error {
		got = append(got, d)
		if size != int64(len(b.Data)) {
			t.Errorf("Walk: size %d", size)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []core.Digest{b.Digest}) {
		t.Fatalf("Walk visited %v, want only %s", got, b.Digest)
	}
	// A digest whose fan-out directory does not exist is absent too.
	absent := core.Digest{0x00, 0x01}
	if _, err := s.Stat(ctx, absent); !errors.Is(err, core.ErrBlockNotFound) {
		t.Fatalf("Stat of a block under a missing directory: %v", err)
	}
	if err := s.Read(ctx, absent, func(byte, []byte) error { return nil }); !errors.Is(err, core.ErrBlockNotFound) {
		t.Fatalf("Read of a block under a missing directory: %v", err)
	}
}

// testManyBlocks puts more blocks than one listing page or one DeleteObjects holds.
func testManyBlocks(t *testing.T, s *Store) {
	ctx := testContext(t)
	const n = 2100
	blocks := make([]core.StoredBlock, n)
	for i := range blocks {
		blocks[i] = core.StoredBlock{Digest: digestN(i), Tag: byte(i), Data: fmt.Appendf(nil, "block %d", i)}
	}
	start := time.Now()
	if err := s.Put(ctx, blocks); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d puts in %v", n, time.Since(start))
	slices.SortFunc(blocks, func(a, b core.StoredBlock) int { return bytes.Compare(a.Digest[:], b.Digest[:]) })
	walkFrom := func(from core.Digest) []core.Digest {
		var got []core.Digest
		if err := s.Walk(ctx, from, func(d core.Digest, size int64) error {
			got = append(got, d)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}
	var want []core.Digest
	for _, b := range blocks {
		want = append(want, b.Digest)
	}
	if got := walkFrom(core.Digest{}); !slices.Equal(got, want) {
		t.Fatalf("Walk visited %d blocks, want %d in order", len(got), len(want))
	}
	if got := walkFrom(want[1500]); !slices.Equal(got, want[1500:]) {
		t.Fatalf("Walk from the 1500th visited %d blocks, want %d", len(got), n-1500)
	}
	start = time.Now()
	if err := s.Delete(ctx, want[:n-1]); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d deletes in %v", n-1, time.Since(start))
	if got := walkFrom(core.Digest{}); !slices.Equal(got, want[n-1:]) {
		t.Fatalf("after deleting, Walk visited %d blocks, want 1", len(got))
	}
}

// testRestart restarts the S3 server while one goroutine puts blocks and another
// reads a stored one. Every Put succeeds (the SDK retried) or fails with an error that
// is not ErrBlockNotFound, and succeeds when tried again after the restart; no Read or
// Stat of the stored block ever says it is absent; every block put is there after.
func testRestart(t *testing.T, c *clustertest.Cluster, s *Store, kill bool) {
	ctx := testContext(t)
	known := core.StoredBlock{Digest: digestN(-1), Tag: 1, Data: []byte("known")}
	if err := s.Put(ctx, []core.StoredBlock{known}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	started := make(chan struct{})
	type result struct {
		put, failed []core.StoredBlock
		errs        []error
	}
	puts := make(chan result, 1)
	go func() {
		var r result
		for i := 0; ; i++ {
			select {
			case <-stop:
				puts <- r
				return
			default:
			}
			b := core.StoredBlock{Digest: digestN(i), Tag: byte(i), Data: fmt.Appendf(nil, "restart %v %d", kill, i)}
			if err := s.Put(ctx, []core.StoredBlock{b}); err != nil {
				r.failed = append(r.failed, b)
				r.errs = append(r.errs, err)
			} else {
				r.put = append(r.put, b)
			}
			if i == 0 {
				close(started)
			}
		}
	}()
	reads := make(chan []error, 1)
	go func() {
		var errs []error
		for n := 0; ; n++ {
			select {
			case <-stop:
				reads <- errs
				return
			default:
			}
			var err error
			if n%2 == 0 {
				err = s.Read(ctx, known.Digest, func(byte, []byte) error { return nil })
			} else {
				_, err = s.Stat(ctx, known.Digest)
			}
			if err != nil {
				errs = append(errs, err)
			}
		}
	}()
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("no Put returned")
	}
	restart := time.Now()
	c.RestartS3(t, kill)
	t.Logf("the restart (kill %v) took %v", kill, time.Since(restart))
	close(stop)
	var r result
	var readErrs []error
	for range 2 {
		select {
		case r = <-puts:
		case readErrs = <-reads:
		case <-ctx.Done():
			t.Fatal("the loops did not stop")
		}
	}
	t.Logf("restart (kill %v): %d puts succeeded, %d failed; %d failed reads", kill, len(r.put), len(r.failed), len(readErrs))
	for _, err := range append(r.errs, readErrs...) {
		t.Logf("error during the restart: %v", err)
		if errors.Is(err, core.ErrBlockNotFound) {
			t.Errorf("an error during the restart says a stored block is absent: %v", err)
		}
	}
	if len(r.failed) > 0 {
		if err := s.Put(ctx, r.failed); err != nil {
			t.Fatalf("Put of the blocks that failed, after the restart: %v", err)
		}
	}
	for _, b := range append(append(r.put, r.failed...), known) {
		err := s.Read(ctx, b.Digest, func(tag byte, data []byte) error {
			if tag != b.Tag || !bytes.Equal(data, b.Data) {
				return errors.New("wrong value")
			}
			return nil
		})
		if err != nil {
			t.Fatalf("block %s after the restart: %v", b.Digest, err)
		}
	}
}
