package api

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/ebsd/ebsd/cas"
)

const (
	testAccount = "111122223333"
	testRegion  = "us-east-1"
)

// testAPI is a Server over a fakeStore, called in-process: no listener, no daemon.
type testAPI struct {
	t     *testing.T
	srv   *Server
	store *fakeStore
}

func newTestAPI(t *testing.T) *testAPI {
	t.Helper()
	st := newFakeStore()
	srv := New(st, Config{Auth: Unsigned{AccountID: testAccount, Region: testRegion}, Blocks: st, TokenKey: []byte("handler-test-token-key")})
	return &testAPI{t: t, srv: srv, store: st}
}

func (a *testAPI) do(method, target string, header map[string]string, body []byte) *httptest.ResponseRecorder {
	a.t.Helper()
	req := httptest.NewRequest(method, target, bytes.NewReader(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	a.srv.ServeHTTP(rec, req)
	return rec
}

// ec2 POSTs an EC2 Query request; body is the form as sent, so tests can spell
// what url.Values would not (invalid percent-encodings, odd keys).
func (a *testAPI) ec2(body string) *httptest.ResponseRecorder {
	a.t.Helper()
	return a.do("POST", "/", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, []byte(body))
}

// ec2v is ec2 with Action and the supported Version in front of params.
func (a *testAPI) ec2v(action, params string) *httptest.ResponseRecorder {
	a.t.Helper()
	body := "Action=" + action + "&Version=2016-11-15"
	if params != "" {
		body += "&" + params
	}
	return a.ec2(body)
}

func blockOf(b byte) []byte { return bytes.Repeat([]byte{b}, cas.BlockSize) }

func checksumOf(data []byte) string {
	d := sha256.Sum256(data)
	return base64.StdEncoding.EncodeToString(d[:])
}

func putHeaders(data []byte) map[string]string {
	return map[string]string{"x-amz-Data-Length": "524288", "x-amz-Checksum": checksumOf(data), "x-amz-Checksum-Algorithm": "SHA256"}
}

// start starts a snapshot through the API and returns its id.
func (a *testAPI) start(body string) string {
	a.t.Helper()
	rec := a.do("POST", "/snapshots", map[string]string{"Content-Type": "application/json"}, []byte(body))
	if rec.Code != http.StatusCreated {
		a.t.Fatalf("StartSnapshot %s: %d %s", body, rec.Code, rec.Body)
	}
	var out struct{ SnapshotId string }
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		a.t.Fatal(err)
	}
	return out.SnapshotId
}

func (a *testAPI) put(id string, index string, data []byte) {
	a.t.Helper()
	if rec := a.do("PUT", "/snapshots/"+id+"/blocks/"+index, putHeaders(data), data); rec.Code != http.StatusCreated {
		a.t.Fatalf("PutSnapshotBlock %s %s: %d %s", id, index, rec.Code, rec.Body)
	}
}

func (a *testAPI) complete(id string, count string) {
	a.t.Helper()
	if rec := a.do("POST", "/snapshots/completion/"+id, map[string]string{"x-amz-ChangedBlocksCount": count}, nil); rec.Code != http.StatusAccepted {
		a.t.Fatalf("CompleteSnapshot %s: %d %s", id, rec.Code, rec.Body)
	}
}

// completed returns a completed 1 GiB snapshot with blocks 0 and 5 (filled with 1 and 5).
func (a *testAPI) completed() string {
	a.t.Helper()
	id := a.start(`{"VolumeSize":1}`)
	a.put(id, "0", blockOf(1))
	a.put(id, "5", blockOf(5))
	a.complete(id, "2")
	return id
}

// wantEBSError checks the whole AWS REST-JSON error shape.
func wantEBSError(t *testing.T, rec *httptest.ResponseRecorder, status int, errType, reason string) {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status %d, want %d (body %s)", rec.Code, status, rec.Body)
	}
	if got := rec.Header()["x-amzn-ErrorType"]; len(got) != 1 || got[0] != errType {
		t.Fatalf("x-amzn-ErrorType %q, want %q", got, errType)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	var body map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("error body %q: %v", rec.Body, err)
	}
	if body["__type"] != errType || body["Reason"] != reason || body["Message"] == "" {
		t.Fatalf("error body %s, want type %s, reason %q and a message", rec.Body, errType, reason)
	}
}

// wantEC2Error checks an EC2 Query XML error and returns its message.
func wantEC2Error(t *testing.T, rec *httptest.ResponseRecorder, status int, code string) string {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status %d, want %d (body %s)", rec.Code, status, rec.Body)
	}
	var body struct {
		Errors []struct{ Code, Message string } `xml:"Errors>Error"`
	}
	if err := xml.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("error body %q: %v", rec.Body, err)
	}
	if len(body.Errors) != 1 || body.Errors[0].Code != code || body.Errors[0].Message == "" {
		t.Fatalf("error body %s, want code %s and a message", rec.Body, code)
	}
	return body.Errors[0].Message
}

// describe returns the snapshot ids a DescribeSnapshots answer lists.
func describe(t *testing.T, rec *httptest.ResponseRecorder) []string {
	t.Helper()
	if rec.Code != http.StatusOK {
		t.Fatalf("DescribeSnapshots: %d %s", rec.Code, rec.Body)
	}
	var out struct {
		Snapshots []struct {
			ID   string `xml:"snapshotId"`
			Desc string `xml:"description"`
		} `xml:"snapshotSet>item"`
	}
	if err := xml.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(out.Snapshots))
	for i, s := range out.Snapshots {
		ids[i] = s.ID
	}
	return ids
}

func formValue(s string) string { return url.QueryEscape(s) }

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }
