// Package clustertest starts a shared-store cluster for a test: PostgreSQL and a real
// S3-compatible server (versitygw) on loopback ports, through scripts/cluster.sh, and
// stops it when the test ends. Tests that need one call Start; it skips the test
// unless EBSD_CLUSTER=1 (CI sets it after `scripts/cluster.sh deps`), because the
// first start on a machine installs packages and builds the S3 server.
package clustertest

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// Cluster is a running cluster: Env holds the variables that `cluster.sh up` exports
// (EBSD_CATALOG, EBSD_BLOCKS, AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_REGION, ...).
type Cluster struct {
	Dir    string
	Env    map[string]string
	script string
}

// Script is the path of scripts/cluster.sh in this source tree.
func Script() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "scripts", "cluster.sh")
}

// Enabled reports whether cluster tests are to run (EBSD_CLUSTER=1).
func Enabled() bool { return os.Getenv("EBSD_CLUSTER") == "1" }

// Start brings a cluster up under a new temporary directory and registers its purge
// as a cleanup; it skips the test unless Enabled.
func Start(t testing.TB) *Cluster {
	t.Helper()
	if !Enabled() {
		t.Skip("cluster tests are off: EBSD_CLUSTER=1 runs them (PostgreSQL and versitygw on loopback)")
	}
	c := &Cluster{Dir: t.TempDir(), script: Script()}
	t.Cleanup(func() {
		if out, err := c.run("purge"); err != nil {
			t.Errorf("cluster.sh purge: %v\n%s", err, out)
		}
	})
	out, err := c.run("up")
	if err != nil {
		t.Fatalf("cluster.sh up: %v\n%s", err, out)
	}
	env, err := ParseExports(out)
	if err != nil {
		t.Fatal(err)
	}
	c.Env = env
	return c
}

// RestartS3 restarts the S3 server on the same port; kill sends SIGKILL instead of
// SIGTERM.
func (c *Cluster) RestartS3(t testing.TB, kill bool) {
	t.Helper()
	c.must(t, "restart-s3", kill)
}

// RestartPG restarts PostgreSQL on the same port; kill stops it in immediate mode
// (a crash: recovery from the WAL at the start) instead of fast.
func (c *Cluster) RestartPG(t testing.TB, kill bool) {
	t.Helper()
	c.must(t, "restart-pg", kill)
}

// StopS3 stops the S3 server (an outage); StartS3 starts it again on the same port.
func (c *Cluster) StopS3(t testing.TB)  { t.Helper(); c.must(t, "stop-s3", false) }
func (c *Cluster) StartS3(t testing.TB) { t.Helper(); c.must(t, "start-s3", false) }

// StopPG stops PostgreSQL (an outage); StartPG starts it again on the same port.
func (c *Cluster) StopPG(t testing.TB)  { t.Helper(); c.must(t, "stop-pg", false) }
func (c *Cluster) StartPG(t testing.TB) { t.Helper(); c.must(t, "start-pg", false) }

// UseS3 points this process's S3 clients (the AWS SDK's lookup) at the cluster's S3
// server for the rest of the test: its endpoint, credentials and region, and no shared
// config or credentials file that could name another.
func (c *Cluster) UseS3(t testing.TB) {
	t.Helper()
	for _, k := range []string{"AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"} {
		t.Setenv(k, c.Env[k])
	}
	t.Setenv("AWS_CONFIG_FILE", "/dev/null")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
}

// Environ is os.Environ with the cluster's variables set over it, for a child process
// such as bin/ebsd.
func (c *Cluster) Environ() []string {
	env := os.Environ()
	for k, v := range c.Env {
		env = append(env, k+"="+v)
	}
	return env
}

func (c *Cluster) must(t testing.TB, cmd string, kill bool) {
	t.Helper()
	args := []string{cmd}
	if kill {
		args = append(args, "--kill")
	}
	if out, err := c.run(args...); err != nil {
		t.Fatalf("cluster.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// run returns stdout, or on failure stdout and stderr together.
func (c *Cluster) run(args ...string) (string, error) {
	a := append([]string{c.script, args[0], c.Dir}, args[1:]...)
	cmd := exec.Command("bash", a...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// ParseExports reads the `export NAME='value'` lines that cluster.sh prints.
func ParseExports(s string) (map[string]string, error) {
	env := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		rest, ok := strings.CutPrefix(line, "export ")
		if !ok {
			return nil, fmt.Errorf("not an export line: %q", line)
		}
		name, value, ok := strings.Cut(rest, "=")
		if !ok {
			return nil, fmt.Errorf("not an export line: %q", line)
		}
		if len(value) >= 2 && value[0] == '\'' && value[len(value)-1] == '\'' {
			value = value[1 : len(value)-1]
		}
		env[name] = value
	}
	for _, k := range []string{"EBSD_CATALOG", "EBSD_BLOCKS", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"} {
		if env[k] == "" {
			return nil, fmt.Errorf("cluster.sh printed no %s in:\n%s", k, s)
		}
	}
	return env, nil
}
