package main

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ebs/types"

	"github.com/ebsd/ebsd/cas"
)

func TestClientTokenIdempotency(t *testing.T) {
	td := newTestDaemon(t)
	c := td.client()
	ctx := context.Background()
	in := func() *ebs.StartSnapshotInput {
		return &ebs.StartSnapshotInput{
			VolumeSize: aws.Int64(8), ClientToken: aws.String("550e8400-e29b-41d4-a716-446655440000"), Timeout: aws.Int32(60),
			Description: aws.String("d"),
			Tags:        []types.Tag{{Key: aws.String("a"), Value: aws.String("1")}, {Key: aws.String("b"), Value: aws.String("2")}},
		}
	}
	first := aws.ToString(startSnapshot(t, c, in()).SnapshotId)
	if again := aws.ToString(startSnapshot(t, c, in()).SnapshotId); again != first {
		t.Fatalf("retry with the same token made %s, want %s", again, first)
	}
	// Tag order is not a different parameter.
	swapped := in()
	swapped.Tags[0], swapped.Tags[1] = swapped.Tags[1], swapped.Tags[0]
	if again := aws.ToString(startSnapshot(t, c, swapped).SnapshotId); again != first {
		t.Fatalf("retry with reordered tags made %s, want %s", again, first)
	}
	// The default Timeout equals an explicit 60.
	noTimeout := in()
	noTimeout.Timeout = nil
	if again := aws.ToString(startSnapshot(t, c, noTimeout).SnapshotId); again != first {
		t.Fatalf("retry without Timeout (default 60) made %s, want %s", again, first)
	}
	for name, mod := range map[string]func(*ebs.StartSnapshotInput){
		"volume size": func(in *ebs.StartSnapshotInput) { in.VolumeSize = aws.Int64(9) },
		"description": func(in *ebs.StartSnapshotInput) { in.Description = aws.String("other") },
		"timeout":     func(in *ebs.StartSnapshotInput) { in.Timeout = aws.Int32(61) },
		"tags":        func(in *ebs.StartSnapshotInput) { in.Tags = in.Tags[:1] },
	} {
		t.Run("conflict on "+name, func(t *testing.T) {
			other := in()
			mod(other)
			_, err := c.StartSnapshot(ctx, other)
			wantError[*types.ConflictException](t, err)
		})
	}
	// Tokens are case-sensitive and regional.
	upper := in()
	upper.ClientToken = aws.String(strings.ToUpper(*upper.ClientToken))
	if id := aws.ToString(startSnapshot(t, c, upper).SnapshotId); id == first {
		t.Fatal("token in other case returned the same snapshot")
	}
	other := newEBSClient(td.url(), "eu-west-1", 1)
	if id := aws.ToString(startSnapshot(t, other, in()).SnapshotId); id == first {
		t.Fatal("same token in another region returned the same snapshot")
	}

	// The record survives a restart, and the retry sees the current status.
	if _, err := complete(ctx, c, first, nil); err != nil {
		t.Fatal(err)
	}
	td.restart()
	c = td.client()
	out := startSnapshot(t, c, in())
	if aws.ToString(out.SnapshotId) != first || out.Status != types.StatusCompleted {
		t.Fatalf("after restart: %s %s, want %s completed", aws.ToString(out.SnapshotId), out.Status, first)
	}
	_, err := c.StartSnapshot(ctx, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), ClientToken: in().ClientToken})
	wantError[*types.ConflictException](t, err)
	if n := len(td.store().Snapshots(defaultAccountID)); n != 3 {
		t.Fatalf("%d snapshots, want 3", n)
	}
}

// Many concurrent StartSnapshot calls with one token create exactly one snapshot.
func TestConcurrentStartWithOneToken(t *testing.T) {
	td := newTestDaemon(t)
	c := td.client()
	const callers = 64
	ids := make(chan string, callers)
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			out, err := c.StartSnapshot(context.Background(), &ebs.StartSnapshotInput{VolumeSize: aws.Int64(2), ClientToken: aws.String("one-token")})
			if err != nil {
				t.Error(err)
				return
			}
			ids <- aws.ToString(out.SnapshotId)
		})
	}
	wg.Wait()
	close(ids)
	seen := map[string]bool{}
	for id := range ids {
		seen[id] = true
	}
	if len(seen) != 1 || len(td.store().Snapshots(defaultAccountID)) != 1 {
		t.Fatalf("%d distinct ids, %d snapshots; want 1", len(seen), len(td.store().Snapshots(defaultAccountID)))
	}
}

// A pending snapshot with no put or complete for Timeout minutes goes to error; any
// activity restarts the idle clock. The clock is moved by hand, nothing sleeps.
func TestIdleTimeout(t *testing.T) {
	clock := cas.NewManualClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	td := newTestDaemon(t, func(c *config) { c.clock = clock; c.expireInterval = -1 })
	c := td.client()
	ctx := context.Background()
	id := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), Timeout: aws.Int32(10)}).SnapshotId)
	for i := range int32(3) {
		clock.Advance(9 * time.Minute)
		if err := putBlock(ctx, c, id, i, block(byte(i+1))); err != nil {
			t.Fatalf("put after 9 idle minutes: %v", err)
		}
	}
	clock.Advance(10 * time.Minute)
	wantValidation(t, putBlock(ctx, c, id, 5, block(5)), types.ValidationExceptionReasonInvalidSnapshotId)
	snap, err := td.store().Snapshot(ctx, defaultAccountID, id)
	if err != nil || snap.Status != cas.StatusError {
		t.Fatalf("after timeout: %s %v", snap.Status, err)
	}
	if st, _ := td.store().Stats(ctx); st.MappedBlocks != 0 {
		t.Fatalf("timed-out snapshot still maps %d blocks", st.MappedBlocks)
	}
	// Completing it answers with its status.
	out, err := c.CompleteSnapshot(ctx, &ebs.CompleteSnapshotInput{SnapshotId: aws.String(id), ChangedBlocksCount: aws.Int32(3)})
	if err != nil || out.Status != types.StatusError {
		t.Fatalf("complete after timeout: %v %v", out, err)
	}

	// The background sweep (here called directly) expires snapshots nobody touches.
	idle := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), Timeout: aws.Int32(10)}).SnapshotId)
	clock.Advance(11 * time.Minute)
	if n, err := td.store().ExpireIdle(ctx); err != nil || n != 1 {
		t.Fatalf("ExpireIdle: %d %v", n, err)
	}
	if snap, _ := td.store().Snapshot(ctx, defaultAccountID, idle); snap.Status != cas.StatusError {
		t.Fatalf("idle snapshot is %s", snap.Status)
	}
}

func TestPendingLimit(t *testing.T) {
	td := newTestDaemon(t, func(c *config) { c.maxPending = 5 })
	c := td.client()
	ctx := context.Background()
	var first string
	for i := range 5 {
		id := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId)
		if i == 0 {
			first = id
		}
	}
	_, err := c.StartSnapshot(ctx, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)})
	wantError[*types.ConcurrentLimitExceededException](t, err)
	if _, err := complete(ctx, c, first, nil); err != nil {
		t.Fatal(err)
	}
	startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)})
}

// The AWS limit of 100 pending snapshots is the default.
func TestDefaultPendingLimitIs100(t *testing.T) {
	td := newTestDaemon(t)
	c := td.client()
	for range 100 {
		startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)})
	}
	_, err := c.StartSnapshot(context.Background(), &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)})
	wantError[*types.ConcurrentLimitExceededException](t, err)
}

func TestDataDirHeldByAnotherDaemon(t *testing.T) {
	td := newTestDaemon(t)
	cfg := td.cfg
	_, err := start(cfg, td.d.log)
	if err == nil || !strings.Contains(err.Error(), "in use by another process") || !strings.Contains(err.Error(), cfg.dataDir) {
		t.Fatalf("second daemon on %s: %v", cfg.dataDir, err)
	}
}
