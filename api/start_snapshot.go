package api

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/ebsd/ebsd/cas"
)

const (
	minVolumeGiB      = 1
	maxVolumeGiB      = 65536
	maxTags           = 50
	maxTagKey         = 127
	maxTagValue       = 255
	maxDescription    = 255
	maxClientToken    = 64
	minTimeoutMinutes = 10
	maxTimeoutMinutes = 4320
	defaultTimeout    = 60
	maxStartBody      = 64 << 10
)

type startSnapshotRequest struct {
	VolumeSize       *int64    `json:"VolumeSize"`
	ParentSnapshotID *string   `json:"ParentSnapshotId"`
	Tags             []tagJSON `json:"Tags"`
	Description      *string   `json:"Description"`
	ClientToken      *string   `json:"ClientToken"`
	Encrypted        *bool     `json:"Encrypted"`
	KmsKeyArn        *string   `json:"KmsKeyArn"`
	Timeout          *int64    `json:"Timeout"`
}

func (s *Server) startSnapshot(w http.ResponseWriter, r *http.Request) {
	var req startSnapshotRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxStartBody))
	if err != nil {
		writeError(w, invalidParameter("reading request body: %s", bodyReadFailure(err)))
		return
	}
	if why := jsonUnicodeProblem(body); why != "" {
		writeError(w, invalidParameter("%s", why))
		return
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, invalidParameter("request body is not valid StartSnapshot JSON: %v", err))
		return
	}
	p, apiErr := req.params(s.owner(r), s.region(r))
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}
	snap, err := s.store.StartSnapshot(r.Context(), p)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	info(r).snapshot = snap.ID
	writeJSON(w, http.StatusCreated, toSnapshotJSON(snap))
}

// params validates the request and turns it into store parameters.
func (req *startSnapshotRequest) params(owner, region string) (cas.StartParams, *Error) {
	p := cas.StartParams{OwnerID: owner, Region: region, TimeoutMinutes: defaultTimeout}
	if req.VolumeSize == nil {
		return p, invalidParameter("VolumeSize is required")
	}
	if v := *req.VolumeSize; v < minVolumeGiB || v > maxVolumeGiB {
		return p, invalid(reasonInvalidVolumeSize, "VolumeSize %d GiB is outside %d to %d", v, minVolumeGiB, maxVolumeGiB)
	}
	p.VolumeSize = *req.VolumeSize
	if req.ParentSnapshotID != nil && *req.ParentSnapshotID != "" {
		if !cas.ValidSnapshotID(*req.ParentSnapshotID) {
			return p, invalid(reasonInvalidSnapshotID, "ParentSnapshotId %q is not a snapshot id (snap-<hex>)", *req.ParentSnapshotID)
		}
		p.ParentID = *req.ParentSnapshotID
	}
	if req.Description != nil {
		if d := *req.Description; tooLong(d, maxDescription) {
			return p, invalidParameter("Description is %d characters, at most %d are allowed", utf8.RuneCountInString(d), maxDescription)
		}
		p.Description = *req.Description
	}
	tags, apiErr := validTags(req.Tags)
	if apiErr != nil {
		return p, apiErr
	}
	p.Tags = tags
	if req.Timeout != nil {
		if t := *req.Timeout; t < minTimeoutMinutes || t > maxTimeoutMinutes {
			return p, invalidParameter("Timeout %d minutes is outside %d to %d", t, minTimeoutMinutes, maxTimeoutMinutes)
		}
		p.TimeoutMinutes = int(*req.Timeout)
	}
	if req.ClientToken != nil {
		if apiErr := validClientToken(*req.ClientToken); apiErr != nil {
			return p, apiErr
		}
		p.ClientToken = *req.ClientToken
	}
	// ebsd stores blocks unencrypted; accepting Encrypted or a KMS key would promise
	// something it does not do.
	if req.Encrypted != nil && *req.Encrypted {
		return p, invalidParameter("Encrypted snapshots are not supported by ebsd: blocks are stored unencrypted on the daemon's disk")
	}
	if req.KmsKeyArn != nil && *req.KmsKeyArn != "" {
		return p, invalidParameter("KmsKeyArn is not supported by ebsd: blocks are stored unencrypted on the daemon's disk")
	}
	return p, nil
}

func validTags(in []tagJSON) ([]cas.Tag, *Error) {
	if len(in) > maxTags {
		return nil, invalid(reasonInvalidTag, "%d tags given, at most %d are allowed", len(in), maxTags)
	}
	seen := make(map[string]bool, len(in))
	out := make([]cas.Tag, 0, len(in))
	for i, t := range in {
		if t.Key == nil || *t.Key == "" {
			return nil, invalid(reasonInvalidTag, "tag %d has no Key", i+1)
		}
		key, value := *t.Key, ""
		if t.Value != nil {
			value = *t.Value
		}
		switch {
		case tooLong(key, maxTagKey):
			return nil, invalid(reasonInvalidTag, "tag key %q is longer than %d characters", key, maxTagKey)
		case tooLong(value, maxTagValue):
			return nil, invalid(reasonInvalidTag, "value of tag %q is longer than %d characters", key, maxTagValue)
		case strings.HasPrefix(strings.ToLower(key), "aws:"):
			return nil, invalid(reasonInvalidTag, "tag key %q uses the reserved prefix aws:", key)
		case seen[key]:
			return nil, invalid(reasonInvalidTag, "tag key %q is given more than once", key)
		}
		seen[key] = true
		out = append(out, cas.Tag{Key: key, Value: value})
	}
	return out, nil
}

func validClientToken(tok string) *Error {
	if len(tok) > maxClientToken {
		return invalidParameter("ClientToken is %d bytes, at most %d ASCII characters are allowed", len(tok), maxClientToken)
	}
	for i := 0; i < len(tok); i++ {
		if tok[i] < 0x20 || tok[i] > 0x7e {
			return invalidParameter("ClientToken has a character that is not printable ASCII at byte %d", i)
		}
	}
	return nil
}
