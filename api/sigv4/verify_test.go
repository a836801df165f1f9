package sigv4

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/ebsd/ebsd/api"
)

const (
	akid   = "AKIAUNITTESTKEY00001"
	secret = "unit/test/secret/key/0123456789abcdefgh"
)

var now = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func hexHash(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func newVerifier(t *testing.T) *Verifier {
	t.Helper()
	keys, err := NewKeyring([]Key{{AccessKeyID: akid, SecretAccessKey: secret, AccountID: "111122223333", Admin: true}})
	if err != nil {
		t.Fatal(err)
	}
	return NewVerifier(keys, func() time.Time { return now })
}

// request builds a request as the server sees it (no scheme or host in the URL, the
// Host header set), signed by sign.
func request(t *testing.T, method, target string, body []byte, sign func(*http.Request)) *http.Request {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://127.0.0.1:8600"+target, r)
	if err != nil {
		t.Fatal(err)
	}
	if sign != nil {
		sign(req)
	}
	// What the server gets: the raw request line and headers.
	srv, err := http.NewRequest(method, target, req.Body)
	if err != nil {
		t.Fatal(err)
	}
	srv.URL.RawQuery = req.URL.RawQuery
	srv.Header = req.Header.Clone()
	srv.Host = req.Host
	if srv.Host == "" {
		srv.Host = req.URL.Host
	}
	srv.ContentLength = req.ContentLength
	return srv
}

func signAt(service, hash, key, sec string, at time.Time) func(*http.Request) {
	return func(r *http.Request) {
		if hash == "UNSIGNED-PAYLOAD" {
			r.Header.Set("X-Amz-Content-Sha256", hash)
		}
		if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: key, SecretAccessKey: sec}, r, hash, service, "eu-west-1", at); err != nil {
			panic(err)
		}
	}
}

func presignAt(service string, expires string, at time.Time) func(*http.Request) {
	return func(r *http.Request) {
		q := r.URL.Query()
		q.Set("X-Amz-Expires", expires)
		r.URL.RawQuery = q.Encode()
		u, _, err := v4.NewSigner().PresignHTTP(context.Background(), aws.Credentials{AccessKeyID: akid, SecretAccessKey: secret}, r, hexHash(nil), service, "eu-west-1", at)
		if err != nil {
			panic(err)
		}
		r.URL.RawQuery = u[strings.Index(u, "?")+1:]
	}
}

func TestVerify(t *testing.T) {
	body := []byte(`{"VolumeSize":1}`)
	list := "/snapshots/snap-0123456789abcdef0/blocks?maxResults=100"
	cases := []struct {
		name string
		req  func(t *testing.T) *http.Request
		want api.AuthFailure // "" = accepted
	}{
		{"header form, body hash", func(t *testing.T) *http.Request {
			return request(t, "POST", "/snapshots", body, signAt("ebs", hexHash(body), akid, secret, now))
		}, ""},
		{"header form, unsigned payload", func(t *testing.T) *http.Request {
			return request(t, "PUT", "/snapshots/snap-0123456789abcdef0/blocks/0", body, signAt("ebs", "UNSIGNED-PAYLOAD", akid, secret, now))
		}, ""},
		{"header form, explicit hex hash header", func(t *testing.T) *http.Request {
			return request(t, "POST", "/snapshots", body, func(r *http.Request) {
				r.Header.Set("X-Amz-Content-Sha256", hexHash(body))
				signAt("ebs", hexHash(body), akid, secret, now)(r)
			})
		}, ""},
		{"presigned", func(t *testing.T) *http.Request { return request(t, "GET", list, nil, presignAt("ebs", "60", now)) }, ""},
		{"14 minutes skew", func(t *testing.T) *http.Request {
			return request(t, "GET", list, nil, signAt("ebs", hexHash(nil), akid, secret, now.Add(-14*time.Minute)))
		}, ""},
		{"no signature", func(t *testing.T) *http.Request { return request(t, "GET", list, nil, nil) }, api.AuthMissing},
		{"other algorithm", func(t *testing.T) *http.Request {
			return request(t, "GET", list, nil, func(r *http.Request) { r.Header.Set("Authorization", "AWS AKIA:abc") })
		}, api.AuthIncomplete},
		{"no X-Amz-Date", func(t *testing.T) *http.Request {
			return request(t, "GET", list, nil, func(r *http.Request) {
				signAt("ebs", hexHash(nil), akid, secret, now)(r)
				r.Header.Del("X-Amz-Date")
			})
		}, api.AuthIncomplete},
		{"host not signed", func(t *testing.T) *http.Request {
			return request(t, "GET", list, nil, func(r *http.Request) {
				signAt("ebs", hexHash(nil), akid, secret, now)(r)
				r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "SignedHeaders=host;", "SignedHeaders=", 1))
			})
		}, api.AuthIncomplete},
		{"unknown key", func(t *testing.T) *http.Request {
			return request(t, "GET", list, nil, signAt("ebs", hexHash(nil), "AKIANOSUCHKEY0000000", secret, now))
		}, api.AuthUnknownKey},
		{"wrong secret", func(t *testing.T) *http.Request {
			return request(t, "GET", list, nil, signAt("ebs", hexHash(nil), akid, "wrong/secret/wrong/secret", now))
		}, api.AuthBadSignature},
		{"body changed", func(t *testing.T) *http.Request {
			r := request(t, "POST", "/snapshots", body, signAt("ebs", hexHash(body), akid, secret, now))
			r.Body = io.NopCloser(strings.NewReader(`{"VolumeSize":2}`))
			return r
		}, api.AuthBadSignature},
		{"query changed", func(t *testing.T) *http.Request {
			r := request(t, "GET", list, nil, signAt("ebs", hexHash(nil), akid, secret, now))
			r.URL.RawQuery = "maxResults=101"
			return r
		}, api.AuthBadSignature},
		{"host changed", func(t *testing.T) *http.Request {
			r := request(t, "GET", list, nil, signAt("ebs", hexHash(nil), akid, secret, now))
			r.Host = "attacker.example"
			return r
		}, api.AuthBadSignature},
		{"wrong service", func(t *testing.T) *http.Request {
			return request(t, "GET", list, nil, signAt("ec2", hexHash(nil), akid, secret, now))
		}, api.AuthBadSignature},
		{"16 minutes old", func(t *testing.T) *http.Request {
			return request(t, "GET", list, nil, signAt("ebs", hexHash(nil), akid, secret, now.Add(-16*time.Minute)))
		}, api.AuthExpired},
		{"16 minutes ahead", func(t *testing.T) *http.Request {
			return request(t, "GET", list, nil, signAt("ebs", hexHash(nil), akid, secret, now.Add(16*time.Minute)))
		}, api.AuthExpired},
		{"presigned, expired", func(t *testing.T) *http.Request {
			return request(t, "GET", list, nil, presignAt("ebs", "60", now.Add(-61*time.Second)))
		}, api.AuthExpired},
		{"presigned, expiry too long", func(t *testing.T) *http.Request {
			return request(t, "GET", list, nil, presignAt("ebs", "604801", now))
		}, api.AuthIncomplete},
		{"streaming payload", func(t *testing.T) *http.Request {
			return request(t, "PUT", "/snapshots/snap-0123456789abcdef0/blocks/0", body, func(r *http.Request) {
				r.Header.Set("X-Amz-Content-Sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
				signAt("ebs", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", akid, secret, now)(r)
			})
		}, api.AuthIncomplete},
	}
	v := newVerifier(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.Authenticate(tc.req(t), "ebs")
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if id.AccountID != "111122223333" || !id.Admin || id.Region != "eu-west-1" || id.AccessKeyID != akid {
					t.Fatalf("identity %+v", id)
				}
				return
			}
			var ae *api.AuthError
			if !errors.As(err, &ae) || ae.Kind != tc.want || ae.Message == "" {
				t.Fatalf("got %v, want a %s refusal with a message", err, tc.want)
			}
		})
	}
}

// TestVerifyKeepsTheBody: after checking a payload hash, the handler still reads the
// whole body.
func TestVerifyKeepsTheBody(t *testing.T) {
	body := []byte(`{"VolumeSize":1}`)
	r := request(t, "POST", "/snapshots", body, signAt("ebs", hexHash(body), akid, secret, now))
	if _, err := newVerifier(t).Authenticate(r, "ebs"); err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(r.Body)
	if !bytes.Equal(got, body) {
		t.Fatalf("body after verification %q, want %q", got, body)
	}
}

// TestKeyringReplace: a bad set is refused whole and the keys in force stay.
func TestKeyringReplace(t *testing.T) {
	good := Key{AccessKeyID: akid, SecretAccessKey: secret, AccountID: "111122223333"}
	k, err := NewKeyring([]Key{good})
	if err != nil {
		t.Fatal(err)
	}
	other := Key{AccessKeyID: "AKIAOTHERKEY00000001", SecretAccessKey: secret, AccountID: "444455556666"}
	for _, bad := range [][]Key{
		{other, other},
		{other, {AccessKeyID: "short", SecretAccessKey: secret, AccountID: "444455556666"}},
		{{AccessKeyID: "AKIAOTHERKEY00000002", SecretAccessKey: "short", AccountID: "444455556666"}},
		{{AccessKeyID: "AKIAOTHERKEY00000003", SecretAccessKey: secret, AccountID: "4444"}},
	} {
		if err := k.Replace(bad); err == nil {
			t.Fatalf("accepted %+v", bad)
		}
		if _, ok := k.Lookup(akid); !ok {
			t.Fatal("a refused replacement dropped the keys in force")
		}
		if _, ok := k.Lookup(other.AccessKeyID); ok {
			t.Fatal("a refused replacement added a key")
		}
	}
	if err := k.Replace([]Key{other}); err != nil {
		t.Fatal(err)
	}
	if _, ok := k.Lookup(akid); ok {
		t.Fatal("a replaced key still works")
	}
}
