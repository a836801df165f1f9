package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"
)

type gcOptions struct {
	dryRun bool
}

// runGC asks an ebsd daemon to collect garbage now (POST /ebsd/v1/gc).
func runGC(ctx context.Context, g *globalOptions, args []string, stdout io.Writer) error {
	var o gcOptions
	fs := flag.NewFlagSet("gc", flag.ContinueOnError)
	fs.BoolVar(&o.dryRun, "dry-run", false, "only report what would be reclaimed")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: ebsctl gc [--dry-run]\n\nReclaims the space of deleted snapshots and unreferenced blocks now. ebsd only.\n\nExamples:\n  ebsctl gc --dry-run\n  ebsctl --json gc")
		fs.PrintDefaults()
	}
	if err := g.parse(fs, args); err != nil {
		return err
	}
	path := "/ebsd/v1/gc"
	if o.dryRun {
		path += "?dryRun=true"
	}
	var rep struct {
		DryRun                 bool
		SnapshotMapsReleased   int
		BlocksReclaimed        int64
		BytesReclaimed         int64
		BlocksKept             int64
		ValueLogFilesRewritten int
		DiskBytesBefore        int64
		DiskBytesAfter         int64
		DurationNs             time.Duration
	}
	body, err := ebsdCall(ctx, g, http.MethodPost, path, &rep)
	if err != nil {
		return err
	}
	if g.json {
		_, err := stdout.Write(append(body, '\n'))
		return err
	}
	verb := "reclaimed"
	if rep.DryRun {
		verb = "would reclaim"
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "%s\t%d blocks, %s\n", verb, rep.BlocksReclaimed, mib(rep.BytesReclaimed))
	fmt.Fprintf(tw, "blocks kept\t%d\n", rep.BlocksKept)
	fmt.Fprintf(tw, "deleted snapshots released\t%d\n", rep.SnapshotMapsReleased)
	if !rep.DryRun {
		fmt.Fprintf(tw, "value-log files rewritten\t%d\n", rep.ValueLogFilesRewritten)
		fmt.Fprintf(tw, "disk use\t%s -> %s\n", mib(rep.DiskBytesBefore), mib(rep.DiskBytesAfter))
	}
	fmt.Fprintf(tw, "took\t%s\n", rep.DurationNs.Round(time.Millisecond))
	return tw.Flush()
}
