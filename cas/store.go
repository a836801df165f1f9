package cas

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/ebsd/ebsd/cas/core"
	"github.com/klauspost/compress/s2"
)

// Options configure a Store. The zero value of every field but Dir has a sensible default.
type Options struct {
	Dir    string
	Clock  Clock
	Logger *slog.Logger
	// MaxPendingPerOwner caps pending snapshots per owner (AWS: 100).
	MaxPendingPerOwner int
	// Compression of new blocks; zstd by default (see BENCHMARKS.md).
	Compression Compression
	// ValueThreshold is the value size from which Badger keeps values in its value log
	// instead of the LSM tree. Blocks belong in the value log (written once, never
	// rewritten by compaction); digests and records belong in the LSM (see BENCHMARKS.md).
	ValueThreshold int64
	// ExpireInterval is how often idle pending snapshots are looked for; negative disables
	// the background check (tests call ExpireIdle themselves).
	ExpireInterval time.Duration
	// GCInterval is how often garbage collection runs in the background; 0 or negative
	// never (ebsctl gc and the admin endpoint run it on demand).
	GCInterval time.Duration
	// ValueLogFileSize is the size of Badger's value-log files. Garbage collection gives
	// space back a whole file at a time and never from the file being written, so
	// smaller files return space sooner. 0: 256 MiB, or a sixteenth of the file system
	// when that is smaller (storeSizes in space.go).
	ValueLogFileSize int64
	// MemTableSize is the size of Badger's memtable. 0: 64 MiB, or a sixty-fourth of the
	// file system when that is smaller: a full memtable must always find room to be
	// flushed, so it is part of the space kept free (space.go).
	MemTableSize int64
	// ScrubInterval is how often a scrub (scrub.go) re-reads and verifies every stored
	// block and catalog record in the background; 0 or negative never (ebsctl scrub and
	// the admin endpoint run one on demand).
	ScrubInterval time.Duration
	// ScrubBytesPerSec bounds how fast a background scrub reads stored bytes, so it
	// never crowds out clients; 0 means DefaultScrubBytesPerSec, negative no bound.
	ScrubBytesPerSec int64
	// Recompress is the zstd level stored blocks are re-encoded at in the background
	// while no puts flow (settle.go); "" or RecompressOff: never.
	Recompress RecompressLevel
	// RecompressBytesPerSec bounds the uncompressed bytes settling re-encodes per
	// second; 0 means DefaultRecompressBytesPerSec, negative no bound.
	RecompressBytesPerSec int64
	// RecompressIdle is how long no put must have committed before settling starts or
	// resumes; 0 means DefaultRecompressIdle.
	RecompressIdle time.Duration
	// Blocks is where block bytes live; nil keeps them in the store's own Badger DB
	// (badger_blocks.go). Another engine (cas/s3blocks, with cas/diskcache in front)
	// is opened by the caller; the store closes nothing it did not open.
	Blocks core.BlockStore
	// Catalog is where records live; nil keeps them in the store's own Badger DB
	// (badger_catalog.go). A catalog other engines' daemons share (cas/pgcatalog)
	// needs a block store they share too: Blocks must be set with it.
	Catalog core.Catalog
	// GCGrace is how long a block a put used is kept from collection on a shared
	// catalog (gc_shared.go); 0 means DefaultGCGrace.
	GCGrace time.Duration
	// WrapCatalog, when set, decorates the catalog the store uses, whichever it is:
	// tests wrap it to fail commits on cue (cas/catalogtest.Faulty).
	WrapCatalog func(core.Catalog) core.Catalog
	// WrapBlocks, when set, decorates the block store the store uses, whichever it is:
	// tests wrap it to inject faults (cas/blocktest.Faulty).
	WrapBlocks func(core.BlockStore) core.BlockStore
	// Hooks are test seams (hooks.go); production leaves them zero.
	Hooks Hooks
}

const (
	defaultMaxPending     = 100
	defaultValueThreshold = 4 << 10
	defaultExpireInterval = time.Minute
)

// Store is the content-addressed block store and snapshot catalog in one Badger DB.
// Its invariants are written down in DESIGN.md.
type Store struct {
	db *badger.DB
	// blocks holds the bytes of blocks (core.BlockStore): every put, read, collection
	// and scrub goes through it. local is set when they live in db, undecorated: then
	// the Badger-only work (settling, the exact count at open, settled-block stats)
	// may read and write block entries in db directly, and db.Sync covers them.
	blocks core.BlockStore
	local  *badgerBlocks
	// cat holds the records (core.Catalog); localCat is set when that is db itself.
	cat      core.Catalog
	localCat *badgerCatalog
	daemonID string // names this process's leases in a shared catalog
	opts     Options
	clock    Clock
	log      *slog.Logger
	comp     *compressor
	zero     []byte    // one all-zero block, read-only
	bufs     sync.Pool // *[]byte scratch of BlockSize capacity

	// stripes guard the window between "this block is stored" and the commit of a
	// block-map entry that relies on it: puts hold a stripe shared, garbage collection
	// holds it exclusively to delete, so no acknowledged block is collected.
	stripes [256]sync.RWMutex

	writes    chan *writeOp // to the group committer
	firstPuts putsInFlight  // puts between their lookup of a block and their commit
	// groupBlockBytes bounds the block bytes of one group commit: half a value-log file
	// on the embedded engine (DESIGN.md rule 34), so its one transaction stays whole.
	groupBlockBytes int

	// space refuses writes before the file system is full (space.go).
	space *spaceGuard

	// writeGate is held shared by every write to Badger and exclusively while garbage
	// collection flushes Badger's memtable (which makes Badger refuse writes): writers
	// wait a moment instead of failing.
	writeGate sync.RWMutex
	// dbSync is the one Sync of Badger, which the embedded engines share.
	dbSync *valueLogSync
	gcMu   sync.Mutex // one collection at a time
	// unmovable is what the value log still exceeded the live stored bytes by after
	// the last collection that rotated it: not garbage a rewrite can give back
	// (gc_space.go). Guarded by gcMu.
	unmovable int64
	tracking  atomic.Bool // a collection is recording the digests puts rely on
	touchMu   sync.Mutex
	touched   map[Digest]struct{} // digests put while a collection runs; nil otherwise
	onDelete  []func(id string)

	startMu sync.Mutex  // serialises StartSnapshot: token check, limits, creation
	ctr     counters    // running totals for metrics (counters.go)
	heal    healState   // blocks known to be corrupt (heal.go)
	scrub   scrubState  // one scrub at a time, and the history of scrubs (scrub.go)
	settle  settleState // re-encoding stored blocks smaller (settle.go)
	snapsMu sync.RWMutex
	snaps   map[string]*entry

	stop chan struct{}
	wg   sync.WaitGroup
}

// Open opens (creating if needed) the store in opts.Dir. Only one process may hold a
// data directory; a second one gets a clear error naming the directory.
func Open(opts Options) (*Store, error) {
	if opts.Dir == "" {
		return nil, errors.New("cas: no data directory given")
	}
	if opts.Catalog != nil && opts.Blocks == nil {
		// Records other daemons can read would name blocks only this disk holds.
		return nil, errors.New("cas: a shared catalog needs a shared block store: give Blocks with Catalog")
	}
	if opts.Clock == nil {
		opts.Clock = SystemClock{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxPendingPerOwner == 0 {
		opts.MaxPendingPerOwner = defaultMaxPending
	}
	if opts.Compression == "" {
		opts.Compression = CompressZstd
	}
	if opts.ValueThreshold == 0 {
		opts.ValueThreshold = defaultValueThreshold
	}
	if opts.ExpireInterval == 0 {
		opts.ExpireInterval = defaultExpireInterval
	}
	if err := os.MkdirAll(opts.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("cas: create data directory: %w", err)
	}
	if err := removeEmptyValueLogs(opts.Dir, opts.Logger); err != nil {
		return nil, err
	}
	_, total, err := statfsFree(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("cas: %w", err)
	}
	opts.ValueLogFileSize, opts.MemTableSize = storeSizes(opts, total)
	// Before Badger opens: on a full disk its open writes through mappings (SIGBUS).
	space, err := openSpace(opts.Dir, opts.MemTableSize, reserveFor(opts.ValueLogFileSize), opts.Logger, statfsFree)
	if err != nil {
		return nil, err
	}
	db, err := badger.Open(badgerOptions(opts))
	if err != nil {
		space.close()
		if strings.Contains(err.Error(), "Cannot acquire directory lock") {
			return nil, fmt.Errorf("cas: data directory %s is in use by another process (is another ebsd running?): %w", opts.Dir, err)
		}
		return nil, openFailure(opts.Dir, err) // a damaged table file: which one, and what to do (salvage.go)
	}
	// Badger checks a table block's checksum when it reads the block, but an iterator
	// that meets a bad one ends there without an error: a snapshot's block map ended
	// early, and its blocks read as zeros. Every table of the DB (not a file a flush
	// of the replayed memtable is writing meanwhile) is read and checked once here, so
	// a damaged one is named and the store refused, as when Badger cannot open it. Not
	// with DB.VerifyChecksum: under OnBlockRead it panics on the first bad block.
	if bad := corruptTablesOf(liveTables(db, opts.Dir)); len(bad) > 0 {
		_ = db.Close()
		space.close()
		return nil, openFailure(opts.Dir, fmt.Errorf("damaged table: %s (a block fails its checksum)", bad[0]))
	}
	comp, err := newCompressor(opts.Compression)
	if err != nil {
		_ = db.Close()
		space.close()
		return nil, err
	}
	s := &Store{
		db:     db,
		opts:   opts,
		clock:  opts.Clock,
		log:    opts.Logger,
		comp:   comp,
		zero:   make([]byte, BlockSize),
		snaps:  make(map[string]*entry),
		stop:   make(chan struct{}),
		writes: make(chan *writeOp),
		space:  space,
	}
	s.dbSync = newValueLogSync(db, opts.Dir)
	s.daemonID = core.NewSnapshotID()[len("snap-"):]
	s.cat = opts.Catalog
	if s.cat == nil {
		s.localCat = &badgerCatalog{db: db, gate: s.gated, sync: s.dbSync}
		s.cat = s.localCat
	}
	if opts.WrapCatalog != nil {
		s.cat, s.localCat = opts.WrapCatalog(s.cat), nil
	}
	s.blocks = opts.Blocks
	s.groupBlockBytes = maxGroupBytes
	if s.blocks == nil {
		s.local = &badgerBlocks{db: db, gate: s.gated, sync: s.dbSync, maxTxnBytes: int(opts.ValueLogFileSize / 2)}
		s.blocks = s.local
		s.groupBlockBytes = s.local.maxTxnBytes
	}
	if opts.WrapBlocks != nil {
		s.blocks, s.local = opts.WrapBlocks(s.blocks), nil
	}
	if _, on := opts.Recompress.zstdLevel(); on && s.local == nil {
		_ = db.Close()
		space.close()
		comp.close()
		return nil, fmt.Errorf("cas: %w", ErrSettleNeedsBadger)
	}
	space.useTables(db)
	s.ctr.gc.runs, s.scrub.runs = newRing[GCRun](gcHistoryLen), newRing[ScrubRun](scrubHistoryLen)
	s.bufs.New = func() any { b := make([]byte, 0, s2.MaxEncodedLen(BlockSize)); return &b }
	if err := s.loadCatalog(); err != nil {
		s.closeResources()
		return nil, err
	}
	if err := s.loadCorruptMarks(); err != nil {
		s.closeResources()
		return nil, err
	}
	if err := s.loadSettleTotals(); err != nil {
		s.closeResources()
		return nil, err
	}
	if s.local == nil {
		if err := s.countBlocksAtOpen(context.Background()); err != nil {
			s.closeResources()
			return nil, err
		}
	}
	if s.localCat == nil {
		if err := s.countMapsAtOpen(context.Background()); err != nil {
			s.closeResources()
			return nil, err
		}
	}
	// Nothing has written yet: a transaction begun now is the exact cut between what
	// the background count at open sees and what the counters' deltas see.
	s.wg.Add(1)
	go s.countAtOpen(db.NewTransaction(false))
	s.wg.Add(1)
	go s.groupCommitLoop()
	if s.shared() {
		s.wg.Add(1)
		go s.watchCatalog()
	}
	s.wg.Add(1)
	go func() { defer s.wg.Done(); space.watch(s.stop) }()
	if opts.ExpireInterval > 0 {
		s.wg.Add(1)
		go s.expireLoop(opts.ExpireInterval)
	}
	if opts.GCInterval > 0 {
		s.wg.Add(1)
		go s.every(opts.GCInterval, "garbage collection", func(ctx context.Context) error {
			_, err := s.GC(ctx, false)
			return err
		})
	}
	if opts.ScrubInterval > 0 {
		rate := opts.ScrubBytesPerSec
		if rate == 0 {
			rate = DefaultScrubBytesPerSec
		}
		s.wg.Add(1)
		go s.every(opts.ScrubInterval, "scrub", func(ctx context.Context) error {
			_, err := s.Scrub(ctx, ScrubOptions{BytesPerSec: rate})
			return err
		})
	}
	if _, ok := opts.Recompress.zstdLevel(); ok {
		s.wg.Add(1)
		go s.settleLoop()
	}
	return s, nil
}

// removeEmptyValueLogs deletes value-log and memtable files of zero bytes. Badger
// creates such a file and then sizes it; a crash in between leaves an empty file that
// Badger v4 then refuses to open ("Create a new file"), so the store would never start
// again. An empty file holds nothing: no value pointer refers into an empty value log,
// and an empty memtable log has no entries to replay.
func removeEmptyValueLogs(dir string, log *slog.Logger) error {
	var paths []string
	for _, pattern := range []string{"*.vlog", "*.mem"} {
		p, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil {
			return fmt.Errorf("cas: list value logs: %w", err)
		}
		paths = append(paths, p...)
	}
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil || fi.Size() != 0 {
			continue
		}
		log.Warn("removing empty file left by a crash", "file", p)
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("cas: remove empty %s: %w", filepath.Base(p), err)
		}
	}
	return nil
}

func badgerOptions(opts Options) badger.Options {
	return badger.DefaultOptions(opts.Dir).
		WithLogger(badgerLogger{opts.Logger}).
		WithValueThreshold(opts.ValueThreshold).
		// Blocks arrive zstd-compressed; Badger compressing them again only costs CPU.
		WithCompression(options.None).
		WithNumVersionsToKeep(1).
		// Writers are serialised by the store's own locks; Badger's conflict tracking
		// would only add work on the put path.
		WithDetectConflicts(false).
		// Acknowledged puts need only survive kill -9 (the memtable WAL and value log are
		// mmap'd, so a write is in the page cache once Commit returns). Records that must
		// survive power loss are followed by an explicit Sync, which also covers every
		// put before them, instead of paying an fsync per block.
		WithSyncWrites(false).
		WithValueLogFileSize(opts.ValueLogFileSize).
		WithMemTableSize(opts.MemTableSize).
		WithBlockCacheSize(64 << 20).
		WithIndexCacheSize(32 << 20).
		// Blocks carry their own SHA-256, but map entries, snapshot records and tokens do
		// not: a rotten table block could otherwise point an index at another valid
		// block. Checking each table block's checksum when it is read costs a CRC per
		// 4 KiB read from disk (cached blocks are not checked again).
		WithChecksumVerificationMode(options.OnBlockRead)
}

// Close stops background work and closes the DB, flushing everything to disk. Calls
// after the first return ErrClosed (a deferred Close after an explicit one is common)
// instead of closing the stop channel twice.
func (s *Store) Close() error {
	// startMu is held only for the check-and-close of stop, so two concurrent Closes
	// cannot both get past the check; no new field is needed because startMu is never
	// held by anything Close waits for below.
	s.startMu.Lock()
	select {
	case <-s.stop:
		s.startMu.Unlock()
		return ErrClosed
	default:
	}
	close(s.stop)
	s.startMu.Unlock()
	s.wg.Wait()
	// Closing flushes the memtable through a mapping: give it the reserve if it
	// needs it (a refusal here changes nothing: closing must go on).
	_ = s.space.maintain()
	return s.closeResources()
}

func (s *Store) closeResources() error {
	syncErr := s.dbSync.Sync()
	err := s.db.Close()
	s.space.close()
	s.comp.close()
	if err != nil {
		return fmt.Errorf("cas: close badger: %w", err)
	}
	if syncErr != nil {
		return fmt.Errorf("cas: sync badger: %w", syncErr)
	}
	return nil
}

// view runs a read-only transaction of the catalog.
func (s *Store) view(ctx context.Context, fn func(tx core.CatalogTx) error) error {
	return s.cat.View(ctx, fn)
}

// commit runs a read-write transaction of the catalog (the embedded one takes the
// free-space rule and the write gate itself).
func (s *Store) commit(ctx context.Context, fn func(tx core.CatalogTx) error) error {
	return s.cat.Update(ctx, fn)
}

// update runs a read-write transaction of the store's own Badger DB through the write
// gate: for the embedded engines' own work (settling), not for records.
func (s *Store) update(fn func(txn *badger.Txn) error) error {
	return s.gated(func() error { return s.db.Update(fn) })
}

// gated runs a write to Badger through the free-space rule and the write gate.
func (s *Store) gated(write func() error) error {
	if err := s.space.maintain(); err != nil {
		return err
	}
	s.writeGate.RLock()
	defer s.writeGate.RUnlock()
	return write()
}

// syncBlocks makes every block put so far survive power loss. The embedded engine's
// blocks are in db, which sync covers with one fsync.
func (s *Store) syncBlocks() error {
	if s.local != nil {
		return nil
	}
	if err := s.blocks.Sync(context.Background()); err != nil {
		return fmt.Errorf("cas: sync blocks: %w", err)
	}
	return nil
}

// sync makes everything written so far survive power loss: blocks first, so that no
// record that relies on a block is on stable storage before the block is.
func (s *Store) sync() error {
	if err := s.syncBlocks(); err != nil {
		return err
	}
	return s.syncCatalog()
}

// syncCatalog makes the records written so far survive power loss.
func (s *Store) syncCatalog() error {
	if err := s.cat.Sync(context.Background()); err != nil {
		return fmt.Errorf("cas: sync catalog: %w", err)
	}
	return nil
}

func (s *Store) expireLoop(every time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if _, err := s.ExpireIdle(context.Background()); err != nil {
				s.log.Error("expiring idle snapshots", "err", err)
			}
		}
	}
}

// every runs work each interval until the store closes, with a context the close
// cancels, logging what fails. The caller has done s.wg.Add(1).
func (s *Store) every(interval time.Duration, what string, work func(context.Context) error) {
	defer s.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-s.stop; cancel() }() // ends with the loop: it ends only when stop closes
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if err := work(ctx); err != nil && ctx.Err() == nil {
				s.log.Error(what, "err", err)
			}
		}
	}
}

func (s *Store) getBuf() *[]byte  { return s.bufs.Get().(*[]byte) }
func (s *Store) putBuf(b *[]byte) { s.bufs.Put(b) }

// badgerLogger sends Badger's own log lines to slog.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) {
	b.l.Error("badger: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (b badgerLogger) Warningf(f string, a ...any) {
	b.l.Warn("badger: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (b badgerLogger) Infof(f string, a ...any) {
	b.l.Debug("badger: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (b badgerLogger) Debugf(f string, a ...any) {
	b.l.Debug("badger: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}
