package api

import (
	"strings"
	"testing"
)

func TestWildcardSemantics(t *testing.T) {
	for _, tc := range []struct {
		pattern, s string
		want       bool
	}{
		{"", "", true},
		{"", "a", false},
		{"abc", "abc", true},
		{"abc", "abcd", false},
		{"abc", "ab", false},
		{"abc", "ABC", false}, // case-sensitive, as EC2 filters are
		{"*", "", true},
		{"*", "anything", true},
		{"**", "", true},
		{"a*", "a", true},
		{"a*", "abc", true},
		{"a*", "ba", false},
		{"*c", "abc", true},
		{"*c", "abd", false},
		{"a*c", "ac", true},
		{"a*c", "abbbc", true},
		{"a*c", "abcb", false},
		{"*a*b*", "xxaxxbxx", true},
		{"*a*b*", "xxbxxaxx", false},
		{"a*b*c", "abcabc", true},
		{"*aab", "aaab", true},     // the star must give back what it took
		{"*ab*ab", "abab", true},   // and more than once
		{"*ab*ab", "ababa", false}, // the end is anchored
		{"?", "a", true},
		{"?", "", false},
		{"?", "ab", false},
		{"??", "ab", true},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"*?", "", false},
		{"*?", "x", true},
		{"?*?", "x", false},
		{"?*?", "xy", true},
		// Characters, not bytes: one ? is one emoji (4 bytes of UTF-8).
		{"?", "😀", true},
		{"??", "😀", false},
		{"a?b", "a€b", true},
		{"*€", "x€", true},
		{"😀*", "😀😀", true},
		// Backslash escapes: \* \? \\ are literal.
		{`\*`, "*", true},
		{`\*`, "x", false},
		{`a\?`, "a?", true},
		{`a\?`, "ab", false},
		{`\\`, `\`, true},
		{`\\*`, `\abc`, true},
		{`*\*`, "abc*", true},
		{`*\*`, "abc", false},
		{`\a`, "a", true},  // an escaped ordinary character is itself
		{`a\`, `a\`, true}, // a trailing backslash stands for itself
		{"snap-*", "snap-0123456789abcdef0", true},
		{"tag-?", "tag-1", true},
	} {
		if got := compileWildcard(tc.pattern).match(tc.s); got != tc.want {
			t.Errorf("match(%q, %q) = %v, want %v", tc.pattern, tc.s, got, tc.want)
		}
	}
}

// Patterns that made the recursive matcher backtrack exponentially: each star tried
// every split of the rest. The linear matcher answers them at once; the test asserts
// only the answers (the old matcher did not finish within the test timeout).
func TestWildcardPathologicalPatternsFinish(t *testing.T) {
	as := strings.Repeat("a", 255)
	for _, tc := range []struct {
		pattern, s string
		want       bool
	}{
		{"*a*a*a*a*b", as, false},
		{strings.Repeat("*a", 40) + "*b", as, false},
		{strings.Repeat("*a", 40) + "*", as, true},
		{strings.Repeat("*a", 255) + "*", as, true},
		{strings.Repeat("*a", 256) + "*", as, false},
		{strings.Repeat("*?", 200) + "b", as, false},
		{strings.Repeat("*", 100000) + "b", as, false},
		{strings.Repeat("a*", 100) + "a", as, true},
		{strings.Repeat("*ab", 50), strings.Repeat("ab", 127) + "a", false},
	} {
		if got := compileWildcard(tc.pattern).match(tc.s); got != tc.want {
			t.Errorf("match(%.40q…, %.20q…) = %v, want %v", tc.pattern, tc.s, got, tc.want)
		}
	}
}

// The same through DescribeSnapshots, with a 255-character description.
func TestDescribeSnapshotsPathologicalFilterFinishes(t *testing.T) {
	a := newTestAPI(t)
	id := a.start(`{"VolumeSize":1,"Description":"` + strings.Repeat("a", 255) + `"}`)
	a.start(`{"VolumeSize":1,"Description":"` + strings.Repeat("a", 254) + `b"}`)
	filter := "Filter.1.Name=description&Filter.1.Value.1=" + formValue(strings.Repeat("*a", 30)+"*b")
	if got := describe(t, a.ec2v("DescribeSnapshots", filter)); len(got) != 1 || got[0] == id {
		t.Fatalf("pathological filter matched %v", got)
	}
	filter = "Filter.1.Name=description&Filter.1.Value.1=" + formValue(strings.Repeat("*a", 30)+"*a")
	if got := describe(t, a.ec2v("DescribeSnapshots", filter)); len(got) != 1 || got[0] != id {
		t.Fatalf("filter ending in a matched %v, want [%s]", got, id)
	}
}
