package cas

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/ebsd/ebsd/cas/core"
)

// SnapshotUsage is what one live snapshot costs the store.
type SnapshotUsage struct {
	// WrittenBlocks are the non-zero blocks the snapshot wrote itself (its own block map
	// without written zeros; inherited blocks are its ancestors'). WrittenBytes is their
	// logical size.
	WrittenBlocks int64 `json:"writtenBlocks"`
	WrittenBytes  int64 `json:"writtenBytes"`
	// UniqueBlocks are the distinct blocks this snapshot's point-in-time view shows and no
	// other live snapshot's view does: the data only this snapshot keeps. UniqueBytes is
	// their logical size, StoredBytes their compressed size in the store.
	UniqueBlocks int64 `json:"uniqueBlocks"`
	UniqueBytes  int64 `json:"uniqueBytes"`
	StoredBytes  int64 `json:"storedBytes"`
}

// Usage is the storage efficiency of the store: per live snapshot, and in total the
// funnel logical → written → unique → stored. Live means not deleted (pending and
// error snapshots included).
type Usage struct {
	// Computed is when the scan ran (the store's clock), Duration how long it took.
	Computed time.Time     `json:"computed"`
	Duration time.Duration `json:"durationNs"`
	// Snapshots holds every snapshot live when the scan began, by id.
	Snapshots map[string]SnapshotUsage `json:"snapshots"`

	// LogicalBytes is the sum of the live snapshots' volume sizes: what full copies would take.
	LogicalBytes int64 `json:"logicalBytes"`
	// WrittenBytes is the sum of what the live snapshots wrote themselves, zeros excluded:
	// what incremental, zero-skipping copies would take.
	WrittenBytes int64 `json:"writtenBytes"`
	// UniqueBlocks are the distinct non-zero blocks the live snapshots' views show,
	// UniqueBytes their logical size (after deduplication), StoredBytes their compressed
	// size.
	UniqueBlocks int64 `json:"uniqueBlocks"`
	UniqueBytes  int64 `json:"uniqueBytes"`
	StoredBytes  int64 `json:"storedBytes"`
	// OtherBlocks are stored blocks no live view shows, OtherStoredBytes their size:
	// blocks of deleted snapshots that live descendants read through but overwrote, and
	// garbage the next collection removes.
	OtherBlocks      int64 `json:"otherBlocks"`
	OtherStoredBytes int64 `json:"otherStoredBytes"`
	// DiskBytes is the space the data directory takes on disk.
	DiskBytes int64 `json:"diskBytes"`

	// Passes is how many passes over the block maps the scan made, PeakTracked the most
	// digests it held in memory at once (see usageMaxTracked).
	Passes      int `json:"passes"`
	PeakTracked int `json:"peakTracked"`
}

// usageMaxTracked bounds the digests a usage scan holds in memory at once (about 60
// bytes each in a Go map, so some 30 MiB). A store with more stored blocks is scanned
// in several passes, each over a slice of the digest space holding at most this many
// stored blocks; memory then stays bounded and time grows with the number of passes.
const usageMaxTracked = 1 << 19

// AllSnapshots returns every live (not deleted) snapshot of every owner, in no
// particular order. It is for the operator's status page; the APIs list per owner.
func (s *Store) AllSnapshots() []Snapshot {
	return s.snapshotsWhere(func(e *entry) bool { return !e.deleted.Load() })
}

// Usage scans the block maps and blocks for per-snapshot and total storage efficiency.
// It reads every block-map entry once per pass and every block key twice, within one
// read transaction, so it costs O(passes × map entries + blocks): a status page may
// call it, but should cache the result. Memory is O(snapshots) plus at most
// usageMaxTracked digests, whatever the store's size.
func (s *Store) Usage(ctx context.Context) (Usage, error) {
	return s.usage(ctx, usageMaxTracked)
}

func (s *Store) usage(ctx context.Context, maxTracked int) (Usage, error) {
	began := time.Now()
	u := Usage{Computed: s.clock.Now(), Snapshots: make(map[string]SnapshotUsage)}
	f := newForest(s.allEntries())
	per := make([]SnapshotUsage, len(f.nodes))
	err := s.view(ctx, func(txn core.CatalogTx) error {
		hist, err := s.blockHistogram(ctx)
		if err != nil {
			return err
		}
		ranges := passRanges(&hist, maxTracked)
		u.Passes = len(ranges)
		for pass, r := range ranges {
			// refs maps each referenced digest of this pass's slice to the one live node
			// whose view shows it, or to -1 when two or more do.
			refs := make(map[Digest]int32)
			err := f.eachIndex(ctx, txn, func(ws []write) {
				for k, w := range ws {
					if w.digest == ZeroDigest {
						continue
					}
					if pass == 0 && f.nodes[w.node].live {
						per[w.node].WrittenBlocks++
					}
					if !r.holds(w.digest) {
						continue
					}
					n, only := f.viewers(ws, k)
					if n == 0 {
						continue // overwritten in every live view below a deleted writer
					}
					if prev, seen := refs[w.digest]; n > 1 || (seen && prev != only) {
						refs[w.digest] = -1
					} else {
						refs[w.digest] = only
					}
				}
			})
			if err != nil {
				return err
			}
			u.PeakTracked = max(u.PeakTracked, len(refs))
			if err := r.eachBlock(ctx, s.blocks, func(d Digest, size int64) {
				who, ok := refs[d]
				switch {
				case !ok:
					u.OtherBlocks++
					u.OtherStoredBytes += size
				case who >= 0:
					per[who].UniqueBlocks++
					per[who].StoredBytes += size
					fallthrough
				default:
					u.UniqueBlocks++
					u.StoredBytes += size
				}
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return Usage{}, fmt.Errorf("cas: usage: %w", err)
	}
	for i, n := range f.nodes {
		if !n.live {
			continue
		}
		p := per[i]
		p.WrittenBytes = p.WrittenBlocks * BlockSize
		p.UniqueBytes = p.UniqueBlocks * BlockSize
		u.Snapshots[n.snap.ID] = p
		u.LogicalBytes += n.snap.VolumeSize << 30
		u.WrittenBytes += p.WrittenBytes
	}
	u.UniqueBytes = u.UniqueBlocks * BlockSize
	u.DiskBytes = dirBytes(s.opts.Dir)
	u.Duration = time.Since(began)
	return u, nil
}

// allEntries copies the catalog: live and deleted snapshots alike, since views read
// through deleted ancestors.
func (s *Store) allEntries() []Snapshot {
	return s.snapshotsWhere(func(*entry) bool { return true })
}

// digestBuckets splits the digest space by its first two bytes. SHA-256 digests spread
// evenly over them, and 65536 buckets let passes be cut finely.
const digestBuckets = 1 << 16

func bucketOf(d Digest) int { return int(d[0])<<8 | int(d[1]) }

// blockHistogram counts the stored blocks in each digest bucket.
func (s *Store) blockHistogram(ctx context.Context) ([digestBuckets]int, error) {
	var hist [digestBuckets]int
	err := s.blocks.Walk(ctx, Digest{}, func(d Digest, _ int64) error {
		hist[bucketOf(d)]++
		return nil
	})
	return hist, err
}

// digestRange is the slice of digest buckets [lo, hi) one pass looks at.
type digestRange struct{ lo, hi int }

func (r digestRange) holds(d Digest) bool { b := bucketOf(d); return b >= r.lo && b < r.hi }

// passRanges cuts the buckets into consecutive ranges of at most maxTracked stored
// blocks each (a single bucket over the limit gets a range of its own). Referenced
// digests are stored blocks, so a pass holds at most maxTracked of them.
func passRanges(hist *[digestBuckets]int, maxTracked int) []digestRange {
	var out []digestRange
	lo, sum := 0, 0
	for b, n := range hist {
		if sum+n > maxTracked && b > lo {
			out = append(out, digestRange{lo, b})
			lo, sum = b, 0
		}
		sum += n
	}
	return append(out, digestRange{lo, digestBuckets})
}

// errPastRange ends a walk that has left a digest range.
var errPastRange = errors.New("past the range")

// eachBlock calls fn with the digest and stored size of every block in the range.
func (r digestRange) eachBlock(ctx context.Context, blocks BlockStore, fn func(Digest, int64)) error {
	from := Digest{byte(r.lo >> 8), byte(r.lo)}
	err := blocks.Walk(ctx, from, func(d Digest, size int64) error {
		if bucketOf(d) >= r.hi {
			return errPastRange
		}
		fn(d, size)
		return nil
	})
	if errors.Is(err, errPastRange) {
		return nil
	}
	return err
}

// forest is the catalog's lineage trees laid out in depth-first order, so that a
// snapshot's descendants are exactly the positions (in, out) after its own.
type forest struct {
	nodes     []forestNode // indexed by DFS position
	livePos   []int32      // positions of live nodes, ascending
	liveUpTo  []int32      // liveUpTo[p]: live nodes at positions < p
	treeEnds  []int32      // position where each tree ends, ascending
	treeStart []int32      // position where each tree starts
}

type forestNode struct {
	snap Snapshot
	live bool
	out  int32 // one past the last descendant's position
}

func newForest(snaps []Snapshot) *forest {
	byID := make(map[string]int, len(snaps))
	for i, s := range snaps {
		byID[s.ID] = i
	}
	children := make([][]int, len(snaps))
	var roots []int
	for i, s := range snaps {
		if p, ok := byID[s.ParentID]; ok && s.ParentID != "" && p != i {
			children[p] = append(children[p], i)
		} else {
			roots = append(roots, i) // a parent whose record was dropped makes a root too
		}
	}
	f := &forest{nodes: make([]forestNode, 0, len(snaps))}
	visited := make([]bool, len(snaps))
	type frame struct{ snap, pos int }
	var stack []frame
	// Iterative depth-first walk: lineages may be thousands deep. The final loop over
	// unvisited nodes only matters for a corrupt catalog with a parent cycle.
	walk := func(root int) {
		if visited[root] {
			return
		}
		f.treeStart = append(f.treeStart, int32(len(f.nodes)))
		push := func(i int) {
			visited[i] = true
			stack = append(stack, frame{i, len(f.nodes)})
			f.nodes = append(f.nodes, forestNode{snap: snaps[i], live: snaps[i].DeletedAt.IsZero()})
		}
		push(root)
		for len(stack) > 0 {
			top := &stack[len(stack)-1]
			if kids := children[top.snap]; len(kids) > 0 {
				next := kids[len(kids)-1]
				children[top.snap] = kids[:len(kids)-1]
				if !visited[next] {
					push(next)
				}
				continue
			}
			f.nodes[top.pos].out = int32(len(f.nodes))
			stack = stack[:len(stack)-1]
		}
		f.treeEnds = append(f.treeEnds, int32(len(f.nodes)))
	}
	for _, r := range roots {
		walk(r)
	}
	for i := range snaps {
		walk(i)
	}
	f.liveUpTo = make([]int32, len(f.nodes)+1)
	for p, n := range f.nodes {
		f.liveUpTo[p+1] = f.liveUpTo[p]
		if n.live {
			f.liveUpTo[p+1]++
			f.livePos = append(f.livePos, int32(p))
		}
	}
	return f
}

// write is one block-map entry at the index being merged: who wrote what.
type write struct {
	node   int32 // DFS position of the writer
	digest Digest
}

// viewers says how many live snapshots' views show the block ws[k] wrote, and which one
// when exactly one does. ws holds every write at one index of one tree, ascending by
// position. The block is in the views of the writer's subtree, except the subtrees of
// its nearest descendants that wrote the index again.
func (f *forest) viewers(ws []write, k int) (n int32, only int32) {
	x := ws[k].node
	end := f.nodes[x].out
	lastGap := int32(-1) // start of the last gap with a live node
	gap := func(lo, hi int32) {
		if c := f.liveUpTo[hi] - f.liveUpTo[lo]; c > 0 {
			n += c
			lastGap = lo
		}
	}
	p := x
	for _, y := range ws[k+1:] {
		if y.node >= end {
			break
		}
		if y.node < p {
			continue // inside a subtree already cut off
		}
		gap(p, y.node)
		p = f.nodes[y.node].out
	}
	gap(p, end)
	if n != 1 {
		return n, -1
	}
	i := sort.Search(len(f.livePos), func(i int) bool { return f.livePos[i] >= lastGap })
	return 1, f.livePos[i]
}

// eachIndex calls fn once for every block index written in any map of a tree, tree by
// tree, with all the writes at that index in ascending position. One cursor per
// snapshot of the tree is open at a time.
func (f *forest) eachIndex(ctx context.Context, txn core.CatalogTx, fn func([]write)) error {
	for t, start := range f.treeStart {
		if err := f.mergeTree(ctx, txn, start, f.treeEnds[t], fn); err != nil {
			return err
		}
	}
	return nil
}

func (f *forest) mergeTree(ctx context.Context, txn core.CatalogTx, start, end int32, fn func([]write)) error {
	var h cursorHeap
	for p := start; p < end; p++ {
		if f.nodes[p].snap.MapReleased {
			continue
		}
		c, err := newMapCursor(txn, f.nodes[p].snap.ID, 0)
		if err != nil {
			return err
		}
		if !c.valid() {
			continue
		}
		h = append(h, &heapCursor{mapCursor: c, node: p, at: c.index()})
	}
	heap.Init(&h)
	var ws []write
	for len(h) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		index := h[0].at
		ws = ws[:0]
		for len(h) > 0 && h[0].at == index {
			c := h[0]
			ws = append(ws, write{node: c.node, digest: c.digest()})
			if err := c.next(); err != nil {
				return err
			}
			if c.valid() {
				c.at = c.index()
				heap.Fix(&h, 0)
			} else {
				heap.Pop(&h)
			}
		}
		fn(ws)
	}
	return nil
}

// heapCursor is a block-map cursor ordered by (index, DFS position), so the writes at
// one index come off the heap ascending by position.
type heapCursor struct {
	*mapCursor
	node int32
	at   int64 // the block index the cursor is on
}

type cursorHeap []*heapCursor

func (h cursorHeap) Len() int { return len(h) }
func (h cursorHeap) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].node < h[j].node
}
func (h cursorHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *cursorHeap) Push(x any)   { *h = append(*h, x.(*heapCursor)) }
func (h *cursorHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	*h = old[:len(old)-1]
	return c
}
