package api

import (
	"context"
	"net/http"
	"strconv"

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
	if _, ok := s.snapshotForRead(w, r, id); !ok {
		return
	}
	q := r.URL.Query()
	start, _ := strconv.ParseInt(q.Get("startingBlockIndex"), 10, 64)
	limit, err := strconv.Atoi(q.Get("maxResults"))
	if err != nil || limit <= 0 || limit > 100000 {
		limit = 100000
	}
	out := struct {
		Blocks    []digestJSON `json:"Blocks"`
		NextIndex int64        `json:"NextIndex"`
	}{Blocks: []digestJSON{}, NextIndex: -1}
	err = s.store.ViewFrom(r.Context(), s.owner(r), id, max(start, 0), func(sl cas.Slot) bool {
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
