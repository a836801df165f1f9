package cas

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/ebsd/ebsd/cas/core"
	"path/filepath"
)

// DefaultScrubBytesPerSec is a background scrub's read rate unless configured: gentle
// enough to leave a disk's bandwidth to clients, fast enough to read 5 TB a day.
const DefaultScrubBytesPerSec = 64 << 20

// Bounds on what a report lists (every corrupt block is marked whatever the bounds).
const (
	maxReportedBlocks    = 1000
	maxReportedUses      = 100 // snapshots per corrupt block
	maxReportedIndexes   = 100 // indexes per snapshot and corrupt block
	maxReportedRecords   = 1000
	scrubBlocksPerTxn    = 256 // a scrub reads in short transactions: it never pins a long-lived read view
	scrubRecordsPerTxn   = 4096
	scrubHistoryLen      = 20
	scrubRateGranularity = 4 << 20 // the limiter sleeps once per this many bytes at most
)

// ScrubOptions tune one scrub.
type ScrubOptions struct {
	// BytesPerSec bounds the stored bytes read per second; 0 or negative: no bound.
	BytesPerSec int64
}

// ScrubReport says what a scrub checked and found.
type ScrubReport struct {
	BlocksChecked  int64 `json:"blocksChecked"`
	BytesChecked   int64 `json:"bytesChecked"` // stored (compressed) bytes read
	RecordsChecked int64 `json:"recordsChecked"`
	// CorruptBlockCount counts every corrupt or missing block found; CorruptBlocks lists
	// up to 1000 of them with the snapshots and indexes that map each.
	CorruptBlockCount int            `json:"corruptBlockCount"`
	CorruptBlocks     []CorruptBlock `json:"corruptBlocks"`
	// CorruptRecordCount counts catalog records that do not decode; CorruptRecords lists
	// up to 1000.
	CorruptRecordCount int             `json:"corruptRecordCount"`
	CorruptRecords     []CorruptRecord `json:"corruptRecords"`
	// MarksCleared counts blocks known to be corrupt that verify now (healed since).
	MarksCleared int           `json:"marksCleared"`
	BytesPerSec  int64         `json:"bytesPerSec"` // the bound it ran under; 0: none
	Duration     time.Duration `json:"durationNs"`
}

// CorruptBlock is one block whose stored copy is corrupt or missing.
type CorruptBlock struct {
	Digest   string `json:"digest"`   // hex
	Checksum string `json:"checksum"` // base64, as x-amz-Checksum
	Problem  string `json:"problem"`
	// Uses are the snapshots whose own block map points at the block (at most 100);
	// UseCount counts them all. A put of the block's bytes to any of them heals it.
	UseCount int        `json:"useCount"`
	Uses     []BlockUse `json:"uses"`
}

// BlockUse is one snapshot mapping a corrupt block.
type BlockUse struct {
	SnapshotID string  `json:"snapshotId"`
	OwnerID    string  `json:"ownerId"`
	Status     Status  `json:"status"`
	Deleted    bool    `json:"deleted,omitempty"`
	IndexCount int     `json:"indexCount"`
	Indexes    []int64 `json:"indexes"` // ascending, at most 100
}

// CorruptRecord is a catalog record that does not decode or hold what its key says.
type CorruptRecord struct {
	Key     string `json:"key"` // Go-quoted
	Problem string `json:"problem"`
}

// ScrubRun is one scrub as the history keeps it.
type ScrubRun struct {
	Start    time.Time
	Duration time.Duration
	Report   ScrubReport
	Err      string // empty when the scrub finished
}

// ScrubTotals sum up the scrubs since the store opened, and the known-corrupt set.
type ScrubTotals struct {
	Runs, Failures                          int64 // finished scrubs; failed or cancelled ones
	BlocksChecked, BytesChecked             int64
	CorruptBlocksFound, CorruptRecordsFound int64 // summed over runs: one block found twice counts twice
	LastSuccess                             time.Time
	Last                                    ScrubRun // its Start is zero if none ran
	CorruptBlocksKnown                      int64    // marked now: found and not healed
	BlocksHealed                            int64    // corrupt copies replaced by puts since open
}

// scrubState is the Store's scrub bookkeeping.
type scrubState struct {
	run    sync.Mutex     // one scrub at a time
	mu     sync.Mutex     // guards what follows
	runs   ring[ScrubRun] // made by Open
	totals ScrubTotals
}

// Scrub re-reads every stored block, decompresses and re-hashes it, and checks that the
// catalog's records decode: snapshot records, block-map entries (32-byte digests of
// blocks that exist) and client-token records. Every corrupt or missing block found is
// marked (heal.go), so that a put of its bytes replaces it and CompleteSnapshot refuses
// snapshots that map it; the report names the snapshots and indexes that map each.
// Blocks marked before that verify now are unmarked. Scrub runs beside puts, reads and
// collections: it reads in short transactions and confirms each finding under the
// block's stripe lock before marking.
func (s *Store) Scrub(ctx context.Context, o ScrubOptions) (rep ScrubReport, err error) {
	s.scrub.run.Lock()
	defer s.scrub.run.Unlock()
	start := time.Now()
	defer func() { s.recordScrub(start, rep, err) }()
	rep = ScrubReport{BytesPerSec: max(o.BytesPerSec, 0)}
	lim := pacer{rate: o.BytesPerSec, granularity: scrubRateGranularity, clock: SystemClock{}, sleep: s.sleepCtx}
	lim.restart()
	corrupt := make(map[Digest]string) // confirmed corrupt: problem
	if err := s.scrubBlocks(ctx, &lim, &rep, corrupt); err != nil {
		return rep, err
	}
	uses := make(map[Digest]map[string][]int64)
	if err := s.scrubMaps(ctx, &rep, corrupt, uses); err != nil {
		return rep, err
	}
	if err := s.scrubRecords(ctx, &rep); err != nil {
		return rep, err
	}
	s.scrubTables(&rep)
	if err := s.dropUnneededMarks(corrupt, &rep); err != nil {
		return rep, err
	}
	s.reportCorrupt(&rep, corrupt, uses)
	rep.Duration = time.Since(start)
	lvl := s.log.Info
	if rep.CorruptBlockCount > 0 || rep.CorruptRecordCount > 0 {
		lvl = s.log.Error
	}
	lvl("scrub", "blocks_checked", rep.BlocksChecked, "bytes_checked", rep.BytesChecked,
		"records_checked", rep.RecordsChecked, "corrupt_blocks", rep.CorruptBlockCount,
		"corrupt_records", rep.CorruptRecordCount, "marks_cleared", rep.MarksCleared, "duration", rep.Duration)
	return rep, nil
}

// scrubTables checks every block of Badger's table files against its checksum. A
// read that meets a bad table block does not fail: an iteration ends there, so the
// keys after it (block-map entries, records) look absent, and no other check of the
// scrub can tell them from keys never written. A damaged table counts as a corrupt
// record; the way out is a salvage.
func (s *Store) scrubTables(rep *ScrubReport) {
	for _, p := range corruptTablesOf(liveTables(s.db, s.opts.Dir)) {
		rep.CorruptRecordCount++
		if len(rep.CorruptRecords) < maxReportedRecords {
			rep.CorruptRecords = append(rep.CorruptRecords, CorruptRecord{Key: "table file " + filepath.Base(p),
				Problem: "a block fails its checksum, so the keys after it may read as absent: salvage the store (docs/salvage.md)"})
		}
	}
}

// scrubBlocks verifies every stored block: the block store lists a batch of digests,
// then each is read and verified on its own, so no read view is held for long and a
// remote engine is read one object at a time.
func (s *Store) scrubBlocks(ctx context.Context, lim *pacer, rep *ScrubReport, corrupt map[Digest]string) error {
	buf := s.getBuf()
	defer s.putBuf(buf)
	scratch := (*buf)[:0:cap(*buf)]
	var batch, suspects []Digest
	for from, more := (Digest{}), true; more; {
		var err error
		batch, from, more, err = s.blockBatch(ctx, from, batch[:0], scrubBlocksPerTxn)
		if err != nil {
			return fmt.Errorf("cas: scrub blocks: %w", err)
		}
		suspects = suspects[:0]
		for _, d := range batch {
			var problem string
			var size int64
			err := s.blocks.Read(ctx, d, func(tag byte, v []byte) error {
				size = int64(len(v))
				problem = s.checkValue(scratch, v, codec(tag), d)
				return nil
			})
			switch {
			case errors.Is(err, ErrBlockNotFound):
				continue // collected since it was listed
			case err != nil && ctx.Err() != nil:
				return fmt.Errorf("cas: scrub blocks: %w", ctx.Err())
			case err != nil:
				problem = "cannot read: " + err.Error() // confirmed (or not) under the stripe below
			}
			rep.BlocksChecked++
			rep.BytesChecked += size
			if problem != "" || s.knownCorrupt(d) {
				suspects = append(suspects, d)
			}
			if err := lim.wait(ctx, size); err != nil {
				return fmt.Errorf("cas: scrub blocks: %w", err)
			}
		}
		// Confirming takes the stripe lock and may write.
		for _, d := range suspects {
			if err := s.confirm(d, corrupt, rep); err != nil {
				return err
			}
		}
	}
	return nil
}

// errBatchFull stops a walk whose batch is full.
var errBatchFull = errors.New("batch full")

// blockBatch appends to out the digests of up to n stored blocks from digest from on,
// and says where the next batch starts and whether there may be more.
func (s *Store) blockBatch(ctx context.Context, from Digest, out []Digest, n int) ([]Digest, Digest, bool, error) {
	err := s.blocks.Walk(ctx, from, func(d Digest, _ int64) error {
		if len(out) == n {
			return errBatchFull
		}
		out = append(out, d)
		return nil
	})
	if err != nil && !errors.Is(err, errBatchFull) {
		return out, from, false, err
	}
	if err == nil || len(out) == 0 {
		return out, from, false, nil
	}
	next, ok := digestAfter(out[len(out)-1])
	return out, next, ok, nil
}

// digestAfter returns the digest one greater than d, and false when d is the last.
func digestAfter(d Digest) (Digest, bool) {
	for i := len(d) - 1; i >= 0; i-- {
		d[i]++
		if d[i] != 0 {
			return d, true
		}
	}
	return d, false
}

// confirm checks a suspect block again under its stripe: a corrupt one is marked and
// kept in corrupt, a marked one that verifies now is unmarked.
func (s *Store) confirm(d Digest, corrupt map[Digest]string, rep *ScrubReport) error {
	if _, seen := corrupt[d]; seen {
		return nil
	}
	wasMarked := s.knownCorrupt(d)
	problem, err := s.noteCorrupt(d)
	if err != nil {
		return err
	}
	if problem != "" {
		corrupt[d] = problem
		return nil
	}
	if wasMarked {
		still, err := s.recheckCorrupt(d)
		if err != nil {
			return err
		}
		if !still {
			rep.MarksCleared++
		}
	}
	return nil
}

// scrubMaps checks every block-map entry (a 32-byte digest of a stored block) and
// records which snapshots and indexes map the corrupt blocks.
func (s *Store) scrubMaps(ctx context.Context, rep *ScrubReport, corrupt map[Digest]string, uses map[Digest]map[string][]int64) error {
	after := []byte{prefixMap}
	var missing []Digest
	for done := false; !done; {
		missing = missing[:0]
		err := s.view(ctx, func(txn core.CatalogTx) error {
			n := 0
			done = true
			return txn.Scan([]byte{prefixMap}, after, func(k, v []byte) (bool, error) {
				if bytes.Equal(k, after) {
					return true, nil // the last key of the previous transaction
				}
				if n == scrubRecordsPerTxn {
					done = false
					return false, nil
				}
				n++
				after = append(after[:0], k...)
				if err := ctx.Err(); err != nil {
					return false, err
				}
				rep.RecordsChecked++
				if len(k) < 1+1+1+8 || k[len(k)-9] != '/' {
					appendRecord(rep, k, "block-map key is not snapshot id / index")
					return true, nil
				}
				if len(v) != len(Digest{}) {
					appendRecord(rep, k, fmt.Sprintf("block-map entry of %d bytes, not a digest", len(v)))
					return true, nil
				}
				d := Digest(v)
				if d == ZeroDigest {
					return true, nil
				}
				if _, known := corrupt[d]; !known {
					// Present, or missing: a block is stored before the map entry that
					// names it commits, and collection deletes only unmapped blocks.
					if has, err := s.hasBlock(ctx, d); err != nil {
						return false, err
					} else if has {
						return true, nil
					}
					missing = append(missing, d)
					corrupt[d] = "missing"
				}
				id := string(k[1 : len(k)-9])
				if uses[d] == nil {
					uses[d] = make(map[string][]int64)
				}
				uses[d][id] = append(uses[d][id], indexFromMapKey(k))
				return true, nil
			})
		})
		if err != nil {
			return fmt.Errorf("cas: scrub block maps: %w", err)
		}
		for _, d := range missing {
			if _, err := s.noteCorrupt(d); err != nil {
				return err
			}
		}
	}
	return nil
}

// scrubRecords checks that snapshot and client-token records decode.
func (s *Store) scrubRecords(ctx context.Context, rep *ScrubReport) error {
	check := func(prefix byte, fn func(k, v []byte) string) error {
		return s.view(ctx, func(txn core.CatalogTx) error {
			return txn.Scan([]byte{prefix}, nil, func(k, v []byte) (bool, error) {
				if err := ctx.Err(); err != nil {
					return false, err
				}
				rep.RecordsChecked++
				if problem := fn(k, v); problem != "" {
					appendRecord(rep, k, problem)
				}
				return true, nil
			})
		})
	}
	err := check(prefixSnapshot, func(k, v []byte) string {
		var rec Snapshot
		if err := json.Unmarshal(v, &rec); err != nil {
			return "snapshot record does not decode: " + err.Error()
		}
		if rec.ID != string(k[1:]) || !ValidSnapshotID(rec.ID) {
			return fmt.Sprintf("snapshot record holds id %q", rec.ID)
		}
		return ""
	})
	if err == nil {
		err = check(prefixToken, func(_, v []byte) string {
			var rec tokenRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return "client-token record does not decode: " + err.Error()
			}
			if !ValidSnapshotID(rec.SnapshotID) {
				return fmt.Sprintf("client-token record names snapshot %q", rec.SnapshotID)
			}
			return ""
		})
	}
	if err != nil {
		return fmt.Errorf("cas: scrub records: %w", err)
	}
	return nil
}

// dropUnneededMarks forgets marks this scrub did not confirm: a marked block that is
// stored and verifies, or that is gone (collected) and that no block map pointed at
// during the scan. A mark only makes puts verify the stored copy, and a put of a block
// that is not stored always stores it, so no mark is needed for either.
func (s *Store) dropUnneededMarks(corrupt map[Digest]string, rep *ScrubReport) error {
	for _, d := range s.CorruptBlocks() {
		if _, found := corrupt[d]; found {
			continue
		}
		cleared, err := s.dropMarkUnlessCorrupt(d)
		if err != nil {
			return err
		}
		if cleared {
			rep.MarksCleared++
		}
	}
	return nil
}

func (s *Store) dropMarkUnlessCorrupt(d Digest) (bool, error) {
	stripe := &s.stripes[d[0]]
	stripe.Lock()
	defer stripe.Unlock()
	buf := s.getBuf()
	defer s.putBuf(buf)
	problem, err := s.verifyStored(d, (*buf)[:0:cap(*buf)])
	if err != nil || (problem != "" && problem != "missing") {
		return false, err
	}
	return true, s.clearCorrupt(d)
}

func appendRecord(rep *ScrubReport, k []byte, problem string) {
	rep.CorruptRecordCount++
	if len(rep.CorruptRecords) < maxReportedRecords {
		rep.CorruptRecords = append(rep.CorruptRecords, CorruptRecord{Key: strconv.Quote(string(k)), Problem: problem})
	}
}

// reportCorrupt lists the corrupt blocks, each with the snapshots that map it.
func (s *Store) reportCorrupt(rep *ScrubReport, corrupt map[Digest]string, uses map[Digest]map[string][]int64) {
	rep.CorruptBlockCount = len(corrupt)
	ds := make([]Digest, 0, len(corrupt))
	for d := range corrupt {
		ds = append(ds, d)
	}
	slices.SortFunc(ds, func(a, b Digest) int { return bytes.Compare(a[:], b[:]) })
	for _, d := range ds[:min(len(ds), maxReportedBlocks)] {
		cb := CorruptBlock{Digest: d.String(), Checksum: d.Base64(), Problem: corrupt[d], UseCount: len(uses[d]), Uses: []BlockUse{}}
		ids := make([]string, 0, len(uses[d]))
		for id := range uses[d] {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, id := range ids[:min(len(ids), maxReportedUses)] {
			idx := uses[d][id]
			slices.Sort(idx)
			u := BlockUse{SnapshotID: id, IndexCount: len(idx), Indexes: idx[:min(len(idx), maxReportedIndexes)]}
			s.snapsMu.RLock()
			e := s.snaps[id]
			s.snapsMu.RUnlock()
			if e != nil {
				snap := e.snapshot()
				u.OwnerID, u.Status, u.Deleted = snap.OwnerID, snap.Status, !snap.DeletedAt.IsZero()
			}
			cb.Uses = append(cb.Uses, u)
		}
		rep.CorruptBlocks = append(rep.CorruptBlocks, cb)
	}
	if rep.CorruptBlocks == nil {
		rep.CorruptBlocks = []CorruptBlock{}
	}
	if rep.CorruptRecords == nil {
		rep.CorruptRecords = []CorruptRecord{}
	}
}

// recordScrub remembers a finished scrub; Scrub defers it, so failed runs count too.
func (s *Store) recordScrub(start time.Time, rep ScrubReport, err error) {
	run := ScrubRun{Start: start, Duration: rep.Duration, Report: rep}
	if err != nil || run.Duration == 0 {
		run.Duration = time.Since(start)
	}
	if err != nil {
		run.Err = err.Error()
	}
	h := &s.scrub
	h.mu.Lock()
	defer h.mu.Unlock()
	h.runs.push(run)
	t := &h.totals
	t.Last = run
	if err != nil {
		t.Failures++
	} else {
		t.Runs++
		t.LastSuccess = start
	}
	t.BlocksChecked += rep.BlocksChecked
	t.BytesChecked += rep.BytesChecked
	t.CorruptBlocksFound += int64(rep.CorruptBlockCount)
	t.CorruptRecordsFound += int64(rep.CorruptRecordCount)
}

// ScrubHistory returns the last 20 scrubs since the store opened, newest first.
func (s *Store) ScrubHistory() []ScrubRun {
	h := &s.scrub
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.runs.newestFirst()
}

// ScrubTotals returns the scrub totals since the store opened, with the number of
// blocks known to be corrupt now and the number healed by puts.
func (s *Store) ScrubTotals() ScrubTotals {
	s.scrub.mu.Lock()
	t := s.scrub.totals
	s.scrub.mu.Unlock()
	t.CorruptBlocksKnown = s.heal.n.Load()
	t.BlocksHealed = s.heal.healed.Load()
	return t
}
