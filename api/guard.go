package api

import (
	"net"
	"net/http"
	"strings"
)

// What follows keeps a web browser out. A page the user opens can make the browser
// send GETs (an <img>) and "simple" POSTs (a form) to any address, the daemon's
// loopback one included, carrying the user's network position but never an AWS
// signature. With signatures on, such a request fails authentication; these checks
// make it fail before anything else, and they are what stands between a page and
// the store with --auth none.

// browserRefusal says why r looks like something a web page sent, or "".
func (s *Server) browserRefusal(r *http.Request, service string) string {
	if r.Header.Get("Origin") != "" {
		// Browsers send Origin on every cross-origin POST and on fetch(); no AWS tool
		// does. ebsd answers no CORS preflight, so nothing else can follow.
		return "requests from web pages (an Origin header) are refused: ebsd does not serve browsers"
	}
	if len(s.cfg.AllowedHosts) > 0 && !hostAllowed(r.Host, s.cfg.AllowedHosts) {
		// A foreign Host is DNS rebinding: a page's own name resolving to loopback.
		return "the Host header " + quoteHost(r.Host) + " is not this endpoint's (see --public-host)"
	}
	if s.cfg.AllowedHosts == nil {
		return ""
	}
	// Unsigned mode: only what AWS tools send. A form can POST three content types
	// without a preflight; the EBS API takes none of them, and EC2 actions that change
	// something must be POSTed as a form, never a GET an <img> can make.
	switch service {
	case ServiceEBS:
		if r.Method == http.MethodPost && simpleContentType(r.Header.Get("Content-Type")) {
			return "a POST with the content type of an HTML form is refused"
		}
	case ServiceEC2:
		if r.Method != http.MethodPost || mediaType(r.Header.Get("Content-Type")) != "application/x-www-form-urlencoded" {
			if action := r.URL.Query().Get("Action"); action != "" && action != "DescribeSnapshots" {
				return "EC2 actions that change something must be POSTed as application/x-www-form-urlencoded"
			}
		}
	}
	return ""
}

func mediaType(ct string) string {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.ToLower(strings.TrimSpace(mt))
}

// simpleContentType is a content type an HTML form (or a no-cors fetch) may send.
func simpleContentType(ct string) bool {
	switch mediaType(ct) {
	case "application/x-www-form-urlencoded", "multipart/form-data", "text/plain":
		return true
	}
	return false
}

// hostAllowed compares a Host header with the allowed HOST:PORT values, ignoring
// case; a Host without a port matches an allowed entry on port 80.
func hostAllowed(host string, allowed []string) bool {
	for _, a := range allowed {
		if strings.EqualFold(host, a) {
			return true
		}
		if h, p, err := net.SplitHostPort(a); err == nil && p == "80" && strings.EqualFold(host, h) {
			return true
		}
	}
	return false
}

func quoteHost(h string) string {
	if len(h) > 100 {
		h = h[:100] + "…"
	}
	return `"` + h + `"`
}
