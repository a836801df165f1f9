package api

import (
	"net/http"

	"github.com/ebsd/ebsd/cas"
)

func (s *Server) getSnapshotBlock(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	info(r).snapshot = id
	apiErr := snapshotIDError(id)
	var index int64
	if apiErr == nil {
		index, apiErr = blockIndex(r)
	}
	tok := r.URL.Query().Get("blockToken")
	if apiErr == nil && tok == "" {
		apiErr = invalid(reasonInvalidBlockToken, "blockToken is required; get one from ListSnapshotBlocks or ListChangedBlocks")
	}
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}
	if _, ok := s.snapshotForRead(w, r, id); !ok {
		return
	}
	d, err := s.tokens.openBlockToken(tok, id, index)
	if err != nil {
		writeError(w, invalid(reasonInvalidBlockToken, "blockToken %v", err))
		return
	}
	data, err := s.blocks.Block(r.Context(), d)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", blockSizeText)
	h["x-amz-Data-Length"] = []string{blockSizeText}
	h["x-amz-Checksum"] = []string{d.Base64()} // the block was re-hashed against d on read
	h["x-amz-Checksum-Algorithm"] = []string{"SHA256"}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(data)
}

var _ cas.BlockReader = (*cas.BlockCache)(nil)
