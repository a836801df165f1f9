package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// testGlobal is what run gives a subcommand: the global flags and their flag set.
func testGlobal(stderr *bytes.Buffer) *globalOptions {
	fs := flag.NewFlagSet("ebsctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	g := &globalOptions{flags: fs, stderr: stderr}
	g.register(fs)
	return g
}

// Flags after positional arguments, global flags after the subcommand, values that look
// like flags, -flag=value, single and double dashes, and "--" all parse as they do in
// the CLIs people know.
func TestParseFlagsAfterArguments(t *testing.T) {
	var stderr bytes.Buffer
	g := testGlobal(&stderr)
	fs := flag.NewFlagSet("upload", flag.ContinueOnError)
	wait := fs.Bool("wait", false, "")
	desc := fs.String("description", "", "")
	workers := fs.Int("workers", 1, "")
	err := g.parse(fs, []string{"disk.img", "--wait", "--endpoint-url", "http://127.0.0.1:1", "--description", "-starts with a dash",
		"-workers=7", "--json", "-quiet", "--region=eu-west-1", "second", "--", "--not-a-flag", "-"})
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, stderr.String())
	}
	if want := []string{"disk.img", "second", "--not-a-flag", "-"}; !slices.Equal(fs.Args(), want) {
		t.Errorf("positional arguments %q, want %q", fs.Args(), want)
	}
	if !*wait || *desc != "-starts with a dash" || *workers != 7 {
		t.Errorf("subcommand flags: wait %v, description %q, workers %d", *wait, *desc, *workers)
	}
	if g.endpoint != "http://127.0.0.1:1" || !g.json || !g.quiet || g.region != "eu-west-1" {
		t.Errorf("global flags after the subcommand: %+v", g)
	}
}

// A subcommand's own flag wins over a global flag of the same name; the global one
// keeps its value.
func TestParseOwnFlagWinsOverGlobal(t *testing.T) {
	var stderr bytes.Buffer
	g := testGlobal(&stderr)
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	region := fs.String("region", "", "")
	if err := g.parse(fs, []string{"a", "--region", "local"}); err != nil {
		t.Fatal(err)
	}
	if *region != "local" || g.region != "" {
		t.Fatalf("subcommand region %q, global region %q", *region, g.region)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"disk.img", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"disk.img", "--description"}, "flag needs an argument: -description"},
		{[]string{"disk.img", "--max-attempts", "many"}, `invalid value "many" for flag -max-attempts`},
	} {
		var stderr bytes.Buffer
		g := testGlobal(&stderr)
		fs := flag.NewFlagSet("upload", flag.ContinueOnError)
		fs.String("description", "", "")
		err := g.parse(fs, tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.args, err, tc.want)
		}
	}
}

// Every subcommand's --help still works, wherever it stands, exits 0 and shows the
// subcommand's usage and the global flags; `ebsctl help COMMAND` shows the same.
func TestSubcommandHelp(t *testing.T) {
	for _, c := range commands() {
		for _, args := range [][]string{{c.name, "--help"}, {c.name, "snap-0123456789abcdef0", "disk.img", "-h"}, {"help", c.name}} {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), args, &stdout, &stderr)
			help := stderr.String()
			if code != 0 || !strings.Contains(help, "Usage: ebsctl "+c.name) || !strings.Contains(help, "Global flags") || !strings.Contains(help, "-endpoint-url") {
				t.Errorf("ebsctl %s: exit %d, help:\n%s", strings.Join(args, " "), code, help)
			}
		}
	}
}

// `ebsctl help` alone shows the usage that offers it, and exits 0.
func TestHelpWithoutACommand(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"help"}, &stdout, &stderr); code != 0 || !strings.Contains(stderr.String(), "ebsctl help COMMAND") {
		t.Fatalf("ebsctl help: exit %d\n%s", code, stderr.String())
	}
}

// bench takes its flags and the global ones after the image files; "--" lets an image
// name start with a dash.
func TestBenchFlagsAfterImages(t *testing.T) {
	dir := t.TempDir()
	makeImage(t, filepath.Join(dir, "base.img"), 8, 0)
	makeImage(t, filepath.Join(dir, "-next.img"), 8, 0)
	t.Chdir(dir)
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"bench", "base.img", "--json", "--simulate", "--svg", "r.svg", "--", "-next.img"}, &stdout, &stderr); code != 0 {
		t.Fatalf("bench with flags after the images: exit %d\n%s", code, stderr.String())
	}
	var rep efficiencyReport
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("--json after the images did not give JSON: %v\n%s", err, stdout.String())
	}
	if len(rep.Rows) != 2 || rep.Rows[0].Name != "base.img" || rep.Rows[1].Name != "-next.img" {
		t.Fatalf("rows: %+v", rep.Rows)
	}
	if _, err := os.Stat(filepath.Join(dir, "r.svg")); err != nil {
		t.Fatalf("--svg after the images: %v", err)
	}
}

// Against a daemon: upload, verify (through a --mount directory) and ls with every flag,
// --endpoint-url included, after the subcommand's arguments.
func TestFlagsAfterArgumentsAgainstDaemon(t *testing.T) {
	d := startDaemon(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	makeImage(t, img, 12, 100)
	cli := func(args ...string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
			t.Fatalf("ebsctl %s: exit %d\n%s", strings.Join(args, " "), code, stderr.String())
		}
		return stdout.String()
	}
	var res uploadResult
	out := cli("upload", img, "--wait", "--state-dir", dir, "--endpoint-url", d.url, "--quiet", "--json", "--description", "flags last")
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Status != "completed" {
		t.Fatalf("upload %s --wait --json: %v\n%s", img, err, out)
	}
	// --mount reads the snapshot as the FUSE export presents it: a file named after
	// the snapshot in that directory. A download makes one without FUSE.
	mnt := t.TempDir()
	cli("download", res.SnapshotID, filepath.Join(mnt, res.SnapshotID), "--endpoint-url", d.url, "--quiet")
	out = cli("verify", res.SnapshotID, img, "--mount", mnt, "--endpoint-url", d.url, "--quiet")
	if !strings.HasPrefix(out, "identical") {
		t.Fatalf("verify SNAP IMAGE --mount DIR: %s", out)
	}
	out = cli("ls", "--endpoint-url", d.url, "--json")
	if !strings.Contains(out, res.SnapshotID) || !strings.Contains(out, `"flags last"`) {
		t.Fatalf("ls --endpoint-url URL --json: %s", out)
	}
}
