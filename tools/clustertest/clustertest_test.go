package clustertest

import (
	"bytes"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseExports(t *testing.T) {
	env, err := ParseExports(`export EBSD_CATALOG='postgres://ebsd:pw@127.0.0.1:20001/ebsd?sslmode=disable'
export EBSD_BLOCKS='s3://ebsd/blocks'
export AWS_ENDPOINT_URL_S3='http://127.0.0.1:20002'
export AWS_ACCESS_KEY_ID='AK'
export AWS_SECRET_ACCESS_KEY='SK'
export AWS_REGION='us-east-1'
export AWS_EC2_METADATA_DISABLED=true
`)
	if err != nil {
		t.Fatal(err)
	}
	if env["EBSD_BLOCKS"] != "s3://ebsd/blocks" || env["AWS_EC2_METADATA_DISABLED"] != "true" {
		t.Fatalf("parsed %v", env)
	}
	if _, err := ParseExports("export EBSD_BLOCKS='s3://b/p'\n"); err == nil {
		t.Fatal("exports without EBSD_CATALOG were taken")
	}
}

// TestCluster drives the real clients against a cluster: psql through EBSD_CATALOG
// and the AWS CLI through the S3 variables, across restarts of both servers.
func TestCluster(t *testing.T) {
	c := Start(t)
	dir := t.TempDir()
	obj := filepath.Join(dir, "obj")
	data := make([]byte, 1<<20+17)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(obj, data, 0o600); err != nil {
		t.Fatal(err)
	}
	key := c.Env["EBSD_BLOCKS"] + "/clustertest/obj"

	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = c.Environ()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	sql := func(q string) string {
		t.Helper()
		return run("psql", "-v", "ON_ERROR_STOP=1", "-qAtX", c.Env["EBSD_CATALOG"], "-c", q)
	}
	aws := func(args ...string) string {
		t.Helper()
		return run("/usr/bin/aws", append([]string{"--endpoint-url", c.Env["AWS_ENDPOINT_URL_S3"]}, args...)...)
	}
	roundTrip := func(when string) {
		t.Helper()
		back := filepath.Join(dir, "back")
		aws("s3", "cp", "--only-show-errors", key, back)
		got, err := os.ReadFile(back)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%s: the object came back different (%d bytes for %d)", when, len(got), len(data))
		}
		if v := sql("SELECT v FROM kv WHERE k = 'a'"); v != "1" {
			t.Fatalf("%s: the row reads %q", when, v)
		}
	}

	sql("CREATE TABLE kv (k text PRIMARY KEY, v int); INSERT INTO kv VALUES ('a', 1)")
	aws("s3", "cp", "--only-show-errors", obj, key)
	roundTrip("at the start")
	for _, kill := range []bool{false, true} {
		c.RestartS3(t, kill)
		c.RestartPG(t, kill)
		roundTrip("after the restarts")
	}
}
