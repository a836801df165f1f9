package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ebs/types"

	"github.com/ebsd/ebsd/cas"
)

// writeSnapshot starts, fills and completes a snapshot and returns its id.
func writeSnapshot(t testing.TB, c *ebs.Client, parent string, gib int64, blocks map[int32][]byte) string {
	t.Helper()
	ctx := context.Background()
	in := &ebs.StartSnapshotInput{VolumeSize: aws.Int64(gib)}
	if parent != "" {
		in.ParentSnapshotId = aws.String(parent)
	}
	id := aws.ToString(startSnapshot(t, c, in).SnapshotId)
	for i, b := range blocks {
		if err := putBlock(ctx, c, id, i, b); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	if status, err := complete(ctx, c, id, blocks); err != nil || status != types.StatusCompleted {
		t.Fatalf("complete: %v %v", status, err)
	}
	return id
}

// listAll pages through ListSnapshotBlocks and returns every block.
func listAll(t testing.TB, c *ebs.Client, id string, maxResults int32) []types.Block {
	t.Helper()
	var all []types.Block
	var next *string
	for pages := 0; ; pages++ {
		out, err := c.ListSnapshotBlocks(context.Background(), &ebs.ListSnapshotBlocksInput{SnapshotId: aws.String(id), MaxResults: aws.Int32(maxResults), NextToken: next})
		if err != nil {
			t.Fatalf("ListSnapshotBlocks page %d: %v", pages, err)
		}
		if out.BlockSize == nil || *out.BlockSize != cas.BlockSize || out.ExpiryTime == nil || out.VolumeSize == nil {
			t.Fatalf("page %d lacks BlockSize/ExpiryTime/VolumeSize: %+v", pages, out)
		}
		if len(out.Blocks) > int(max(maxResults, 100)) {
			t.Fatalf("page of %d blocks for maxResults %d", len(out.Blocks), maxResults)
		}
		all = append(all, out.Blocks...)
		if out.NextToken == nil {
			return all
		}
		next = out.NextToken
	}
}

func getBlock(t testing.TB, c *ebs.Client, id string, index int32, token *string) []byte {
	t.Helper()
	out, err := c.GetSnapshotBlock(context.Background(), &ebs.GetSnapshotBlockInput{SnapshotId: aws.String(id), BlockIndex: aws.Int32(index), BlockToken: token})
	if err != nil {
		t.Fatalf("GetSnapshotBlock %d: %v", index, err)
	}
	defer out.BlockData.Close()
	data, err := io.ReadAll(out.BlockData)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if aws.ToInt32(out.DataLength) != cas.BlockSize || len(data) != cas.BlockSize ||
		aws.ToString(out.Checksum) != base64.StdEncoding.EncodeToString(sum[:]) || out.ChecksumAlgorithm != types.ChecksumAlgorithmChecksumAlgorithmSha256 {
		t.Fatalf("GetSnapshotBlock %d: length %d/%d checksum %q algorithm %q", index, aws.ToInt32(out.DataLength), len(data), aws.ToString(out.Checksum), out.ChecksumAlgorithm)
	}
	return data
}

func TestListSnapshotBlocksPaging(t *testing.T) {
	td := newTestDaemon(t)
	c := td.client()
	blocks := map[int32][]byte{}
	zero := make([]byte, cas.BlockSize)
	var want []int32
	for i := int32(0); i < 1000; i++ {
		idx := i*3 + 1
		blocks[idx] = zero // written zeros are listed: they are data that reads as zeros
		if i%100 == 0 {
			blocks[idx] = block(byte(i / 100))
		}
		want = append(want, idx)
	}
	id := writeSnapshot(t, c, "", 2, blocks)
	for _, maxResults := range []int32{137, 100, 1, 10000} {
		got := listAll(t, c, id, maxResults)
		idx := make([]int32, len(got))
		for i, b := range got {
			idx[i] = aws.ToInt32(b.BlockIndex)
		}
		if !slices.Equal(idx, want) {
			t.Fatalf("maxResults %d: listed %d blocks, want %d ascending unique", maxResults, len(idx), len(want))
		}
	}
	// startingBlockIndex starts the listing there.
	out, err := c.ListSnapshotBlocks(context.Background(), &ebs.ListSnapshotBlocksInput{SnapshotId: aws.String(id), StartingBlockIndex: aws.Int32(1500), MaxResults: aws.Int32(100)})
	if err != nil || len(out.Blocks) != 100 || aws.ToInt32(out.Blocks[0].BlockIndex) != 1501 {
		t.Fatalf("startingBlockIndex 1500: %v %v", err, out)
	}
	// The page token wins over startingBlockIndex.
	out2, err := c.ListSnapshotBlocks(context.Background(), &ebs.ListSnapshotBlocksInput{SnapshotId: aws.String(id), StartingBlockIndex: aws.Int32(0), MaxResults: aws.Int32(100), NextToken: out.NextToken})
	if err != nil || aws.ToInt32(out2.Blocks[0].BlockIndex) != 1801 {
		t.Fatalf("pageToken with startingBlockIndex: %v %v", err, out2)
	}
	_, err = c.ListSnapshotBlocks(context.Background(), &ebs.ListSnapshotBlocksInput{SnapshotId: aws.String(id), MaxResults: aws.Int32(10001)})
	wantValidation(t, err, types.ValidationExceptionReasonInvalidParameterValue)

	// Blocks read back, zero ones as zeros.
	for _, b := range listAll(t, c, id, 10000)[:12] {
		i := aws.ToInt32(b.BlockIndex)
		if got := getBlock(t, c, id, i, b.BlockToken); !bytes.Equal(got, blocks[i]) {
			t.Fatalf("block %d reads back wrong", i)
		}
	}

	// Tokens survive a restart: they are signed with a key kept in the store.
	first, err := c.ListSnapshotBlocks(context.Background(), &ebs.ListSnapshotBlocksInput{SnapshotId: aws.String(id), MaxResults: aws.Int32(100)})
	if err != nil {
		t.Fatal(err)
	}
	td.restart()
	c = td.client()
	if _, err := c.ListSnapshotBlocks(context.Background(), &ebs.ListSnapshotBlocksInput{SnapshotId: aws.String(id), NextToken: first.NextToken}); err != nil {
		t.Fatalf("page token after restart: %v", err)
	}
	b0 := first.Blocks[0]
	if got := getBlock(t, c, id, aws.ToInt32(b0.BlockIndex), b0.BlockToken); !bytes.Equal(got, blocks[aws.ToInt32(b0.BlockIndex)]) {
		t.Fatal("block token after restart reads wrong data")
	}
}

func TestTokensAreTamperProofAndExpire(t *testing.T) {
	clock := cas.NewManualClock(time.Now())
	td := newTestDaemon(t, func(c *config) { c.clock = clock; c.expireInterval = -1 })
	c := td.client()
	ctx := context.Background()
	blocks := map[int32][]byte{}
	for i := int32(0); i < 150; i++ {
		blocks[i] = make([]byte, cas.BlockSize)
	}
	blocks[5] = block(5)
	id := writeSnapshot(t, c, "", 1, blocks)
	other := writeSnapshot(t, c, "", 1, map[int32][]byte{5: block(6)})
	page, err := c.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: aws.String(id), MaxResults: aws.Int32(100)})
	if err != nil || page.NextToken == nil {
		t.Fatalf("first page: %v", err)
	}
	tok5 := page.Blocks[5].BlockToken

	tamper := func(tok string) string {
		raw, _ := base64.StdEncoding.DecodeString(tok)
		raw[len(raw)/2] ^= 1
		return base64.StdEncoding.EncodeToString(raw)
	}
	get := func(snap string, index int32, tok string) error {
		_, err := c.GetSnapshotBlock(ctx, &ebs.GetSnapshotBlockInput{SnapshotId: aws.String(snap), BlockIndex: aws.Int32(index), BlockToken: aws.String(tok)})
		return err
	}
	wantValidation(t, get(id, 5, tamper(*tok5)), types.ValidationExceptionReasonInvalidBlockToken)
	wantValidation(t, get(id, 6, *tok5), types.ValidationExceptionReasonInvalidBlockToken)    // other index
	wantValidation(t, get(other, 5, *tok5), types.ValidationExceptionReasonInvalidBlockToken) // other snapshot
	wantValidation(t, get(id, 5, "bm90IGEgdG9rZW4="), types.ValidationExceptionReasonInvalidBlockToken)
	wantValidation(t, get(id, 5, *page.NextToken), types.ValidationExceptionReasonInvalidBlockToken) // a page token is no block token
	list := func(snap, tok string) error {
		_, err := c.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: aws.String(snap), NextToken: aws.String(tok)})
		return err
	}
	wantValidation(t, list(id, tamper(*page.NextToken)), types.ValidationExceptionReasonInvalidPageToken)
	wantValidation(t, list(other, *page.NextToken), types.ValidationExceptionReasonInvalidPageToken)
	wantValidation(t, list(id, *tok5), types.ValidationExceptionReasonInvalidPageToken)

	// Page tokens live 60 minutes, block tokens 7 days.
	clock.Advance(59 * time.Minute)
	if err := list(id, *page.NextToken); err != nil {
		t.Fatalf("page token after 59 minutes: %v", err)
	}
	clock.Advance(2 * time.Minute)
	wantValidation(t, list(id, *page.NextToken), types.ValidationExceptionReasonInvalidPageToken)
	if err := get(id, 5, *tok5); err != nil {
		t.Fatalf("block token after 61 minutes: %v", err)
	}
	clock.Advance(7 * 24 * time.Hour)
	wantValidation(t, get(id, 5, *tok5), types.ValidationExceptionReasonInvalidBlockToken)
}

// A lineage A → B → C with overrides, zero writes and a sibling D of B.
func TestLineageReadsAndChangedBlocks(t *testing.T) {
	td := newTestDaemon(t)
	c := td.client()
	ctx := context.Background()
	zero := make([]byte, cas.BlockSize)
	aBlocks := map[int32][]byte{}
	for i := int32(0); i < 10; i++ {
		aBlocks[i] = block(0xA0 + byte(i))
	}
	// B writes zeros over A's data at 4 and zeros where nothing was ever written at 50.
	bBlocks := map[int32][]byte{2: block(0xB2), 3: block(0xB3), 4: zero, 20: block(0xB4), 50: zero}
	cBlocks := map[int32][]byte{3: block(0xC3), 30: block(0xC4)}
	dBlocks := map[int32][]byte{2: block(0xB2), 40: block(0xD4)}
	a := writeSnapshot(t, c, "", 1, aBlocks)
	b := writeSnapshot(t, c, a, 1, bBlocks)
	cc := writeSnapshot(t, c, b, 2, cBlocks)
	d := writeSnapshot(t, c, a, 1, dBlocks)
	unrelated := writeSnapshot(t, c, "", 1, map[int32][]byte{0: block(1)})

	// C's view: its own blocks over B's over A's.
	view := map[int32][]byte{}
	for _, layer := range []map[int32][]byte{aBlocks, bBlocks, cBlocks} {
		for i, data := range layer {
			view[i] = data
		}
	}
	listed := listAll(t, c, cc, 100)
	if len(listed) != len(view) {
		t.Fatalf("C lists %d blocks, its view has %d", len(listed), len(view))
	}
	for _, bl := range listed {
		i := aws.ToInt32(bl.BlockIndex)
		if got := getBlock(t, c, cc, i, bl.BlockToken); !bytes.Equal(got, view[i]) {
			t.Fatalf("C block %d reads the wrong layer", i)
		}
	}

	type change struct {
		index         int32
		first, second bool
	}
	changes := func(first, second string) []change {
		t.Helper()
		var out []change
		var next *string
		for {
			in := &ebs.ListChangedBlocksInput{SecondSnapshotId: aws.String(second), NextToken: next, MaxResults: aws.Int32(100)}
			if first != "" {
				in.FirstSnapshotId = aws.String(first)
			}
			page, err := c.ListChangedBlocks(ctx, in)
			if err != nil {
				t.Fatalf("ListChangedBlocks(%s, %s): %v", first, second, err)
			}
			for _, cb := range page.ChangedBlocks {
				i := aws.ToInt32(cb.BlockIndex)
				out = append(out, change{i, cb.FirstBlockToken != nil, cb.SecondBlockToken != nil})
				if cb.SecondBlockToken != nil {
					want := view[i]
					if second == d {
						want = map[bool][]byte{true: dBlocks[i], false: aBlocks[i]}[dBlocks[i] != nil]
					}
					if second == cc && !bytes.Equal(getBlock(t, c, second, i, cb.SecondBlockToken), want) {
						t.Fatalf("changed block %d: second token reads wrong data", i)
					}
				}
			}
			if page.NextToken == nil {
				return out
			}
			next = page.NextToken
		}
	}
	for _, tc := range []struct {
		name          string
		first, second string
		want          []change
	}{
		{"grandparent to grandchild", a, cc, []change{{2, true, true}, {3, true, true}, {4, true, true}, {20, false, true}, {30, false, true}, {50, false, true}}},
		{"grandchild to grandparent", cc, a, []change{{2, true, true}, {3, true, true}, {4, true, true}, {20, true, false}, {30, true, false}, {50, true, false}}},
		{"parent to child", b, cc, []change{{3, true, true}, {30, false, true}}},
		{"siblings", b, d, []change{{3, true, true}, {4, true, true}, {20, true, false}, {40, false, true}, {50, true, false}}},
		{"same snapshot", cc, cc, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := changes(tc.first, tc.second); !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
	if got := changes("", b); len(got) != 12 {
		t.Fatalf("without firstSnapshotId: %d blocks, want the 12 of B's view", len(got))
	}
	_, err := c.ListChangedBlocks(ctx, &ebs.ListChangedBlocksInput{FirstSnapshotId: aws.String(unrelated), SecondSnapshotId: aws.String(cc)})
	wantValidation(t, err, types.ValidationExceptionReasonUnrelatedSnapshots)
}

func TestReadsOfUnreadableSnapshots(t *testing.T) {
	td := newTestDaemon(t)
	c := td.client()
	ctx := context.Background()
	pending := aws.ToString(startSnapshot(t, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}).SnapshotId)
	_, err := c.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: aws.String(pending)})
	wantValidation(t, err, types.ValidationExceptionReasonInvalidSnapshotId)
	_, err = c.ListChangedBlocks(ctx, &ebs.ListChangedBlocksInput{SecondSnapshotId: aws.String(pending)})
	wantValidation(t, err, types.ValidationExceptionReasonInvalidSnapshotId)
	_, err = c.GetSnapshotBlock(ctx, &ebs.GetSnapshotBlockInput{SnapshotId: aws.String(pending), BlockIndex: aws.Int32(0), BlockToken: aws.String("AAAA")})
	wantValidation(t, err, types.ValidationExceptionReasonInvalidSnapshotId)
	_, err = c.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: aws.String("snap-0123456789abcdef0")})
	wantError[*types.ResourceNotFoundException](t, err)
	// A malformed parameter is reported as such before the snapshot is looked at, as
	// AWS validates a request against its model first.
	r := td.raw("GET", "/snapshots/"+pending+"/blocks?maxResults=abc", nil, nil, 0)
	wantAWSError(t, r, 400, "ValidationException", "INVALID_PARAMETER_VALUE")
	r = td.raw("GET", "/snapshots/"+pending+"/blocks?maxResults=100", nil, nil, 0)
	wantAWSError(t, r, 400, "ValidationException", "INVALID_SNAPSHOT_ID")
}
