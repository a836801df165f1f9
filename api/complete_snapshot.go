package api

import (
	"net/http"

	"github.com/ebsd/ebsd/cas"
)

func (s *Server) completeSnapshot(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	info(r).snapshot = id
	if !cas.ValidSnapshotID(id) {
		writeError(w, invalid(reasonInvalidSnapshotID, "%q is not a snapshot id (snap-<hex>)", id))
		return
	}
	countText := r.Header.Get("x-amz-ChangedBlocksCount")
	if countText == "" {
		writeError(w, invalidParameter("x-amz-ChangedBlocksCount is required"))
		return
	}
	count, ok := parseDecimal(countText)
	if !ok {
		writeError(w, invalidParameter("x-amz-ChangedBlocksCount %q is not a non-negative integer", countText))
		return
	}
	aggregate, apiErr := aggregateHeaders(r)
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}
	status, err := s.store.CompleteSnapshot(r.Context(), s.owner(r), id, count, aggregate)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, struct{ Status cas.Status }{status})
}

// aggregateHeaders returns the LINEAR aggregate checksum when the client sent one. The
// three headers come all together or not at all.
func aggregateHeaders(r *http.Request) (*cas.Digest, *Error) {
	sum := r.Header.Get("x-amz-Checksum")
	alg := r.Header.Get("x-amz-Checksum-Algorithm")
	method := r.Header.Get("x-amz-Checksum-Aggregation-Method")
	if sum == "" && alg == "" && method == "" {
		return nil, nil
	}
	if sum == "" || alg == "" || method == "" {
		return nil, invalidParameter("x-amz-Checksum, x-amz-Checksum-Algorithm and x-amz-Checksum-Aggregation-Method go together: give all three or none")
	}
	if alg != "SHA256" {
		return nil, invalidParameter("x-amz-Checksum-Algorithm %q is not supported, use SHA256", alg)
	}
	if method != "LINEAR" {
		return nil, invalidParameter("x-amz-Checksum-Aggregation-Method %q is not supported, use LINEAR", method)
	}
	d, ok := cas.ParseBase64Digest(sum)
	if !ok {
		return nil, invalidParameter("x-amz-Checksum %q is not a base64 SHA-256 digest", sum)
	}
	return &d, nil
}
