package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ebs/types"

	"github.com/ebsd/ebsd/cas"
)

func TestWritePathHappy(t *testing.T) {
	td := newTestDaemon(t)
	c := td.client()
	ctx := context.Background()
	before := time.Now().Add(-time.Second)

	out := startSnapshot(t, c, &ebs.StartSnapshotInput{
		VolumeSize:  aws.Int64(8),
		Description: aws.String("root volume"),
		Tags:        []types.Tag{{Key: aws.String("team"), Value: aws.String("storage")}},
		Timeout:     aws.Int32(60),
	})
	id := aws.ToString(out.SnapshotId)
	if !cas.ValidSnapshotID(id) || len(id) != len("snap-")+17 {
		t.Fatalf("snapshot id %q", id)
	}
	if out.Status != types.StatusPending || aws.ToInt64(out.VolumeSize) != 8 || aws.ToInt32(out.BlockSize) != cas.BlockSize ||
		aws.ToString(out.OwnerId) != defaultAccountID || aws.ToString(out.Description) != "root volume" ||
		len(out.Tags) != 1 || aws.ToString(out.Tags[0].Value) != "storage" {
		t.Fatalf("StartSnapshot output %+v", out)
	}
	if out.StartTime == nil || out.StartTime.Before(before) || out.StartTime.After(time.Now().Add(time.Second)) {
		t.Fatalf("StartTime %v", out.StartTime)
	}

	blocks := map[int32][]byte{0: block(1), 7: block(2), 16383: block(3), 9: make([]byte, cas.BlockSize)}
	for i, b := range blocks {
		po, err := c.PutSnapshotBlock(ctx, &ebs.PutSnapshotBlockInput{
			SnapshotId: aws.String(id), BlockIndex: aws.Int32(i), BlockData: bytes.NewReader(b),
			DataLength: aws.Int32(cas.BlockSize), Checksum: aws.String(checksum(b)),
			ChecksumAlgorithm: types.ChecksumAlgorithmChecksumAlgorithmSha256, Progress: aws.Int32(50),
		})
		if err != nil {
			t.Fatalf("PutSnapshotBlock %d: %v", i, err)
		}
		if aws.ToString(po.Checksum) != checksum(b) || po.ChecksumAlgorithm != types.ChecksumAlgorithmChecksumAlgorithmSha256 {
			t.Fatalf("PutSnapshotBlock echoed %q %q", aws.ToString(po.Checksum), po.ChecksumAlgorithm)
		}
	}
	// Overwriting an index keeps one entry for it.
	blocks[7] = block(4)
	if err := putBlock(ctx, c, id, 7, blocks[7]); err != nil {
		t.Fatal(err)
	}
	status, err := complete(ctx, c, id, blocks)
	if err != nil || status != types.StatusCompleted {
		t.Fatalf("CompleteSnapshot: %v %v", status, err)
	}
	// Completing again answers with the status, it is not an error.
	status, err = complete(ctx, c, id, blocks)
	if err != nil || status != types.StatusCompleted {
		t.Fatalf("second CompleteSnapshot: %v %v", status, err)
	}
	snap, err := td.store().Snapshot(ctx, defaultAccountID, id)
	if err != nil || snap.ChangedBlocks != 4 || snap.CompleteTime.IsZero() {
		t.Fatalf("record after completion: %+v %v", snap, err)
	}
	// A completed snapshot takes no more blocks.
	wantValidation(t, putBlock(ctx, c, id, 1, block(5)), types.ValidationExceptionReasonInvalidSnapshotId)
}

// The LINEAR example of the spec, byte for byte.
func TestLinearAggregateExample(t *testing.T) {
	const want = "lzwORrC2twdSHNoMC2SI8v/PEX1FB7hmtEJGfvIb5qk="
	blocks := map[int32][]byte{0: block(0x01), 2: block(0xAB)}
	if n, got := linear(blocks); n != 2 || got != want {
		t.Fatalf("test helper computes %d %s, spec says 2 %s", n, got, want)
	}
	td := newTestDaemon(t)
	c := td.client()
	ctx := context.Background()
	id := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId)
	for i, b := range blocks {
		if err := putBlock(ctx, c, id, i, b); err != nil {
			t.Fatal(err)
		}
	}
	completeWith := func(count int32, sum string) (types.Status, error) {
		out, err := c.CompleteSnapshot(ctx, &ebs.CompleteSnapshotInput{
			SnapshotId: aws.String(id), ChangedBlocksCount: aws.Int32(count), Checksum: aws.String(sum),
			ChecksumAlgorithm:         types.ChecksumAlgorithmChecksumAlgorithmSha256,
			ChecksumAggregationMethod: types.ChecksumAggregationMethodChecksumAggregationLinear,
		})
		if err != nil {
			return "", err
		}
		return out.Status, nil
	}
	// A wrong aggregate or count is refused, names what the server computed, and the
	// snapshot stays pending so the client can fix and retry.
	_, err := completeWith(2, checksum(block(9)))
	wantValidation(t, err, types.ValidationExceptionReasonInvalidParameterValue)
	if ve := wantError[*types.ValidationException](t, err); !strings.Contains(aws.ToString(ve.Message), want) {
		t.Fatalf("mismatch message does not name the computed aggregate: %s", aws.ToString(ve.Message))
	}
	_, err = completeWith(3, want)
	wantValidation(t, err, types.ValidationExceptionReasonInvalidParameterValue)
	if snap, _ := td.store().Snapshot(ctx, defaultAccountID, id); snap.Status != cas.StatusPending {
		t.Fatalf("status after refused completion: %s", snap.Status)
	}
	if status, err := completeWith(2, want); err != nil || status != types.StatusCompleted {
		t.Fatalf("CompleteSnapshot with the spec's aggregate: %v %v", status, err)
	}
}

func TestCompleteWithoutAggregate(t *testing.T) {
	td := newTestDaemon(t)
	c := td.client()
	ctx := context.Background()
	id := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId)
	if err := putBlock(ctx, c, id, 3, block(3)); err != nil {
		t.Fatal(err)
	}
	out, err := c.CompleteSnapshot(ctx, &ebs.CompleteSnapshotInput{SnapshotId: aws.String(id), ChangedBlocksCount: aws.Int32(1)})
	if err != nil || out.Status != types.StatusCompleted {
		t.Fatalf("CompleteSnapshot: %v %v", out, err)
	}
	// An empty snapshot completes with a count of 0.
	id = aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId)
	out, err = c.CompleteSnapshot(ctx, &ebs.CompleteSnapshotInput{SnapshotId: aws.String(id), ChangedBlocksCount: aws.Int32(0)})
	if err != nil || out.Status != types.StatusCompleted {
		t.Fatalf("CompleteSnapshot of empty snapshot: %v %v", out, err)
	}
}

// Sixteen clients put into one snapshot at once; the LINEAR aggregate proves every
// block landed at its index with its content.
func TestConcurrentPutsIntoOneSnapshot(t *testing.T) {
	td := newTestDaemon(t)
	c := td.client()
	ctx := context.Background()
	id := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(4)}).SnapshotId)
	const workers, n = 16, 320
	blocks := make(map[int32][]byte, n)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range int32(n) {
		b := make([]byte, cas.BlockSize)
		for j := 0; j < len(b); j += 4096 {
			b[j] = byte(rng.IntN(256))
		}
		blocks[i*3] = b
	}
	// Every worker sends exactly one result (nil, or the error that stopped it) into a
	// channel with room for all of them, and the feeder gives up once a worker has
	// failed: whatever fails, nothing waits forever, and the first error is reported.
	putCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	work := make(chan int32)
	results := make(chan error, workers)
	for range workers {
		go func() {
			for i := range work {
				if err := putBlock(putCtx, c, id, i, blocks[i]); err != nil {
					results <- fmt.Errorf("block %d: %w", i, err) // queued before cancel: it comes out first
					cancel()
					return
				}
			}
			results <- nil
		}()
	}
feed:
	for i := range blocks {
		select {
		case work <- i:
		case <-putCtx.Done():
			break feed
		}
	}
	close(work)
	var first error
	for range workers {
		if err := <-results; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		t.Fatalf("concurrent puts: %v", first)
	}
	if status, err := complete(ctx, c, id, blocks); err != nil || status != types.StatusCompleted {
		t.Fatalf("CompleteSnapshot: %v %v", status, err)
	}
}

// The same block in two snapshots is stored once; zero blocks cost no stored bytes but
// are remembered as written.
func TestDedupAndZeroBlocks(t *testing.T) {
	td := newTestDaemon(t)
	c := td.client()
	ctx := context.Background()
	shared := block(0x5A)
	for range 2 {
		id := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId)
		for i := range int32(3) {
			if err := putBlock(ctx, c, id, i, shared); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := complete(ctx, c, id, map[int32][]byte{0: shared, 1: shared, 2: shared}); err != nil {
			t.Fatal(err)
		}
	}
	st, err := td.store().Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.UniqueBlocks != 1 || st.MappedBlocks != 6 {
		t.Fatalf("after 6 puts of one block: %+v, want 1 unique block, 6 mapped", st)
	}
	// A block of one repeated byte compresses to a few bytes.
	if st.StoredBytes <= 0 || st.StoredBytes > 4096 {
		t.Fatalf("stored bytes %d for one compressible block", st.StoredBytes)
	}
	storedBefore := st.StoredBytes

	zero := make([]byte, cas.BlockSize)
	id := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId)
	zeros := map[int32][]byte{}
	for i := range int32(10) {
		zeros[i*2] = zero
		if err := putBlock(ctx, c, id, i*2, zero); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := complete(ctx, c, id, zeros); err != nil {
		t.Fatal(err)
	}
	st, err = td.store().Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.UniqueBlocks != 1 || st.StoredBytes != storedBefore || st.ZeroBlocks != 10 || st.MappedBlocks != 16 {
		t.Fatalf("after 10 zero blocks: %+v", st)
	}
}

// A 64 TiB volume with a handful of blocks costs what the handful costs.
func TestHugeSparseVolume(t *testing.T) {
	td := newTestDaemon(t)
	c := td.client()
	ctx := context.Background()
	id := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(65536)}).SnapshotId)
	last := int32(65536*cas.BlocksPerGiB - 1)
	blocks := map[int32][]byte{0: block(1), last: block(2)}
	for i, b := range blocks {
		if err := putBlock(ctx, c, id, i, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := putBlock(ctx, c, id, last+1, block(3)); err == nil {
		t.Fatal("index past the last block accepted")
	} else {
		wantValidation(t, err, types.ValidationExceptionReasonInvalidBlock)
	}
	if status, err := complete(ctx, c, id, blocks); err != nil || status != types.StatusCompleted {
		t.Fatalf("CompleteSnapshot: %v %v", status, err)
	}
}

// The ebsd extension endpoint reports the same statistics as the store.
func TestStatsEndpoint(t *testing.T) {
	td := newTestDaemon(t)
	c := td.client()
	ctx := context.Background()
	id := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId)
	for i := range int32(3) {
		if err := putBlock(ctx, c, id, i, block(9)); err != nil {
			t.Fatal(err)
		}
	}
	r := td.raw("GET", "/ebsd/v1/stats", nil, nil, 0)
	var st cas.Stats
	if err := json.Unmarshal(r.body, &st); err != nil || r.status != 200 {
		t.Fatalf("stats: %d %s %v", r.status, r.body, err)
	}
	if st.Snapshots != 1 || st.UniqueBlocks != 1 || st.MappedBlocks != 3 || st.StoredBytes <= 0 {
		t.Fatalf("stats %+v", st)
	}
}
