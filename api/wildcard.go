package api

import (
	"unicode/utf8"
)

// wildcard is a compiled EC2 filter value: * is any run of characters (none
// included), ? exactly one character, and a backslash makes the next character
// literal (\*, \?, \\). Characters are Unicode code points, as EC2 counts them.
//
// Matching is the greedy two-pointer algorithm: on a mismatch it returns to the most
// recent star and lets it swallow one more character. Earlier stars never need to be
// revisited (the most recent star can absorb whatever they would have), so a match
// costs O(len(text) × len(pattern)) at worst, where a recursive matcher is exponential
// in the number of stars: "*a*a*a*a*b" against a 255-character description pinned a
// core for minutes. Runs of stars are compiled to one, and a pattern that needs more
// characters than the text has fails at once, so the pattern side of that bound is at
// most about twice the text's length however long the filter value is.
type wildcard struct {
	toks    []wildTok
	minLen  int  // characters a match needs: the pattern's non-star tokens
	literal bool // no star and no ?: a plain comparison decides
	plain   string
}

type wildTok struct {
	kind byte // 'c' literal character, '?' any one character, '*' any run
	r    rune
}

func compileWildcard(pattern string) wildcard {
	var w wildcard
	literal := true
	var plain []byte
	for i := 0; i < len(pattern); {
		r, size := utf8.DecodeRuneInString(pattern[i:])
		i += size
		switch r {
		case '*':
			literal = false
			if n := len(w.toks); n == 0 || w.toks[n-1].kind != '*' {
				w.toks = append(w.toks, wildTok{kind: '*'})
			}
			continue
		case '?':
			literal = false
			w.toks = append(w.toks, wildTok{kind: '?'})
			w.minLen++
			continue
		case '\\':
			if i < len(pattern) { // a trailing backslash stands for itself
				r, size = utf8.DecodeRuneInString(pattern[i:])
				i += size
			}
		}
		w.toks = append(w.toks, wildTok{kind: 'c', r: r})
		plain = utf8.AppendRune(plain, r)
		w.minLen++
	}
	w.literal, w.plain = literal, string(plain)
	return w
}

// match reports whether the whole of s matches.
func (w wildcard) match(s string) bool {
	if w.literal {
		return s == w.plain
	}
	if len(s) < w.minLen { // fewer bytes than needed characters: no match
		return false
	}
	text := []rune(s)
	if len(text) < w.minLen {
		return false
	}
	p := w.toks
	pi, ti := 0, 0
	star, starText := -1, 0 // the last star seen and where its run currently ends
	for ti < len(text) {
		switch {
		case pi < len(p) && (p[pi].kind == '?' || p[pi].kind == 'c' && p[pi].r == text[ti]):
			pi++
			ti++
		case pi < len(p) && p[pi].kind == '*':
			star, starText = pi, ti
			pi++
		case star >= 0:
			starText++ // the star takes one more character; retry the rest after it
			pi, ti = star+1, starText
		default:
			return false
		}
	}
	for pi < len(p) && p[pi].kind == '*' {
		pi++
	}
	return pi == len(p)
}
