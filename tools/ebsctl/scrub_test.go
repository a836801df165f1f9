package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ebsd/ebsd/cas"
)

const corruptReport = `{"blocksChecked":2,"bytesChecked":1048576,"recordsChecked":5,"corruptBlockCount":1,
"corruptBlocks":[{"digest":"ab12","checksum":"qxI=","problem":"does not hash to its key","useCount":2,
"uses":[{"snapshotId":"snap-0123456789abcdef0","ownerId":"111122223333","status":"completed","indexCount":2,"indexes":[0,5]},
{"snapshotId":"snap-0123456789abcdef1","ownerId":"444455556666","status":"pending","indexCount":101,"indexes":[7]}]}],
"corruptRecordCount":1,"corruptRecords":[{"key":"\"snap-x\"","problem":"snapshot record does not decode"}],"durationNs":1000000}`

const cleanReport = `{"blocksChecked":2,"bytesChecked":1048576,"recordsChecked":5,"corruptBlockCount":0,"corruptBlocks":[],
"corruptRecordCount":0,"corruptRecords":[],"durationNs":1000000}`

// fakeScrubEndpoint answers POST /ebsd/v1/scrub with body and records the queries.
func fakeScrubEndpoint(t *testing.T, body string) (*httptest.Server, *[]string) {
	t.Helper()
	var queries []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/ebsd/v1/scrub" || r.Header.Get("Authorization") == "" {
			http.Error(w, "unexpected request", http.StatusBadRequest)
			return
		}
		queries = append(queries, r.URL.RawQuery)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDSCRUBTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	return srv, &queries
}

// Corruption found is printed with each snapshot, account and index to put again, and
// the exit status is 1 so that scripts notice.
func TestScrubPrintsCorruptBlocksAndFails(t *testing.T) {
	srv, queries := fakeScrubEndpoint(t, corruptReport)
	out, errOut, code := runCLI("--endpoint-url", srv.URL, "--region", "us-east-1", "scrub", "--mb-per-sec", "16")
	if code != 1 || !strings.Contains(errOut, "corrupt data") {
		t.Fatalf("exit %d, stderr %q: want 1 and a word on the corruption", code, errOut)
	}
	for _, want := range []string{
		"corrupt blocks   1\n",
		"block ab12 (checksum qxI=): does not hash to its key; mapped by 2 snapshot(s)",
		"snap-0123456789abcdef0 (account 111122223333, completed): block indexes 0, 5\n",
		"snap-0123456789abcdef1 (account 444455556666, pending): block indexes 7 and 100 more",
		`record "snap-x": snapshot record does not decode`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if len(*queries) != 1 || (*queries)[0] != "mbPerSec=16" {
		t.Fatalf("queries %q, want [mbPerSec=16]", *queries)
	}
}

// A clean store exits 0; --json prints the daemon's report as it came.
func TestScrubCleanExitsZero(t *testing.T) {
	srv, queries := fakeScrubEndpoint(t, cleanReport)
	out, errOut, code := runCLI("--endpoint-url", srv.URL, "--region", "us-east-1", "--json", "scrub")
	if code != 0 || strings.TrimSpace(out) != cleanReport {
		t.Fatalf("exit %d, out %q, stderr %q", code, out, errOut)
	}
	if len(*queries) != 1 || (*queries)[0] != "" {
		t.Fatalf("queries %q, want one without a rate bound", *queries)
	}
	if _, _, code := runCLI("--endpoint-url", srv.URL, "scrub", "--mb-per-sec", "-1"); code == 0 {
		t.Fatal("a negative rate was accepted")
	}
}

// ebsctl salvage copies a store's snapshots into a new directory and says so; an
// intact store loses nothing, so it exits 0.
func TestSalvageCopiesAnIntactStore(t *testing.T) {
	ctx := context.Background()
	from, to := t.TempDir(), filepath.Join(t.TempDir(), "new")
	s, err := cas.Open(cas.Options{Dir: from, ExpireInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := s.StartSnapshot(ctx, cas.StartParams{OwnerID: "111122223333", VolumeSize: 1, TimeoutMinutes: 60})
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("salvage"), cas.BlockSize/7+1)[:cas.BlockSize]
	if err := s.PutBlock(ctx, "111122223333", snap.ID, 3, data, cas.Sum(data)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CompleteSnapshot(ctx, "111122223333", snap.ID, 1, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runCLI("salvage", "--from", from, "--to", to)
	if code != 0 || !strings.Contains(out, "saved 1 snapshot(s) into "+to+": 1 blocks") {
		t.Fatalf("exit %d, out %q, stderr %q", code, out, errOut)
	}
	if _, errOut, code := runCLI("salvage", "--from", from, "--to", to); code != 1 || !strings.Contains(errOut, "not empty") {
		t.Fatalf("salvage into the same directory again: exit %d, %q", code, errOut)
	}
	s, err = cas.Open(cas.Options{Dir: to, ExpireInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, err := s.Snapshot(ctx, "111122223333", snap.ID); err != nil || got.Status != cas.StatusCompleted {
		t.Fatalf("salvaged snapshot: %+v, %v", got, err)
	}
}
