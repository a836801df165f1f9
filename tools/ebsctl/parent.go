package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
)

// parentView is what an incremental upload knows of the parent without downloading its
// data: which blocks hold data, and (from ebsd) their digests.
type parentView struct {
	has     map[int64]bool
	digests map[int64][32]byte // nil when the service cannot tell (real AWS)
	gib     int64              // the parent's volume size; 0 until known
}

// end is one past the parent's last block with data.
func (pv *parentView) end() int64 {
	var end int64
	for i := range pv.has {
		end = max(end, i+1)
	}
	return end
}

// volumeGiB is a snapshot's volume size, from one page of ListSnapshotBlocks.
func volumeGiB(ctx context.Context, eb *ebs.Client, id string) (int64, error) {
	out, err := eb.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: aws.String(id), MaxResults: aws.Int32(100)})
	if err != nil {
		return 0, fmt.Errorf("ListSnapshotBlocks %s: %w", id, err)
	}
	return aws.ToInt64(out.VolumeSize), nil
}

// zeroDigest and zeroChecksum are the SHA-256 of an all-zero block.
var zeroDigest, zeroChecksum = checksum(zeroBlock)

// loadParent asks ebsd for the parent's block digests (an ebsd extension); elsewhere it
// lists the parent's blocks with ListSnapshotBlocks, which reads no data.
func loadParent(ctx context.Context, g *globalOptions, eb *ebs.Client, parent string) (*parentView, error) {
	if pv, err := parentDigests(ctx, g, parent); err == nil {
		return pv, nil
	}
	blocks, gib, err := listBlocks(ctx, eb, parent)
	if err != nil {
		return nil, err
	}
	pv := &parentView{has: make(map[int64]bool, len(blocks)), gib: gib}
	for _, b := range blocks {
		pv.has[int64(aws.ToInt32(b.BlockIndex))] = true
	}
	return pv, nil
}

func parentDigests(ctx context.Context, g *globalOptions, parent string) (*parentView, error) {
	pv := &parentView{has: map[int64]bool{}, digests: map[int64][32]byte{}}
	for next := int64(0); next >= 0; {
		var page struct {
			Blocks []struct {
				BlockIndex int64
				Checksum   string
			}
			NextIndex int64
		}
		path := "/ebsd/v1/snapshots/" + parent + "/digests?startingBlockIndex=" + strconv.FormatInt(next, 10)
		if _, err := ebsdCall(ctx, g, http.MethodGet, path, &page); err != nil {
			return nil, err
		}
		for _, b := range page.Blocks {
			raw, err := base64.StdEncoding.DecodeString(b.Checksum)
			if err != nil || len(raw) != 32 {
				return nil, fmt.Errorf("digest of block %d: %q", b.BlockIndex, b.Checksum)
			}
			pv.has[b.BlockIndex] = true
			pv.digests[b.BlockIndex] = [32]byte(raw)
		}
		next = page.NextIndex
	}
	return pv, nil
}

// needs says whether block i of the child, with digest d, must be sent: the parent does
// not already hold exactly it. Without digests every block with data is sent, and a zero
// block only where the parent had data.
func (pv *parentView) needs(i int64, d [32]byte) bool {
	if pv.digests != nil {
		have, ok := pv.digests[i]
		if !ok {
			return d != zeroDigest
		}
		return have != d
	}
	if d == zeroDigest {
		return pv.has[i]
	}
	return true
}
