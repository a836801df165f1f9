package diskcache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ebsd/ebsd/cas/blocktest"
	"github.com/ebsd/ebsd/cas/core"
)

// testTimeout bounds every wait of these tests, so a deadlock fails instead of hangs.
const testTimeout = 30 * time.Second

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func block(seed, size int, tag byte) core.StoredBlock {
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(seed*31 + i*7 + i>>8)
	}
	return core.StoredBlock{Digest: core.Sum(fmt.Appendf(data[:0:0], "%d %d %d", seed, size, tag)), Tag: tag, Data: data}
}

// fileSize is what a block's cache file takes.
func fileSize(b core.StoredBlock) int64 { return int64(len(b.Data) + overhead) }

func newCache(t *testing.T, inner core.BlockStore, dir string, maxBytes int64) *Cache {
	t.Helper()
	c, err := New(inner, dir, maxBytes, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustPut(t *testing.T, s core.BlockStore, blocks ...core.StoredBlock) {
	t.Helper()
	if err := s.Put(testContext(t), blocks); err != nil {
		t.Fatal(err)
	}
}

// wantRead reads d through s and checks it is b.
func wantRead(t *testing.T, s core.BlockStore, b core.StoredBlock) {
	t.Helper()
	err := s.Read(testContext(t), b.Digest, func(tag byte, data []byte) error {
		if tag != b.Tag || !bytes.Equal(data, b.Data) {
			return fmt.Errorf("read tag %#x and %d bytes, want tag %#x and %d bytes (equal: %v)",
				tag, len(data), b.Tag, len(b.Data), bytes.Equal(data, b.Data))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Read %s: %v", b.Digest, err)
	}
}

func wantStats(t *testing.T, c *Cache, hits, fetches int64) {
	t.Helper()
	st := c.Stats()
	if st.Hits != hits || st.Fetches != fetches {
		t.Fatalf("stats %+v: want %d hits and %d fetches", st, hits, fetches)
	}
}

func TestConformance(t *testing.T) {
	t.Run("Roomy", func(t *testing.T) {
		blocktest.Run(t, func(t *testing.T) core.BlockStore {
			return newCache(t, blocktest.NewMemory(), t.TempDir(), 64<<20)
		})
	})
	// Smaller than a full block: files come and go on every read.
	t.Run("Tiny", func(t *testing.T) {
		blocktest.Run(t, func(t *testing.T) core.BlockStore {
			return newCache(t, blocktest.NewMemory(), t.TempDir(), 48<<10)
		})
	})
}

func TestHitMiss(t *testing.T) {
	inner := blocktest.NewFaulty(blocktest.NewMemory())
	c := newCache(t, inner, t.TempDir(), 1<<20)
	a, b := block(1, 1000, 0x81), block(2, 0, 0x00)
	mustPut(t, c, a, b)

	wantRead(t, c, a)
	wantStats(t, c, 0, 1)
	wantRead(t, c, a)
	wantRead(t, c, a)
	wantStats(t, c, 2, 1)
	wantRead(t, c, b) // zero bytes of data are cached too
	wantRead(t, c, b)
	wantStats(t, c, 3, 2)
	if n := inner.Calls(blocktest.OpRead); n != 2 {
		t.Fatalf("inner store read %d times, want 2", n)
	}
	if st := c.Stats(); st.Files != 2 || st.Bytes != fileSize(a)+fileSize(b) || st.Misses != 2 {
		t.Fatalf("stats %+v", st)
	}

	// An absent block, or an inner failure, is not cached and is returned as it is.
	absent := block(3, 10, 0)
	err := c.Read(testContext(t), absent.Digest, func(byte, []byte) error { return errors.New("fn called") })
	if !errors.Is(err, core.ErrBlockNotFound) {
		t.Fatalf("Read of an absent block: %v", err)
	}
	inner.FailAlways(blocktest.OpRead, nil)
	mustPut(t, c, absent)
	err = c.Read(testContext(t), absent.Digest, func(byte, []byte) error { return errors.New("fn called") })
	if !errors.Is(err, blocktest.ErrInjected) || errors.Is(err, core.ErrBlockNotFound) {
		t.Fatalf("Read with the inner store failing: %v", err)
	}
	wantRead(t, c, a) // still a hit
	inner.ClearAll()
	wantRead(t, c, absent)
	if st := c.Stats(); st.Files != 3 {
		t.Fatalf("stats %+v: want 3 files", st)
	}

	// fn's error is returned as it is, on a hit and on a miss.
	stop := errors.New("stop")
	for range 2 {
		c.Invalidate(a.Digest)
		for range 2 {
			if err := c.Read(testContext(t), a.Digest, func(byte, []byte) error { return stop }); err != stop {
				t.Fatalf("Read whose fn failed: %v", err)
			}
		}
	}
}

func TestPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	c := newCache(t, blocktest.NewMemory(), dir, 1<<20)
	a := block(1, 100, 1)
	mustPut(t, c, a)
	wantRead(t, c, a)
	for path, want := range map[string]fs.FileMode{
		dir:                            fs.ModeDir | 0o700,
		filepath.Dir(c.path(a.Digest)): fs.ModeDir | 0o700,
		c.path(a.Digest):               0o600,
	} {
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode() != want {
			t.Errorf("%s: mode %v, want %v", path, info.Mode(), want)
		}
	}
}

func TestEviction(t *testing.T) {
	inner := blocktest.NewFaulty(blocktest.NewMemory())
	var blocks []core.StoredBlock
	for i := range 6 {
		blocks = append(blocks, block(i, 4000, byte(i)))
	}
	mustPut(t, inner, blocks...)
	dir := t.TempDir()
	// Room for three files.
	bound := 3*fileSize(blocks[0]) + 10
	c := newCache(t, inner, dir, bound)
	a, b, cc, d := blocks[0], blocks[1], blocks[2], blocks[3]
	wantRead(t, c, a)
	wantRead(t, c, b)
	wantRead(t, c, cc)
	wantRead(t, c, a) // a is now more recent than b
	wantRead(t, c, d) // evicts b, the least recently used
	st := c.Stats()
	if st.Files != 3 || st.Bytes > bound || st.Evictions != 1 {
		t.Fatalf("stats %+v, bound %d", st, bound)
	}
	if _, err := os.Stat(c.path(b.Digest)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("b's file after its eviction: %v", err)
	}
	reads := inner.Calls(blocktest.OpRead)
	wantRead(t, c, a)
	wantRead(t, c, cc)
	wantRead(t, c, d)
	if n := inner.Calls(blocktest.OpRead); n != reads {
		t.Fatalf("reads of cached a, c, d went to the inner store (%d reads, were %d)", n, reads)
	}
	// Many more blocks than fit: the bound holds on disk too.
	for range 3 {
		for _, x := range blocks {
			wantRead(t, c, x)
		}
	}
	if got := diskBytes(t, dir); got > bound {
		t.Fatalf("files under %s hold %d bytes, over the bound %d", dir, got, bound)
	}
	if st := c.Stats(); st.Bytes > bound || st.Files != 3 {
		t.Fatalf("stats %+v, bound %d", st, bound)
	}

	// A block larger than the whole cache is served but not kept.
	big := block(99, int(bound), 7)
	mustPut(t, c, big)
	wantRead(t, c, big)
	wantRead(t, c, big)
	if _, err := os.Stat(c.path(big.Digest)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a block larger than the cache has a file: %v", err)
	}
}

// diskBytes sums the sizes of the files under dir.
func diskBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(path string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		info, err := de.Info()
		if err != nil {
			return err
		}
		n += info.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRestartReindexes(t *testing.T) {
	mem := blocktest.NewMemory()
	var blocks []core.StoredBlock
	for i := range 5 {
		blocks = append(blocks, block(i, 2000+i, byte(i)))
	}
	mustPut(t, mem, blocks...)
	dir := t.TempDir()
	c := newCache(t, mem, dir, 1<<20)
	for _, b := range blocks {
		wantRead(t, c, b)
	}
	// Modification times in the order blocks[0] oldest, blocks[4] newest.
	base := time.Now().Add(-10 * time.Hour)
	for i, b := range blocks {
		at := base.Add(time.Duration(i) * time.Minute)
		if err := os.Chtimes(c.path(b.Digest), at, at); err != nil {
			t.Fatal(err)
		}
	}
	// What a crash leaves: a temporary file, an empty file under a final name. And
	// a file that is none of the cache's.
	tmp := c.path(blocks[0].Digest) + ".tmp12345"
	empty := block(50, 10, 0)
	emptyPath := c.path(empty.Digest)
	foreign := filepath.Join(dir, "README")
	for _, p := range []string{tmp, emptyPath, foreign} {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// A new cache over the same directory, with an inner store that fails every
	// read: what it serves comes from the files.
	failing := blocktest.NewFaulty(mem)
	failing.FailAlways(blocktest.OpRead, nil)
	c2 := newCache(t, failing, dir, 1<<20)
	if st := c2.Stats(); st.Files != 5 || st.Dropped != 1 {
		t.Fatalf("stats after reindexing %+v: want 5 files and the empty one dropped", st)
	}
	for _, b := range blocks {
		wantRead(t, c2, b)
	}
	for _, p := range []string{tmp, emptyPath} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s after reindexing: %v", p, err)
		}
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Errorf("a file not the cache's was touched: %v", err)
	}

	// Reopened smaller, the cache evicts the oldest files down to its bound.
	bound := fileSize(blocks[3]) + fileSize(blocks[4])
	c3 := newCache(t, failing, dir, bound)
	if st := c3.Stats(); st.Files != 2 || st.Bytes != bound || st.Evictions != 3 {
		t.Fatalf("stats after reopening smaller %+v: want the 2 newest files", st)
	}
	wantRead(t, c3, blocks[3])
	wantRead(t, c3, blocks[4])
	if err := c3.Read(testContext(t), blocks[0].Digest, func(byte, []byte) error { return nil }); !errors.Is(err, blocktest.ErrInjected) {
		t.Fatalf("Read of an evicted block went to the inner store? %v", err)
	}
}

func TestCorruptFile(t *testing.T) {
	inner := blocktest.NewFaulty(blocktest.NewMemory())
	c := newCache(t, inner, t.TempDir(), 1<<20)
	a := block(1, 3000, 0x81)
	mustPut(t, c, a)
	wantRead(t, c, a)
	path := c.path(a.Digest)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		file []byte
	}{
		{"flipped bit", func() []byte { b := bytes.Clone(good); b[100] ^= 1; return b }()},
		{"zeros", make([]byte, len(good))},
		{"truncated", good[:len(good)/2]},
		{"longer", append(bytes.Clone(good), 0)},
		{"empty", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(path, tc.file, 0o600); err != nil {
				t.Fatal(err)
			}
			reads, dropped := inner.Calls(blocktest.OpRead), c.Stats().Dropped
			wantRead(t, c, a) // from the inner store, not the bad file
			if n := inner.Calls(blocktest.OpRead); n != reads+1 {
				t.Fatalf("inner store read %d times, want once", n-reads)
			}
			if d := c.Stats().Dropped; d != dropped+1 {
				t.Fatalf("%d files dropped, want 1", d-dropped)
			}
			got, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(got, good) {
				t.Fatalf("the file was not written again (%v)", err)
			}
			wantRead(t, c, a) // a hit again
			if n := inner.Calls(blocktest.OpRead); n != reads+1 {
				t.Fatalf("the rewritten file was not served")
			}
		})
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	c.Invalidate(a.Digest)
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("file after Invalidate: %v", err)
	}
}

// TestInvalidate: a file that passes the cache's own check but holds wrong bytes
// (what the cas store's SHA-256 catches) is served until the store invalidates it,
// and never after.
func TestInvalidate(t *testing.T) {
	inner := blocktest.NewFaulty(blocktest.NewMemory())
	c := newCache(t, inner, t.TempDir(), 1<<20)
	a := block(1, 3000, 0x81)
	mustPut(t, c, a)
	wantRead(t, c, a)
	wrong := core.StoredBlock{Digest: a.Digest, Tag: a.Tag, Data: bytes.Repeat([]byte{0xee}, len(a.Data))}
	tmp, err := c.writeTemp(c.path(a.Digest), append([]byte{wrong.Tag}, wrong.Data...))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, c.path(a.Digest)); err != nil {
		t.Fatal(err)
	}
	wantRead(t, c, wrong)
	c.Invalidate(a.Digest)
	c.Invalidate(a.Digest) // twice, or of an absent block, is harmless
	c.Invalidate(block(2, 1, 1).Digest)
	reads := inner.Calls(blocktest.OpRead)
	wantRead(t, c, a)
	wantRead(t, c, a)
	if n := inner.Calls(blocktest.OpRead); n != reads+1 {
		t.Fatalf("inner store read %d times after Invalidate, want once", n-reads)
	}
}

func TestPutAndDeleteDropFiles(t *testing.T) {
	c := newCache(t, blocktest.NewMemory(), t.TempDir(), 1<<20)
	a := block(1, 3000, 0x81)
	mustPut(t, c, a)
	wantRead(t, c, a)
	// A new encoding of the same block replaces the cached one.
	a2 := core.StoredBlock{Digest: a.Digest, Tag: 0x02, Data: []byte("smaller")}
	mustPut(t, c, a2)
	if _, err := os.Stat(c.path(a.Digest)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("file after a Put of its digest: %v", err)
	}
	wantRead(t, c, a2)
	if err := c.Delete(testContext(t), []core.Digest{a.Digest}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.path(a.Digest)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("file after a Delete: %v", err)
	}
	if err := c.Read(testContext(t), a.Digest, func(byte, []byte) error { return nil }); !errors.Is(err, core.ErrBlockNotFound) {
		t.Fatalf("Read after Delete: %v", err)
	}
	if st := c.Stats(); st.Files != 0 || st.Bytes != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// gated passes calls to an inner store, but its Read takes the value and then waits
// for release (or its context) before calling fn, on the reads numbered up to gateN.
type gated struct {
	core.BlockStore
	gateN   int64
	calls   atomic.Int64
	entered chan struct{} // a receive per gated read that has taken its value
	release chan struct{}
}

func newGated(inner core.BlockStore, gateN int64) *gated {
	return &gated{BlockStore: inner, gateN: gateN, entered: make(chan struct{}, 100), release: make(chan struct{})}
}

func (g *gated) Read(ctx context.Context, d core.Digest, fn func(byte, []byte) error) error {
	n := g.calls.Add(1)
	var tag byte
	var data []byte
	err := g.BlockStore.Read(ctx, d, func(tg byte, b []byte) error {
		tag, data = tg, bytes.Clone(b)
		return nil
	})
	if n <= g.gateN {
		g.entered <- struct{}{}
		select {
		case <-g.release:
		case <-ctx.Done():
			return fmt.Errorf("gated read: %w", context.Cause(ctx))
		}
	}
	if err != nil {
		return err
	}
	return fn(tag, data)
}

// await receives from ch or fails the test at its deadline.
func await(t *testing.T, ctx context.Context, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-ctx.Done():
		t.Fatalf("waiting for %s: %v", what, context.Cause(ctx))
	}
}

func TestConcurrentReadersFetchOnce(t *testing.T) {
	ctx := testContext(t)
	mem := blocktest.NewMemory()
	a := block(1, core.BlockSize, 0x81)
	mustPut(t, mem, a)
	g := newGated(mem, 1)
	c := newCache(t, g, t.TempDir(), 8<<20)
	const readers = 8
	joined := make(chan struct{}, readers)
	c.joined = func() { joined <- struct{}{} }

	errs := make(chan error, readers)
	var wg sync.WaitGroup
	for range readers {
		wg.Go(func() {
			errs <- c.Read(ctx, a.Digest, func(tag byte, data []byte) error {
				if tag != a.Tag || !bytes.Equal(data, a.Data) {
					return errors.New("wrong value")
				}
				return nil
			})
		})
	}
	// One reader is in the inner store, all others wait for it.
	await(t, ctx, g.entered, "the leader's read")
	for range readers - 1 {
		await(t, ctx, joined, "the other readers to join")
	}
	close(g.release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := g.calls.Load(); n != 1 {
		t.Fatalf("inner store read %d times by %d concurrent readers, want once", n, readers)
	}
	if st := c.Stats(); st.Misses != readers || st.Fetches != 1 {
		t.Fatalf("stats %+v", st)
	}
	wantRead(t, c, a)
	if n := g.calls.Load(); n != 1 {
		t.Fatalf("a read after the fetch went to the inner store")
	}
}

// TestLeaderCancelled: a reader that joined a fetch whose leader gave up (its
// context ended) fetches again instead of failing with the leader's error.
func TestLeaderCancelled(t *testing.T) {
	ctx := testContext(t)
	mem := blocktest.NewMemory()
	a := block(1, 1000, 0x81)
	mustPut(t, mem, a)
	g := newGated(mem, 1)
	c := newCache(t, g, t.TempDir(), 1<<20)
	joined := make(chan struct{}, 1)
	c.joined = func() { joined <- struct{}{} }

	leaderCtx, cancelLeader := context.WithCancel(ctx)
	defer cancelLeader()
	leaderErr := make(chan error, 1)
	go func() { leaderErr <- c.Read(leaderCtx, a.Digest, func(byte, []byte) error { return nil }) }()
	await(t, ctx, g.entered, "the leader's read")
	follower := make(chan error, 1)
	go func() {
		follower <- c.Read(ctx, a.Digest, func(tag byte, data []byte) error {
			if tag != a.Tag || !bytes.Equal(data, a.Data) {
				return errors.New("wrong value")
			}
			return nil
		})
	}()
	await(t, ctx, joined, "the follower to join")
	cancelLeader()
	select {
	case err := <-leaderErr:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("the cancelled leader's Read: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the cancelled leader's Read did not return")
	}
	select {
	case err := <-follower:
		if err != nil {
			t.Fatalf("the follower's Read: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the follower's Read did not return")
	}
	if n := g.calls.Load(); n != 2 {
		t.Fatalf("inner store read %d times, want 2 (the cancelled fetch and the follower's)", n)
	}
}

// TestStaleFetchNotKept: a fetch that read a block's old encoding while a Put replaced
// it does not leave the old encoding in the cache, and a reader after the Put does not
// join it.
func TestStaleFetchNotKept(t *testing.T) {
	ctx := testContext(t)
	mem := blocktest.NewMemory()
	old := block(1, 1000, 0x01)
	mustPut(t, mem, old)
	g := newGated(mem, 1)
	c := newCache(t, g, t.TempDir(), 1<<20)

	first := make(chan error, 1)
	go func() {
		first <- c.Read(ctx, old.Digest, func(tag byte, data []byte) error {
			// Read concurrently with the Put: either value is right.
			if tag != old.Tag && tag != 0x02 {
				return fmt.Errorf("tag %#x", tag)
			}
			return nil
		})
	}()
	await(t, ctx, g.entered, "the first read to take the old value")
	replaced := core.StoredBlock{Digest: old.Digest, Tag: 0x02, Data: []byte("new encoding")}
	mustPut(t, c, replaced)
	wantRead(t, c, replaced) // does not join the stale fetch, still blocked
	close(g.release)
	select {
	case err := <-first:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("the first read did not return")
	}
	wantRead(t, c, replaced)
	wantRead(t, c, replaced)
}

// TestConcurrentUse reads, puts and deletes from many goroutines over a small cache,
// for the race detector and the byte accounting.
func TestConcurrentUse(t *testing.T) {
	ctx := testContext(t)
	mem := blocktest.NewMemory()
	var blocks []core.StoredBlock
	for i := range 20 {
		blocks = append(blocks, block(i, 1000+100*i, byte(i)))
	}
	mustPut(t, mem, blocks...)
	dir := t.TempDir()
	bound := int64(8000)
	c := newCache(t, mem, dir, bound)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Go(func() {
			for i := range 300 {
				b := blocks[(i*7+w*3)%len(blocks)]
				if i%50 == 49 {
					if err := c.Put(ctx, []core.StoredBlock{b}); err != nil {
						errs <- err
						return
					}
					continue
				}
				err := c.Read(ctx, b.Digest, func(tag byte, data []byte) error {
					if tag != b.Tag || !bytes.Equal(data, b.Data) {
						return fmt.Errorf("block %d read wrong", i)
					}
					return nil
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := c.Stats()
	if st.Bytes > bound || diskBytes(t, dir) != st.Bytes {
		t.Fatalf("stats %+v, %d bytes on disk, bound %d", st, diskBytes(t, dir), bound)
	}
}

func TestNewRefusesNoRoom(t *testing.T) {
	if _, err := New(blocktest.NewMemory(), t.TempDir(), 0, nil); err == nil {
		t.Fatal("a cache of 0 bytes was made")
	}
}
