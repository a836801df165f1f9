package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
)

// runStats prints GET /ebsd/v1/stats of an ebsd daemon.
func runStats(ctx context.Context, g *globalOptions, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("stats", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: ebsctl stats\n\nShows what an ebsd store holds: unique blocks, stored bytes, dedup. ebsd only.\n\nExample:\n  ebsctl --endpoint-url http://127.0.0.1:8600 --json stats")
	}
	if err := g.parse(fs, args); err != nil {
		return err
	}
	st, err := fetchStats(ctx, g)
	if err != nil {
		return err
	}
	if g.json {
		return json.NewEncoder(stdout).Encode(st)
	}
	written := st.MappedBlocks - st.ZeroBlocks
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "snapshots\t%d\n", st.Snapshots)
	fmt.Fprintf(tw, "blocks written (all snapshots)\t%d (%s)\n", st.MappedBlocks, mib(st.MappedBlocks*blockSize))
	fmt.Fprintf(tw, "  of which zero\t%d\n", st.ZeroBlocks)
	fmt.Fprintf(tw, "unique non-zero blocks\t%d (%s)\n", st.UniqueBlocks, mib(st.UniqueBlocks*blockSize))
	fmt.Fprintf(tw, "stored bytes\t%s\n", mib(st.StoredBytes))
	if st.KnownCorruptBlocks > 0 {
		fmt.Fprintf(tw, "known corrupt blocks\t%d (ebsctl scrub lists them and how to heal them)\n", st.KnownCorruptBlocks)
	}
	if st.UniqueBlocks > 0 && st.StoredBytes > 0 {
		fmt.Fprintf(tw, "dedup ratio\t%.2f\n", float64(written)/float64(st.UniqueBlocks))
		fmt.Fprintf(tw, "compression ratio\t%.2f\n", float64(st.UniqueBlocks*blockSize)/float64(st.StoredBytes))
	}
	if st.settling() {
		pct := 0.0
		if st.UniqueBlocks > 0 {
			pct = 100 * float64(st.SettledBlocks) / float64(st.UniqueBlocks)
		}
		fmt.Fprintf(tw, "settled blocks (--recompress %s)\t%d of %d (%.0f%%), %s stored\n", st.level(), st.SettledBlocks, st.UniqueBlocks, pct, mib(st.SettledBytes))
		fmt.Fprintf(tw, "  settling saved (since created)\t%s (%d blocks, %s → %s)\n", mib(st.Settled.BytesBefore-st.Settled.BytesAfter),
			st.Settled.Blocks, mib(st.Settled.BytesBefore), mib(st.Settled.BytesAfter))
	}
	return tw.Flush()
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// storeStats is the JSON of GET /ebsd/v1/stats.
type storeStats struct {
	Snapshots    int   `json:"snapshots"`
	UniqueBlocks int64 `json:"uniqueBlocks"`
	StoredBytes  int64 `json:"storedBytes"`
	MappedBlocks int64 `json:"mappedBlocks"`
	ZeroBlocks   int64 `json:"zeroBlocks"`
	// KnownCorruptBlocks are blocks found corrupt and not healed yet.
	KnownCorruptBlocks int64 `json:"knownCorruptBlocks"`
	// Settling (ebsd --recompress): blocks re-encoded smaller while the daemon was idle.
	// A daemon that predates it sends none of these, which reads as "never settled".
	SettledBlocks   int64         `json:"settledBlocks"`
	SettledBytes    int64         `json:"settledBytes"`
	Settled         settledTotals `json:"settled"`
	RecompressLevel string        `json:"recompressLevel,omitempty"`
}

// settledTotals is what settling has done since the store was created.
type settledTotals struct {
	Blocks      int64 `json:"blocks"`
	BytesBefore int64 `json:"bytesBefore"`
	BytesAfter  int64 `json:"bytesAfter"`
}

// settling says whether the daemon settles blocks or has settled some.
func (st storeStats) settling() bool {
	return st.SettledBlocks > 0 || st.Settled.Blocks > 0 || (st.RecompressLevel != "" && st.RecompressLevel != "off")
}

func (st storeStats) level() string {
	if st.RecompressLevel == "" {
		return "off"
	}
	return st.RecompressLevel
}

// fetchStats asks an ebsd daemon what its store holds (GET /ebsd/v1/stats).
func fetchStats(ctx context.Context, g *globalOptions) (storeStats, error) {
	var st storeStats
	_, err := ebsdCall(ctx, g, http.MethodGet, "/ebsd/v1/stats", &st)
	return st, err
}
