package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// runCLI runs ebsctl in this process with exactly args and returns stdout, stderr and
// the exit status.
func runCLI(args ...string) (string, string, int) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr)
	return stdout.String(), stderr.String(), code
}

// With no credential anywhere, ebsctl sends nothing and says where credentials come
// from, ebsd's export lines included; it never signs with made-up ones.
func TestNoCredentialsIsAClearError(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Error(w, "ebsctl must not send unsigned or placeholder-signed requests", http.StatusTeapot)
	}))
	defer srv.Close()
	for _, cmd := range [][]string{{"ls"}, {"stats"}, {"download", "snap-0123456789abcdef0", filepath.Join(t.TempDir(), "x")}} {
		_, stderr, code := runCLI(append([]string{"--endpoint-url", srv.URL, "--quiet"}, cmd...)...)
		for _, want := range []string{"no AWS credentials", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "--profile", "AWS_PROFILE", "~/.aws/credentials", "export lines"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("ebsctl %s: exit %d, the error does not mention %q:\n%s", cmd[0], code, want, stderr)
			}
		}
		if code != 1 {
			t.Errorf("ebsctl %s: exit %d, want 1", cmd[0], code)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("ebsctl sent %d requests without credentials", n)
	}
}

// Credentials come from a shared credentials file profile chosen with --profile, as in
// every AWS tool, when the environment has none.
func TestProfileCredentials(t *testing.T) {
	d := startDaemon(t)
	creds := filepath.Join(t.TempDir(), "credentials")
	profile := fmt.Sprintf("[ebsd-test]\naws_access_key_id = %s\naws_secret_access_key = %s\n", d.accessKey, d.secretKey)
	if err := os.WriteFile(creds, []byte(profile), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", creds)
	unsetenv(t, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
	if _, stderr, code := runCLI("ls", "--endpoint-url", d.url, "--profile", "ebsd-test"); code != 0 {
		t.Fatalf("ls --profile ebsd-test: exit %d\n%s", code, stderr)
	}
	if _, stderr, code := runCLI("--endpoint-url", d.url, "ls"); code != 1 || !strings.Contains(stderr, "no AWS credentials") {
		t.Fatalf("ls without --profile: exit %d\n%s", code, stderr)
	}
}

// unsetenv removes environment variables for the rest of the test and restores them after.
func unsetenv(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		t.Setenv(n, "") // registers the restore
		os.Unsetenv(n)
	}
}

// A secret that is not the account's is refused by the daemon through every API ebsctl
// uses (EBS, EC2, ebsd's own), nothing is created, and ebsctl shows the AWS error.
func TestWrongSecretIsRefused(t *testing.T) {
	d := startDaemon(t)
	img := filepath.Join(t.TempDir(), "disk.img")
	makeImage(t, img, 2, 0)
	t.Setenv("AWS_SECRET_ACCESS_KEY", "x"+d.secretKey[1:])
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"upload", "--state-dir", t.TempDir(), img}, "InvalidSignatureException"}, // EBS StartSnapshot
		{[]string{"ls"}, "AuthFailure"},                  // EC2 DescribeSnapshots
		{[]string{"stats"}, "InvalidSignatureException"}, // ebsd's extension
	} {
		_, stderr, code := runCLI(append([]string{"--endpoint-url", d.url, "--quiet", "--max-attempts", "1"}, tc.args...)...)
		if code != 1 || !strings.Contains(stderr, tc.want) {
			t.Errorf("ebsctl %s with a wrong secret: exit %d, want 1 and %q:\n%s", tc.args[0], code, tc.want, stderr)
		}
	}
	t.Setenv("AWS_SECRET_ACCESS_KEY", d.secretKey)
	if out := mustEbsctl(t, d.url, "--json", "ls"); strings.Contains(out, "snap-") {
		t.Fatalf("a refused upload created a snapshot: %s", out)
	}
}

// Over HTTPS with a certificate no public CA signed: ebsctl trusts it with --ca-bundle
// or AWS_CA_BUNDLE, for the AWS APIs and ebsd's own endpoints alike, and without either
// fails with a certificate error.
func TestTLSWithCABundle(t *testing.T) {
	dir := t.TempDir()
	cert, key := selfSignedCert(t, dir)
	d := startDaemon(t, "--tls-cert", cert, "--tls-key", key)
	if !strings.HasPrefix(d.url, "https://") {
		t.Fatalf("endpoint %s", d.url)
	}
	_, stderr, code := runCLI("--endpoint-url", d.url, "--quiet", "ls")
	if code != 1 || !strings.Contains(stderr, "certificate") {
		t.Fatalf("ls over HTTPS without --ca-bundle: exit %d, want a certificate error:\n%s", code, stderr)
	}
	for _, args := range [][]string{{"ls"}, {"stats"}} {
		if _, stderr, code := runCLI(append(args, "--endpoint-url", d.url, "--quiet", "--ca-bundle", cert)...); code != 0 {
			t.Errorf("%s --ca-bundle: exit %d\n%s", args[0], code, stderr)
		}
	}
	t.Setenv("AWS_CA_BUNDLE", cert)
	if _, stderr, code := runCLI("--endpoint-url", d.url, "--quiet", "ls"); code != 0 {
		t.Errorf("ls with AWS_CA_BUNDLE: exit %d\n%s", code, stderr)
	}
}

// selfSignedCert writes a self-signed certificate for 127.0.0.1 and its key as PEM files.
func selfSignedCert(t *testing.T, dir string) (certPath, keyPath string) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "ebsd test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}
