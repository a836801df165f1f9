package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
)

// blockRange is a run of consecutive changed blocks.
type blockRange struct {
	First       int32 `json:"firstBlock"`
	Last        int32 `json:"lastBlock"`
	StartOffset int64 `json:"startOffset"`
	EndOffset   int64 `json:"endOffset"` // exclusive
}

func runDiff(ctx context.Context, g *globalOptions, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("diff", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: ebsctl diff SNAPSHOT_A SNAPSHOT_B

Lists the block ranges whose content differs between two snapshots of one lineage
(ListChangedBlocks).

Example:
  ebsctl --json diff snap-0123456789abcdef0 snap-0fedcba9876543210
`)
	}
	if err := parseArgs(g, fs, args, 2, "two snapshots"); err != nil {
		return err
	}
	eb, _, err := g.clients(ctx)
	if err != nil {
		return err
	}
	var ranges []blockRange
	var changed int
	p := ebs.NewListChangedBlocksPaginator(eb, &ebs.ListChangedBlocksInput{
		FirstSnapshotId: aws.String(fs.Arg(0)), SecondSnapshotId: aws.String(fs.Arg(1)), MaxResults: aws.Int32(10000)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("ListChangedBlocks: %w", err)
		}
		for _, cb := range page.ChangedBlocks {
			i := aws.ToInt32(cb.BlockIndex)
			changed++
			if n := len(ranges); n > 0 && ranges[n-1].Last == i-1 {
				ranges[n-1].Last = i
				ranges[n-1].EndOffset = int64(i+1) * blockSize
				continue
			}
			ranges = append(ranges, blockRange{First: i, Last: i, StartOffset: int64(i) * blockSize, EndOffset: int64(i+1) * blockSize})
		}
	}
	if g.json {
		return json.NewEncoder(stdout).Encode(map[string]any{"first": fs.Arg(0), "second": fs.Arg(1), "changedBlocks": changed, "ranges": ranges})
	}
	fmt.Fprintf(stdout, "%d changed blocks (%s) in %d ranges\n", changed, mib(int64(changed)*blockSize), len(ranges))
	for _, r := range ranges {
		fmt.Fprintf(stdout, "  blocks %d-%d  bytes %d-%d\n", r.First, r.Last, r.StartOffset, r.EndOffset-1)
	}
	return nil
}
