package api

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/ebsd/ebsd/cas"
)

// scrubStore is the fake store with a scrub that records its options and a complete
// that refuses as the store does for a snapshot mapping a corrupt block.
type scrubStore struct {
	*fakeStore
	runs []cas.ScrubOptions
}

func (s *scrubStore) Scrub(_ context.Context, o cas.ScrubOptions) (cas.ScrubReport, error) {
	s.runs = append(s.runs, o)
	return cas.ScrubReport{BlocksChecked: 3, CorruptBlockCount: 1, CorruptBlocks: []cas.CorruptBlock{{
		Digest: "ab", Problem: "does not hash to its key", UseCount: 1,
		Uses: []cas.BlockUse{{SnapshotID: "snap-0123456789abcdef0", OwnerID: testAccount, Indexes: []int64{4}, IndexCount: 1}},
	}}}, nil
}

func (s *scrubStore) CompleteSnapshot(context.Context, string, string, int64, *cas.Digest) (cas.Status, error) {
	return "", fmt.Errorf("%w: put block indexes 4 of snap-0123456789abcdef0 again", cas.ErrCorruptMapped)
}

func newScrubAPI(t *testing.T) (*testAPI, *scrubStore) {
	st := &scrubStore{fakeStore: newFakeStore()}
	srv := New(st, Config{Auth: Unsigned{AccountID: testAccount, Region: testRegion}, Blocks: st, TokenKey: []byte("handler-test-token-key")})
	return &testAPI{t: t, srv: srv, store: st.fakeStore}, st
}

// POST /ebsd/v1/scrub runs a scrub and answers its report; mbPerSec bounds its rate.
func TestScrubEndpointAnswersTheReport(t *testing.T) {
	a, st := newScrubAPI(t)
	rec := a.do("POST", "/ebsd/v1/scrub", nil, nil)
	if rec.Code != 200 {
		t.Fatalf("scrub: %d %s", rec.Code, rec.Body)
	}
	var rep cas.ScrubReport
	if err := json.Unmarshal(rec.Body.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.CorruptBlockCount != 1 || rep.CorruptBlocks[0].Uses[0].SnapshotID != "snap-0123456789abcdef0" ||
		!slices.Equal(rep.CorruptBlocks[0].Uses[0].Indexes, []int64{4}) {
		t.Fatalf("report %s does not carry the corrupt block and its use", rec.Body)
	}
	if rec := a.do("POST", "/ebsd/v1/scrub?mbPerSec=8", nil, nil); rec.Code != 200 {
		t.Fatalf("scrub?mbPerSec=8: %d %s", rec.Code, rec.Body)
	}
	if want := []cas.ScrubOptions{{}, {BytesPerSec: 8 << 20}}; !slices.Equal(st.runs, want) {
		t.Fatalf("scrubs ran with %v, want %v", st.runs, want)
	}
}

func TestScrubEndpointRefusesBadQueries(t *testing.T) {
	a, st := newScrubAPI(t)
	for _, q := range []string{"mbPerSec=-1", "mbPerSec=1.5", "mbPerSec=", "mbPerSec=08", "mbPerSec=1&mbPerSec=2", "rate=1", "mbPerSec=1048577", "%zz"} {
		t.Run(q, func(t *testing.T) {
			wantEBSError(t, a.do("POST", "/ebsd/v1/scrub?"+q, nil, nil), 400, "ValidationException", "INVALID_PARAMETER_VALUE")
		})
	}
	if rec := a.do("GET", "/ebsd/v1/scrub", nil, nil); rec.Code < 400 {
		t.Fatalf("GET scrub: %d, want a refusal: a scrub is POST only", rec.Code)
	}
	if len(st.runs) != 0 {
		t.Fatalf("refused requests ran scrubs: %v", st.runs)
	}
}

// A complete refused because the snapshot maps a corrupt block is a 400 the client
// must act on (put the named indexes again), not a 500 it would retry blindly.
func TestCompleteRefusedForCorruptBlockIsAValidationError(t *testing.T) {
	a, _ := newScrubAPI(t)
	rec := a.do("POST", "/snapshots/completion/snap-0123456789abcdef0", map[string]string{"x-amz-ChangedBlocksCount": "1"}, nil)
	wantEBSError(t, rec, 400, "ValidationException", "INVALID_PARAMETER_VALUE")
	var body struct{ Message string }
	_ = json.Unmarshal(rec.Body.Bytes(), &body)
	if want := "put block indexes 4 of snap-0123456789abcdef0 again"; !strings.Contains(body.Message, want) {
		t.Fatalf("message %q does not say %q", body.Message, want)
	}
}
