package cas

import (
	"bytes"
	"context"
	"testing"

	"github.com/ebsd/ebsd/cas/castest"
)

// putBlocks stores n distinct blocks and returns their digests and contents.
func putBlocks(t *testing.T, s *Store, n int, seed uint64) ([]Digest, [][]byte) {
	t.Helper()
	ctx := context.Background()
	snap, err := s.StartSnapshot(ctx, StartParams{OwnerID: owner, VolumeSize: 1, TimeoutMinutes: 60})
	if err != nil {
		t.Fatal(err)
	}
	ds, blocks := make([]Digest, n), make([][]byte, n)
	for i := range n {
		blocks[i] = make([]byte, BlockSize)
		castest.CompressibleBlock(blocks[i], seed+uint64(i))
		ds[i] = Sum(blocks[i])
		if err := s.PutBlock(ctx, owner, snap.ID, int64(i), blocks[i], ds[i]); err != nil {
			t.Fatal(err)
		}
	}
	return ds, blocks
}

// stream reads blocks the way a sequential FUSE reader does: prefetch, then use. Every
// other block is used only once its prefetch finished, the others while it may still
// run, so both ways a stream's read finds its block are taken.
func stream(t *testing.T, c *BlockCache, ds []Digest, blocks [][]byte) {
	t.Helper()
	for i, d := range ds {
		if !c.Prefetch(d) { // the tests give more slots than they prefetch blocks
			t.Fatalf("prefetch of block %d refused", i)
		}
		if i%2 == 0 {
			fetched(t, c, d)
		}
		read(t, c, d, blocks[i], "streamed")
	}
}

// fetched waits until no fetch of d runs.
func fetched(t *testing.T, c *BlockCache, d Digest) {
	t.Helper()
	c.mu.Lock()
	f := c.flights[d]
	c.mu.Unlock()
	if f != nil {
		receive(t, f.done, "a fetch to finish")
	}
}

// read uses block d once, as a reader that is not a stream does, and checks its bytes.
func read(t *testing.T, c *BlockCache, d Digest, want []byte, what string) {
	t.Helper()
	b, release, err := c.Borrow(context.Background(), d)
	if err != nil || !bytes.Equal(b, want) {
		t.Fatalf("%s block %s: %v, bytes right: %v", what, d, err, err == nil && bytes.Equal(b, want))
	}
	release()
}

// A sequential stream does not push the cache's other blocks out, keeps only a few of
// the blocks it read, and decodes into the memory of those it read before.
func TestCacheStreamReusesBuffersAndKeepsTheRest(t *testing.T) {
	s := openTestStore(t)
	cache := NewBlockCache(s, 24*BlockSize, 128)
	t.Cleanup(cache.Close)
	hot, hotBlocks := putBlocks(t, s, 4, 1000)
	for i, d := range hot {
		read(t, cache, d, hotBlocks[i], "hot")
	}
	const n = 40 // more than the cache holds
	ds, blocks := putBlocks(t, s, n, 2000)
	stream(t, cache, ds, blocks)

	st := cache.Stats()
	if st.Blocks != len(hot)+behindBlocks {
		t.Fatalf("after streaming %d blocks the cache holds %d, want the %d others and %d behind the stream", n, st.Blocks, len(hot), behindBlocks)
	}
	if st.Reused < n-2*behindBlocks {
		t.Fatalf("streaming %d blocks reused %d buffers, want at least %d", n, st.Reused, n-2*behindBlocks)
	}
	hits := st.Hits
	for i, d := range hot {
		read(t, cache, d, hotBlocks[i], "hot, after the stream,")
	}
	if got := cache.Stats().Hits - hits; got != int64(len(hot)) {
		t.Fatalf("%d of %d blocks read before the stream were still cached", got, len(hot))
	}
}

// A buffer is never decoded into while a reader holds it: neither while a borrowed
// block is evicted and its neighbours' buffers reused, nor ever after Block handed it
// out.
func TestCacheNeverReusesHeldBuffers(t *testing.T) {
	s := openTestStore(t)
	cache := NewBlockCache(s, 16*BlockSize, 128)
	t.Cleanup(cache.Close)
	held, heldBlocks := putBlocks(t, s, 2, 3000)
	churn, churnBlocks := putBlocks(t, s, 4*behindBlocks, 4000)

	// The first block is read by a stream and stays borrowed while the stream goes on
	// far enough to evict it and reuse every buffer it can.
	cache.Prefetch(held[0])
	fetched(t, cache, held[0]) // so the borrow below finds it cached and pins it itself
	borrowed, release, err := cache.Borrow(context.Background(), held[0])
	if err != nil {
		t.Fatal(err)
	}
	// The second block is handed out by Block after a stream's prefetch.
	cache.Prefetch(held[1])
	escaped, err := cache.Block(context.Background(), held[1])
	if err != nil {
		t.Fatal(err)
	}
	// The stream evicts the first block from behind it; reads that are not a stream's
	// evict the second from the cache proper.
	stream(t, cache, churn, churnBlocks)
	for i, d := range churn {
		read(t, cache, d, churnBlocks[i], "churned")
	}
	if st := cache.Stats(); st.Reused == 0 {
		t.Fatalf("the stream reused no buffer (%+v): the test proves nothing", st)
	}
	if !bytes.Equal(borrowed, heldBlocks[0]) {
		t.Fatal("a borrowed block changed under its borrower")
	}
	release()
	stream(t, cache, churn, churnBlocks) // the first buffer is free to reuse now
	for i, d := range churn {
		read(t, cache, d, churnBlocks[i], "churned")
	}
	if !bytes.Equal(escaped, heldBlocks[1]) {
		t.Fatal("a block handed out by Block changed after it was evicted")
	}
}
