package api

import (
	"context"
	"net/http"
	"net/url"

	"github.com/ebsd/ebsd/cas"
)

// Admin is what the ebsd extension endpoints need.
type Admin interface {
	Stats(ctx context.Context) (cas.Stats, error)
	GC(ctx context.Context, dryRun bool) (cas.GCReport, error)
}

// AdminPrefix is where ebsd's own (non-AWS) endpoints live. Nothing under it is part of
// the EBS direct APIs; ebsctl uses it where a subcommand says it is ebsd-only.
const AdminPrefix = "/ebsd/v1/"

// stats serves GET /ebsd/v1/stats: what the store holds, for efficiency reports.
func (s *Server) stats(w http.ResponseWriter, r *http.Request) {
	src, ok := s.store.(Admin)
	if !ok {
		writeError(w, &Error{Status: http.StatusNotImplemented, Type: "UnknownOperationException", Message: "this store has no statistics"})
		return
	}
	st, err := src.Stats(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// collectGarbage serves POST /ebsd/v1/gc[?dryRun=true|false]: a garbage collection
// now, and its report.
func (s *Server) collectGarbage(w http.ResponseWriter, r *http.Request) {
	admin, ok := s.store.(Admin)
	if !ok {
		writeError(w, &Error{Status: http.StatusNotImplemented, Type: "UnknownOperationException", Message: "this store cannot collect garbage"})
		return
	}
	dryRun, apiErr := gcDryRun(r.URL.RawQuery)
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}
	rep, err := admin.GC(r.Context(), dryRun)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// gcDryRun reads the query of a gc request. A collection deletes data, so whatever
// might have been meant as a dry run ("dryRun=1", "dryRun=TRUE", "dryRun", "dry-run=true")
// is refused, never run for real: the only parameter is dryRun, once, and its only
// values are "true" and "false", case-sensitively (see parseBool).
func gcDryRun(rawQuery string) (bool, *Error) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return false, invalidParameter("the query string is malformed: %v", err)
	}
	for name := range q {
		if name != "dryRun" {
			return false, invalidParameter("unknown query parameter %q: the only one is dryRun=true|false", name)
		}
	}
	v, given := q["dryRun"]
	if !given {
		return false, nil
	}
	dryRun, ok := parseBool(v[0])
	if !ok || len(v) != 1 {
		return false, invalidParameter("dryRun must be given once, as true or false (got %q)", v)
	}
	return dryRun, nil
}

type digestJSON struct {
	BlockIndex int64  `json:"BlockIndex"`
	Checksum   string `json:"Checksum"` // base64 SHA-256 of the block, as x-amz-Checksum
}

// digests serves GET /ebsd/v1/snapshots/{id}/digests?startingBlockIndex&maxResults: the
// SHA-256 of every block with data in a completed snapshot's view, so an incremental
// upload can skip what the parent already holds without downloading it. NextIndex is -1
// on the last page.
func (s *Server) digests(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	info(r).snapshot = id
	apiErr := snapshotIDError(id)
	var start int64
	var limit int
	if apiErr == nil {
		start, limit, apiErr = digestsPage(r.URL.Query())
	}
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}
	if _, ok := s.snapshotForRead(w, r, id); !ok {
		return
	}
	out := struct {
		Blocks    []digestJSON `json:"Blocks"`
		NextIndex int64        `json:"NextIndex"`
	}{Blocks: []digestJSON{}, NextIndex: -1}
	err := s.store.ViewFrom(r.Context(), s.owner(r), id, start, func(sl cas.Slot) bool {
		if len(out.Blocks) == limit {
			out.NextIndex = sl.Index
			return false
		}
		out.Blocks = append(out.Blocks, digestJSON{BlockIndex: sl.Index, Checksum: sl.Digest.Base64()})
		return true
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

const maxDigests = 100000

// digestsPage reads startingBlockIndex (default 0) and maxResults (1 to maxDigests,
// default maxDigests) of a digests request. A value that is not a decimal number in
// range is refused rather than clamped: a client that asked for index -1 or 0 results
// has a bug it should hear about.
func digestsPage(q url.Values) (start int64, limit int, apiErr *Error) {
	limit = maxDigests
	if v, given := q["startingBlockIndex"]; given {
		var ok bool
		if start, ok = parseDecimal(v[0]); !ok || len(v) != 1 {
			return 0, 0, invalidParameter("startingBlockIndex %q is not a non-negative decimal integer", v[0])
		}
	}
	if v, given := q["maxResults"]; given {
		n, ok := parseDecimal(v[0])
		if !ok || len(v) != 1 || n < 1 || n > maxDigests {
			return 0, 0, invalidParameter("maxResults %q is not a number from 1 to %d", v[0], maxDigests)
		}
		limit = int(n)
	}
	return start, limit, nil
}
