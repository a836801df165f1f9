package api

import (
	"net/http"
	"regexp"
)

// credentialScope matches the SigV4 credential: AKID/yyyymmdd/region/service/aws4_request.
var credentialScope = regexp.MustCompile(`Credential=[^/,\s]+/\d{8}/([^/,\s]+)/[^/,\s]+/aws4_request`)

// region is the region a request was signed for, or the configured one. Signatures
// themselves are not verified yet: every request acts as the configured owner.
func (s *Server) region(r *http.Request) string {
	if m := credentialScope.FindStringSubmatch(r.Header.Get("Authorization")); m != nil {
		return m[1]
	}
	if m := credentialScope.FindStringSubmatch("Credential=" + r.URL.Query().Get("X-Amz-Credential")); m != nil {
		return m[1]
	}
	return s.cfg.Region
}

func (s *Server) owner(*http.Request) string { return s.cfg.OwnerID }
