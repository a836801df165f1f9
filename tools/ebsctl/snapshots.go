package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

type snapshotJSON struct {
	SnapshotID  string            `json:"snapshotId"`
	Status      string            `json:"status"`
	Progress    string            `json:"progress"`
	VolumeSize  int32             `json:"volumeSizeGiB"`
	StartTime   time.Time         `json:"startTime"`
	Description string            `json:"description,omitempty"`
	Tags        map[string]string `json:"tags,omitempty"`
}

func describe(ctx context.Context, g *globalOptions, ids []string) ([]snapshotJSON, error) {
	_, e2, err := g.clients(ctx)
	if err != nil {
		return nil, err
	}
	in := &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, SnapshotIds: ids}
	if len(ids) == 0 {
		in.MaxResults = aws.Int32(1000)
	}
	var out []snapshotJSON
	p := ec2.NewDescribeSnapshotsPaginator(e2, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("DescribeSnapshots: %w", err)
		}
		for _, s := range page.Snapshots {
			out = append(out, toSnapshotJSON(s))
		}
	}
	return out, nil
}

func toSnapshotJSON(s ec2types.Snapshot) snapshotJSON {
	j := snapshotJSON{SnapshotID: aws.ToString(s.SnapshotId), Status: string(s.State), Progress: aws.ToString(s.Progress),
		VolumeSize: aws.ToInt32(s.VolumeSize), StartTime: aws.ToTime(s.StartTime), Description: aws.ToString(s.Description)}
	for _, t := range s.Tags {
		if j.Tags == nil {
			j.Tags = map[string]string{}
		}
		j.Tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return j
}

func printSnapshots(g *globalOptions, w io.Writer, snaps []snapshotJSON) error {
	if g.json {
		return json.NewEncoder(w).Encode(snaps)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SNAPSHOT\tSTATUS\tPROGRESS\tGiB\tSTARTED\tDESCRIPTION")
	for _, s := range snaps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", s.SnapshotID, s.Status, s.Progress, s.VolumeSize, s.StartTime.Local().Format(time.DateTime), s.Description)
	}
	return tw.Flush()
}

func runLs(ctx context.Context, g *globalOptions, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("ls", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: ebsctl ls\n\nLists your snapshots (EC2 DescribeSnapshots).\n\nExample:\n  ebsctl --json ls\n")
	}
	if err := g.parse(fs, args); err != nil {
		return err
	}
	snaps, err := describe(ctx, g, nil)
	if err != nil {
		return err
	}
	return printSnapshots(g, stdout, snaps)
}

func runDescribe(ctx context.Context, g *globalOptions, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("describe", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: ebsctl describe SNAPSHOT...\n\nShows snapshots with their tags.\n\nExample:\n  ebsctl describe snap-0123456789abcdef0\n")
	}
	if err := g.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("describe takes snapshot ids")
	}
	snaps, err := describe(ctx, g, fs.Args())
	if err != nil {
		return err
	}
	if g.json {
		return json.NewEncoder(stdout).Encode(snaps)
	}
	for _, s := range snaps {
		fmt.Fprintf(stdout, "%s\n  status %s (%s)\n  volume %d GiB\n  started %s\n", s.SnapshotID, s.Status, s.Progress, s.VolumeSize, s.StartTime.Local().Format(time.RFC3339))
		if s.Description != "" {
			fmt.Fprintf(stdout, "  description %s\n", s.Description)
		}
		for k, v := range s.Tags {
			fmt.Fprintf(stdout, "  tag %s=%s\n", k, v)
		}
	}
	return nil
}

func runRm(ctx context.Context, g *globalOptions, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("rm", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: ebsctl rm SNAPSHOT...\n\nDeletes snapshots (EC2 DeleteSnapshot); space returns at the next garbage collection.\n\nExample:\n  ebsctl rm snap-0123456789abcdef0 && ebsctl gc\n")
	}
	if err := g.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("rm takes snapshot ids")
	}
	_, e2, err := g.clients(ctx)
	if err != nil {
		return err
	}
	for _, id := range fs.Args() {
		if _, err := e2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(id)}); err != nil {
			return fmt.Errorf("DeleteSnapshot %s: %w", id, err)
		}
		fmt.Fprintln(stdout, "deleted", id)
	}
	return nil
}
