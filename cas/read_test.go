package cas

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/ebsd/ebsd/cas/castest"
)

const owner = "111122223333"

func openTestStore(t *testing.T) *Store {
	t.Helper()
	return openTestStoreWith(t, Options{})
}

// openTestStoreWith opens a store on a temp dir with opts (Dir and ExpireInterval are
// set here) and closes it when the test ends.
func openTestStoreWith(t *testing.T, opts Options) *Store {
	t.Helper()
	opts.Dir, opts.ExpireInterval = t.TempDir(), -1
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func putOne(t *testing.T, s *Store, data []byte) Digest {
	t.Helper()
	ctx := context.Background()
	snap, err := s.StartSnapshot(ctx, StartParams{OwnerID: owner, VolumeSize: 1, TimeoutMinutes: 60})
	if err != nil {
		t.Fatal(err)
	}
	d := Sum(data)
	if err := s.PutBlock(ctx, owner, snap.ID, 0, data, d); err != nil {
		t.Fatal(err)
	}
	return d
}

// corrupt overwrites a stored block with other bytes under the same key.
func corrupt(t *testing.T, s *Store, d Digest) {
	t.Helper()
	if err := s.db.Update(func(txn *badger.Txn) error {
		return txn.SetEntry(badger.NewEntry(blockKey(d), bytes.Repeat([]byte{0x42}, BlockSize)).WithMeta(byte(codecRaw)))
	}); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptBlockIsNeverServed(t *testing.T) {
	s := openTestStore(t)
	data := make([]byte, BlockSize)
	castest.CompressibleBlock(data, 1)
	d := putOne(t, s, data)
	if got, err := s.ReadBlock(nil, d); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadBlock before corruption: %v", err)
	}
	corrupt(t, s, d)
	if _, err := s.ReadBlock(nil, d); !errors.Is(err, ErrCorruptBlock) {
		t.Fatalf("ReadBlock of a corrupt block: %v, want ErrCorruptBlock", err)
	}
	cache := NewBlockCache(s, 16*BlockSize, 2)
	defer cache.Close()
	for range 2 { // the failure is not cached: the second read goes to the store again
		if _, err := cache.Block(context.Background(), d); !errors.Is(err, ErrCorruptBlock) {
			t.Fatalf("cache served a corrupt block: %v", err)
		}
	}
	if st := cache.Stats(); st.Blocks != 0 || st.Misses != 2 {
		t.Fatalf("cache after failed reads: %+v", st)
	}
}

// waitCtx is a reader's context that reports when the reader starts waiting on it:
// BlockCache.Block looks at ctx.Done() only once it has joined (or started) the fetch
// of its block, so the first Done call says "this reader now waits for the load".
type waitCtx struct {
	context.Context
	once    sync.Once
	waiting chan<- struct{}
}

func (c *waitCtx) Done() <-chan struct{} {
	c.once.Do(func() { c.waiting <- struct{}{} })
	return c.Context.Done()
}

// receive waits for ch, or fails the test after a deadline instead of hanging.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// Concurrent readers of one uncached block cause exactly one load from the store, and a
// reader that gives up — even the one whose miss started the load — gets its context
// error at once while the others still get the block from that same load.
func TestCacheSingleFlightAndCancel(t *testing.T) {
	// Every load of a block from the store is counted and held until release closes,
	// so the readers below provably overlap one load in progress.
	var loads atomic.Int32
	firstLoad, release := make(chan struct{}), make(chan struct{})
	s := openTestStoreWith(t, Options{Hooks: Hooks{BlockLoad: func(Digest) {
		if loads.Add(1) == 1 {
			close(firstLoad)
		}
		<-release
	}}})
	data := make([]byte, BlockSize)
	castest.CompressibleBlock(data, 2)
	d := putOne(t, s, data)
	cache := NewBlockCache(s, 4*BlockSize, 2)
	t.Cleanup(cache.Close)
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unblock) // runs before cache.Close: a failed test never leaves a load held

	type result struct {
		data []byte
		err  error
	}
	const readers = 32
	waiting := make(chan struct{}, readers+1)

	// The first reader misses, starts the load, and waits on a context it will cancel.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := make(chan result, 1)
	go func() {
		b, err := cache.Block(&waitCtx{Context: ctx, waiting: waiting}, d)
		first <- result{b, err}
	}()
	receive(t, firstLoad, "the first reader's load to start")
	receive(t, waiting, "the first reader to wait for its load")

	// 32 more readers join while that load is held.
	results := make(chan result, readers)
	for range readers {
		go func() {
			b, err := cache.Block(&waitCtx{Context: context.Background(), waiting: waiting}, d)
			results <- result{b, err}
		}()
	}
	for i := range readers {
		receive(t, waiting, fmt.Sprintf("reader %d of %d to wait for the load", i+1, readers))
	}

	// The reader that started the load gives up: it returns its context error while the
	// load is still held, so it did not wait for the load.
	cancel()
	if r := receive(t, first, "the cancelled reader to return while the load is held"); !errors.Is(r.err, context.Canceled) || r.data != nil {
		t.Fatalf("cancelled reader got %d bytes, %v; want context.Canceled", len(r.data), r.err)
	}
	if n := loads.Load(); n != 1 {
		t.Fatalf("%d readers waiting on one block started %d loads, want 1", readers+1, n)
	}
	if len(results) != 0 {
		t.Fatal("a reader returned before the only load of its block finished")
	}

	// Its giving up did not cancel the load: every other reader gets the block from it.
	unblock()
	for i := range readers {
		r := receive(t, results, fmt.Sprintf("reader %d of %d to get the block", i+1, readers))
		if r.err != nil || !bytes.Equal(r.data, data) {
			t.Fatalf("reader waiting with the cancelled one: %v", r.err)
		}
	}
	if n := loads.Load(); n != 1 {
		t.Fatalf("%d loads of one block, want 1", n)
	}
	if st := cache.Stats(); st.Misses != readers+1 || st.Hits != 0 || st.Blocks != 1 {
		t.Fatalf("cache after %d concurrent misses: %+v, want %d misses, 0 hits, 1 block", readers+1, st, readers+1)
	}

	// Afterwards the block is a hit, and the zero block never touches the store.
	if b, err := cache.Block(context.Background(), d); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("cached read: %v", err)
	}
	if zero, err := cache.Block(context.Background(), ZeroDigest); err != nil || !bytes.Equal(zero, make([]byte, BlockSize)) {
		t.Fatalf("zero block: %v", err)
	}
	if n, st := loads.Load(), cache.Stats(); n != 1 || st.Hits != 1 {
		t.Fatalf("after a cached and a zero read: %d loads, %+v; want 1 load and 1 hit", n, st)
	}
}

func TestCacheEvictsToCapacity(t *testing.T) {
	s := openTestStore(t)
	cache := NewBlockCache(s, 3*BlockSize, 2)
	defer cache.Close()
	for i := range 10 {
		data := make([]byte, BlockSize)
		castest.CompressibleBlock(data, uint64(100+i))
		if _, err := cache.Block(context.Background(), putOne(t, s, data)); err != nil {
			t.Fatal(err)
		}
	}
	if st := cache.Stats(); st.Blocks != 3 {
		t.Fatalf("cache holds %d blocks, capacity 3", st.Blocks)
	}
}

// Every codec round-trips, whatever the store's current setting.
func TestCodecsRoundTrip(t *testing.T) {
	data := make([]byte, BlockSize)
	castest.CompressibleBlock(data, 3)
	random := bytes.Clone(data)
	for i := range random { // incompressible: stored raw
		random[i] = byte(i*7919 + i>>3*31)
	}
	for _, kind := range []Compression{CompressZstd, CompressS2, CompressNone} {
		c, err := newCompressor(kind)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range [][]byte{data, random} {
			val, tag := c.encode(make([]byte, 0, BlockSize*2), in)
			out, err := c.decode(nil, val, tag)
			if err != nil || !bytes.Equal(out, in) {
				t.Fatalf("%s round trip: %v", kind, err)
			}
		}
		c.close()
	}
}
