package core

import "testing"

// ScanStart and PrefixEnd bound every catalog engine's Scan (the embedded, PostgreSQL
// and reference catalogs), so they are tested here, once, for all of them.
func TestScanStartAndPrefixEnd(t *testing.T) {
	for _, c := range []struct{ prefix, from, start string }{
		{"", "", ""},
		{"", "x", "x"},
		{"ab", "", "ab"},
		{"ab", "a", "ab"},
		{"ab", "b", "ab"}, // shorter than prefix: the start, though it sorts after
		{"ab", "aa", "ab"},
		{"ab", "aa\xff", "ab"},
		{"ab", "ab", "ab"},
		{"ab", "ab\x00", "ab\x00"},
		{"ab", "ac", "ac"}, // past the prefix: nothing will be visited
	} {
		if got := string(ScanStart([]byte(c.prefix), []byte(c.from))); got != c.start {
			t.Errorf("ScanStart(%q, %q) = %q, want %q", c.prefix, c.from, got, c.start)
		}
	}
	for _, c := range []struct {
		prefix, end string
		ok          bool
	}{
		{"", "", false},
		{"\xff", "", false},
		{"\xff\xff", "", false},
		{"a", "b", true},
		{"a\xff", "b", true},
		{"a\xff\xff", "b", true},
		{"a\x80", "a\x81", true}, // a byte that is no UTF-8 is a byte like any other
		{"\x00", "\x01", true},
		{"a\xfe", "a\xff", true},
	} {
		end, ok := PrefixEnd([]byte(c.prefix))
		if string(end) != c.end || ok != c.ok {
			t.Errorf("PrefixEnd(%q) = %q, %v; want %q, %v", c.prefix, end, ok, c.end, c.ok)
		}
	}
}
