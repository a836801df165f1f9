package fusefs

import "github.com/ebsd/ebsd/cas"

// maxAhead bounds sequential prefetch (32 blocks = 16 MiB).
const maxAhead = 32

// seqSlack is how far from the expected offset a read may land and still count as
// sequential: the kernel issues readahead asynchronously, so requests arrive a little
// out of order.
const seqSlack = 4 * cas.BlockSize

// readAhead decides what one open image prefetches: the depth doubles while reads stay
// sequential and drops to nothing on a random read, and no block is asked for twice.
type readAhead struct {
	nextOff int64 // where a sequential reader reads next
	ahead   int   // prefetch depth in blocks
	issued  int64 // prefetch asked for up to (excluding) this index
}

// observe records a read of [off, end) bytes.
func (r *readAhead) observe(off, end int64) {
	if r.nextOff > 0 && off >= r.nextOff-seqSlack && off <= r.nextOff+seqSlack {
		r.ahead = min(max(2*r.ahead, 2), maxAhead)
		// A request the kernel sent earlier may arrive after a later one: never move
		// the expected offset backwards while the stream goes on.
		r.nextOff = max(r.nextOff, end)
		return
	}
	// A random read (or a seek back to re-read): start over from here, so a new
	// sequential stream is recognised wherever it begins.
	r.ahead, r.issued, r.nextOff = 0, 0, end
}

// depth is how many blocks past a read to resolve and prefetch.
func (r *readAhead) depth() int64 { return int64(r.ahead) }

// plan returns the blocks to prefetch after a read ending in block last: those with
// data among the next depth() blocks that were not asked for before. slots must hold
// the view's slots up to last+depth(), ascending; earlier ones are ignored.
func (r *readAhead) plan(last int64, slots []cas.Slot) []cas.Slot {
	if r.ahead == 0 {
		return nil
	}
	from, to := max(last+1, r.issued), last+int64(r.ahead)
	var out []cas.Slot
	for _, s := range slots {
		if s.Index >= from && s.Index <= to && s.Digest != cas.ZeroDigest {
			out = append(out, s)
		}
	}
	r.issued = max(r.issued, to+1)
	return out
}

// refused says the prefetch of block index and the ones planned after it were not
// started (every prefetch slot was busy): plan them again on the next read.
func (r *readAhead) refused(index int64) { r.issued = min(r.issued, index) }
