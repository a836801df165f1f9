package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
)

// authCase is one request as some client might send it, and the answer AWS gives.
type authCase struct {
	name string
	// build returns the request to send; sign signs it (or not, or wrongly).
	build  func(t *testing.T, base string) *http.Request
	status int
	code   string // x-amzn-ErrorType (EBS) or the EC2 <Code>; "" for success
}

// sendAuthCase sends a case's request and checks the answer's status and error code.
func sendAuthCase(t *testing.T, base string, c authCase) {
	t.Helper()
	resp, err := http.DefaultClient.Do(c.build(t, base))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != c.status {
		t.Fatalf("status %d, want %d (body %s)", resp.StatusCode, c.status, body)
	}
	if c.code == "" {
		return
	}
	if got := resp.Header.Get("x-amzn-ErrorType"); got != c.code {
		t.Fatalf("error type %q, want %q (body %s)", got, c.code, body)
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if !bytes.Contains(body, []byte(`"__type":"`+c.code+`"`)) || !bytes.Contains(body, []byte(`"Message":"`)) {
			t.Fatalf("error body %s: want __type %s and a message", body, c.code)
		}
		return
	}
	var x struct {
		Errors []struct{ Code, Message string } `xml:"Errors>Error"`
	}
	if err := xml.Unmarshal(body, &x); err != nil || len(x.Errors) != 1 || x.Errors[0].Code != c.code || x.Errors[0].Message == "" {
		t.Fatalf("EC2 error body %s: want code %s and a message", body, c.code)
	}
}

func newReq(t *testing.T, method, u string, body []byte) *http.Request {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, u, r)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func sha(b []byte) string { return hexSHA256(b) }

// TestSignaturesRefusedAndAccepted is the table of the README: each refused request
// with the error AWS answers it with, and the accepted forms.
func TestSignaturesRefusedAndAccepted(t *testing.T) {
	td := newTestDaemon(t)
	c := td.client()
	ctx := context.Background()
	snap := startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)})
	id := aws.ToString(snap.SnapshotId)
	if err := putBlock(ctx, c, id, 0, block(7)); err != nil {
		t.Fatal(err)
	}
	if _, err := complete(ctx, c, id, map[int32][]byte{0: block(7)}); err != nil {
		t.Fatal(err)
	}
	list := "/snapshots/" + id + "/blocks?maxResults=100"
	now := time.Now()
	signed := func(method, path string, body []byte, mutate func(*http.Request)) func(*testing.T, string) *http.Request {
		return func(t *testing.T, base string) *http.Request {
			req := newReq(t, method, base+path, body)
			signWith(t, req, serviceOfPath(path), sha(body), testAccessKeyID, testSecretAccessKey, now)
			if mutate != nil {
				mutate(req)
			}
			return req
		}
	}
	presigned := func(path string, expires string, at time.Time) func(*testing.T, string) *http.Request {
		return func(t *testing.T, base string) *http.Request {
			req := newReq(t, "GET", base+path, nil)
			q := req.URL.Query()
			q.Set("X-Amz-Expires", expires)
			req.URL.RawQuery = q.Encode()
			u, _, err := v4.NewSigner().PresignHTTP(context.Background(), aws.Credentials{AccessKeyID: testAccessKeyID, SecretAccessKey: testSecretAccessKey},
				req, "UNSIGNED-PAYLOAD", "ebs", testRegion, at)
			if err != nil {
				t.Fatal(err)
			}
			return newReq(t, "GET", u, nil)
		}
	}
	block7 := block(7)
	putPath := "/snapshots/" + id + "/blocks/1"
	form := []byte("Action=DescribeSnapshots&Version=2016-11-15")
	cases := []authCase{
		{name: "no signature", status: 403, code: "MissingAuthenticationTokenException",
			build: func(t *testing.T, base string) *http.Request { return newReq(t, "GET", base+list, nil) }},
		{name: "garbage Authorization header", status: 400, code: "IncompleteSignatureException",
			build: func(t *testing.T, base string) *http.Request {
				req := newReq(t, "GET", base+list, nil)
				req.Header.Set("Authorization", "garbage")
				return req
			}},
		{name: "unknown access key", status: 403, code: "UnrecognizedClientException",
			build: func(t *testing.T, base string) *http.Request {
				req := newReq(t, "GET", base+list, nil)
				signWith(t, req, "ebs", sha(nil), "AKIANOBODYHASTHISKEY", testSecretAccessKey, now)
				return req
			}},
		{name: "wrong secret", status: 403, code: "InvalidSignatureException",
			build: func(t *testing.T, base string) *http.Request {
				req := newReq(t, "GET", base+list, nil)
				signWith(t, req, "ebs", sha(nil), testAccessKeyID, "not-the-secret-of-this-key", now)
				return req
			}},
		{name: "signed header changed after signing", status: 403, code: "InvalidSignatureException",
			build: signed("GET", list, nil, func(r *http.Request) {
				r.Header.Set("X-Amz-Date", now.Add(time.Second).UTC().Format("20060102T150405Z"))
			})},
		{name: "query string changed after signing", status: 403, code: "InvalidSignatureException",
			build: signed("GET", list, nil, func(r *http.Request) { r.URL.RawQuery = "maxResults=200" })},
		{name: "path changed after signing", status: 403, code: "InvalidSignatureException",
			build: signed("GET", list, nil, func(r *http.Request) { r.URL.Path = "/snapshots/snap-00000000000000000/blocks" })},
		{name: "expired date", status: 400, code: "RequestExpired",
			build: func(t *testing.T, base string) *http.Request {
				req := newReq(t, "GET", base+list, nil)
				signWith(t, req, "ebs", sha(nil), testAccessKeyID, testSecretAccessKey, now.Add(-16*time.Minute))
				return req
			}},
		{name: "date in the future", status: 400, code: "RequestExpired",
			build: func(t *testing.T, base string) *http.Request {
				req := newReq(t, "GET", base+list, nil)
				signWith(t, req, "ebs", sha(nil), testAccessKeyID, testSecretAccessKey, now.Add(16*time.Minute))
				return req
			}},
		{name: "wrong service in the scope", status: 403, code: "InvalidSignatureException",
			build: func(t *testing.T, base string) *http.Request {
				req := newReq(t, "GET", base+list, nil)
				signWith(t, req, "ec2", sha(nil), testAccessKeyID, testSecretAccessKey, now)
				return req
			}},
		{name: "presigned URL past its expiry", status: 400, code: "RequestExpired",
			build: presigned(list, "60", now.Add(-2*time.Minute))},
		{name: "presigned URL with its signature changed", status: 403, code: "InvalidSignatureException",
			build: func(t *testing.T, base string) *http.Request {
				req := presigned(list, "300", now)(t, base)
				q := req.URL.Query()
				q.Set("X-Amz-Signature", strings.Repeat("0", 64))
				req.URL.RawQuery = q.Encode()
				return req
			}},
		{name: "streaming payload hash", status: 400, code: "IncompleteSignatureException",
			build: func(t *testing.T, base string) *http.Request {
				req := newReq(t, "PUT", base+putPath, block7)
				req.Header.Set("x-amz-Data-Length", "524288")
				signWith(t, req, "ebs", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", testAccessKeyID, testSecretAccessKey, now)
				return req
			}},
		{name: "hex payload hash of other bytes", status: 403, code: "InvalidSignatureException",
			build: func(t *testing.T, base string) *http.Request {
				req := newReq(t, "PUT", base+putPath, block7)
				signWith(t, req, "ebs", sha(block(8)), testAccessKeyID, testSecretAccessKey, now)
				return req
			}},
		{name: "EC2 without a signature", status: 401, code: "MissingAuthenticationToken",
			build: func(t *testing.T, base string) *http.Request {
				req := newReq(t, "POST", base+"/", form)
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				return req
			}},
		{name: "EC2 wrong secret", status: 401, code: "AuthFailure",
			build: func(t *testing.T, base string) *http.Request {
				req := newReq(t, "POST", base+"/", form)
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				signWith(t, req, "ec2", sha(form), testAccessKeyID, "not-the-secret-of-this-key", now)
				return req
			}},
		{name: "EC2 signed for ebs", status: 401, code: "AuthFailure",
			build: func(t *testing.T, base string) *http.Request {
				req := newReq(t, "POST", base+"/", form)
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				signWith(t, req, "ebs", sha(form), testAccessKeyID, testSecretAccessKey, now)
				return req
			}},
		{name: "EC2 expired", status: 400, code: "RequestExpired",
			build: func(t *testing.T, base string) *http.Request {
				req := newReq(t, "POST", base+"/", form)
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				signWith(t, req, "ec2", sha(form), testAccessKeyID, testSecretAccessKey, now.Add(-20*time.Minute))
				return req
			}},
		{name: "ebsd endpoint without a signature", status: 403, code: "MissingAuthenticationTokenException",
			build: func(t *testing.T, base string) *http.Request { return newReq(t, "POST", base+"/ebsd/v1/gc", nil) }},
		// Accepted forms.
		{name: "accepted: presigned query form", status: 200, build: presigned(list, "300", now)},
		{name: "accepted: hex payload hash", status: 200, build: signed("GET", list, nil, nil)},
		{name: "accepted: EC2 form signed with the body's hash", status: 200,
			build: func(t *testing.T, base string) *http.Request {
				req := newReq(t, "POST", base+"/", form)
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				signWith(t, req, "ec2", sha(form), testAccessKeyID, testSecretAccessKey, now)
				return req
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { sendAuthCase(t, td.url(), tc) })
	}

	// UNSIGNED-PAYLOAD and a hex hash are both accepted for a block put, into a new
	// snapshot; a refused put stored nothing.
	s2 := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId)
	for i, hash := range []string{"UNSIGNED-PAYLOAD", sha(block7)} {
		req := newReq(t, "PUT", td.url()+"/snapshots/"+s2+"/blocks/"+string(rune('0'+i)), block7)
		req.Header.Set("x-amz-Data-Length", "524288")
		req.Header.Set("x-amz-Checksum", checksum(block7))
		req.Header.Set("x-amz-Checksum-Algorithm", "SHA256")
		signWith(t, req, "ebs", hash, testAccessKeyID, testSecretAccessKey, time.Now())
		sendAuthCase(t, td.url(), authCase{status: 201, build: func(*testing.T, string) *http.Request { return req }})
	}
	if st, _ := td.store().Stats(ctx); st.MappedBlocks != 3 {
		t.Fatalf("mapped blocks %d, want 3: one put before the table and two accepted puts; refused puts must store nothing", st.MappedBlocks)
	}
}

// TestRefusedRequestsDoNothing: unsigned or wrongly signed mutations change nothing.
func TestRefusedRequestsDoNothing(t *testing.T) {
	td := newTestDaemon(t)
	c := td.client()
	id := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId)
	before := len(td.store().Snapshots(defaultAccountID))
	start := []byte(`{"VolumeSize":1}`)
	del := url.Values{"Action": {"DeleteSnapshot"}, "Version": {"2016-11-15"}, "SnapshotId": {id}}.Encode()
	for _, req := range []*http.Request{
		newReq(t, "POST", td.url()+"/snapshots", start),
		newReq(t, "POST", td.url()+"/?"+del, nil),
		newReq(t, "GET", td.url()+"/?"+del, nil),
		newReq(t, "POST", td.url()+"/ebsd/v1/gc", nil),
	} {
		if req.Method == "POST" && req.URL.Path == "/snapshots" {
			signWith(t, req, "ebs", sha(start), testAccessKeyID, "wrong-secret-wrong-secret", time.Now())
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Fatalf("%s %s: status %d, want a refusal", req.Method, req.URL, resp.StatusCode)
		}
	}
	if n := len(td.store().Snapshots(defaultAccountID)); n != before {
		t.Fatalf("snapshots %d after refused requests, want %d", n, before)
	}
	if _, err := td.store().Snapshot(context.Background(), defaultAccountID, id); err != nil {
		t.Fatalf("the snapshot a refused DeleteSnapshot named is gone: %v", err)
	}
}

func hexSHA256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
