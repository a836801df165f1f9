package cas

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"slices"
	"testing"

	"github.com/ebsd/ebsd/cas/core"
	"github.com/ebsd/ebsd/cas/pgcatalog"
	"github.com/ebsd/ebsd/cas/s3blocks"
	"github.com/ebsd/ebsd/tools/clustertest"
)

// A Badger store moved into S3 and PostgreSQL (real servers, on loopback) and back keeps
// every snapshot id, client token, tag and lineage, and reads back bit-exact from a
// fresh open of each copy; a move into a store that holds records is refused.
func TestMoveBadgerToSharedAndBack(t *testing.T) {
	c := clustertest.Start(t)
	c.UseS3(t)
	ctx := context.Background()

	// The source: a lineage with zeros and shared blocks, tags, a client token, a
	// deleted snapshot.
	fromDir := t.TempDir()
	src, err := Open(Options{Dir: fromDir, ExpireInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	base := writeSnap(t, src, "", map[int64]uint64{0: 1, 1: 2, 5: 3})
	tokened, err := src.StartSnapshot(ctx, StartParams{OwnerID: owner, VolumeSize: 1, ParentID: base, TimeoutMinutes: 60,
		ClientToken: "move-token", Description: "child", Tags: []Tag{{Key: "env", Value: "prod"}}})
	if err != nil {
		t.Fatal(err)
	}
	put(t, src, tokened.ID, 1, testBlock(4))
	put(t, src, tokened.ID, 2, make([]byte, BlockSize))
	if _, err := src.CompleteSnapshot(ctx, owner, tokened.ID, 2, nil); err != nil {
		t.Fatal(err)
	}
	gone := writeSnap(t, src, "", map[int64]uint64{0: 9})
	if err := src.DeleteSnapshot(ctx, owner, gone); err != nil {
		t.Fatal(err)
	}
	want := map[string]map[int64][]byte{base: readView(t, src, base), tokened.ID: readView(t, src, tokened.ID)}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}

	suffix := randomSuffix(t)
	shared := func(t *testing.T) Options {
		t.Helper()
		cat, err := pgcatalog.OpenWith(ctx, pgcatalog.Options{URL: c.Env["EBSD_CATALOG"], Schema: "move_" + suffix})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cat.Close)
		blocks, err := s3blocks.Open(ctx, s3blocks.Config{URL: c.Env["EBSD_BLOCKS"] + "/move-" + suffix})
		if err != nil {
			t.Fatal(err)
		}
		return Options{Dir: t.TempDir(), Catalog: cat, Blocks: blocks}
	}
	check := func(t *testing.T, s *Store, where string) {
		t.Helper()
		for id, view := range want {
			sameView(t, readView(t, s, id), view)
		}
		snap, err := s.Snapshot(ctx, owner, tokened.ID)
		if err != nil || snap.ParentID != base || snap.Description != "child" || !slices.Equal(snap.Tags, []Tag{{Key: "env", Value: "prod"}}) {
			t.Fatalf("%s: %+v %v, want the child of %s with its description and tag", where, snap, err, base)
		}
		// The token answers a retry with the same snapshot, and a mismatch as before.
		again, err := s.StartSnapshot(ctx, StartParams{OwnerID: owner, VolumeSize: 1, ParentID: base, TimeoutMinutes: 60,
			ClientToken: "move-token", Description: "child", Tags: []Tag{{Key: "env", Value: "prod"}}})
		if err != nil || again.ID != tokened.ID {
			t.Fatalf("%s: the token retried gives %s (%v), want %s", where, again.ID, err, tokened.ID)
		}
		if _, err := s.StartSnapshot(ctx, StartParams{OwnerID: owner, VolumeSize: 2, ClientToken: "move-token"}); !errors.Is(err, ErrTokenConflict) {
			t.Fatalf("%s: the token with other parameters: %v, want a conflict", where, err)
		}
		if _, err := s.Snapshot(ctx, owner, gone); !errors.Is(err, ErrSnapshotNotFound) {
			t.Fatalf("%s: the deleted snapshot: %v, want not found", where, err)
		}
	}

	toShared := shared(t)
	rep, err := Move(ctx, MoveOptions{From: Options{Dir: fromDir}, To: toShared})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Snapshots != 2 || rep.Blocks != 5 || rep.BlocksChecked != 4 {
		t.Fatalf("move into S3 and PostgreSQL: %+v, want 2 live snapshots, 5 blocks stored, 4 read by the live views", rep)
	}
	s, err := Open(toShared)
	if err != nil {
		t.Fatal(err)
	}
	check(t, s, "in S3 and PostgreSQL")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Move(ctx, MoveOptions{From: Options{Dir: fromDir}, To: toShared}); !errors.Is(err, errDestinationNotEmpty) {
		t.Fatalf("a second move into the same store: %v, want a refusal", err)
	}

	backDir := t.TempDir()
	if _, err := Move(ctx, MoveOptions{From: toShared, To: Options{Dir: backDir}}); err != nil {
		t.Fatal(err)
	}
	back, err := Open(Options{Dir: backDir, ExpireInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = back.Close() }()
	check(t, back, "moved back into Badger")
	var blocks int
	if err := back.blocks.Walk(ctx, core.Digest{}, func(core.Digest, int64) error { blocks++; return nil }); err != nil || blocks != 5 {
		t.Fatalf("moved back: %d blocks in the embedded engine (%v), want 5", blocks, err)
	}
}

func randomSuffix(t *testing.T) string {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}
