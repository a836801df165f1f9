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
type BlockCache struct {
	store    *Store
	capacity int // blocks

	mu      sync.Mutex
	entries map[Digest]*list.Element // of *cached
	lru     *list.List               // front = most recent
	flights map[Digest]*flight

	prefetchSlots chan struct{} // bounds background fetches
	wg            sync.WaitGroup

	hits, misses, evictions atomic.Int64
}

type cached struct {
	d    Digest
	data []byte
}

type flight struct {
	done chan struct{}
	data []byte
	err  error
}

// NewBlockCache returns a cache holding up to capacityBytes of blocks (at least one
// block) and running at most prefetch background fetches at once.
func NewBlockCache(store *Store, capacityBytes int64, prefetch int) *BlockCache {
	return &BlockCache{
		store:         store,
		capacity:      max(1, int(capacityBytes/BlockSize)),
		entries:       make(map[Digest]*list.Element),
		lru:           list.New(),
		flights:       make(map[Digest]*flight),
		prefetchSlots: make(chan struct{}, max(1, prefetch)),
	}
}

// Block returns the block with digest d. Zero blocks come from memory.
func (c *BlockCache) Block(ctx context.Context, d Digest) ([]byte, error) {
	if d == ZeroDigest {
		return c.store.zero, nil
	}
	c.mu.Lock()
	if el, ok := c.entries[d]; ok {
		c.lru.MoveToFront(el)
		c.mu.Unlock()
		c.hits.Add(1)
		return el.Value.(*cached).data, nil
	}
	c.misses.Add(1)
	f := c.startLocked(d)
	c.mu.Unlock()
	select {
	case <-f.done:
		return f.data, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Prefetch starts fetching d in the background unless it is cached or already being
// fetched. It never blocks: when every prefetch slot is busy it does nothing and
// returns false, so the caller can ask again later.
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
	f := c.startLocked(d)
	go func() {
		<-f.done
		<-c.prefetchSlots
	}()
	return true
}

// startLocked returns the flight fetching d, starting one if needed. c.mu is held.
func (c *BlockCache) startLocked(d Digest) *flight {
	if f, ok := c.flights[d]; ok {
		return f
	}
	f := &flight{done: make(chan struct{})}
	c.flights[d] = f
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.store.opts.Hooks.blockLoad(d)
		data, err := c.store.ReadBlock(newBlockBuffer(), d)
		c.mu.Lock()
		delete(c.flights, d)
		if err == nil {
			c.insertLocked(d, data)
		}
		c.mu.Unlock()
		f.data, f.err = data, err
		close(f.done)
	}()
	return f
}

// decodeSlack is spare capacity past a block in the buffer it is decoded into: with at
// least 16 bytes to spare after its last byte, zstd decodes a frame's final 128 KiB
// block with its fast copies instead of the bounds-exact ones (klauspost/compress
// useSafeDecodeSync), which took a third of the decode time in a cold read's profile.
const decodeSlack = 64

// newBlockBuffer returns an empty buffer for one decoded block.
func newBlockBuffer() []byte { return make([]byte, 0, BlockSize+decodeSlack) }

func (c *BlockCache) insertLocked(d Digest, data []byte) {
	if _, ok := c.entries[d]; ok {
		return
	}
	c.entries[d] = c.lru.PushFront(&cached{d: d, data: data})
	for c.lru.Len() > c.capacity {
		old := c.lru.Remove(c.lru.Back()).(*cached)
		delete(c.entries, old.d)
		c.evictions.Add(1)
	}
}

// Drop empties the cache (cold-read benchmarks use it).
func (c *BlockCache) Drop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries = make(map[Digest]*list.Element)
	c.lru.Init()
}

// CacheStats count cache hits, misses and evictions (blocks pushed out to make room)
// since start; Blocks are held now, of at most Capacity.
type CacheStats struct {
	Hits, Misses, Evictions int64
	Blocks, Capacity        int
}

// Stats returns the cache's counters.
func (c *BlockCache) Stats() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return CacheStats{Hits: c.hits.Load(), Misses: c.misses.Load(), Evictions: c.evictions.Load(),
		Blocks: c.lru.Len(), Capacity: c.capacity}
}

// Close waits for fetches in flight. The cache must not be used afterwards.
func (c *BlockCache) Close() { c.wg.Wait() }
