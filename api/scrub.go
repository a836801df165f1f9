package api

import (
	"context"
	"net/http"
	"net/url"

	"github.com/ebsd/ebsd/cas"
)

// Scrubber is what POST /ebsd/v1/scrub needs of the store.
type Scrubber interface {
	Scrub(ctx context.Context, o cas.ScrubOptions) (cas.ScrubReport, error)
}

// maxScrubMBPerSec bounds mbPerSec so that the bytes-per-second product cannot overflow.
const maxScrubMBPerSec = 1 << 20

// scrub serves POST /ebsd/v1/scrub[?mbPerSec=N]: re-read and verify every stored block
// and catalog record now, and answer the report (200 even when corruption is found: the
// report is the answer; ebsctl scrub turns it into its exit status). Without mbPerSec
// the scrub reads as fast as it can: the operator who asked is waiting for the answer;
// the background scrub is the one bounded by default.
func (s *Server) scrub(w http.ResponseWriter, r *http.Request) {
	sc, ok := s.store.(Scrubber)
	if !ok {
		writeError(w, &Error{Status: http.StatusNotImplemented, Type: "UnknownOperationException", Message: "this store cannot scrub"})
		return
	}
	o, apiErr := scrubOptions(r.URL.RawQuery)
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}
	rep, err := sc.Scrub(r.Context(), o)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// scrubOptions reads the query of a scrub request: mbPerSec, once, a decimal from 0
// (no bound) to maxScrubMBPerSec. Anything else is refused rather than ignored.
func scrubOptions(rawQuery string) (cas.ScrubOptions, *Error) {
	var o cas.ScrubOptions
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return o, invalidParameter("the query string is malformed: %v", err)
	}
	for name := range q {
		if name != "mbPerSec" {
			return o, invalidParameter("unknown query parameter %q: the only one is mbPerSec", name)
		}
	}
	v, given := q["mbPerSec"]
	if !given {
		return o, nil
	}
	n, ok := parseDecimal(v[0])
	if !ok || len(v) != 1 || n > maxScrubMBPerSec {
		return o, invalidParameter("mbPerSec must be given once, as a whole number from 0 (no bound) to %d (got %q)", maxScrubMBPerSec, v)
	}
	o.BytesPerSec = n << 20
	return o, nil
}
