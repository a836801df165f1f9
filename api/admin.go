package api

import (
	"context"
	"net/http"

	"github.com/ebsd/ebsd/cas"
)

// StatsSource is what the ebsd extension endpoints need.
type StatsSource interface {
	Stats(ctx context.Context) (cas.Stats, error)
}

// AdminPrefix is where ebsd's own (non-AWS) endpoints live. Nothing under it is part of
// the EBS direct APIs; ebsctl uses it where a subcommand says it is ebsd-only.
const AdminPrefix = "/ebsd/v1/"

// stats serves GET /ebsd/v1/stats: what the store holds, for efficiency reports.
func (s *Server) stats(w http.ResponseWriter, r *http.Request) {
	src, ok := s.store.(StatsSource)
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
