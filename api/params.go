package api

import (
	"strconv"
	"unicode/utf8"
)

// parseDecimal parses a non-negative integer the way every AWS SDK writes one in a
// path, query or header: ASCII decimal digits only. strconv.ParseInt alone would also
// take a sign ("+5", "-0") and Atoi the same; both are refused here. Leading zeros are
// refused too ("05"; "0" itself is fine): no SDK writes them, and one spelling per
// number keeps "010" from being read as octal by one party and decimal by another.
// Values past int64 are refused rather than clamped.
func parseDecimal(s string) (int64, bool) {
	if s == "" || len(s) > 1 && s[0] == '0' {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, false
	}
	return n, true
}

// parseBool parses a boolean query parameter. Only the two spellings the SDKs and
// ebsctl send, "true" and "false", case-sensitively: a parameter that chooses between
// reporting and deleting must not guess what "1", "yes" or "TRUE" meant.
func parseBool(s string) (bool, bool) {
	switch s {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	return false, false
}

// tooLong reports whether s has more than limit characters. AWS limits count
// characters (Unicode code points), not bytes: 255 emoji are a valid description.
func tooLong(s string, limit int) bool {
	return len(s) > limit && utf8.RuneCountInString(s) > limit
}
