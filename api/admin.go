package api

import (
	"context"
	"net/http"

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

// collectGarbage serves POST /ebsd/v1/gc[?dryRun=true]: a garbage collection now, and
// its report.
func (s *Server) collectGarbage(w http.ResponseWriter, r *http.Request) {
	admin, ok := s.store.(Admin)
	if !ok {
		writeError(w, &Error{Status: http.StatusNotImplemented, Type: "UnknownOperationException", Message: "this store cannot collect garbage"})
		return
	}
	rep, err := admin.GC(r.Context(), r.URL.Query().Get("dryRun") == "true")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}
