package fusefs

import (
	"context"
	"sort"

	"github.com/ebsd/ebsd/cas"
)

// slotSource lists a view's slots from index start on, ascending, until fn returns
// false; (*cas.View).From is one.
type slotSource func(ctx context.Context, start int64, fn func(cas.Slot) bool) error

// windowBlocks is how many block indices one block-map resolution covers (512 MiB).
const windowBlocks = 1024

// slotWindow remembers one resolved stretch of a view's block map, so sequential reads
// merge each stretch of the lineage's maps once instead of once per read.
type slotWindow struct {
	start, end int64      // the window covers indices [start, end)
	slots      []cas.Slot // the slots in [start, end), ascending
}

// between returns the slots with index in [first, last], resolving a new window
// starting at first when the current one does not cover that range. The window spans
// at least windowBlocks indices, more when the range asks for more.
func (w *slotWindow) between(ctx context.Context, src slotSource, first, last int64) ([]cas.Slot, error) {
	if first < w.start || last >= w.end {
		start, end := first, max(last+1, first+windowBlocks)
		var slots []cas.Slot
		err := src(ctx, start, func(s cas.Slot) bool {
			if s.Index >= end {
				return false
			}
			slots = append(slots, s)
			return true
		})
		if err != nil {
			return nil, err
		}
		w.start, w.end, w.slots = start, end, slots
	}
	return upTo(w.slots[sort.Search(len(w.slots), func(i int) bool { return w.slots[i].Index >= first }):], last), nil
}

// upTo returns the leading slots of an ascending list whose index is at most last.
func upTo(slots []cas.Slot, last int64) []cas.Slot {
	return slots[:sort.Search(len(slots), func(i int) bool { return slots[i].Index > last })]
}
