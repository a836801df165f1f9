// Package mutantrun runs a conformance suite against a deliberately broken engine in a
// child test process, for the suites' own tests (cas/blocktest, cas/catalogtest): each
// broken rule must fail the suite's subtest of that rule, and a control that breaks
// nothing must pass everything.
package mutantrun

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Check runs the test binary's TestMutantChild (subtest breaks, or all of it when
// breaks is empty) with env set to name, and fails t unless the child fails exactly
// that subtest (or, for the control, passes).
func Check(t *testing.T, env, name, breaks string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	run := "^TestMutantChild$"
	if breaks != "" {
		run += "/^" + breaks + "$"
	}
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run="+run, "-test.count=1", "-test.timeout=1m")
	// The race detector otherwise sleeps a second before a passing child exits.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	cmd.Env = append(os.Environ(), env+"="+name, "GORACE="+gorace)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case breaks == "":
		if err != nil || !strings.Contains(string(out), "PASS") {
			t.Fatalf("the control mutant failed the suite: %v\n%s", err, out)
		}
	case !errors.As(err, &exit):
		t.Fatalf("mutant %q passed subtest %s (%v):\n%s", name, breaks, err, out)
	case !strings.Contains(string(out), "--- FAIL: TestMutantChild/"+breaks):
		t.Fatalf("mutant %q did not fail subtest %s as such:\n%s", name, breaks, out)
	}
}
