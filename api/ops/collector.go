package ops

import (
	"sync"
	"syscall"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ebsd/ebsd/cas"
)

// storeCollector turns the store's and the cache's running counters into metrics at
// scrape time. It reads atomics and one statfs: nothing it does grows with the store.
type storeCollector struct{ s *Server }

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	descBlockPuts = desc("ebsd_block_puts_total",
		"Block writes committed, by outcome: stored (a new block), deduplicated (already stored) or zero (all zeros, never stored). Their sum is every block written.",
		"outcome")
	descGroupCommit = desc("ebsd_group_commit_batch_size",
		"Block writes carried by each group commit (one Badger transaction shared by concurrent puts).")
	descGroupCommitFailures = desc("ebsd_group_commit_failures_total",
		"Group commits that failed (every put in them got the error).")
	descReadFailures = desc("ebsd_block_read_failures_total",
		"Block reads refused because the stored block was missing, undecodable or did not hash to its key: corruption found by reads (what scrubs find is ebsd_scrub_corrupt_blocks_found_total).")

	descUniqueBlocks = desc("ebsd_store_unique_blocks",
		"Distinct non-zero blocks stored.")
	descUniqueBytes = desc("ebsd_store_unique_bytes",
		"Uncompressed size of the distinct non-zero blocks stored (unique blocks × 512 KiB).")
	descStoredBytes = desc("ebsd_store_stored_bytes",
		"Compressed size of the distinct blocks stored, as Badger records it.")
	descWrittenBytes = desc("ebsd_store_written_bytes",
		"Non-zero blocks in all block maps × 512 KiB: what the snapshots wrote themselves, zeros excluded, before deduplication (deleted snapshots count until garbage collection releases their maps).")
	descMappedBlocks = desc("ebsd_store_mapped_blocks",
		"Block-map entries of all snapshots (each index each snapshot wrote), zero blocks included.")
	descZeroMapped = desc("ebsd_store_zero_mapped_blocks",
		"Block-map entries that are all zeros (cost no stored bytes).")
	descLogicalBytes = desc("ebsd_store_logical_bytes",
		"Sum of the volume sizes of the snapshots not deleted: what full copies of them would take.")
	descDedupRatio = desc("ebsd_store_dedup_ratio",
		"Written bytes over unique bytes: how many times deduplication shrinks what the snapshots wrote.")
	descCompressionRatio = desc("ebsd_store_compression_ratio",
		"Unique bytes over stored bytes: how many times compression shrinks the distinct blocks.")
	descContentsReady = desc("ebsd_store_contents_counted",
		"1 once the count of the store's contents made at start has finished; until then the ebsd_store_* size metrics are absent.")
	descBadgerBytes = desc("ebsd_store_badger_bytes",
		"Size of Badger's files by kind (lsm, vlog), as Badger last measured them (about once a minute).",
		"kind")

	descSnapshots = desc("ebsd_snapshots",
		"Snapshots by state: pending, completed, error, or deleted (until garbage collection drops the record).",
		"state")

	descGCRuns = desc("ebsd_gc_runs_total",
		"Garbage collections since start, by dry_run (true: only counted) and result (ok or error).",
		"dry_run", "result")
	descGCSeconds = desc("ebsd_gc_duration_seconds_total",
		"Time spent in garbage collections since start, failed ones included, by dry_run.",
		"dry_run")
	descGCLastDuration = desc("ebsd_gc_last_duration_seconds",
		"How long the most recent garbage collection took (dry or not, failed or not).")
	descGCLastSuccess = desc("ebsd_gc_last_success_timestamp_seconds",
		"When the most recent garbage collection that succeeded (not a dry run) started, in Unix seconds.")
	descGCReclaimedBytes = desc("ebsd_gc_reclaimed_bytes_total",
		"Stored bytes of the blocks garbage collection deleted since start.")
	descGCReclaimedBlocks = desc("ebsd_gc_reclaimed_blocks_total",
		"Blocks garbage collection deleted since start.")
	descGCVlogRewritten = desc("ebsd_gc_value_log_files_rewritten_total",
		"Badger value-log files garbage collection rewrote to give space back to the file system.")

	descScrubRuns = desc("ebsd_scrub_runs_total",
		"Scrubs (every stored block re-read and re-hashed, every catalog record decoded) that finished since start; failed or cancelled ones are ebsd_scrub_failures_total.")
	descScrubFailures = desc("ebsd_scrub_failures_total",
		"Scrubs that failed or were cancelled since start.")
	descScrubBlocks = desc("ebsd_scrub_blocks_checked_total",
		"Stored blocks scrubs read and verified since start, failed scrubs included.")
	descScrubBytes = desc("ebsd_scrub_bytes_checked_total",
		"Stored (compressed) bytes scrubs read since start, failed scrubs included.")
	descScrubCorruptBlocks = desc("ebsd_scrub_corrupt_blocks_found_total",
		"Corrupt or missing blocks found by scrubs since start, summed over runs: a block found by two scrubs counts twice (ebsd_corrupt_blocks_known counts each once).")
	descScrubCorruptRecords = desc("ebsd_scrub_corrupt_records_found_total",
		"Catalog records that did not decode, found by scrubs since start, summed over runs.")
	descScrubLastDuration = desc("ebsd_scrub_last_duration_seconds",
		"How long the most recent scrub took (failed or not); absent until one has run.")
	descScrubLastSuccess = desc("ebsd_scrub_last_success_timestamp_seconds",
		"When the most recent scrub that finished started, in Unix seconds; absent until one has.")
	descCorruptKnown = desc("ebsd_corrupt_blocks_known",
		"Blocks known to be corrupt now: found by reads or scrubs and not healed since. Above 0: `ebsctl scrub` names the snapshots and indexes that map them; a put of the same bytes heals a block.")
	descBlocksHealed = desc("ebsd_blocks_healed_total",
		"Corrupt stored blocks replaced by a put of their bytes since start.")

	descSettleBlocks = desc("ebsd_settle_blocks_total",
		"Stored blocks re-encoded smaller by settling (--recompress) since start.")
	descSettleSaved = desc("ebsd_settle_saved_bytes_total",
		"Stored bytes settling saved since start (before minus after re-encoding); the old copies go back to the file system at the next collection.")
	descSettledBlocks = desc("ebsd_settled_blocks",
		"Blocks settled since the store was created (durable).")
	descSettledSaved = desc("ebsd_settled_saved_bytes",
		"Stored bytes settling has saved since the store was created (durable).")

	descCacheHits = desc("ebsd_cache_hits_total",
		"Block reads (API and FUSE) served from the decompressed-block cache.")
	descCacheMisses = desc("ebsd_cache_misses_total",
		"Block reads that missed the cache and read the store.")
	descCacheEvictions = desc("ebsd_cache_evictions_total",
		"Blocks pushed out of the cache to make room.")
	descCacheReused = desc("ebsd_cache_reused_buffers_total",
		"Block fetches that decoded into the memory of a block read before (streams' blocks, evictions) instead of fresh memory.")
	descCacheBlocks = desc("ebsd_cache_blocks",
		"Blocks held in the cache.")
	descCacheCapacity = desc("ebsd_cache_capacity_blocks",
		"Blocks the cache may hold (--cache-mb / 512 KiB).")

	descFreeBytes = desc("ebsd_data_dir_free_bytes",
		"Bytes available to ebsd on the file system of the data directory.")
	descSizeBytes = desc("ebsd_data_dir_filesystem_size_bytes",
		"Size of the file system of the data directory.")
)

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descBlockPuts, descGroupCommit, descGroupCommitFailures, descReadFailures,
		descUniqueBlocks, descUniqueBytes, descStoredBytes, descWrittenBytes, descMappedBlocks, descZeroMapped,
		descLogicalBytes, descDedupRatio, descCompressionRatio, descContentsReady, descBadgerBytes,
		descSnapshots,
		descGCRuns, descGCSeconds, descGCLastDuration, descGCLastSuccess, descGCReclaimedBytes, descGCReclaimedBlocks, descGCVlogRewritten,
		descScrubRuns, descScrubFailures, descScrubBlocks, descScrubBytes, descScrubCorruptBlocks, descScrubCorruptRecords,
		descScrubLastDuration, descScrubLastSuccess, descCorruptKnown, descBlocksHealed,
		descSettleBlocks, descSettleSaved, descSettledBlocks, descSettledSaved,
		descCacheHits, descCacheMisses, descCacheEvictions, descCacheReused, descCacheBlocks, descCacheCapacity,
		descFreeBytes, descSizeBytes,
	} {
		ch <- d
	}
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	k := c.s.opts.Store.Counters()

	counter(descBlockPuts, float64(k.BlocksStored), "stored")
	counter(descBlockPuts, float64(k.BlocksDeduplicated), "deduplicated")
	counter(descBlockPuts, float64(k.BlocksZero), "zero")
	ch <- groupCommitHistogram(k.GroupCommits)
	counter(descGroupCommitFailures, float64(k.GroupCommitFailures))
	counter(descReadFailures, float64(k.BlockReadFailures))

	if k.ContentsReady {
		gauge(descContentsReady, 1)
		unique := float64(k.UniqueBlocks) * cas.BlockSize
		written := float64(k.MappedBlocks-k.ZeroMappedBlocks) * cas.BlockSize
		gauge(descUniqueBlocks, float64(k.UniqueBlocks))
		gauge(descUniqueBytes, unique)
		gauge(descStoredBytes, float64(k.StoredBytes))
		gauge(descWrittenBytes, written)
		gauge(descMappedBlocks, float64(k.MappedBlocks))
		gauge(descZeroMapped, float64(k.ZeroMappedBlocks))
		// A ratio over nothing is no number: the series is absent on an empty store.
		if unique > 0 {
			gauge(descDedupRatio, written/unique)
		}
		if k.StoredBytes > 0 {
			gauge(descCompressionRatio, unique/float64(k.StoredBytes))
		}
	} else {
		gauge(descContentsReady, 0)
	}
	gauge(descLogicalBytes, float64(k.LogicalBytes))
	gauge(descBadgerBytes, float64(k.LSMBytes), "lsm")
	gauge(descBadgerBytes, float64(k.VlogBytes), "vlog")

	gauge(descSnapshots, float64(k.Pending), "pending")
	gauge(descSnapshots, float64(k.Completed), "completed")
	gauge(descSnapshots, float64(k.Errored), "error")
	gauge(descSnapshots, float64(k.Deleted), "deleted")

	g := k.GC
	counter(descGCRuns, float64(g.Runs), "false", "ok")
	counter(descGCRuns, float64(g.RunFailures), "false", "error")
	counter(descGCRuns, float64(g.DryRuns), "true", "ok")
	counter(descGCRuns, float64(g.DryRunFailures), "true", "error")
	counter(descGCSeconds, g.RunTime.Seconds(), "false")
	counter(descGCSeconds, g.DryRunTime.Seconds(), "true")
	if !g.Last.Start.IsZero() {
		gauge(descGCLastDuration, g.Last.Duration.Seconds())
	}
	if !g.LastSuccess.IsZero() {
		gauge(descGCLastSuccess, float64(g.LastSuccess.UnixNano())/1e9)
	}
	counter(descGCReclaimedBytes, float64(g.BytesReclaimed))
	counter(descGCReclaimedBlocks, float64(g.BlocksReclaimed))
	counter(descGCVlogRewritten, float64(g.ValueLogFilesRewritten))

	sc := c.s.opts.Store.ScrubTotals()
	counter(descScrubRuns, float64(sc.Runs))
	counter(descScrubFailures, float64(sc.Failures))
	counter(descScrubBlocks, float64(sc.BlocksChecked))
	counter(descScrubBytes, float64(sc.BytesChecked))
	counter(descScrubCorruptBlocks, float64(sc.CorruptBlocksFound))
	counter(descScrubCorruptRecords, float64(sc.CorruptRecordsFound))
	if !sc.Last.Start.IsZero() {
		gauge(descScrubLastDuration, sc.Last.Duration.Seconds())
	}
	if !sc.LastSuccess.IsZero() {
		gauge(descScrubLastSuccess, float64(sc.LastSuccess.UnixNano())/1e9)
	}
	gauge(descCorruptKnown, float64(sc.CorruptBlocksKnown))
	counter(descBlocksHealed, float64(sc.BlocksHealed))

	st := k.Settle
	counter(descSettleBlocks, float64(st.BlocksSettled))
	counter(descSettleSaved, float64(st.BytesBefore-st.BytesAfter))
	gauge(descSettledBlocks, float64(st.Totals.Blocks))
	gauge(descSettledSaved, float64(st.Totals.BytesBefore-st.Totals.BytesAfter))

	if c.s.opts.Cache != nil {
		cs := c.s.opts.Cache.Stats()
		counter(descCacheHits, float64(cs.Hits))
		counter(descCacheMisses, float64(cs.Misses))
		counter(descCacheEvictions, float64(cs.Evictions))
		counter(descCacheReused, float64(cs.Reused))
		gauge(descCacheBlocks, float64(cs.Blocks))
		gauge(descCacheCapacity, float64(cs.Capacity))
	}

	if c.s.opts.DataDir != "" {
		if free, size, err := diskSpace(c.s.opts.DataDir); err == nil {
			gauge(descFreeBytes, float64(free))
			gauge(descSizeBytes, float64(size))
		} else {
			ch <- prometheus.NewInvalidMetric(descFreeBytes, err)
		}
	}
}

// groupCommitHistogram makes a histogram of commit sizes from the store's exact count
// per size (1 to cas.MaxGroupCommit writes).
func groupCommitHistogram(bySize [cas.MaxGroupCommit + 1]int64) prometheus.Metric {
	bounds := []float64{1, 2, 4, 8, 16}
	buckets := make(map[float64]uint64, len(bounds))
	var count uint64
	var sum float64
	for size, n := range bySize {
		if n == 0 {
			continue
		}
		count += uint64(n)
		sum += float64(size) * float64(n)
		for _, b := range bounds {
			if float64(size) <= b {
				buckets[b] += uint64(n)
			}
		}
	}
	for _, b := range bounds {
		buckets[b] += 0 // every bound appears, at zero before the first commit
	}
	return prometheus.MustNewConstHistogram(descGroupCommit, count, sum, buckets)
}

// diskSpace returns the bytes available to an unprivileged writer on the file system
// holding dir, and its size.
func diskSpace(dir string) (free, size uint64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	return st.Bavail * uint64(st.Bsize), st.Blocks * uint64(st.Bsize), nil
}

// opLabels bounds the values of the operation label. The API names operations after
// its routes, a fixed set; were a name ever taken from the request (an EC2 action,
// say), a client could otherwise create series without end.
type opLabels struct {
	mu   sync.Mutex
	seen map[string]struct{}
}

const maxOperations = 100

func (o *opLabels) label(op string) string {
	if !utf8.ValidString(op) || op == "" {
		return "other"
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.seen[op]; ok {
		return op
	}
	if len(o.seen) >= maxOperations {
		return "other"
	}
	if o.seen == nil {
		o.seen = make(map[string]struct{})
	}
	o.seen[op] = struct{}{}
	return op
}
