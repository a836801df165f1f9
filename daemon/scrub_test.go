package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ebs/types"

	"github.com/ebsd/ebsd/cas"
	"github.com/ebsd/ebsd/cas/castest"
)

func randomData(t *testing.T) []byte {
	t.Helper()
	b := make([]byte, cas.BlockSize)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// scrubNow runs POST /ebsd/v1/scrub, signed as the test account, and decodes the report.
func scrubNow(t *testing.T, td *testDaemon) cas.ScrubReport {
	t.Helper()
	r := td.raw("POST", "/ebsd/v1/scrub", nil, nil, 0)
	if r.status != 200 {
		t.Fatalf("scrub: %d %s", r.status, r.body)
	}
	var rep cas.ScrubReport
	if err := json.Unmarshal(r.body, &rep); err != nil {
		t.Fatalf("scrub report %s: %v", r.body, err)
	}
	return rep
}

// readBlock reads one block of a snapshot through ListSnapshotBlocks' token and
// GetSnapshotBlock, and returns the error instead of failing.
func readBlock(t *testing.T, c *ebs.Client, id string, index int32) ([]byte, error) {
	t.Helper()
	ctx := context.Background()
	list, err := c.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: aws.String(id), StartingBlockIndex: aws.Int32(index), MaxResults: aws.Int32(100)})
	if err != nil {
		t.Fatalf("ListSnapshotBlocks %s: %v", id, err)
	}
	i := slices.IndexFunc(list.Blocks, func(b types.Block) bool { return aws.ToInt32(b.BlockIndex) == index })
	if i < 0 {
		t.Fatalf("%s has no block %d", id, index)
	}
	out, err := c.GetSnapshotBlock(ctx, &ebs.GetSnapshotBlockInput{SnapshotId: aws.String(id), BlockIndex: aws.Int32(index), BlockToken: list.Blocks[i].BlockToken})
	if err != nil {
		return nil, err
	}
	defer out.BlockData.Close()
	return io.ReadAll(out.BlockData)
}

// The issue, end to end through the real daemon and the Go SDK: a block rots in the
// value log; reads of it fail; a scrub names the snapshots and indexes that map it; a
// pending snapshot that maps it is not acknowledged; a put of the right bytes in a new
// snapshot heals it; then every snapshot reads right and a scrub finds nothing.
func TestRottenBlockIsFoundRefusedAndHealedByAPut(t *testing.T) {
	// Small value-log files: the rotten block is not in the newest file, which Badger
	// checks (and would truncate) at open; older files are read only on demand, as rot
	// on a real disk is.
	td := newTestDaemon(t, func(c *config) { c.vlogFileSize = 1 << 20; c.gcInterval = 0; c.scrubInterval = 0 })
	c := td.client()
	ctx := context.Background()
	rotten := randomData(t)
	a := map[int32][]byte{0: rotten}
	for i := int32(1); i < 6; i++ {
		a[i] = randomData(t) // fill value-log files past the rotten block's
	}
	snapA := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId)
	for i := int32(0); i < 6; i++ {
		if err := putBlock(ctx, c, snapA, i, a[i]); err != nil {
			t.Fatal(err)
		}
	}
	if st, err := complete(ctx, c, snapA, a); err != nil || st != types.StatusCompleted {
		t.Fatalf("complete A: %s, %v", st, err)
	}
	// B maps the block too, put before it rots (a dedup hit) and still pending.
	b := map[int32][]byte{2: rotten, 3: randomData(t)}
	snapB := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), Timeout: aws.Int32(600)}).SnapshotId)
	for i, data := range b {
		if err := putBlock(ctx, c, snapB, i, data); err != nil {
			t.Fatal(err)
		}
	}

	if err := td.d.stop(); err != nil {
		t.Fatal(err)
	}
	td.d = nil
	castest.RotInValueLog(t, td.cfg.dataDir, rotten)
	td.start()
	c = td.client()

	// A scrub finds it, with every snapshot and index that maps it.
	rep := scrubNow(t, td)
	if rep.CorruptBlockCount != 1 || rep.CorruptRecordCount != 0 {
		t.Fatalf("scrub after the rot: %+v, want exactly one corrupt block", rep)
	}
	cb := rep.CorruptBlocks[0]
	if cb.Checksum != checksum(rotten) || cb.UseCount != 2 {
		t.Fatalf("corrupt block %+v, want the rotten one, mapped by A and B", cb)
	}
	want := map[string][]int64{snapA: {0}, snapB: {2}}
	for _, u := range cb.Uses {
		if !slices.Equal(u.Indexes, want[u.SnapshotID]) || u.OwnerID != defaultAccountID {
			t.Fatalf("use %+v, want indexes %v of account %s", u, want[u.SnapshotID], defaultAccountID)
		}
	}

	// Reading it is a 500, never wrong bytes.
	if _, err := readBlock(t, c, snapA, 0); err == nil {
		t.Fatal("read of the rotten block succeeded")
	} else {
		wantError[*types.InternalServerException](t, err)
	}

	// B maps it: completing B is refused with the index to put again; B stays pending.
	_, err := complete(ctx, c, snapB, b)
	wantValidation(t, err, types.ValidationExceptionReasonInvalidParameterValue)
	if msg := err.Error(); !strings.Contains(msg, "put block indexes 2 of "+snapB+" again") {
		t.Fatalf("refusal does not name index 2 of B: %s", msg)
	}

	// The same bytes in a new snapshot heal the stored copy.
	snapC := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId)
	if err := putBlock(ctx, c, snapC, 7, rotten); err != nil {
		t.Fatal(err)
	}
	if st, err := complete(ctx, c, snapC, map[int32][]byte{7: rotten}); err != nil || st != types.StatusCompleted {
		t.Fatalf("complete C: %s, %v", st, err)
	}
	if st, err := complete(ctx, c, snapB, b); err != nil || st != types.StatusCompleted {
		t.Fatalf("complete B once healed: %s, %v", st, err)
	}
	for _, s := range []struct {
		id     string
		blocks map[int32][]byte
	}{{snapA, a}, {snapB, b}, {snapC, map[int32][]byte{7: rotten}}} {
		for i, data := range s.blocks {
			got, err := readBlock(t, c, s.id, i)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%s block %d after healing: %v (right bytes: %v)", s.id, i, err, bytes.Equal(got, data))
			}
		}
	}
	if rep := scrubNow(t, td); rep.CorruptBlockCount != 0 || rep.CorruptRecordCount != 0 || rep.BlocksChecked != 7 {
		t.Fatalf("scrub after healing: %+v, want 7 blocks checked (A's six and B's own) and nothing corrupt", rep)
	}
	if tot := td.store().ScrubTotals(); tot.BlocksHealed != 1 || tot.CorruptBlocksKnown != 0 || tot.Runs != 2 {
		t.Fatalf("scrub totals %+v, want 1 healed, none known, 2 runs", tot)
	}
}
