package api

import (
	"encoding/json"
	"slices"
	"testing"
)

// Only dryRun=true|false is understood. Anything that might have been meant as a dry
// run is refused, never run as a real collection.
func TestGCRefusesAmbiguousQueries(t *testing.T) {
	a := newTestAPI(t)
	for _, q := range []string{
		"dryRun=1", "dryRun=TRUE", "dryRun=True", "dryRun=yes", "dryRun=", "dryRun", "dryRun=%20true",
		"dry-run=true", "dryrun=true", "DryRun=true", "dryRun=true&dryRun=true", "dryRun=true&force=1",
		"x=1", "dryRun=%zz",
	} {
		t.Run(q, func(t *testing.T) {
			wantEBSError(t, a.do("POST", "/ebsd/v1/gc?"+q, nil, nil), 400, "ValidationException", "INVALID_PARAMETER_VALUE")
		})
	}
	if len(a.store.gcRuns) != 0 {
		t.Fatalf("refused requests ran collections: %v", a.store.gcRuns)
	}
	for _, target := range []string{"/ebsd/v1/gc?dryRun=true", "/ebsd/v1/gc?dryRun=false", "/ebsd/v1/gc", "/ebsd/v1/gc?"} {
		if rec := a.do("POST", target, nil, nil); rec.Code != 200 {
			t.Fatalf("%s: %d %s", target, rec.Code, rec.Body)
		}
	}
	if want := []bool{true, false, false, false}; !slices.Equal(a.store.gcRuns, want) {
		t.Fatalf("collections run with dryRun %v, want %v", a.store.gcRuns, want)
	}
}

func TestDigestsRefusesInvalidPages(t *testing.T) {
	a := newTestAPI(t)
	id := a.completed()
	pending := a.start(`{"VolumeSize":1}`)
	base := "/ebsd/v1/snapshots/" + id + "/digests"
	for _, tc := range []struct{ name, target, reason string }{
		{"negative start", base + "?startingBlockIndex=-1", "INVALID_PARAMETER_VALUE"},
		{"start +1", base + "?startingBlockIndex=%2B1", "INVALID_PARAMETER_VALUE"},
		{"start empty", base + "?startingBlockIndex=", "INVALID_PARAMETER_VALUE"},
		{"start abc", base + "?startingBlockIndex=abc", "INVALID_PARAMETER_VALUE"},
		{"maxResults 0", base + "?maxResults=0", "INVALID_PARAMETER_VALUE"},
		{"maxResults 100001", base + "?maxResults=100001", "INVALID_PARAMETER_VALUE"},
		{"maxResults -1", base + "?maxResults=-1", "INVALID_PARAMETER_VALUE"},
		{"malformed id", "/ebsd/v1/snapshots/snap-XYZ/digests", "INVALID_SNAPSHOT_ID"},
		{"pending", "/ebsd/v1/snapshots/" + pending + "/digests", "INVALID_SNAPSHOT_ID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantEBSError(t, a.do("GET", tc.target, nil, nil), 400, "ValidationException", tc.reason)
		})
	}
	var out struct {
		Blocks []struct {
			BlockIndex int64
			Checksum   string
		}
		NextIndex int64
	}
	rec := a.do("GET", base+"?startingBlockIndex=0&maxResults=1", nil, nil)
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || rec.Code != 200 {
		t.Fatalf("%d %s %v", rec.Code, rec.Body, err)
	}
	if len(out.Blocks) != 1 || out.Blocks[0].BlockIndex != 0 || out.Blocks[0].Checksum != checksumOf(blockOf(1)) || out.NextIndex != 5 {
		t.Fatalf("first page: %+v", out)
	}
	rec = a.do("GET", base+"?startingBlockIndex=5", nil, nil)
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || rec.Code != 200 {
		t.Fatalf("%d %s %v", rec.Code, rec.Body, err)
	}
	if len(out.Blocks) != 1 || out.Blocks[0].BlockIndex != 5 || out.NextIndex != -1 {
		t.Fatalf("last page: %+v", out)
	}
}

func TestStatsServed(t *testing.T) {
	a := newTestAPI(t)
	a.completed()
	rec := a.do("GET", "/ebsd/v1/stats", nil, nil)
	var st struct{ Snapshots, UniqueBlocks int }
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil || rec.Code != 200 || st.Snapshots != 1 || st.UniqueBlocks != 2 {
		t.Fatalf("stats: %d %s %v", rec.Code, rec.Body, err)
	}
}
