package main

import (
	"bufio"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rawExchange writes bytes on a fresh connection and reads one HTTP response.
func rawExchange(t *testing.T, addr string, send []byte) *http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Write(send); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no HTTP answer to %q…: %v", send[:min(len(send), 16)], err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// wantJSONError checks an AWS-shaped error response.
func wantJSONError(t *testing.T, resp *http.Response, status int, errType string) {
	t.Helper()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status || resp.Header.Get("x-amzn-ErrorType") != errType {
		t.Fatalf("got %d %q (%s), want %d %s", resp.StatusCode, resp.Header.Get("x-amzn-ErrorType"), body, status, errType)
	}
	var e struct {
		Type    string `json:"__type"`
		Message string
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Type != errType || e.Message == "" {
		t.Fatalf("body %q is not an AWS error of type %s", body, errType)
	}
}

// TestUncleanPathsAreNotRedirected: `//` and `..` get 404, not ServeMux's 307.
func TestUncleanPathsAreNotRedirected(t *testing.T) {
	td := newTestDaemon(t)
	for _, p := range []string{"//snapshots/snap-0123456789abcdef0/blocks", "/snapshots/../snapshots", "/snapshots/snap-0123456789abcdef0/./blocks", "/ebsd/v1//stats"} {
		req := "GET " + p + " HTTP/1.1\r\nHost: " + td.d.addr() + "\r\n\r\n"
		resp := rawExchange(t, td.d.addr(), []byte(req))
		if loc := resp.Header.Get("Location"); loc != "" {
			t.Fatalf("%s redirected to %s", p, loc)
		}
		wantJSONError(t, resp, 404, "UnknownOperationException")
	}
}

// TestOversizedHeadersGetAnAWSError: headers past the limit are refused in AWS shape.
func TestOversizedHeadersGetAnAWSError(t *testing.T) {
	td := newTestDaemon(t)
	req := "GET /snapshots/snap-0123456789abcdef0/blocks HTTP/1.1\r\nHost: " + td.d.addr() + "\r\nX-Big: " + strings.Repeat("a", 100<<10) + "\r\n\r\n"
	wantJSONError(t, rawExchange(t, td.d.addr(), []byte(req)), 431, "ValidationException")
}

// TestNonHTTP1PrefacesGetAnAWSError: a TLS ClientHello or an HTTP/2 preface on the
// plain-HTTP port gets an AWS-shaped answer, not an empty or plain-text one.
func TestNonHTTP1PrefacesGetAnAWSError(t *testing.T) {
	td := newTestDaemon(t)
	hello := []byte{0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03}
	wantJSONError(t, rawExchange(t, td.d.addr(), hello), 400, "ValidationException")
	wantJSONError(t, rawExchange(t, td.d.addr(), []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")), 505, "ValidationException")
	// Plain HTTP/1.1 still works on the same listener, including a method starting
	// with the preface's first letter.
	if r := td.raw("POST", "/snapshots", map[string]string{"Content-Type": "application/json"}, strings.NewReader(`{"VolumeSize":1}`), -1); r.status != 201 {
		t.Fatalf("POST after the preface checks: %d %s", r.status, r.body)
	}
}

// TestShutdownFinishesWhateverARequestDoes: a request that never finishes (a body
// that stops arriving) does not keep the daemon from stopping.
func TestShutdownFinishesWhateverARequestDoes(t *testing.T) {
	handling := make(chan string, 16)
	td := newTestDaemon(t, func(c *config) {
		c.shutdownGrace = 500 * time.Millisecond
		c.logLevel = slog.LevelInfo // the request log says how the put ended, should it
		c.onRequest = func(r *http.Request) { handling <- r.RemoteAddr }
	})
	id := startSnapshotID(t, td)
	conn, err := net.Dial("tcp", td.d.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	signed, _ := http.NewRequest("PUT", td.url()+"/snapshots/"+id+"/blocks/0", nil)
	signed.Header.Set("x-amz-Data-Length", "524288")
	signed.Header.Set("x-amz-Checksum", checksum(block(1)))
	signed.Header.Set("x-amz-Checksum-Algorithm", "SHA256")
	signWith(t, signed, "ebs", unsignedPayload, testAccessKeyID, testSecretAccessKey, time.Now())
	head := "PUT " + signed.URL.Path + " HTTP/1.1\r\nHost: " + td.d.addr() + "\r\nContent-Length: 524288\r\n"
	for k := range signed.Header {
		head += k + ": " + signed.Header.Get(k) + "\r\n"
	}
	if _, err := io.WriteString(conn, head+"\r\n"+strings.Repeat("x", 1000)); err != nil {
		t.Fatal(err)
	}
	// The server is handling this connection's request (a Shutdown started before the
	// handler would drop the request instead of waiting for it), and its body never ends.
	for deadline := time.After(20 * time.Second); ; {
		select {
		case a := <-handling:
			if a != conn.LocalAddr().String() {
				continue
			}
		case <-deadline:
			t.Fatal("the stuck request was never handled")
		}
		break
	}
	stopped := make(chan error, 1)
	d := td.d
	td.d = nil // the harness must not stop it again
	go func() { stopped <- d.stop() }()
	select {
	case err := <-stopped:
		if err == nil || !strings.Contains(err.Error(), "shutdown") {
			// Say what the stuck connection was answered, if anything.
			_ = conn.SetReadDeadline(time.Now().Add(time.Second))
			got, _ := io.ReadAll(conn)
			t.Fatalf("stop with a stuck request: %v, want an error that says the shutdown closed it; the connection got %q", err, got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the daemon did not stop within 30 s while a request was stuck")
	}
}

func startSnapshotID(t *testing.T, td *testDaemon) string {
	t.Helper()
	r := td.raw("POST", "/snapshots", map[string]string{"Content-Type": "application/json"}, strings.NewReader(`{"VolumeSize":1}`), -1)
	var out struct{ SnapshotId string }
	if err := json.Unmarshal(r.body, &out); err != nil || r.status != 201 {
		t.Fatalf("StartSnapshot: %d %s", r.status, r.body)
	}
	return out.SnapshotId
}
