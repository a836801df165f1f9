package main

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
)

// limitListener accepts at most n connections at once; the next Accept waits until
// one closes, so a flood of idle connections queues in the kernel's backlog instead of
// exhausting file descriptors.
type limitListener struct {
	net.Listener
	slots chan struct{}
	done  chan struct{}
	once  sync.Once
	// onFull, when set, is called each time Accept has to wait for a slot (tests).
	onFull func()
}

func newLimitListener(l net.Listener, n int) *limitListener {
	return &limitListener{Listener: l, slots: make(chan struct{}, n), done: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	default:
		if l.onFull != nil {
			l.onFull()
		}
		select {
		case l.slots <- struct{}{}:
		case <-l.done:
			return nil, net.ErrClosed
		}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.slots }}, nil
}

func (l *limitListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// certificate serves the TLS certificate of --tls-cert/--tls-key and loads it again
// on SIGHUP; handshakes in flight keep the one they started with.
type certificate struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

func loadCertificate(certFile, keyFile string) (*certificate, error) {
	c := &certificate{certFile: certFile, keyFile: keyFile}
	return c, c.reload()
}

func (c *certificate) reload() error {
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("TLS certificate: %w", err)
	}
	c.cur.Store(&cert)
	return nil
}

func (c *certificate) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return c.cur.Load(), nil
		},
	}
}

// writeAddrFile tells a script or test the address actually listened on. A FIFO or
// /dev/fd/N is written straight into (the reader is waiting on it); a regular file is
// replaced whole, so a reader never sees half an address.
func writeAddrFile(path, addr string) error {
	if st, err := os.Stat(path); err == nil && !st.Mode().IsRegular() {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		_, werr := f.WriteString(addr + "\n")
		return errors.Join(werr, f.Close())
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return writeFileAtomic(path, []byte(addr+"\n"), 0o644)
}

// prefaceListener answers, in AWS's error shape, connections that open with something
// other than HTTP/1: a TLS ClientHello on the plain port, or an HTTP/2 preface (ebsd
// speaks HTTP/1.1, as the EBS endpoints do). Go's server would answer the first with a
// bare "400 Bad Request" and the second with nothing useful.
type prefaceListener struct{ net.Listener }

func (l prefaceListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &prefaceConn{Conn: c}, nil
}

// prefaceConn checks the first bytes on the first Read, in the server's connection
// goroutine, so Accept never waits on a slow client.
type prefaceConn struct {
	net.Conn
	checked bool
	pending []byte // bytes read while checking, not yet returned
}

const http2Preface = "PRI * HTTP/2.0\r\n"

func (c *prefaceConn) Read(p []byte) (int, error) {
	if !c.checked {
		c.checked = true
		buf := make([]byte, len(http2Preface))
		n, err := io.ReadAtLeast(c.Conn, buf, 1)
		for n < len(buf) && err == nil && bytes.HasPrefix([]byte(http2Preface), buf[:n]) {
			var m int
			m, err = c.Conn.Read(buf[n:])
			n += m
		}
		buf = buf[:n]
		switch {
		case n >= 1 && buf[0] == 0x16: // a TLS handshake record
			c.refuse(http.StatusBadRequest, "this endpoint speaks plain HTTP, not TLS: use http:// (or start ebsd with --tls-cert and --tls-key)")
			return 0, io.EOF
		case string(buf) == http2Preface:
			c.refuse(http.StatusHTTPVersionNotSupported, "this endpoint speaks HTTP/1.1; HTTP/2 without TLS negotiation is not supported")
			return 0, io.EOF
		}
		c.pending = buf
		if len(c.pending) == 0 && err != nil {
			return 0, err
		}
	}
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// refuse writes an AWS-shaped error as an HTTP/1.1 response and closes the connection.
func (c *prefaceConn) refuse(status int, msg string) {
	body := `{"__type":"ValidationException","Reason":"INVALID_PARAMETER_VALUE","Message":"` + msg + `"}`
	fmt.Fprintf(c.Conn, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nx-amzn-ErrorType: ValidationException\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		status, http.StatusText(status), len(body), body)
	_ = c.Conn.Close()
}
