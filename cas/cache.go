package cas

import (
	"container/list"
	"context"
	"sync"
	"sync/atomic"
)

// BlockReader reads verified, decompressed blocks by digest. The slice it returns is
// shared and must not be modified.
type BlockReader interface {
	Block(ctx context.Context, d Digest) ([]byte, error)
}

// BlockCache is the process-wide cache of decompressed blocks in front of a Store.
// Blocks are deduplicated, so one cache serves every snapshot and every reader (API
// and FUSE). Concurrent misses on one block fetch it once; the fetch runs on its own,
// so a reader that gives up (an interrupted read, a closed connection) stops only its
// own wait and never cancels a fetch others wait on. A failed read is never cached.
//
// A sequential stream (FUSE readahead) asks for its blocks through Prefetch before it
// reads them through Borrow. Once read, such a block has done its work: the kernel's page
// cache now holds those bytes for that file. So it moves to a short list of blocks
// behind the streams and its buffer is soon decoded into again, instead of the stream
// pushing everything else out of the cache and each block costing fresh memory (page
// faults were a sixth of a cold read's CPU). Buffers are reused only when no reader
// holds them: Borrow pins a block until it is given back, and a block Block handed out
// is never reused at all.
type BlockCache struct {
	store    *Store
	capacity int // blocks, in lru and behind together

	mu      sync.Mutex
	entries map[Digest]*cached
	lru     *list.List // of *cached, front = most recent
	behind  *list.List // blocks streams have read, front = most recent
	flights map[Digest]*flight
	free    [][]byte // buffers to decode into again, at most freeBlocks

	prefetchSlots chan struct{} // bounds background fetches
	wg            sync.WaitGroup

	hits, misses, evictions, reused atomic.Int64
}

// behindBlocks bounds the blocks kept after a stream read them (4 MiB): enough for a
// request that ends inside a block and the next one that begins there, not more.
const behindBlocks = 8

// freeBlocks bounds the buffers kept for reuse (32 MiB). Fetches come in bursts (a
// stream prefetches up to 32 blocks ahead) and buffers come back one read at a time, so
// the list must hold about a burst or most buffers go to the garbage collector and the
// next burst faults in fresh memory again.
const freeBlocks = 64

type cached struct {
	d          Digest
	data       []byte
	el         *list.Element // in lru or behind; nil once evicted
	behind     bool          // el is in behind
	prefetched bool          // fetched for a stream and not read since
	refs       int           // borrowers holding it (and waiters handed it)
	escaped    bool          // handed out by Block: its buffer is never reused
}

type flight struct {
	done chan struct{}
	// Set under c.mu before done closes. waiters counts the readers waiting; each
	// is handed a pin on entry when the fetch succeeds.
	entry    *cached
	err      error
	waiters  int
	finished bool
}

// NewBlockCache returns a cache holding up to capacityBytes of blocks (at least one
// block) and running at most prefetch background fetches at once.
func NewBlockCache(store *Store, capacityBytes int64, prefetch int) *BlockCache {
	return &BlockCache{
		store:         store,
		capacity:      max(1, int(capacityBytes/BlockSize)),
		entries:       make(map[Digest]*cached),
		lru:           list.New(),
		behind:        list.New(),
		flights:       make(map[Digest]*flight),
		prefetchSlots: make(chan struct{}, max(1, prefetch)),
	}
}

// Block returns the block with digest d. Zero blocks come from memory. The caller may
// keep the slice as long as it likes: its buffer is never reused.
func (c *BlockCache) Block(ctx context.Context, d Digest) ([]byte, error) {
	if d == ZeroDigest {
		return c.store.zero, nil
	}
	e, err := c.acquire(ctx, d)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	e.escaped = true
	if e.behind {
		// Read beyond the stream that fetched it: an ordinary cached block now.
		c.behind.Remove(e.el)
		e.el, e.behind = c.lru.PushFront(e), false
	}
	c.releaseLocked(e)
	c.mu.Unlock()
	return e.data, nil
}

// Borrow returns the block with digest d and the function that gives it back. The slice
// is valid only until release is called (its buffer may be decoded into again
// afterwards), which must happen exactly once and soon: a borrowed block's memory
// cannot be reused.
func (c *BlockCache) Borrow(ctx context.Context, d Digest) (block []byte, release func(), err error) {
	if d == ZeroDigest {
		return c.store.zero, func() {}, nil
	}
	e, err := c.acquire(ctx, d)
	if err != nil {
		return nil, nil, err
	}
	return e.data, func() { c.release(e) }, nil
}

// acquire returns the cached entry for d, fetching it on a miss, pinned: its buffer is
// not reused until release.
func (c *BlockCache) acquire(ctx context.Context, d Digest) (*cached, error) {
	c.mu.Lock()
	if e, ok := c.entries[d]; ok {
		e.refs++ // before the touch, which may evict
		c.touchLocked(e)
		c.mu.Unlock()
		c.hits.Add(1)
		return e, nil
	}
	c.misses.Add(1)
	f := c.startLocked(d, false)
	f.waiters++
	c.mu.Unlock()
	select {
	case <-f.done:
		return f.entry, f.err
	case <-ctx.Done():
		c.mu.Lock()
		if !f.finished {
			f.waiters--
		} else if f.entry != nil {
			c.releaseLocked(f.entry) // the pin the fetch handed this reader
		}
		c.mu.Unlock()
		return nil, ctx.Err()
	}
}

// touchLocked records a read of a cached entry. A prefetched block read for the first
// time leaves the cache proper for the short list behind the streams.
func (c *BlockCache) touchLocked(e *cached) {
	switch {
	case e.prefetched:
		e.prefetched = false
		c.lru.Remove(e.el)
		e.el, e.behind = c.behind.PushFront(e), true
		c.trimLocked()
	case e.behind:
		c.behind.MoveToFront(e.el)
	default:
		c.lru.MoveToFront(e.el)
	}
}

func (c *BlockCache) release(e *cached) {
	c.mu.Lock()
	c.releaseLocked(e)
	c.mu.Unlock()
}

func (c *BlockCache) releaseLocked(e *cached) {
	e.refs--
	if e.el == nil {
		c.recycleLocked(e) // evicted while pinned
	}
}

// Prefetch starts fetching d in the background for a sequential stream unless it is
// cached or already being fetched. It never blocks: when every prefetch slot is busy it
// does nothing and returns false, so the caller can ask again later.
func (c *BlockCache) Prefetch(d Digest) bool {
	if d == ZeroDigest {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[d]; ok {
		return true
	}
	if _, ok := c.flights[d]; ok {
		return true
	}
	select {
	case c.prefetchSlots <- struct{}{}:
	default:
		return false
	}
	f := c.startLocked(d, true)
	go func() {
		<-f.done
		<-c.prefetchSlots
	}()
	return true
}

// startLocked returns the flight fetching d, starting one if needed. c.mu is held.
func (c *BlockCache) startLocked(d Digest, prefetched bool) *flight {
	if f, ok := c.flights[d]; ok {
		return f
	}
	f := &flight{done: make(chan struct{})}
	c.flights[d] = f
	buf := c.bufferLocked()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.store.opts.Hooks.blockLoad(d)
		data, err := c.store.ReadBlock(buf, d)
		c.mu.Lock()
		delete(c.flights, d)
		f.finished, f.err = true, err
		if err == nil {
			f.entry = c.insertLocked(d, data, prefetched, f.waiters)
		} else if len(c.free) < freeBlocks {
			c.free = append(c.free, buf[:0])
		}
		c.mu.Unlock()
		close(f.done)
	}()
	return f
}

// decodeSlack is spare capacity past a block in the buffer it is decoded into: with at
// least 16 bytes to spare after its last byte, zstd decodes a frame's final 128 KiB
// block with its fast copies instead of the bounds-exact ones (klauspost/compress
// useSafeDecodeSync), which took a third of the decode time in a cold read's profile.
const decodeSlack = 64

// bufferLocked returns an empty buffer for one decoded block: a reused one if any.
func (c *BlockCache) bufferLocked() []byte {
	if n := len(c.free); n > 0 {
		b := c.free[n-1]
		c.free = c.free[:n-1]
		c.reused.Add(1)
		return b
	}
	return make([]byte, 0, BlockSize+decodeSlack)
}

// insertLocked caches a fetched block, pinned once for each of refs waiting readers. A
// block prefetched for a stream that a reader already waits for has been read by it.
func (c *BlockCache) insertLocked(d Digest, data []byte, prefetched bool, refs int) *cached {
	if e, ok := c.entries[d]; ok {
		e.refs += refs
		return e // cannot happen while flights are per digest; kept safe regardless
	}
	e := &cached{d: d, data: data, refs: refs}
	switch {
	case prefetched && refs == 0:
		e.el, e.prefetched = c.lru.PushFront(e), true
	case prefetched:
		e.el, e.behind = c.behind.PushFront(e), true
	default:
		e.el = c.lru.PushFront(e)
	}
	c.entries[d] = e
	c.trimLocked()
	return e
}

// trimLocked evicts until the blocks behind the streams and the cache as a whole are
// within their bounds, the blocks behind the streams first.
func (c *BlockCache) trimLocked() {
	for c.behind.Len() > behindBlocks {
		c.evictLocked(c.behind.Back().Value.(*cached))
	}
	for c.lru.Len()+c.behind.Len() > c.capacity {
		if c.behind.Len() > 0 {
			c.evictLocked(c.behind.Back().Value.(*cached))
		} else {
			c.evictLocked(c.lru.Back().Value.(*cached))
		}
	}
}

// evictLocked pushes e out to make room.
func (c *BlockCache) evictLocked(e *cached) {
	c.evictions.Add(1)
	c.removeLocked(e)
}

// removeLocked takes e out of the cache; its buffer is reused once no reader holds it.
func (c *BlockCache) removeLocked(e *cached) {
	if e.behind {
		c.behind.Remove(e.el)
	} else {
		c.lru.Remove(e.el)
	}
	e.el, e.behind = nil, false
	delete(c.entries, e.d)
	c.recycleLocked(e)
}

// recycleLocked keeps an evicted entry's buffer for the next fetch, unless a reader
// still holds it or may hold it for ever (Block).
func (c *BlockCache) recycleLocked(e *cached) {
	if e.refs > 0 || e.escaped || e.data == nil || len(c.free) >= freeBlocks {
		return
	}
	c.free = append(c.free, e.data[:0])
	e.data = nil // a use after this is a nil slice, never another block's bytes
}

// Drop empties the cache (cold-read benchmarks use it).
func (c *BlockCache) Drop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range []*list.List{c.lru, c.behind} {
		for l.Len() > 0 {
			c.removeLocked(l.Back().Value.(*cached))
		}
	}
}

// CacheStats count cache hits, misses, evictions (blocks pushed out to make room) and
// reused buffers (fetches that decoded into an evicted block's memory) since start;
// Blocks are held now, of at most Capacity.
type CacheStats struct {
	Hits, Misses, Evictions, Reused int64
	Blocks, Capacity                int
}

// Stats returns the cache's counters.
func (c *BlockCache) Stats() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return CacheStats{Hits: c.hits.Load(), Misses: c.misses.Load(), Evictions: c.evictions.Load(),
		Reused: c.reused.Load(), Blocks: c.lru.Len() + c.behind.Len(), Capacity: c.capacity}
}

// Close waits for fetches in flight. The cache must not be used afterwards.
func (c *BlockCache) Close() { c.wg.Wait() }
