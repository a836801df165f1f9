package cas

// Hooks are test seams: callbacks at points inside the store that no API exposes, so
// that a test can count work the store does (one load per block, however many readers
// wait for it) and stop a process at an exact point (kill -9 in the middle of a
// collection). Production code leaves them zero; an unset hook costs one comparison.
type Hooks struct {
	// BlockLoad runs in the block cache's fetch, just before the block is read from the
	// store: once per load, not once per reader. It may block; the load waits.
	BlockLoad func(d Digest)
	// GCStage runs when a collection (dry or not) reaches stage, with that stage's count.
	// It runs with the collection lock held and may block; the collection waits.
	GCStage func(stage GCStage, n int)
}

// GCStage names a point a collection passes (DESIGN.md rule 10), in order.
type GCStage string

const (
	// GCReleased: the block maps of deleted snapshots nothing needs are dropped; n is
	// how many this collection dropped. No block is deleted yet.
	GCReleased GCStage = "released"
	// GCMarked: every digest a block map references is marked; n is how many.
	GCMarked GCStage = "marked"
	// GCSweeping: one stripe's unreferenced blocks are deleted (committed, not yet
	// synced); n is the blocks deleted so far. Reached once per stripe with garbage.
	GCSweeping GCStage = "sweeping"
	// GCSwept: every unreferenced block is deleted and synced; n is how many. The
	// value log has not been rewritten yet.
	GCSwept GCStage = "swept"
	// GCValueLogRewritten: one more value-log file is rewritten; n is how many so far.
	GCValueLogRewritten GCStage = "vlog-rewritten"
)

// SetGCStageHook sets Hooks.GCStage on an open store, for a test that cannot reach the
// Options the store was opened with (the daemon opens its own). It waits for a running
// collection to finish; the hook is read under the same lock, so setting it while the
// store serves is safe.
func (s *Store) SetGCStageHook(fn func(stage GCStage, n int)) {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	s.opts.Hooks.GCStage = fn
}

// gcStage calls the GCStage hook, if any. s.gcMu is held.
func (s *Store) gcStage(stage GCStage, n int) {
	if fn := s.opts.Hooks.GCStage; fn != nil {
		fn(stage, n)
	}
}

// blockLoad calls the BlockLoad hook, if any. Hooks.BlockLoad is only ever set before
// Open, so reading it needs no lock.
func (h *Hooks) blockLoad(d Digest) {
	if h.BlockLoad != nil {
		h.BlockLoad(d)
	}
}
