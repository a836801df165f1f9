package api

import "unicode/utf8"

// jsonUnicodeProblem says why b, a JSON text, does not encode Unicode text, or "" when
// it does. encoding/json turns invalid UTF-8 and unpaired surrogate escapes ("\ud800")
// into U+FFFD without a word, so a snapshot would carry a description or a tag its
// creator never sent; AWS refuses such a request. Syntax errors are left to the JSON
// decoder, which names them better.
func jsonUnicodeProblem(b []byte) string {
	if !utf8.Valid(b) {
		return "the request body is not valid UTF-8"
	}
	const unpaired = "the request body has an unpaired UTF-16 surrogate escape (\\uD800-\\uDFFF)"
	inString := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !inString {
			inString = c == '"'
			continue
		}
		switch {
		case c == '"':
			inString = false
		case c == '\\' && i+1 < len(b) && b[i+1] != 'u':
			i++ // a one-character escape, \" included
		case c == '\\':
			r, ok := hex4(b, i+2)
			if !ok {
				return ""
			}
			i += 5 // on the escape's last hex digit
			switch {
			case r >= 0xDC00 && r <= 0xDFFF:
				return unpaired
			case r >= 0xD800 && r <= 0xDBFF:
				if i+2 < len(b) && b[i+1] == '\\' && b[i+2] == 'u' {
					if lo, ok := hex4(b, i+3); ok && lo >= 0xDC00 && lo <= 0xDFFF {
						i += 6
						continue
					}
				}
				return unpaired
			}
		}
	}
	return ""
}

// hex4 reads four hex digits at b[at:].
func hex4(b []byte, at int) (rune, bool) {
	if at+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[at : at+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}
