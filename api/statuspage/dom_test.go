package statuspage

import (
	"html"
	"strings"
	"testing"
)

// domNode is an element (or, with an empty tag, a text node) of a parsed page. The
// tests parse both the server's HTML and the DOM Chromium serialises; a small parser
// of our own spares the module a dependency for tests alone.
type domNode struct {
	tag      string
	attrs    map[string]string
	text     string
	parent   *domNode
	children []*domNode
}

var voidElements = map[string]bool{
	"area": true, "base": true, "br": true, "col": true, "embed": true, "hr": true, "img": true,
	"input": true, "link": true, "meta": true, "source": true, "track": true, "wbr": true,
}

// rawTextElements hold text up to their end tag, whatever it looks like (CSS has ">").
var rawTextElements = map[string]bool{"style": true, "script": true, "textarea": true}

// parseDOM parses well-formed HTML as html/template and Chromium write it: quoted
// attributes, end tags present for every non-void element.
func parseDOM(t *testing.T, s string) *domNode {
	t.Helper()
	root := &domNode{tag: "#document", attrs: map[string]string{}}
	cur := root
	for len(s) > 0 {
		lt := strings.IndexByte(s, '<')
		if lt < 0 {
			lt = len(s)
		}
		if lt > 0 {
			cur.children = append(cur.children, &domNode{text: html.UnescapeString(s[:lt]), parent: cur})
			s = s[lt:]
			continue
		}
		switch {
		case strings.HasPrefix(s, "<!--"):
			end := strings.Index(s, "-->")
			if end < 0 {
				t.Fatalf("unterminated comment")
			}
			s = s[end+3:]
		case strings.HasPrefix(s, "<!"):
			s = s[strings.IndexByte(s, '>')+1:]
		case strings.HasPrefix(s, "</"):
			end := strings.IndexByte(s, '>')
			name := strings.ToLower(strings.TrimSpace(s[2:end]))
			s = s[end+1:]
			for n := cur; n != root; n = n.parent {
				if n.tag == name {
					cur = n.parent
					break
				}
			}
		default:
			el, rest, selfClosing := parseStartTag(t, s)
			el.parent = cur
			cur.children = append(cur.children, el)
			s = rest
			switch {
			case rawTextElements[el.tag]:
				end := strings.Index(strings.ToLower(s), "</"+el.tag)
				if end < 0 {
					t.Fatalf("unterminated <%s>", el.tag)
				}
				el.children = append(el.children, &domNode{text: s[:end], parent: el})
				s = s[end:]
				s = s[strings.IndexByte(s, '>')+1:]
			case !voidElements[el.tag] && !selfClosing:
				cur = el
			}
		}
	}
	return root
}

func parseStartTag(t *testing.T, s string) (el *domNode, rest string, selfClosing bool) {
	t.Helper()
	i := 1
	for i < len(s) && !strings.ContainsRune(" \t\n\r/>", rune(s[i])) {
		i++
	}
	el = &domNode{tag: strings.ToLower(s[1:i]), attrs: map[string]string{}}
	for {
		for i < len(s) && strings.ContainsRune(" \t\n\r", rune(s[i])) {
			i++
		}
		if i >= len(s) {
			t.Fatalf("unterminated <%s>", el.tag)
		}
		switch s[i] {
		case '>':
			return el, s[i+1:], false
		case '/':
			if i+1 < len(s) && s[i+1] == '>' {
				return el, s[i+2:], true
			}
			i++
			continue
		}
		start := i
		for i < len(s) && !strings.ContainsRune(" \t\n\r=/>", rune(s[i])) {
			i++
		}
		name := strings.ToLower(s[start:i])
		val := ""
		if i < len(s) && s[i] == '=' {
			i++
			if q := s[i]; q == '"' || q == '\'' {
				end := strings.IndexByte(s[i+1:], q)
				if end < 0 {
					t.Fatalf("unterminated attribute %s of <%s>", name, el.tag)
				}
				val = s[i+1 : i+1+end]
				i += end + 2
			} else {
				start := i
				for i < len(s) && !strings.ContainsRune(" \t\n\r>", rune(s[i])) {
					i++
				}
				val = s[start:i]
			}
		}
		el.attrs[name] = html.UnescapeString(val)
	}
}

// all returns the elements under n (n excluded) for which match is true, in document order.
func (n *domNode) all(match func(*domNode) bool) []*domNode {
	var out []*domNode
	var walk func(*domNode)
	walk = func(m *domNode) {
		for _, c := range m.children {
			if c.tag != "" && match(c) {
				out = append(out, c)
			}
			walk(c)
		}
	}
	walk(n)
	return out
}

func tag(name string) func(*domNode) bool { return func(n *domNode) bool { return n.tag == name } }

func attr(tagName, key, value string) func(*domNode) bool {
	return func(n *domNode) bool { return n.tag == tagName && n.attrs[key] == value }
}

func hasClass(n *domNode, class string) bool {
	for _, c := range strings.Fields(n.attrs["class"]) {
		if c == class {
			return true
		}
	}
	return false
}

// one returns the single element under n that matches, failing the test otherwise.
func (n *domNode) one(t *testing.T, what string, match func(*domNode) bool) *domNode {
	t.Helper()
	found := n.all(match)
	if len(found) != 1 {
		t.Fatalf("%d elements %s, want 1", len(found), what)
	}
	return found[0]
}

// textContent is the text of n and everything under it, with runs of white space
// collapsed.
func (n *domNode) textContent() string {
	var b strings.Builder
	var walk func(*domNode)
	walk = func(m *domNode) {
		if m.tag == "" {
			b.WriteString(m.text)
			b.WriteByte(' ')
		}
		for _, c := range m.children {
			walk(c)
		}
	}
	walk(n)
	return strings.Join(strings.Fields(b.String()), " ")
}

// closest returns the nearest ancestor of n with the tag, or nil.
func (n *domNode) closest(tagName string) *domNode {
	for p := n.parent; p != nil; p = p.parent {
		if p.tag == tagName {
			return p
		}
	}
	return nil
}
