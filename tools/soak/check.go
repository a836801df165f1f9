package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// finalCheck restarts the daemon cleanly and checks every fact of the ledger: live
// snapshots read bit-exact through the API and FUSE, deleted ones are gone everywhere,
// every client token answers the id it was acknowledged with.
func (s *soak) finalCheck(ctx context.Context, out io.Writer, began time.Time, o options) (bool, error) {
	loadTime := time.Since(began).Round(time.Second)
	if err := s.sup.stop(); err != nil {
		return false, fmt.Errorf("clean stop before the final check: %w", err)
	}
	if err := s.sup.start(ctx); err != nil {
		return false, fmt.Errorf("clean restart before the final check: %w", err)
	}
	checkBegan := time.Now()
	f := s.led.final()
	fmt.Fprintf(out, "soak: load ended after %s; clean restart; checking %d live and %d deleted snapshots, %d client tokens\n",
		loadTime, len(f.live), len(f.deleted), len(f.tokens))

	// What EC2 DescribeSnapshots lists.
	listed := map[string]string{}
	err := s.do(ctx, "DescribeSnapshots", func(ctx context.Context, g *generation) error {
		p := ec2.NewDescribeSnapshotsPaginator(g.ec2, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				return err
			}
			for _, sn := range page.Snapshots {
				listed[aws.ToString(sn.SnapshotId)] = string(sn.State)
			}
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("DescribeSnapshots: %w", err)
	}

	var blocks, fuseBlocks atomic.Int64
	apiBefore, fuseBefore := s.led.apiBlockReads.Load(), s.led.fuseBlockReads.Load()
	work := make(chan *snapshot)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for snap := range work {
				s.checkLive(ctx, snap, listed[snap.id])
				blocks.Add(int64(len(snap.view)))
			}
		}()
	}
	for _, snap := range f.live {
		work <- snap
	}
	close(work)
	wg.Wait()
	fuseBlocks.Store(s.led.fuseBlockReads.Load() - fuseBefore)
	apiBlocks := s.led.apiBlockReads.Load() - apiBefore

	for _, snap := range f.deleted {
		s.checkDeleted(ctx, snap, listed)
	}
	finalScrub, finalScrubRan := s.scrubOnce(ctx)
	retriesBefore := s.led.tokenRetries.Load()
	for _, t := range f.tokens {
		s.checkToken(ctx, t)
	}
	tokensOK := s.led.tokenRetries.Load() - retriesBefore

	starts, kills := s.sup.counts()
	l := s.led
	logSummary, logLines := logErrors(s.sup.logPath)
	for _, line := range logLines {
		// Nothing in the soak corrupts a block: a daemon that finds one (or panics) is a
		// finding even when no client saw it (a kernel readahead, a prefetch).
		if strings.Contains(line, "corrupt") || strings.HasPrefix(line, "panic:") {
			l.unexpected("the daemon logged: %s", line)
		}
	}
	losses, unexpected := l.problems()
	scrub := fmt.Sprintf("%d runs during the load and %s after it, %d blocks verified in all, %d findings",
		l.scrubRuns.Load()-b2i(finalScrubRan), finalScrub, l.scrubBlocks.Load(), l.scrubFindingsCount.Load())
	select {
	case <-s.scrubState.unavailable:
		scrub = "unavailable (POST /ebsd/v1/scrub answered 404; not checked)"
	default:
	}
	fmt.Fprintf(out, "soak: checked in %s\n", time.Since(checkBegan).Round(time.Second))
	fmt.Fprintf(out, "  load:       %s, seed %d, %d uploaders, %d readers, 1 deleter, gc and scrub workers\n", loadTime, o.seed, o.uploaders, o.readers)
	fmt.Fprintf(out, "  kills:      %d kill -9 (every %s ±50%%), %d daemon starts\n", kills, o.killEvery, starts)
	fmt.Fprintf(out, "  snapshots:  %d completed and acknowledged: %d live, %d deleted (acknowledged), %d deletes in doubt at the end (not checked); %d never completed\n",
		len(f.live)+len(f.deleted)+len(f.deleteInDoubt), len(f.live), len(f.deleted), len(f.deleteInDoubt), f.pending)
	fmt.Fprintf(out, "  puts:       %d acknowledged (%d zero, %d from the shared pool), %.1f MiB\n",
		l.puts.Load(), l.zeroPuts.Load(), l.dupPuts.Load(), float64(l.putBytes.Load())/(1<<20))
	fmt.Fprintf(out, "  during run: %d API reads (%d blocks), %d FUSE reads (%d blocks), %d interrupted by kills; %d deletes; %d token retries after kills\n",
		l.apiSnapReads.Load(), apiBefore, l.fuseSnapReads.Load(), fuseBefore, l.interruptedReads.Load(), l.deletes.Load(), retriesBefore)
	fmt.Fprintf(out, "  gc:         %d runs, %d blocks reclaimed\n", l.gcRuns.Load(), l.gcReclaimedBlocks.Load())
	fmt.Fprintf(out, "  scrub:      %s\n", scrub)
	fmt.Fprintf(out, "  final:      %d live snapshots, %d blocks (%.1f MiB) read bit-exact via API (%d blocks) and FUSE (%d blocks); %d deleted gone from API, EC2 and FUSE; %d/%d client tokens answered the same id\n",
		len(f.live), blocks.Load(), float64(blocks.Load())*blockSize/(1<<20), apiBlocks, fuseBlocks.Load(), len(f.deleted), tokensOK, len(f.tokens))
	fmt.Fprintf(out, "  errors:     %d in kill windows (expected), %d unexpected; daemon log: %s\n", l.expected.Load(), len(unexpected), logSummary)
	for i, line := range logLines {
		if i == 10 {
			fmt.Fprintf(out, "    daemon: … %d more\n", len(logLines)-i)
			break
		}
		fmt.Fprintf(out, "    daemon: %s\n", line)
	}
	for _, u := range unexpected {
		fmt.Fprintf(out, "    unexpected: %s\n", u)
	}
	if len(losses) == 0 {
		fmt.Fprintln(out, "lost: 0")
	} else {
		sort.Strings(losses)
		fmt.Fprintf(out, "lost: %d\n", len(losses))
		for _, m := range losses {
			fmt.Fprintf(out, "  LOST %s\n", m)
		}
	}
	return len(losses) == 0 && len(unexpected) == 0, nil
}

// checkLive reads all of a live snapshot: the listing, every block through the API, and
// every block of its view plus an unwritten one through FUSE.
func (s *soak) checkLive(ctx context.Context, snap *snapshot, state string) {
	if state != "completed" {
		s.led.lose("snapshot %s (completed, acknowledged) is %q in DescribeSnapshots", snap.id, state)
	}
	all := make([]int32, 0, len(snap.view)+1)
	for i := range snap.view {
		all = append(all, i)
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	for i := int32(0); i < indexSpace*2; i++ {
		if _, ok := snap.view[i]; !ok {
			all = append(all, i) // one never written: zeros through FUSE
			break
		}
	}
	_ = s.readAPI(ctx, snap, all) // losses are recorded there
	if err := s.readFUSE(snap, all); err != nil {
		s.led.lose("snapshot %s cannot be read through FUSE: %v", snap.id, err)
	}
}

// checkDeleted checks that a deleted snapshot is gone from EC2, the EBS API and FUSE.
func (s *soak) checkDeleted(ctx context.Context, snap *snapshot, listed map[string]string) {
	if state, ok := listed[snap.id]; ok {
		s.led.lose("deleted snapshot %s is still listed by DescribeSnapshots (%s)", snap.id, state)
	}
	err := s.do(ctx, "ListSnapshotBlocks (deleted)", func(ctx context.Context, g *generation) error {
		_, err := g.ebs.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: aws.String(snap.id)})
		return err
	})
	var nf *types.ResourceNotFoundException
	if !errors.As(err, &nf) {
		s.led.lose("deleted snapshot %s: ListSnapshotBlocks answers %v, want ResourceNotFoundException", snap.id, err)
	}
	if _, err := os.Stat(filepath.Join(s.mount, snap.id)); !errors.Is(err, fs.ErrNotExist) {
		s.led.lose("deleted snapshot %s: its FUSE file gives %v, want ENOENT", snap.id, err)
	}
}

// logErrors counts the daemon's error lines (slog level=ERROR) and panics and returns
// them, for the summary: a kill explains failed requests, not errors the daemon logged
// itself, and the work directory is removed after a clean run.
func logErrors(path string) (string, []string) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err.Error(), nil
	}
	var errs, panics int
	var lines []string
	for _, line := range strings.Split(string(raw), "\n") {
		switch {
		case strings.Contains(line, "level=ERROR"):
			errs++
		case strings.HasPrefix(line, "panic:"):
			panics++
		default:
			continue
		}
		lines = append(lines, line)
	}
	return fmt.Sprintf("%d error lines, %d panics (%s)", errs, panics, path), lines
}

// scrubOnce runs one scrub after the load, over the whole store, and says how it went
// and whether it ran.
func (s *soak) scrubOnce(ctx context.Context) (string, bool) {
	select {
	case <-s.scrubState.unavailable:
		return "none (unavailable)", false
	default:
	}
	var status int
	var body []byte
	err := s.do(ctx, "POST /ebsd/v1/scrub (final)", func(ctx context.Context, g *generation) error {
		var err error
		status, body, err = s.admin(ctx, g, "/ebsd/v1/scrub")
		return err
	})
	switch {
	case err != nil:
		return fmt.Sprintf("a failed final scrub (%v)", err), false
	case status == http.StatusNotFound:
		close(s.scrubState.unavailable)
		return "none (unavailable)", false
	case status != http.StatusOK:
		s.led.unexpected("final scrub: %d %s", status, body)
		return fmt.Sprintf("a failed final scrub (%d)", status), false
	}
	s.noteScrub(body)
	return "1 final", true
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
