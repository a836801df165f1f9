package api

import (
	"errors"
	"io"
	"net/http"

	"github.com/ebsd/ebsd/cas"
)

const blockSizeText = "524288"

// putSnapshotBlock checks every header before it reads the body, refuses a body
// announced larger than a block without reading it, and reads a chunked body only
// up to one byte past a block.
func (s *Server) putSnapshotBlock(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	info(r).snapshot = id
	if !cas.ValidSnapshotID(id) {
		writeError(w, invalid(reasonInvalidSnapshotID, "%q is not a snapshot id (snap-<hex>)", id))
		return
	}
	index, apiErr := blockIndex(r)
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}
	claimed, apiErr := blockHeaders(r)
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}
	if r.ContentLength >= 0 && r.ContentLength != cas.BlockSize {
		writeError(w, invalidParameter("Failed to read block data: body is %d bytes, a block is %d", r.ContentLength, cas.BlockSize))
		return
	}
	buf := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(buf)
	if apiErr := readBlock(r.Body, *buf); apiErr != nil {
		writeError(w, apiErr)
		return
	}
	if err := s.store.PutBlock(r.Context(), s.owner(r), id, index, *buf, claimed); err != nil {
		s.fail(w, r, err)
		return
	}
	h := w.Header()
	h["x-amz-Checksum"] = []string{claimed.Base64()} // verified equal to the server's own
	h["x-amz-Checksum-Algorithm"] = []string{"SHA256"}
	writeJSON(w, http.StatusCreated, struct{}{})
}

// blockIndex reads the {index} path parameter: decimal digits (see parseDecimal), so
// "+5" or "05" is not block 5.
func blockIndex(r *http.Request) (int64, *Error) {
	text := r.PathValue("index")
	index, ok := parseDecimal(text)
	if !ok {
		return 0, invalid(reasonInvalidBlock, "block index %q is not a non-negative decimal integer", text)
	}
	return index, nil
}

// blockHeaders validates the PutSnapshotBlock headers and returns the claimed checksum.
func blockHeaders(r *http.Request) (cas.Digest, *Error) {
	var d cas.Digest
	switch dl := r.Header.Get("x-amz-Data-Length"); dl {
	case blockSizeText:
	case "":
		return d, invalidParameter("x-amz-Data-Length is required")
	default:
		return d, invalid(reasonInvalidBlock, "x-amz-Data-Length is %s, blocks are %s bytes", dl, blockSizeText)
	}
	sum := r.Header.Get("x-amz-Checksum")
	if sum == "" {
		return d, invalidParameter("x-amz-Checksum is required (base64 SHA-256 of the block)")
	}
	d, ok := cas.ParseBase64Digest(sum)
	if !ok {
		return d, invalidParameter("x-amz-Checksum %q is not a base64 SHA-256 digest", sum)
	}
	if alg := r.Header.Get("x-amz-Checksum-Algorithm"); alg != "SHA256" {
		return d, invalidParameter("x-amz-Checksum-Algorithm %q is not supported, use SHA256", alg)
	}
	if p := r.Header.Get("x-amz-Progress"); p != "" {
		if v, ok := parseDecimal(p); !ok || v > 100 {
			return d, invalidParameter("x-amz-Progress %q is not an integer from 0 to 100", p)
		}
	}
	if ce := r.Header.Get("Content-Encoding"); ce != "" && ce != "identity" {
		return d, invalid(reasonInvalidContentEncoding, "Content-Encoding %q is not supported; send the block as is", ce)
	}
	return d, nil
}

// readBlock fills buf with exactly one block from body.
func readBlock(body io.Reader, buf []byte) *Error {
	n, err := io.ReadFull(body, buf)
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return invalidParameter("Failed to read block data: body ended after %d bytes, a block is %d", n, cas.BlockSize)
		}
		return invalidParameter("Failed to read block data: %s", bodyReadFailure(err))
	}
	var extra [1]byte
	if m, _ := io.ReadFull(body, extra[:]); m > 0 {
		return invalidParameter("Failed to read block data: body is longer than a block (%d bytes)", cas.BlockSize)
	}
	return nil
}
