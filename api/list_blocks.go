package api

import (
	"net/http"

	"github.com/ebsd/ebsd/cas"
)

const (
	minMaxResults     = 100
	maxMaxResults     = 10000
	defaultMaxResults = 10000
)

type blockJSON struct {
	BlockIndex int64  `json:"BlockIndex"`
	BlockToken string `json:"BlockToken"`
}

type listSnapshotBlocksJSON struct {
	Blocks     []blockJSON  `json:"Blocks"`
	ExpiryTime epochSeconds `json:"ExpiryTime"`
	VolumeSize int64        `json:"VolumeSize"`
	BlockSize  int          `json:"BlockSize"`
	NextToken  string       `json:"NextToken,omitempty"`
}

type changedBlockJSON struct {
	BlockIndex       int64  `json:"BlockIndex"`
	FirstBlockToken  string `json:"FirstBlockToken,omitempty"`
	SecondBlockToken string `json:"SecondBlockToken,omitempty"`
}

type listChangedBlocksJSON struct {
	ChangedBlocks []changedBlockJSON `json:"ChangedBlocks"`
	ExpiryTime    epochSeconds       `json:"ExpiryTime"`
	VolumeSize    int64              `json:"VolumeSize"`
	BlockSize     int                `json:"BlockSize"`
	NextToken     string             `json:"NextToken,omitempty"`
}

// page is what a List request asks for: how many results and from which index.
type page struct {
	max   int
	start int64
}

// readPage parses maxResults, startingBlockIndex and pageToken; the token wins over
// startingBlockIndex.
func (s *Server) readPage(r *http.Request, op, snap, first string) (page, *Error) {
	q := r.URL.Query()
	p := page{max: defaultMaxResults}
	if v := q.Get("maxResults"); v != "" {
		n, ok := parseDecimal(v)
		if !ok || n > maxMaxResults {
			return p, invalidParameter("maxResults %q is not a number from %d to %d", v, minMaxResults, maxMaxResults)
		}
		p.max = max(int(n), minMaxResults) // as the AWS FAQ describes: smaller values are raised
	}
	if v := q.Get("startingBlockIndex"); v != "" {
		n, ok := parseDecimal(v)
		if !ok {
			return p, invalidParameter("startingBlockIndex %q is not a non-negative decimal integer", v)
		}
		p.start = n
	}
	if tok := q.Get("pageToken"); tok != "" {
		next, err := s.tokens.openPageToken(tok, op, snap, first)
		if err != nil {
			return p, invalid(reasonInvalidPageToken, "pageToken %v", err)
		}
		p.start = next
	}
	return p, nil
}

// snapshotIDError refuses an id that does not have a snapshot id's shape. The read
// handlers check every parameter's form before they look anything up, as AWS
// validates a request against its model first: a bad parameter is a
// ValidationException whether or not the snapshot exists.
func snapshotIDError(id string) *Error {
	if !cas.ValidSnapshotID(id) {
		return invalid(reasonInvalidSnapshotID, "%q is not a snapshot id (snap-<hex>)", id)
	}
	return nil
}

// snapshotForRead returns the completed snapshot id names (an id already checked).
func (s *Server) snapshotForRead(w http.ResponseWriter, r *http.Request, id string) (cas.Snapshot, bool) {
	snap, err := s.store.Snapshot(r.Context(), s.owner(r), id)
	if err != nil {
		s.fail(w, r, err)
		return snap, false
	}
	if snap.Status != cas.StatusCompleted {
		writeError(w, invalid(reasonInvalidSnapshotID, "snapshot %s is %s; only completed snapshots can be read", id, snap.Status))
		return snap, false
	}
	return snap, true
}

func (s *Server) listSnapshotBlocks(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	info(r).snapshot = id
	apiErr := snapshotIDError(id)
	var pg page
	if apiErr == nil {
		pg, apiErr = s.readPage(r, "list", id, "")
	}
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}
	snap, ok := s.snapshotForRead(w, r, id)
	if !ok {
		return
	}
	slots, next, err := s.viewPage(r, id, pg, "list", "")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := listSnapshotBlocksJSON{Blocks: make([]blockJSON, len(slots)), VolumeSize: snap.VolumeSize, BlockSize: cas.BlockSize, NextToken: next}
	expiry := s.tokens.clock.Now().Add(blockTokenTTL)
	for i, sl := range slots {
		out.Blocks[i] = blockJSON{BlockIndex: sl.Index}
		out.Blocks[i].BlockToken, expiry = s.tokens.blockToken(id, sl.Index, sl.Digest)
	}
	out.ExpiryTime = epochSeconds(expiry)
	writeJSON(w, http.StatusOK, out)
}

// viewPage returns up to pg.max slots of a snapshot's view from pg.start and, when
// there are more, the page token of the rest.
func (s *Server) viewPage(r *http.Request, id string, pg page, op, first string) ([]cas.Slot, string, error) {
	var slots []cas.Slot
	var next string
	err := s.store.ViewFrom(r.Context(), s.owner(r), id, pg.start, func(sl cas.Slot) bool {
		if len(slots) == pg.max {
			next = s.tokens.pageToken(op, id, first, sl.Index)
			return false
		}
		slots = append(slots, sl)
		return true
	})
	return slots, next, err
}

func (s *Server) listChangedBlocks(w http.ResponseWriter, r *http.Request) {
	second := r.PathValue("id")
	info(r).snapshot = second
	first := r.URL.Query().Get("firstSnapshotId")
	apiErr := snapshotIDError(second)
	if apiErr == nil && first != "" {
		apiErr = snapshotIDError(first)
	}
	var pg page
	if apiErr == nil {
		pg, apiErr = s.readPage(r, "changed", second, first)
	}
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}
	snap, ok := s.snapshotForRead(w, r, second)
	if !ok {
		return
	}
	if first != "" {
		if _, ok := s.snapshotForRead(w, r, first); !ok {
			return
		}
	}
	out := listChangedBlocksJSON{ChangedBlocks: []changedBlockJSON{}, VolumeSize: snap.VolumeSize, BlockSize: cas.BlockSize}
	expiry := s.tokens.clock.Now().Add(blockTokenTTL)
	var err error
	if first == "" {
		var slots []cas.Slot
		slots, out.NextToken, err = s.viewPage(r, second, pg, "changed", first)
		for _, sl := range slots {
			cb := changedBlockJSON{BlockIndex: sl.Index}
			cb.SecondBlockToken, expiry = s.tokens.blockToken(second, sl.Index, sl.Digest)
			out.ChangedBlocks = append(out.ChangedBlocks, cb)
		}
	} else {
		resume := int64(-1)
		// Unchanged candidates cost work too: one call looks at a bounded number of
		// them and may answer with an empty page and a NextToken.
		var next int64
		next, err = s.store.Changes(r.Context(), s.owner(r), first, second, pg.start, 4*pg.max, func(c cas.Change) bool {
			if len(out.ChangedBlocks) == pg.max {
				resume = c.Index
				return false
			}
			cb := changedBlockJSON{BlockIndex: c.Index}
			if c.HasFirst {
				cb.FirstBlockToken, expiry = s.tokens.blockToken(first, c.Index, c.First)
			}
			if c.HasSecond {
				cb.SecondBlockToken, expiry = s.tokens.blockToken(second, c.Index, c.Second)
			}
			out.ChangedBlocks = append(out.ChangedBlocks, cb)
			return true
		})
		if resume < 0 && next >= 0 {
			resume = next
		}
		if resume >= 0 {
			out.NextToken = s.tokens.pageToken("changed", second, first, resume)
		}
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out.ExpiryTime = epochSeconds(expiry)
	writeJSON(w, http.StatusOK, out)
}
