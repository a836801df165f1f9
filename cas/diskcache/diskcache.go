// Package diskcache keeps the blocks a remote core.BlockStore (S3) served on local
// disk, so reading them again costs a file read instead of a request. It is a
// decorator: Cache is a core.BlockStore around the remote one.
//
// Only reads fill the cache. Put and Delete go to the inner store and drop what the
// cache held for their digests (a Put may replace a block's encoding); Stat, Walk and
// Sync are the inner store's alone, so the cache never answers for what is stored.
//
// # Files
//
// Under dir, the block with digest d is the file ab/<d in hex> ("ab" its first byte):
// the tag byte, the data, and a CRC-32C of both (4 bytes, big-endian). A file is
// written under a temporary name and renamed, so a crash never leaves half a file
// under a final name. Nothing is fsynced: after a power loss a file may be empty or
// hold zeros, and the CRC (or the cas store's SHA-256, then Invalidate) catches it; a
// file that fails its checks is removed and the block fetched again. Files are 0600,
// directories 0700.
//
// The cache is bounded by the bytes of its files and evicts the least recently used.
// New indexes the files already in dir, oldest modification first (a hit refreshes a
// file's time at most hourly), so the cache and its order survive restarts. One dir
// belongs to one Cache at a time.
package diskcache

import (
	"container/list"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"iter"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ebsd/ebsd/cas/core"
)

// overhead is what a file holds besides the data: the tag byte and the CRC.
const overhead = 1 + crc32.Size

// touchEvery is how stale a file's modification time may get before a hit renews it:
// the time only orders eviction after a restart, and a write per hit would cost more
// than it tells.
const touchEvery = time.Hour

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Stats counts what the cache did since New.
type Stats struct {
	Hits      int64 // reads served from a file
	Misses    int64 // reads that went to the inner store (joined fetches included)
	Fetches   int64 // reads of the inner store (Misses minus those that joined one)
	Evictions int64 // files removed to stay under the bound
	Dropped   int64 // files removed because they failed to read or check, or by Invalidate
	Files     int64 // files held now
	Bytes     int64 // bytes of those files
}

// Cache is a core.BlockStore that serves reads from local files when it can.
type Cache struct {
	inner    core.BlockStore
	dir      string
	maxBytes int64
	log      *slog.Logger
	bufs     sync.Pool // *[]byte

	mu       sync.Mutex
	entries  map[core.Digest]*list.Element // of *entry
	lru      *list.List                    // front: most recently used
	bytes    int64
	inflight map[core.Digest]*fetch

	hits, misses, fetches, evictions, dropped atomic.Int64

	// joined, when set (by tests), is called when a reader joins a fetch under way.
	joined func()
}

type entry struct {
	d       core.Digest
	size    int64     // of the file
	touched time.Time // the file's modification time, as far as the cache knows
}

// fetch is one read of the inner store that concurrent misses of a digest share.
type fetch struct {
	done chan struct{} // closed when the fields below are set
	tag  byte
	buf  *[]byte // tag byte, data, room for the CRC; returned to the pool by the last user
	n    int     // bytes of tag and data in *buf
	err  error
	refs int // users of buf; under Cache.mu
	// stale says a Put or Delete of the digest ran while the fetch did: what it read
	// may be the replaced encoding, or a deleted block, and must not be cached.
	stale bool // under Cache.mu
}

var _ core.BlockStore = (*Cache)(nil)

// New returns a cache of at most maxBytes of files in dir around inner. It creates dir
// if needed, indexes the files there, removes temporary files a crash left, and evicts
// down to maxBytes. log nil discards messages.
func New(inner core.BlockStore, dir string, maxBytes int64, log *slog.Logger) (*Cache, error) {
	if maxBytes <= 0 {
		return nil, fmt.Errorf("diskcache: maximum size %d: must be positive", maxBytes)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("diskcache: %w", err)
	}
	c := &Cache{
		inner:    inner,
		dir:      dir,
		maxBytes: maxBytes,
		log:      log.With("dir", dir),
		entries:  map[core.Digest]*list.Element{},
		lru:      list.New(),
		inflight: map[core.Digest]*fetch{},
	}
	if err := c.index(); err != nil {
		return nil, err
	}
	return c, nil
}

// index reads the files under dir into the LRU list, oldest modification at the back.
func (c *Cache) index() error {
	var found []*entry
	err := filepath.WalkDir(c.dir, func(path string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if de.IsDir() {
			if path != c.dir && filepath.Dir(path) != c.dir {
				return fs.SkipDir // not ours: the cache has one level of directories
			}
			return nil
		}
		name, sub := de.Name(), filepath.Base(filepath.Dir(path))
		if base, _, tmp := strings.Cut(name, ".tmp"); tmp {
			if _, ok := parseName(sub, base); ok {
				// A write that a crash interrupted.
				if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return err
				}
				return nil
			}
		}
		d, ok := parseName(sub, name)
		if !ok {
			c.log.Warn("diskcache: not a cache file, left alone", "path", path)
			return nil
		}
		info, err := de.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if info.Size() < overhead {
			// Empty after a power loss (nothing is fsynced): useless, drop it now.
			c.dropped.Add(1)
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			return nil
		}
		found = append(found, &entry{d: d, size: info.Size(), touched: info.ModTime()})
		return nil
	})
	if err != nil {
		return fmt.Errorf("diskcache: indexing %s: %w", c.dir, err)
	}
	// Newest first, so that PushBack leaves the oldest at the back, evicted first.
	sort.Slice(found, func(i, j int) bool { return found[i].touched.After(found[j].touched) })
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range found {
		c.entries[e.d] = c.lru.PushBack(e)
		c.bytes += e.size
	}
	c.evictLocked()
	c.log.Debug("diskcache: indexed", "files", c.lru.Len(), "bytes", c.bytes)
	return nil
}

func (c *Cache) path(d core.Digest) string {
	h := d.String()
	return filepath.Join(c.dir, h[:2], h)
}

func parseName(sub, name string) (d core.Digest, ok bool) {
	if len(name) != 2*len(d) || sub != name[:2] {
		return d, false
	}
	if _, err := hex.Decode(d[:], []byte(name)); err != nil {
		return d, false
	}
	return d, hex.EncodeToString(d[:]) == name
}

// Stats returns the counters.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	files, bytes := int64(c.lru.Len()), c.bytes
	c.mu.Unlock()
	return Stats{
		Hits:      c.hits.Load(),
		Misses:    c.misses.Load(),
		Fetches:   c.fetches.Load(),
		Evictions: c.evictions.Load(),
		Dropped:   c.dropped.Load(),
		Files:     files,
		Bytes:     bytes,
	}
}

// Read serves the block from its file, or else reads it from the inner store (once for
// all concurrent readers of the digest) and keeps it in a file.
func (c *Cache) Read(ctx context.Context, d core.Digest, fn func(tag byte, data []byte) error) error {
	for {
		if hit, err := c.readFile(d, fn); hit {
			return err
		}
		f, leader := c.join(d)
		if leader {
			c.fetch(ctx, d, f)
		} else {
			select {
			case <-f.done:
			case <-ctx.Done():
				c.release(f)
				return fmt.Errorf("diskcache: reading block %s: %w", d, context.Cause(ctx))
			}
		}
		c.misses.Add(1)
		if f.err != nil {
			c.release(f)
			// The leader gave up because its own context ended: that is no answer
			// for a reader whose context still runs, which tries again.
			if !leader && ctx.Err() == nil && (errors.Is(f.err, context.Canceled) || errors.Is(f.err, context.DeadlineExceeded)) {
				continue
			}
			return f.err
		}
		err := fn(f.tag, (*f.buf)[1:f.n])
		c.release(f)
		return err
	}
}

// readFile calls fn with the block's file if the cache holds a good one; hit is false
// when it does not (a file that fails to read or check is dropped).
func (c *Cache) readFile(d core.Digest, fn func(tag byte, data []byte) error) (hit bool, err error) {
	c.mu.Lock()
	el, ok := c.entries[d]
	if !ok {
		c.mu.Unlock()
		return false, nil
	}
	c.lru.MoveToFront(el)
	e := el.Value.(*entry)
	size, touch := e.size, time.Since(e.touched) > touchEvery
	if touch {
		e.touched = time.Now()
	}
	c.mu.Unlock()

	bp := c.buffer(int(size))
	defer c.bufs.Put(bp)
	buf, err := readChecked(c.path(d), (*bp)[:size])
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			// Evicted or invalidated since the lookup: a miss like any other.
			c.log.Debug("diskcache: file gone since the lookup", "digest", d)
		} else {
			c.log.Warn("diskcache: dropping a file that does not read back", "digest", d, "err", err)
		}
		c.drop(d, el)
		return false, nil
	}
	if touch {
		// Best effort: the time only orders eviction after a restart.
		now := time.Now()
		_ = os.Chtimes(c.path(d), now, now)
	}
	c.hits.Add(1)
	return true, fn(buf[0], buf[1:len(buf)-crc32.Size])
}

// readChecked reads a cache file of exactly len(buf) bytes and checks its CRC.
func readChecked(path string, buf []byte) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := io.ReadFull(f, buf); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var one [1]byte
	if n, _ := f.Read(one[:]); n != 0 {
		return nil, fmt.Errorf("%s: longer than the %d bytes indexed", path, len(buf))
	}
	body := buf[:len(buf)-crc32.Size]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(buf[len(body):]) {
		return nil, fmt.Errorf("%s: CRC-32C does not match", path)
	}
	return buf, nil
}

// join returns the fetch of d under way, or a new one that the caller leads. A stale
// fetch is not joined: it may return what a Put that has returned replaced, and a
// reader after that Put must see the new value. The new fetch takes its place.
func (c *Cache) join(d core.Digest) (f *fetch, leader bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f, ok := c.inflight[d]; ok && !f.stale {
		f.refs++
		if c.joined != nil {
			c.joined()
		}
		return f, false
	}
	f = &fetch{done: make(chan struct{}), refs: 1}
	c.inflight[d] = f
	return f, true
}

// fetch reads d from the inner store into f, keeps it in a file, and lets the joined
// readers go.
func (c *Cache) fetch(ctx context.Context, d core.Digest, f *fetch) {
	c.fetches.Add(1)
	f.err = c.inner.Read(ctx, d, func(tag byte, data []byte) error {
		f.n = 1 + len(data)
		f.buf = c.buffer(f.n + crc32.Size)
		b := (*f.buf)[:f.n]
		b[0] = tag
		copy(b[1:], data)
		f.tag = tag
		return nil
	})
	if f.err == nil && f.buf == nil {
		f.err = fmt.Errorf("diskcache: reading block %s: the inner store returned no value and no error", d)
	}
	if f.err == nil {
		c.store(d, f)
	}
	c.mu.Lock()
	if c.inflight[d] == f {
		delete(c.inflight, d)
	}
	c.mu.Unlock()
	close(f.done)
}

// release returns f's buffer to the pool once its last user is done with it.
func (c *Cache) release(f *fetch) {
	c.mu.Lock()
	f.refs--
	last := f.refs == 0
	c.mu.Unlock()
	if last && f.buf != nil {
		c.bufs.Put(f.buf)
	}
}

// store writes what f read to d's file, unless it is too large for the cache or a Put
// or Delete of d made it stale. Failing to write only costs the cache a file.
func (c *Cache) store(d core.Digest, f *fetch) {
	size := int64(f.n + crc32.Size)
	if size > c.maxBytes {
		return
	}
	final := c.path(d)
	tmp, err := c.writeTemp(final, (*f.buf)[:f.n])
	if err != nil {
		c.log.Warn("diskcache: cannot keep a block", "digest", d, "err", err)
		return
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	// The rename is under the lock so that a Put or Delete of d that marks the fetch
	// stale cannot slip in between the check and the file appearing.
	if f.stale {
		os.Remove(tmp)
		return
	}
	if err := os.Rename(tmp, final); err != nil {
		os.Remove(tmp)
		c.log.Warn("diskcache: cannot keep a block", "digest", d, "err", err)
		return
	}
	if el, ok := c.entries[d]; ok {
		// The file was replaced; forget the old one's size.
		c.bytes -= el.Value.(*entry).size
		c.lru.Remove(el)
	}
	c.entries[d] = c.lru.PushFront(&entry{d: d, size: size, touched: now})
	c.bytes += size
	c.evictLocked()
}

// writeTemp writes body and its CRC to a new temporary file beside final.
func (c *Cache) writeTemp(final string, body []byte) (string, error) {
	dir := filepath.Dir(final)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", err
	}
	// CreateTemp makes the file 0600.
	t, err := os.CreateTemp(dir, filepath.Base(final)+".tmp*")
	if err != nil {
		return "", err
	}
	var sum [crc32.Size]byte
	binary.BigEndian.PutUint32(sum[:], crc32.Checksum(body, castagnoli))
	_, err = t.Write(body)
	if err == nil {
		_, err = t.Write(sum[:])
	}
	if cerr := t.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(t.Name())
		return "", err
	}
	return t.Name(), nil
}

// evictLocked removes least recently used files until the cache holds at most
// maxBytes (store keeps no file larger, so the one just stored, at the front, stays).
// c.mu is held: a file is removed under the lock so that no new file of the digest can
// be renamed into place just before and removed by mistake.
func (c *Cache) evictLocked() {
	for c.bytes > c.maxBytes {
		el := c.lru.Back()
		if el == nil {
			return
		}
		e := el.Value.(*entry)
		c.removeLocked(el)
		c.evictions.Add(1)
		c.log.Debug("diskcache: evicted", "digest", e.d, "bytes", e.size)
	}
}

// removeLocked forgets an entry and removes its file. c.mu is held.
func (c *Cache) removeLocked(el *list.Element) {
	e := el.Value.(*entry)
	c.lru.Remove(el)
	delete(c.entries, e.d)
	c.bytes -= e.size
	if err := os.Remove(c.path(e.d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.log.Warn("diskcache: cannot remove a file", "digest", e.d, "err", err)
	}
}

// drop removes d's file if el is still its entry (a newer file may have replaced it
// while a reader found the old one bad).
func (c *Cache) drop(d core.Digest, el *list.Element) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries[d] == el {
		c.removeLocked(el)
		c.dropped.Add(1)
	}
}

// Invalidate removes d's file, if any. The store calls it when a block the cache
// served fails verification, so that a corrupt file is never served twice.
func (c *Cache) Invalidate(d core.Digest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[d]; ok {
		c.removeLocked(el)
		c.dropped.Add(1)
	}
}

// forget drops what the cache holds or is fetching for ds, which a Put or Delete
// changed.
func (c *Cache) forget(ds iter.Seq[core.Digest]) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for d := range ds {
		if f, ok := c.inflight[d]; ok {
			f.stale = true
		}
		if el, ok := c.entries[d]; ok {
			c.removeLocked(el)
		}
	}
}

func (c *Cache) buffer(n int) *[]byte {
	if bp, ok := c.bufs.Get().(*[]byte); ok && cap(*bp) >= n {
		*bp = (*bp)[:n]
		return bp
	}
	b := make([]byte, n, max(n, core.BlockSize+overhead))
	return &b
}

// Put writes the blocks to the inner store and drops the files of their digests: a
// Put may replace a block's encoding and tag. They are dropped even when Put fails,
// since some blocks may have been replaced.
func (c *Cache) Put(ctx context.Context, blocks []core.StoredBlock) error {
	err := c.inner.Put(ctx, blocks)
	c.forget(func(yield func(core.Digest) bool) {
		for i := range blocks {
			if !yield(blocks[i].Digest) {
				return
			}
		}
	})
	return err
}

// Delete removes the blocks from the inner store, then their files. (The other order
// would let a read fetch a block again between the two.)
func (c *Cache) Delete(ctx context.Context, ds []core.Digest) error {
	err := c.inner.Delete(ctx, ds)
	c.forget(func(yield func(core.Digest) bool) {
		for _, d := range ds {
			if !yield(d) {
				return
			}
		}
	})
	return err
}

// Stat asks the inner store: the cache holds copies, not the truth.
func (c *Cache) Stat(ctx context.Context, d core.Digest) (int64, error) {
	return c.inner.Stat(ctx, d)
}

// Walk asks the inner store.
func (c *Cache) Walk(ctx context.Context, from core.Digest, fn func(d core.Digest, size int64) error) error {
	return c.inner.Walk(ctx, from, fn)
}

// Sync asks the inner store: cache files need not survive power loss.
func (c *Cache) Sync(ctx context.Context) error { return c.inner.Sync(ctx) }
