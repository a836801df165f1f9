package statuspage

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The page as a person sees it: Debian's headless Chromium loads it from a loopback
// server, once with JavaScript on and once off, and the DOM it builds must show
// everything checkStatusDOM asks for either way. Screenshots are kept in the artifacts
// directory ($EBSD_ARTIFACTS_DIR, else artifacts/statuspage/ at the repository root).
//
// Without Chromium the test skips, unless EBSD_REQUIRE_CHROMIUM=1 (CI) makes that a
// failure: `apt-get install chromium` provides it.
func TestPageInHeadlessChromium(t *testing.T) {
	browser := findChromium(t)
	artifacts := artifactsDir(t)

	mux := http.NewServeMux()
	mux.Handle("/", New(newFixture(), Options{Now: func() time.Time { return fixtureNow }}))
	// The canary proves each mode: it says whether a script ran in this browser profile.
	mux.HandleFunc("/js-canary", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<!DOCTYPE html><p id="canary">script did not run</p>`+
			`<script>document.getElementById("canary").textContent = "script ran"</script>`)
	})
	srv := httptest.NewServer(mux) // 127.0.0.1 only
	defer srv.Close()

	for _, mode := range []struct {
		name   string
		js     bool
		canary string
	}{
		{"javascript-on", true, "script ran"},
		{"javascript-off", false, "script did not run"},
	} {
		t.Run(mode.name, func(t *testing.T) {
			canary := parseDOM(t, chromium(t, browser, mode.js, "--dump-dom", srv.URL+"/js-canary"))
			if got := canary.one(t, "#canary", attr("p", "id", "canary")).textContent(); got != mode.canary {
				t.Fatalf("the canary says %q: this browser profile is not the mode %s", got, mode.name)
			}

			dom := chromium(t, browser, mode.js, "--dump-dom", srv.URL+"/")
			if err := os.WriteFile(filepath.Join(artifacts, "status-page-"+mode.name+".html"), []byte(dom), 0o644); err != nil {
				t.Fatal(err)
			}
			checkStatusDOM(t, parseDOM(t, dom))

			shot := filepath.Join(artifacts, "status-page-"+mode.name+".png")
			_ = os.Remove(shot)
			chromium(t, browser, mode.js, "--screenshot="+shot, "--window-size=1280,1600", srv.URL+"/")
			checkScreenshot(t, shot, 1600)
			t.Logf("screenshot: %s", shot)
			if mode.js {
				// The whole page, for a person reviewing the artifacts.
				full := filepath.Join(artifacts, "status-page-full.png")
				chromium(t, browser, mode.js, "--screenshot="+full, "--window-size=1280,3000", srv.URL+"/")
				checkScreenshot(t, full, 3000)
			}
		})
	}
}

func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "/usr/bin/chromium"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("EBSD_REQUIRE_CHROMIUM") == "1" {
		t.Fatal("chromium is not installed and EBSD_REQUIRE_CHROMIUM=1: apt-get install chromium")
	}
	t.Skip("chromium is not installed (apt-get install chromium); EBSD_REQUIRE_CHROMIUM=1 makes this a failure")
	return ""
}

// artifactsDir is where the test leaves what a person may want to look at.
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("EBSD_ARTIFACTS_DIR")
	if dir == "" {
		dir = filepath.Join("..", "..", "artifacts") // the repository root's, git-ignored
	}
	dir, err := filepath.Abs(filepath.Join(dir, "statuspage"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// chromium runs one headless Chromium command against the loopback server, in a fresh
// profile, and returns its standard output. A hard timeout kills it and every process
// it started.
func chromium(t *testing.T, browser string, js bool, args ...string) string {
	t.Helper()
	profile := t.TempDir()
	if !js {
		// --blink-settings=scriptEnabled=false makes headless Chromium print and save
		// nothing at all; the profile's content setting blocks page scripts and leaves
		// --dump-dom and --screenshot working.
		if err := os.MkdirAll(filepath.Join(profile, "Default"), 0o755); err != nil {
			t.Fatal(err)
		}
		prefs := `{"profile":{"default_content_setting_values":{"javascript":2}}}`
		if err := os.WriteFile(filepath.Join(profile, "Default", "Preferences"), []byte(prefs), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, browser, append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + profile,
	}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, lastLines(stderr.String(), 20))
	}
	return stdout.String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// checkScreenshot asserts the picture is the page, styled: the window's size, and the
// dark header of the style sheet, which Chromium applies only if the
// Content-Security-Policy hash admits it.
func checkScreenshot(t *testing.T, path string, height int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot %s: %v", path, err)
	}
	if b := img.Bounds(); b.Dx() != 1280 || b.Dy() != height {
		t.Fatalf("screenshot is %v, want 1280×%d", b, height)
	}
	if lum := luminance(img, 8, 8); lum > 80 {
		t.Errorf("header pixel luminance %d: the style sheet was not applied (blocked by CSP?)", lum)
	}
	if lum := luminance(img, 8, height-10); lum < 200 {
		t.Errorf("page background luminance %d, want a light page", lum)
	}
}

func luminance(img image.Image, x, y int) int {
	r, g, b, _ := img.At(x, y).RGBA()
	return int((299*r + 587*g + 114*b) / 1000 >> 8)
}
