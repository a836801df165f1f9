package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	ebstypes "github.com/aws/aws-sdk-go-v2/service/ebs/types"
)

// listBlocks returns every block of a snapshot with its token, and its volume size.
func listBlocks(ctx context.Context, eb *ebs.Client, id string) ([]ebstypes.Block, int64, error) {
	var out []ebstypes.Block
	var gib int64
	p := ebs.NewListSnapshotBlocksPaginator(eb, &ebs.ListSnapshotBlocksInput{SnapshotId: aws.String(id), MaxResults: aws.Int32(10000)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, 0, fmt.Errorf("ListSnapshotBlocks %s: %w", id, err)
		}
		out = append(out, page.Blocks...)
		gib = aws.ToInt64(page.VolumeSize)
	}
	return out, gib, nil
}

// getBlock reads one block into buf and checks it against the checksum the service sent.
func getBlock(ctx context.Context, eb *ebs.Client, id string, b ebstypes.Block, buf []byte) error {
	out, err := eb.GetSnapshotBlock(ctx, &ebs.GetSnapshotBlockInput{SnapshotId: aws.String(id), BlockIndex: b.BlockIndex, BlockToken: b.BlockToken})
	if err != nil {
		return fmt.Errorf("GetSnapshotBlock %d: %w", aws.ToInt32(b.BlockIndex), err)
	}
	defer out.BlockData.Close()
	if _, err := io.ReadFull(out.BlockData, buf); err != nil {
		return fmt.Errorf("reading block %d: %w", aws.ToInt32(b.BlockIndex), err)
	}
	sum := sha256.Sum256(buf)
	if got := base64.StdEncoding.EncodeToString(sum[:]); got != aws.ToString(out.Checksum) {
		return fmt.Errorf("block %d: checksum %s, the service said %s", aws.ToInt32(b.BlockIndex), got, aws.ToString(out.Checksum))
	}
	return nil
}
