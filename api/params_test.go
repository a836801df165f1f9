package api

import "testing"

func TestParseDecimal(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"5", 5, true},
		{"524288", 524288, true},
		{"9223372036854775807", 1<<63 - 1, true},
		{"9223372036854775808", 0, false},
		{"", 0, false},
		{"+5", 0, false},
		{"-5", 0, false},
		{"-0", 0, false},
		{"05", 0, false},
		{"00", 0, false},
		{" 5", 0, false},
		{"5 ", 0, false},
		{"5\n", 0, false},
		{"0x10", 0, false},
		{"1_000", 0, false},
		{"1e3", 0, false},
		{"５", 0, false}, // fullwidth digit
	} {
		got, ok := parseDecimal(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseDecimal(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestParseBool(t *testing.T) {
	for in, want := range map[string][2]bool{
		"true": {true, true}, "false": {false, true},
		"TRUE": {false, false}, "True": {false, false}, "1": {false, false}, "yes": {false, false}, "": {false, false}, "true ": {false, false},
	} {
		if v, ok := parseBool(in); v != want[0] || ok != want[1] {
			t.Errorf("parseBool(%q) = %v, %v; want %v, %v", in, v, ok, want[0], want[1])
		}
	}
}

func TestJSONUnicodeProblem(t *testing.T) {
	for in, bad := range map[string]bool{
		`{"a":"plain"}`:                 false,
		`{"a":"é😀"}`:                    false,
		`{"a":"\u00e9\ud83d\ude00"}`:    false,
		`{"a":"\\ud800"}`:               false, // an escaped backslash, then text
		`{"a":"\\\ud83d\ude00"}`:        false,
		`{"\ud83d\ude00":1}`:            false,
		`{"a":"\"\ud83d\ude00\""}`:      false,
		`{"a":"\ud800"}`:                true,
		`{"a":"\udc00"}`:                true,
		`{"a":"\ud800\u0041"}`:          true,
		`{"a":"\ud800\\udc00"}`:         true, // the second is not an escape
		`{"\udfff":1}`:                  true,
		"{\"a\":\"\xff\"}":              true,
		"{\"a\":\"\xed\xa0\x80\"}":      true, // a surrogate encoded in UTF-8
		`{"a":"\ud83d\ude00\ud800"}`:    true,
		`{"a":"x"}` + "\n" + `"\ud800"`: true,
	} {
		if got := jsonUnicodeProblem([]byte(in)) != ""; got != bad {
			t.Errorf("jsonUnicodeProblem(%s) refused = %v, want %v", in, got, bad)
		}
	}
}
