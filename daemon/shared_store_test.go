package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/ebsd/ebsd/cas"
	"github.com/ebsd/ebsd/cas/s3blocks"
	"github.com/ebsd/ebsd/tools/clustertest"
)

// Several daemons, one store: every test here runs two or more daemons on one
// PostgreSQL catalog and one S3 bucket (real servers, started by scripts/cluster.sh on
// loopback), and checks the EBS promises across them (DESIGN.md rules 28–33).

// sharedCluster starts the cluster and points this process's S3 clients at it.
func sharedCluster(t *testing.T) *clustertest.Cluster {
	t.Helper()
	c := clustertest.Start(t)
	c.UseS3(t)
	return c
}

// newSharedDaemon starts an in-process daemon on the cluster's catalog and bucket, with
// its own data directory and cache.
func newSharedDaemon(t *testing.T, c *clustertest.Cluster, adjust ...func(*config)) *testDaemon {
	t.Helper()
	shared := func(cfg *config) {
		cfg.catalog, cfg.blocks = c.Env["EBSD_CATALOG"], c.Env["EBSD_BLOCKS"]
		cfg.cacheDir, cfg.diskCacheMB = t.TempDir(), 64
		cfg.gcGrace = time.Hour
	}
	return newTestDaemon(t, append([]func(*config){shared}, adjust...)...)
}

// eventually polls cond until it holds or the deadline passes: for what the design
// promises within a bound (a mount showing another daemon's change), not for ordering
// a test's own steps.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestSharedStore(t *testing.T) {
	c := sharedCluster(t)
	t.Run("TwoDaemonsWriteAndReadOneSnapshotThroughAPIAndFUSE", func(t *testing.T) { twoDaemonsOneSnapshot(t, c) })
	t.Run("ClientTokenRaceAcrossDaemonsMakesOneSnapshot", func(t *testing.T) { tokenRace(t, c) })
	t.Run("CollectionOnOneDaemonRacingPutsOfTheSameBlocksOnAnother", func(t *testing.T) { collectionRace(t, c) })
	t.Run("OpenReaderOnOneDaemonKeepsBlocksFromCollectionOnAnother", func(t *testing.T) { readerLease(t, c) })
	t.Run("ServersRestartedMidIngest", func(t *testing.T) { serversRestarted(t, c) })
	t.Run("Kill9OfOneDaemonMidUploadTheOtherFinishes", func(t *testing.T) { kill9OneDaemon(t, c) })
	t.Run("ASecondMachineNeedsNothingOfTheFirstOnesDisk", func(t *testing.T) { secondMachine(t, c) })
}

func twoDaemonsOneSnapshot(t *testing.T, c *clustertest.Cluster) {
	requireFUSE(t, "dd")
	ctx := context.Background()
	mnt1, mnt2 := filepath.Join(t.TempDir(), "m1"), filepath.Join(t.TempDir(), "m2")
	d1 := newSharedDaemon(t, c, func(cfg *config) { cfg.mount = mnt1 })
	d2 := newSharedDaemon(t, c, func(cfg *config) { cfg.mount = mnt2 })
	c1, c2 := d1.client(), d2.client()

	id := *startSnapshot(t, c1, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), Description: aws.String("shared")}).SnapshotId
	blocks := distinctBlocks(6, 900)
	for i, b := range blocks { // even indexes through one daemon, odd through the other
		cl := c1
		if i%2 == 1 {
			cl = c2
		}
		if err := putBlock(ctx, cl, id, i, b); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	// CompleteSnapshot on the daemon that took only half of the puts sees them all.
	if st, err := complete(ctx, c2, id, blocks); err != nil || st != types.StatusCompleted {
		t.Fatalf("complete on the second daemon: %v %v", st, err)
	}
	for name, cl := range map[string]*ebs.Client{"first": c1, "second": c2} {
		t.Logf("reading through the %s daemon", name)
		wantSnapshotReads(t, cl, id, blocks)
	}
	for name, td := range map[string]*testDaemon{"first": d1, "second": d2} {
		snaps := td.store().Snapshots(defaultAccountID)
		found := false
		for _, s := range snaps {
			found = found || (s.ID == id && s.Status == cas.StatusCompleted && s.Description == "shared")
		}
		if !found {
			t.Fatalf("the %s daemon's listing has no completed %s: %+v", name, id, snaps)
		}
	}
	// EC2's DescribeSnapshots agrees on both daemons, tags set through one included.
	if _, err := newEC2Client(d1.url()).CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id},
		Tags: []ec2types.Tag{{Key: aws.String("team"), Value: aws.String("storage")}}}); err != nil {
		t.Fatal(err)
	}
	for _, td := range []*testDaemon{d1, d2} {
		out, err := newEC2Client(td.url()).DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}})
		if err != nil || len(out.Snapshots) != 1 || out.Snapshots[0].State != ec2types.SnapshotStateCompleted ||
			len(out.Snapshots[0].Tags) != 1 || aws.ToString(out.Snapshots[0].Tags[0].Value) != "storage" {
			t.Fatalf("DescribeSnapshots on %s: %+v %v", td.url(), out, err)
		}
	}
	var image []byte
	for i := range int32(6) {
		image = append(image, blocks[i]...)
	}
	for _, mnt := range []string{mnt1, mnt2} {
		got, err := command(t, "dd", "if="+filepath.Join(mnt, id), "bs=512K", "count=6", "status=none").Output()
		if err != nil || !bytes.Equal(got, image) {
			t.Fatalf("dd through %s: %v, equal %v", mnt, err, bytes.Equal(got, image))
		}
	}

	// A delete on one daemon: the other answers not found at once, and its mount drops
	// the file within a few seconds.
	if err := d1.store().DeleteSnapshot(ctx, defaultAccountID, id); err != nil {
		t.Fatal(err)
	}
	if _, err := d2.store().Snapshot(ctx, defaultAccountID, id); !errors.Is(err, cas.ErrSnapshotNotFound) {
		t.Fatalf("the other daemon after a delete: %v, want not found", err)
	}
	eventually(t, 3*cas.SharedRefreshInterval, "the other daemon's mount drops the deleted snapshot", func() bool {
		_, err := os.Stat(filepath.Join(mnt2, id))
		return errors.Is(err, os.ErrNotExist)
	})
}

func tokenRace(t *testing.T, c *clustertest.Cluster) {
	d1, d2 := newSharedDaemon(t, c), newSharedDaemon(t, c)
	clients := []*ebs.Client{d1.client(), d2.client()}
	const racers = 8
	token := "race-" + time.Now().Format("150405.000000") // unique to this run: the catalog outlives it
	ids := make([]string, racers)
	errs := make([]error, racers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range racers {
		wg.Go(func() {
			<-start
			out, err := clients[i%2].StartSnapshot(context.Background(), &ebs.StartSnapshotInput{
				VolumeSize: aws.Int64(1), ClientToken: aws.String(token),
			})
			errs[i] = err
			if err == nil {
				ids[i] = aws.ToString(out.SnapshotId)
			}
		})
	}
	close(start)
	wg.Wait()
	for i := range racers {
		if errs[i] != nil {
			t.Fatalf("racer %d: %v", i, errs[i])
		}
		if ids[i] != ids[0] {
			t.Fatalf("racers got %v: want one snapshot", ids)
		}
	}
	n := 0
	for _, s := range d1.store().Snapshots(defaultAccountID) {
		if s.ClientToken == token {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d snapshots carry the token, want 1", n)
	}
}

func collectionRace(t *testing.T, c *clustertest.Cluster) {
	ctx := context.Background()
	clock := cas.NewManualClock(time.Now())
	grace := 10 * time.Second
	short := func(cfg *config) { cfg.clock, cfg.gcGrace = clock, grace }
	d1, d2 := newSharedDaemon(t, c, short), newSharedDaemon(t, c, short)
	c1, c2 := d1.client(), d2.client()
	bucket, err := s3blocks.Open(ctx, s3blocks.Config{URL: c.Env["EBSD_BLOCKS"]})
	if err != nil {
		t.Fatal(err)
	}
	reclaimed := int64(0)
	for round := range 4 {
		blocks := distinctBlocks(8, uint64(1000+100*round))
		old := *startSnapshot(t, c1, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId
		for i, b := range blocks {
			if err := putBlock(ctx, c1, old, i, b); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := complete(ctx, c1, old, blocks); err != nil {
			t.Fatal(err)
		}
		if err := d1.store().DeleteSnapshot(ctx, defaultAccountID, old); err != nil {
			t.Fatal(err)
		}
		clock.Advance(2 * grace) // the deleted snapshot's blocks are past the grace period
		// A collection on the first daemon while the second puts the same blocks into
		// a new snapshot: whatever the interleaving, the new snapshot reads back whole.
		fresh := *startSnapshot(t, c2, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId
		var wg sync.WaitGroup
		var gcErr error
		wg.Go(func() {
			rep, err := d1.store().GC(ctx, false)
			gcErr, reclaimed = err, reclaimed+rep.BlocksReclaimed
		})
		for i, b := range blocks {
			if err := putBlock(ctx, c2, fresh, i, b); err != nil {
				t.Fatalf("round %d put %d: %v", round, i, err)
			}
		}
		wg.Wait()
		if gcErr != nil {
			t.Fatalf("round %d collection: %v", round, gcErr)
		}
		if _, err := complete(ctx, c2, fresh, blocks); err != nil {
			t.Fatalf("round %d complete: %v", round, err)
		}
		// Later collections, past the grace period, keep what the new snapshot maps.
		clock.Advance(2 * grace)
		if _, err := d2.store().GC(ctx, false); err != nil {
			t.Fatal(err)
		}
		for i, b := range blocks { // in the bucket itself, not only in a daemon's cache
			if _, err := bucket.Stat(ctx, cas.Sum(b)); err != nil {
				t.Fatalf("round %d: block %d of the live snapshot is not in the bucket: %v", round, i, err)
			}
		}
		wantSnapshotReads(t, c1, fresh, blocks)
	}
	t.Logf("the racing collections reclaimed %d blocks", reclaimed)
	// Delete + collection past the grace period removes the objects of unreferenced
	// blocks from the bucket.
	blocks := distinctBlocks(3, 5000)
	id := *startSnapshot(t, c1, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId
	for i, b := range blocks {
		if err := putBlock(ctx, c1, id, i, b); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := complete(ctx, c1, id, blocks); err != nil {
		t.Fatal(err)
	}
	if err := d2.store().DeleteSnapshot(ctx, defaultAccountID, id); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * grace)
	gcNow(t, d2, false)
	for i, b := range blocks {
		if _, err := bucket.Stat(ctx, cas.Sum(b)); !errors.Is(err, cas.ErrBlockNotFound) {
			t.Fatalf("block %d of the deleted snapshot is still in the bucket after the collection: %v", i, err)
		}
	}
}

func serversRestarted(t *testing.T, c *clustertest.Cluster) {
	ctx := context.Background()
	d1 := newSharedDaemon(t, c)
	cl := d1.client()
	id := *startSnapshot(t, cl, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId
	blocks := distinctBlocks(4, 6000)
	if err := putBlock(ctx, cl, id, 0, blocks[0]); err != nil {
		t.Fatal(err)
	}
	c.StopS3(t)
	want5xx(t, "a put while the S3 server is down", putBlock(ctx, cl, id, 1, blocks[1]))
	c.StartS3(t)
	if err := putBlock(ctx, cl, id, 1, blocks[1]); err != nil {
		t.Fatalf("the put retried after the S3 server came back: %v", err)
	}
	c.StopPG(t)
	want5xx(t, "a put while PostgreSQL is down", putBlock(ctx, cl, id, 2, blocks[2]))
	c.StartPG(t)
	for i := int32(2); i < 4; i++ {
		if err := putBlock(ctx, cl, id, i, blocks[i]); err != nil {
			t.Fatalf("put %d after PostgreSQL came back: %v", i, err)
		}
	}
	if st, err := complete(ctx, cl, id, blocks); err != nil || st != types.StatusCompleted {
		t.Fatalf("complete after both outages: %v %v", st, err)
	}
	wantSnapshotReads(t, cl, id, blocks)
}

func kill9OneDaemon(t *testing.T, c *clustertest.Cluster) {
	ctx := context.Background()
	env := []string{"EBSD_CATALOG=" + c.Env["EBSD_CATALOG"], "EBSD_BLOCKS=" + c.Env["EBSD_BLOCKS"], "EBSD_METRICS_LISTEN="}
	victim := startChild(t, t.TempDir(), append(env, "EBSD_CACHE_DIR="+t.TempDir())...)
	other := newSharedDaemon(t, c)
	cv, co := victim.client(), other.client()
	const token = "kill9-shared"
	id := aws.ToString(startSnapshot(t, cv, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), ClientToken: aws.String(token)}).SnapshotId)
	blocks := distinctBlocks(40, 7000)
	acked := map[int32]bool{}
	for i := range int32(20) {
		if err := putBlock(ctx, cv, id, i, blocks[i]); err == nil {
			acked[i] = true
		}
	}
	victim.kill9(t)
	// The client retries its StartSnapshot (same token) on the other daemon, then puts
	// everything not acknowledged there and completes.
	again := aws.ToString(startSnapshot(t, co, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), ClientToken: aws.String(token)}).SnapshotId)
	if again != id {
		t.Fatalf("the token retried on the other daemon started %s, want %s", again, id)
	}
	for i := range int32(40) {
		if acked[i] {
			continue
		}
		if err := putBlock(ctx, co, id, i, blocks[i]); err != nil {
			t.Fatalf("put %d on the surviving daemon: %v", i, err)
		}
	}
	if len(acked) != 20 {
		t.Fatalf("only %d of the 20 puts before the kill were acknowledged", len(acked))
	}
	if st, err := complete(ctx, co, id, blocks); err != nil || st != types.StatusCompleted {
		t.Fatalf("complete on the surviving daemon (every acknowledged put counted): %v %v", st, err)
	}
	wantSnapshotReads(t, co, id, blocks)
}

func secondMachine(t *testing.T, c *clustertest.Cluster) {
	ctx := context.Background()
	firstDir := t.TempDir()
	first := newSharedDaemon(t, c, func(cfg *config) { cfg.dataDir = firstDir })
	cl := first.client()
	base := *startSnapshot(t, cl, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId
	blocks := distinctBlocks(5, 8000)
	for i, b := range blocks {
		if err := putBlock(ctx, cl, base, i, b); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := complete(ctx, cl, base, blocks); err != nil {
		t.Fatal(err)
	}
	child := *startSnapshot(t, cl, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), ParentSnapshotId: aws.String(base)}).SnapshotId
	changed := map[int32][]byte{1: distinctBlocks(1, 8100)[0]}
	if err := putBlock(ctx, cl, child, 1, changed[1]); err != nil {
		t.Fatal(err)
	}
	if _, err := complete(ctx, cl, child, changed); err != nil {
		t.Fatal(err)
	}
	// The first machine is gone, disk and all.
	if err := first.d.stop(); err != nil {
		t.Fatal(err)
	}
	first.d = nil
	if err := os.RemoveAll(firstDir); err != nil {
		t.Fatal(err)
	}
	second := newSharedDaemon(t, c)
	cl2 := second.client()
	wantSnapshotReads(t, cl2, base, blocks)
	view := map[int32][]byte{}
	for i, b := range blocks {
		view[i] = b
	}
	view[1] = changed[1]
	wantSnapshotReads(t, cl2, child, view)
}

func readerLease(t *testing.T, c *clustertest.Cluster) {
	ctx := context.Background()
	clock := cas.NewManualClock(time.Now())
	short := func(cfg *config) { cfg.clock, cfg.gcGrace = clock, 10*time.Second }
	d1, d2 := newSharedDaemon(t, c, short), newSharedDaemon(t, c, short)
	cl := d1.client()
	blocks := distinctBlocks(4, 9000)
	id := *startSnapshot(t, cl, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId
	for i, b := range blocks {
		if err := putBlock(ctx, cl, id, i, b); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := complete(ctx, cl, id, blocks); err != nil {
		t.Fatal(err)
	}
	// A reader on the second daemon (what a FUSE open does), then a delete and a
	// collection past the grace period on the first.
	v, err := d2.store().OpenView(ctx, defaultAccountID, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := d1.store().DeleteSnapshot(ctx, defaultAccountID, id); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute / 2) // past the grace period, within the reader's lease
	if rep, err := d1.store().GC(ctx, false); err != nil || rep.BlocksReclaimed != 0 {
		t.Fatalf("a collection while another daemon reads the deleted snapshot: %+v %v, want nothing reclaimed", rep, err)
	}
	read := 0
	err = v.From(ctx, 0, func(sl cas.Slot) bool {
		got, err := d2.store().ReadBlock(nil, sl.Digest)
		if err != nil || !bytes.Equal(got, blocks[int32(sl.Index)]) {
			t.Errorf("block %d through the open view after the collection: %v", sl.Index, err)
		}
		read++
		return true
	})
	if err != nil || read != len(blocks) {
		t.Fatalf("reading the open view: %d blocks, %v", read, err)
	}
	// Closed, the lease runs out, and the next collection reclaims the blocks.
	v.Close()
	clock.Advance(2 * time.Minute)
	if rep, err := d1.store().GC(ctx, false); err != nil || rep.BlocksReclaimed != int64(len(blocks)) {
		t.Fatalf("the collection after the reader closed and its lease ran out: %+v %v, want %d reclaimed", rep, err, len(blocks))
	}
}
