package cas

import (
	"sync"
	"time"
)

// GCRun is one garbage collection as the history keeps it.
type GCRun struct {
	Start    time.Time
	Duration time.Duration
	Report   GCReport
	Err      string // empty when the collection succeeded
}

// GCTotals sum up the collections since the store opened.
type GCTotals struct {
	// Runs and DryRuns count collections that finished; RunFailures and DryRunFailures
	// those that failed (cancelled ones included). RunTime and DryRunTime are the time
	// all of them took, failed ones included.
	Runs, RunFailures, DryRuns, DryRunFailures int64
	RunTime, DryRunTime                        time.Duration
	// What real (not dry) collections gave back.
	BlocksReclaimed, BytesReclaimed, ValueLogFilesRewritten int64
	// LastSuccess is when the last real collection that succeeded started; zero if none.
	LastSuccess time.Time
	// Last is the most recent collection of any kind; its Start is zero if none ran.
	Last GCRun
}

// gcHistoryLen is how many collections GCHistory remembers.
const gcHistoryLen = 50

// gcHistory is a ring of the last collections plus running totals. Collections are
// rare (one at a time, hourly by default), so a mutex costs nothing here.
type gcHistory struct {
	mu     sync.Mutex
	runs   ring[GCRun] // made by Open
	totals GCTotals
}

// recordGC remembers a finished collection. GC defers it, so failed runs count too.
func (s *Store) recordGC(start time.Time, rep GCReport, err error) {
	run := GCRun{Start: start, Duration: rep.Duration, Report: rep}
	if err != nil || run.Duration == 0 {
		run.Duration = time.Since(start) // a failed run returns before setting it
	}
	if err != nil {
		run.Err = err.Error()
	}
	h := &s.ctr.gc
	h.mu.Lock()
	defer h.mu.Unlock()
	h.runs.push(run)
	t := &h.totals
	t.Last = run
	switch {
	case rep.DryRun && err != nil:
		t.DryRunFailures++
	case rep.DryRun:
		t.DryRuns++
	case err != nil:
		t.RunFailures++
	default:
		t.Runs++
		t.LastSuccess = start
	}
	if rep.DryRun {
		t.DryRunTime += run.Duration
		return
	}
	t.RunTime += run.Duration
	// A failed run may have deleted blocks before it failed: its report says which.
	t.BlocksReclaimed += rep.BlocksReclaimed
	t.BytesReclaimed += rep.BytesReclaimed
	t.ValueLogFilesRewritten += int64(rep.ValueLogFilesRewritten)
}

// GCHistory returns the last 50 collections since the store opened, newest first.
func (s *Store) GCHistory() []GCRun {
	h := &s.ctr.gc
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.runs.newestFirst()
}

func (h *gcHistory) totalsCopy() GCTotals {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.totals
}
