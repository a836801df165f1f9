package cas

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/klauspost/compress/zstd"

	"github.com/ebsd/ebsd/cas/core"
)

// Settling takes blocks in fast and makes them small later. Puts compress at zstd's
// fastest level (or s2, or not at all), because on the put path every nanosecond per
// byte is ingest speed. A stored block is immutable and keyed by the SHA-256 of its
// uncompressed bytes, so re-encoding it at a stronger level changes nothing a reader
// can see: the key, the bytes it decodes to and every verification stay the same. The
// settler does that in the background, one goroutine, while no puts flow:
//
//   - it takes blocks in image order first: the block map of each completed snapshot
//     (oldest first, so a parent before its children) in index order, a page of map
//     entries at a time, so that the settled copies land in the value log in the order
//     a sequential read of an image asks for them (digest order would make that read
//     random in the value log once a collection has removed the old copies); then
//     every other block by walking the block keys (pending snapshots, blocks no map
//     names any more), both in short read transactions (like scrub) and skipping
//     blocks already settled (a flag on the codec tag, read from the key without the
//     value);
//   - for each other block it decodes and verifies the stored copy, re-encodes it at
//     the configured level, and checks that the new encoding decodes to the same
//     digest; a block that does not shrink by at least 1/settleMinGainDiv is left alone;
//   - it rewrites the block under its key, with the settled flag, in one Badger commit
//     taken with the block's stripe held exclusively (no put is between its existence
//     check and its commit, no heal or scrub confirmation is either) and with the
//     collection lock held (no collection is between counting a block's size and
//     deleting it); under both it checks that the stored entry is still the version it
//     read, so it never resurrects a block a collection deleted nor overwrites a heal;
//   - the same commit adds the rewrite to the durable totals (metaKey settleTotalsKey),
//     so they agree with the store after a crash at any point.
//
// kill -9 at any point loses nothing: until the commit returns the old value is the
// block; after it, the new one is, and the old copy is value-log garbage that the
// next collection's value-log rewrite gives back (Badger counts it dead once
// compaction drops the old version of the key, which a collection forces).

// RecompressLevel is the zstd level settling re-encodes blocks at; RecompressOff
// disables it.
type RecompressLevel string

const (
	RecompressOff RecompressLevel = "off"
	// RecompressDefault is zstd's default level (3).
	RecompressDefault RecompressLevel = "default"
	// RecompressBetter is klauspost/compress's SpeedBetterCompression (about zstd 7).
	RecompressBetter RecompressLevel = "better"
	// RecompressBest is klauspost/compress's SpeedBestCompression (about zstd 11).
	RecompressBest RecompressLevel = "best"
)

// ParseRecompress checks a --recompress value; "" is off.
func ParseRecompress(s string) (RecompressLevel, error) {
	switch l := RecompressLevel(s); l {
	case "":
		return RecompressOff, nil
	case RecompressOff, RecompressDefault, RecompressBetter, RecompressBest:
		return l, nil
	}
	return "", fmt.Errorf("unknown recompress level %q (want off, default, better or best)", s)
}

func (l RecompressLevel) zstdLevel() (zstd.EncoderLevel, bool) {
	switch l {
	case RecompressDefault:
		return zstd.SpeedDefault, true
	case RecompressBetter:
		return zstd.SpeedBetterCompression, true
	case RecompressBest:
		return zstd.SpeedBestCompression, true
	}
	return 0, false
}

const (
	// DefaultRecompressBytesPerSec bounds how many uncompressed bytes a background
	// settler re-encodes per second unless configured: at the strongest level one core
	// here re-encodes about 8 MB/s of a Debian root file system (BENCHMARKS.md), so
	// this keeps it to about half a core and leaves reads their CPU; 1 GiB of written
	// blocks settles in about four minutes.
	DefaultRecompressBytesPerSec = 4 << 20
	// DefaultRecompressIdle is how long no put must have committed before settling
	// starts or resumes.
	DefaultRecompressIdle = 10 * time.Second
	// settleBlocksPerTxn is how many keys one read transaction of a pass looks at: a
	// pass never pins a long-lived read view.
	settleBlocksPerTxn = 256
	settleKeysPerTxn   = 16384
	// settleMinGainDiv: a block is rewritten only if it shrinks by at least 1/32 of its
	// stored size. A smaller gain is not worth a value-log write and a later move.
	settleMinGainDiv = 32
	// settleSkipMax bounds the in-memory set of blocks tried without gain (32 bytes and
	// map overhead each). Beyond it they are tried again on later passes.
	settleSkipMax = 1 << 20
)

// settleTotalsKey names the durable totals (metaKey): what settling has done since
// the store was created.
const settleTotalsKey = "settle-totals"

// SettleOptions tune one pass.
type SettleOptions struct {
	Level RecompressLevel
	// BytesPerSec bounds the uncompressed bytes re-encoded per second; 0 or negative:
	// no bound.
	BytesPerSec int64
}

// SettleReport says what one pass did.
type SettleReport struct {
	Level RecompressLevel `json:"level"`
	// BlocksTried were decoded and re-encoded; BlocksSettled of them were rewritten
	// smaller, BlocksNoGain were not worth it.
	BlocksTried   int64 `json:"blocksTried"`
	BlocksSettled int64 `json:"blocksSettled"`
	BlocksNoGain  int64 `json:"blocksNoGain"`
	// BlocksGone were collected or rewritten (healed) between the read and the rewrite;
	// BlocksCorrupt did not verify (marked, for a put of their bytes to heal: heal.go).
	BlocksGone    int64 `json:"blocksGone"`
	BlocksCorrupt int64 `json:"blocksCorrupt"`
	// BytesBefore and BytesAfter are the stored sizes of the settled blocks.
	BytesBefore int64         `json:"bytesBefore"`
	BytesAfter  int64         `json:"bytesAfter"`
	Pauses      int64         `json:"pauses"` // waits for puts to stop
	Duration    time.Duration `json:"durationNs"`
}

// SettleTotals are what settling has done since the store was created, kept durably
// in the same commits as the rewrites. Blocks collected since still count.
type SettleTotals struct {
	Blocks      int64 `json:"blocks"`
	BytesBefore int64 `json:"bytesBefore"`
	BytesAfter  int64 `json:"bytesAfter"`
}

// SettleCounters are the settler's running totals, for metrics and stats.
type SettleCounters struct {
	Level RecompressLevel // the background settler's level; off when it does not run
	// Passes are complete passes since open; BlocksSettled, BlocksNoGain, BytesBefore
	// and BytesAfter sum their work (and that of passes cut short).
	Passes                      int64
	BlocksSettled, BlocksNoGain int64
	BytesBefore, BytesAfter     int64
	Totals                      SettleTotals // since the store was created
}

// settleState is the Store's settling bookkeeping.
type settleState struct {
	run  sync.Mutex          // one pass at a time; guards skip and walked
	skip map[Digest]struct{} // tried without gain since open
	// walked holds the completed snapshots whose block maps a pass walked to the end
	// since open: they never change, so later passes do not walk them again (a block
	// of theirs left unsettled is found by the walk over block keys).
	walked map[string]struct{}

	mu     sync.Mutex // guards what follows
	level  RecompressLevel
	since  SettleCounters
	totals SettleTotals

	// Test seams, set before a pass: stage is told of each block at "encoded" (before
	// its rewrite) and "written" (committed, counters not yet updated), with no lock
	// held; sleep and clock replace the rate limiter's timer and clock.
	stage func(stage string, d Digest)
	sleep func(ctx context.Context, d time.Duration) error
	clock Clock // the limiter's clock, which a test's sleep moves; nil: the wall clock
}

// loadSettleTotals reads the durable totals at open.
func (s *Store) loadSettleTotals() error {
	var t SettleTotals
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(metaKey(settleTotalsKey))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error { return json.Unmarshal(v, &t) })
	})
	if err != nil {
		return fmt.Errorf("cas: load settle totals: %w", err)
	}
	s.settle.mu.Lock()
	s.settle.totals = t
	s.settle.mu.Unlock()
	return nil
}

// SettleCounters returns the settler's totals.
func (s *Store) SettleCounters() SettleCounters {
	s.settle.mu.Lock()
	defer s.settle.mu.Unlock()
	c := s.settle.since
	c.Level = s.settle.level
	if c.Level == "" {
		c.Level = RecompressOff
	}
	c.Totals = s.settle.totals
	return c
}

// Settle runs one pass now, without waiting for puts to stop: every stored block not
// yet settled is re-encoded at o.Level and rewritten when that makes it smaller.
func (s *Store) Settle(ctx context.Context, o SettleOptions) (SettleReport, error) {
	if s.local == nil {
		return SettleReport{}, ErrSettleNeedsBadger
	}
	return s.settlePass(ctx, o, nil)
}

// ErrSettleNeedsBadger refuses settling on a block store other than the embedded one:
// settling rewrites value-log entries in place of the old ones, in the same commit as
// its durable totals, which only the store's own Badger DB can do.
var ErrSettleNeedsBadger = errors.New("settling (--recompress) re-encodes blocks in the embedded Badger store only")

// putCount is the block puts committed since open: the settler's measure of activity.
func (s *Store) putCount() int64 {
	c := &s.ctr
	return c.blocksStored.Load() + c.blocksDedup.Load() + c.blocksZero.Load()
}

// idleGate holds the settler back while puts flow: it lets it go on only after two
// ticks in a row saw no put commit, so at least one whole tick period was quiet.
type idleGate struct {
	count func() int64
	ticks <-chan time.Time
	seen  int64 // the count when the gate last let the settler go
	// checked (tests) is told after each tick whether no put committed since the last.
	checked func(quiet bool)
}

// wait returns at once when no put committed since the gate last let the settler go,
// else when puts have stopped; it reports whether it waited.
func (g *idleGate) wait(ctx context.Context) (bool, error) {
	n := g.count()
	if n == g.seen {
		return false, nil
	}
	for quiet := 0; quiet < 2; {
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case <-g.ticks:
		}
		if m := g.count(); m == n {
			quiet++
		} else {
			quiet, n = 0, m
		}
		if g.checked != nil {
			g.checked(quiet > 0)
		}
	}
	g.seen = n
	return true, nil
}

// settleScratch is one pass's buffers: the decoded block, its new encoding, and the
// new encoding decoded again for the check.
type settleScratch struct {
	plain, enc, check []byte
}

// settlePass is one pass over the stored blocks. gate, when not nil, holds it back
// while puts flow.
func (s *Store) settlePass(ctx context.Context, o SettleOptions, gate *idleGate) (rep SettleReport, err error) {
	level, ok := o.Level.zstdLevel()
	if !ok {
		return rep, fmt.Errorf("cas: settle: no recompress level given (%q)", o.Level)
	}
	s.settle.run.Lock()
	defer s.settle.run.Unlock()
	start := time.Now()
	rep.Level = o.Level
	defer func() {
		rep.Duration = time.Since(start)
		lvl := s.log.Info
		if err == nil && rep.BlocksTried == 0 && rep.BlocksGone == 0 && rep.BlocksCorrupt == 0 {
			lvl = s.log.Debug // a pass after puts of nothing new: nothing to say
		}
		lvl("settle pass", "level", o.Level, "blocks_tried", rep.BlocksTried, "blocks_settled", rep.BlocksSettled,
			"blocks_no_gain", rep.BlocksNoGain, "bytes_before", rep.BytesBefore, "bytes_after", rep.BytesAfter,
			"pauses", rep.Pauses, "duration", rep.Duration, "err", err)
	}()
	// One encoder per pass: passes are rare, and nothing holds its memory between them.
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(level),
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(false), // the SHA-256 key verifies every block on read
		zstd.WithWindowSize(BlockSize),
		zstd.WithZeroFrames(true))
	if err != nil {
		return rep, fmt.Errorf("cas: settle: zstd encoder: %w", err)
	}
	defer enc.Close()
	if s.settle.skip == nil {
		s.settle.skip = make(map[Digest]struct{})
	}
	sleep := s.settle.sleep
	if sleep == nil {
		sleep = s.sleepCtx
	}
	// The wall clock, not the store's: a store on a test's manual clock still paces by
	// real sleeps.
	clock := s.settle.clock
	if clock == nil {
		clock = SystemClock{}
	}
	lim := pacer{rate: o.BytesPerSec, clock: clock, sleep: sleep}
	lim.restart()
	sc := settleScratch{
		plain: make([]byte, 0, BlockSize),
		enc:   make([]byte, 0, BlockSize),
		check: make([]byte, 0, BlockSize),
	}
	// Blocks found collected or rewritten from under the settler: not tried again in
	// this pass (the walk over block keys meets a block the image-order walk met).
	gone := map[Digest]struct{}{}
	settle := func(batch []Digest) error {
		for _, d := range batch {
			if _, ok := gone[d]; ok {
				continue
			}
			if gate != nil {
				waited, err := gate.wait(ctx)
				if err != nil {
					return err
				}
				if waited {
					rep.Pauses++
					lim.restart()
				}
			}
			if err := lim.wait(ctx, BlockSize); err != nil {
				return err
			}
			before := rep.BlocksGone
			if err := s.settleBlock(enc, d, &sc, &rep); err != nil {
				return err
			}
			if rep.BlocksGone != before {
				gone[d] = struct{}{}
			}
		}
		return nil
	}
	if err := s.settleImageOrder(ctx, settle); err != nil {
		return rep, err
	}
	after := []byte{prefixBlock}
	var batch []Digest
	for done := false; !done; {
		batch, after, done, err = s.settleCandidates(ctx, after, batch[:0])
		if err != nil {
			return rep, err
		}
		if err := settle(batch); err != nil {
			return rep, err
		}
	}
	s.settle.mu.Lock()
	s.settle.since.Passes++
	s.settle.mu.Unlock()
	return rep, nil
}

// settleImageOrder hands settle the blocks of every completed snapshot (deleted or
// not) not walked before, in image order: snapshots oldest first (a parent completes before its
// children start), each one's own block map in ascending index order, a page of
// settleBlocksPerTxn map entries at a time. A block already settled, tried without
// gain, known corrupt, collected, or met earlier in the walk is left out.
func (s *Store) settleImageOrder(ctx context.Context, settle func([]Digest) error) error {
	if s.settle.walked == nil {
		s.settle.walked = make(map[string]struct{})
	}
	// Deleted snapshots too: a child's view reads through its deleted parent's map
	// until a collection drops it.
	snaps := s.snapshotsWhere(func(*entry) bool { return true })
	known := make(map[string]struct{}, len(snaps))
	for _, sn := range snaps {
		known[sn.ID] = struct{}{}
	}
	for id := range s.settle.walked {
		if _, ok := known[id]; !ok {
			delete(s.settle.walked, id) // collected
		}
	}
	snaps = slices.DeleteFunc(snaps, func(sn Snapshot) bool {
		_, walked := s.settle.walked[sn.ID]
		return sn.Status != StatusCompleted || walked
	})
	slices.SortFunc(snaps, func(a, b Snapshot) int {
		if c := a.StartTime.Compare(b.StartTime); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	var page, batch []Digest
	for _, sn := range snaps {
		for from := int64(0); from >= 0; {
			var err error
			page, from, err = s.settleMapPage(ctx, sn.ID, from, page[:0])
			if err != nil {
				return err
			}
			if batch, err = s.settleUnsettled(ctx, page, batch[:0]); err != nil {
				return err
			}
			if err := settle(batch); err != nil {
				return err
			}
		}
		s.settle.walked[sn.ID] = struct{}{}
	}
	return nil
}

// settleMapPage appends to out the digests (zeros left out) of up to
// settleBlocksPerTxn entries of a snapshot's block map from index from on, in index
// order, and returns the index the next page starts at, or -1 after the last page.
func (s *Store) settleMapPage(ctx context.Context, id string, from int64, out []Digest) ([]Digest, int64, error) {
	next := int64(-1)
	prefix := mapPrefix(id)
	base, looked := len(out), 0
	err := s.view(ctx, func(tx core.CatalogTx) error {
		next, looked, out = -1, 0, out[:base] // a View may run fn again
		return tx.Scan(prefix, mapKey(id, from), func(k, v []byte) (bool, error) {
			if err := ctx.Err(); err != nil {
				return false, err
			}
			if looked == settleBlocksPerTxn {
				next = indexFromMapKey(k)
				return false, nil
			}
			looked++
			if len(v) != len(Digest{}) || len(k) != len(prefix)+8 {
				return true, nil // not a map entry: scrub reports it
			}
			if d := Digest(v); d != ZeroDigest {
				out = append(out, d)
			}
			return true, nil
		})
	})
	if err != nil {
		return out, -1, fmt.Errorf("cas: settle: read block map of %s: %w", id, err)
	}
	return out, next, nil
}

// settleCandidate says whether the stored block d, whose entry carries the tag meta, is
// one to settle: not settled yet, not tried before without gain, not known corrupt.
func (s *Store) settleCandidate(d Digest, meta byte) bool {
	if codec(meta)&codecSettled != 0 || s.knownCorrupt(d) {
		return false
	}
	_, tried := s.settle.skip[d]
	return !tried
}

// settleUnsettled appends to out, in their order and once each, the digests of page
// that name a stored block not settled, not tried without gain and not known corrupt.
// Only keys are read: the tag is in the key's entry.
func (s *Store) settleUnsettled(ctx context.Context, page, out []Digest) ([]Digest, error) {
	err := s.db.View(func(txn *badger.Txn) error {
		for _, d := range page {
			if err := ctx.Err(); err != nil {
				return err
			}
			if slices.Contains(out, d) {
				continue // met earlier on this page: blocks repeat within an image
			}
			item, err := txn.Get(blockKey(d))
			if errors.Is(err, badger.ErrKeyNotFound) {
				continue // collected since the map was read
			}
			if err != nil {
				return err
			}
			if s.settleCandidate(d, item.UserMeta()) {
				out = append(out, d)
			}
		}
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("cas: settle: look up blocks: %w", err)
	}
	return out, nil
}

// settleCandidates appends to out the digests of blocks after the key after that are
// not settled, not tried without gain and not known corrupt: at most settleBlocksPerTxn
// of them, and looking at no more than settleKeysPerTxn keys, so that one read view is
// short-lived however many blocks are settled already. It returns where the next call
// goes on from, and whether the walk reached the end. Only keys are read: the tag is
// in the key's entry.
func (s *Store) settleCandidates(ctx context.Context, after []byte, out []Digest) ([]Digest, []byte, bool, error) {
	done := true
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixBlock}})
		defer it.Close()
		looked := 0
		for it.Seek(after); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			item := it.Item()
			k := item.Key()
			if bytes.Equal(k, after) {
				continue // the last key of the previous call
			}
			if len(out) == settleBlocksPerTxn || looked == settleKeysPerTxn {
				done = false
				return nil
			}
			looked++
			after = item.KeyCopy(after[:0])
			if len(k) != 1+len(Digest{}) {
				continue // not a block key: scrub reports it
			}
			d := Digest(k[1:])
			if s.settleCandidate(d, item.UserMeta()) {
				out = append(out, d)
			}
		}
		return nil
	})
	if err != nil {
		return out, after, false, fmt.Errorf("cas: settle: list blocks: %w", err)
	}
	return out, after, done, nil
}

// settleBlock re-encodes one block and rewrites it if that makes it smaller.
func (s *Store) settleBlock(enc *zstd.Encoder, d Digest, sc *settleScratch, rep *SettleReport) error {
	var (
		version uint64
		oldLen  int
		tag     codec
		gone    bool
		problem string
	)
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(blockKey(d))
		if errors.Is(err, badger.ErrKeyNotFound) {
			gone = true
			return nil
		}
		if err != nil {
			return err
		}
		tag, version = codec(item.UserMeta()), item.Version()
		return item.Value(func(v []byte) error {
			oldLen = len(v)
			out, err := s.comp.decode(sc.plain[:0], v, tag)
			switch {
			case err != nil:
				problem = "cannot decode: " + err.Error()
			case len(out) != BlockSize || Sum(out) != d:
				problem = "does not hash to its key"
			}
			sc.plain = out[:0]
			return nil
		})
	})
	switch {
	case err != nil:
		return fmt.Errorf("cas: settle: read block %s: %w", d, err)
	case gone:
		rep.BlocksGone++
		return nil
	case tag&codecSettled != 0:
		return nil // settled by a pass run on demand meanwhile
	case problem != "":
		// Not the settler's to fix: marked (after a check under the stripe), so that a
		// put of its bytes heals it and scrub reports it.
		rep.BlocksCorrupt++
		s.markAfterFailedRead(d)
		return nil
	}
	plain := sc.plain[:BlockSize]
	rep.BlocksTried++
	sc.enc = enc.EncodeAll(plain, sc.enc[:0])
	if len(sc.enc) > oldLen-oldLen/settleMinGainDiv {
		rep.BlocksNoGain++
		s.settle.mu.Lock()
		s.settle.since.BlocksNoGain++
		s.settle.mu.Unlock()
		if len(s.settle.skip) < settleSkipMax {
			s.settle.skip[d] = struct{}{}
		}
		return nil
	}
	// The new encoding must be the same block before it replaces the old one.
	check, err := s.comp.decode(sc.check[:0], sc.enc, codecZstd)
	if err != nil || len(check) != BlockSize || Sum(check) != d {
		return fmt.Errorf("cas: settle: re-encoded block %s does not decode to itself (%v): not rewritten", d, err)
	}
	if fn := s.settle.stage; fn != nil {
		fn("encoded", d)
	}
	wrote, err := s.rewriteSettled(d, version, oldLen, sc.enc)
	if err != nil {
		return err
	}
	if !wrote {
		rep.BlocksGone++
		return nil
	}
	s.log.Debug("block settled", "digest", d.String(), "bytes_before", oldLen, "bytes_after", len(sc.enc))
	rep.BlocksSettled++
	rep.BytesBefore += int64(oldLen)
	rep.BytesAfter += int64(len(sc.enc))
	s.settle.mu.Lock()
	s.settle.since.BlocksSettled++
	s.settle.since.BytesBefore += int64(oldLen)
	s.settle.since.BytesAfter += int64(len(sc.enc))
	s.settle.mu.Unlock()
	// After the counters: a test told of the write sees it counted.
	if fn := s.settle.stage; fn != nil {
		fn("written", d)
	}
	return nil
}

// rewriteSettled replaces the stored value of d (oldLen bytes, still at version) with
// val (zstd, settled), adding the rewrite to the durable totals in the same commit. It
// reports whether it wrote: not when the block was collected or rewritten since it
// was read.
func (s *Store) rewriteSettled(d Digest, version uint64, oldLen int, val []byte) (bool, error) {
	// A settled copy is written before the old one becomes garbage, and only a
	// collection gives that back: to the free-space rule (space.go) it is new data,
	// refused before it could take the reserve that deletes and collections rely on.
	done, err := s.space.admit(int64(len(val)) + putOverhead)
	if err != nil {
		return false, err
	}
	defer done()
	// No collection between counting a block's size and deleting it (its counters
	// would subtract the old size), and no put, heal or corruption check of d between
	// the version check and the commit.
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	stripe := &s.stripes[d[0]]
	stripe.Lock()
	defer stripe.Unlock()
	bk := blockKey(d)
	s.settle.mu.Lock()
	totals := s.settle.totals
	s.settle.mu.Unlock()
	totals.Blocks++
	totals.BytesBefore += int64(oldLen)
	totals.BytesAfter += int64(len(val))
	var oldSize int64
	wrote := false
	err = s.update(func(txn *badger.Txn) error {
		item, err := txn.Get(bk)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil // collected: never bring it back
		}
		if err != nil {
			return err
		}
		if item.Version() != version {
			return nil // healed or rewritten since it was read
		}
		oldSize = valueLen(item)
		if err := txn.SetEntry(badger.NewEntry(bk, val).WithMeta(byte(codecZstd | codecSettled))); err != nil {
			return err
		}
		if err := setJSON(txn, metaKey(settleTotalsKey), totals); err != nil {
			return err
		}
		wrote = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("cas: settle: rewrite block %s: %w", d, err)
	}
	if !wrote {
		return false, nil
	}
	s.settle.mu.Lock()
	s.settle.totals = totals
	s.settle.mu.Unlock()
	// The stored-bytes counter measures each value as the block store does (valueLen,
	// as Stats and collections do): read back while the stripe keeps the block.
	err = s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(bk)
		if err != nil {
			return err
		}
		s.ctr.storedBytes.Add(valueLen(item) - oldSize)
		return nil
	})
	if err != nil {
		s.log.Warn("cannot read back the size of a settled block: stored-bytes metric is off until restart", "digest", d.String(), "err", err)
	}
	return true, nil
}

// settleLoop settles the store in the background at the configured level and rate,
// whenever no put has committed for the idle period, until the store closes.
func (s *Store) settleLoop() {
	defer s.wg.Done()
	o := SettleOptions{Level: s.opts.Recompress, BytesPerSec: s.opts.RecompressBytesPerSec}
	if o.BytesPerSec == 0 {
		o.BytesPerSec = DefaultRecompressBytesPerSec
	}
	idle := s.opts.RecompressIdle
	if idle <= 0 {
		idle = DefaultRecompressIdle
	}
	t := time.NewTicker(idle)
	defer t.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-s.stop; cancel() }() // ends with the loop: cancel closes it either way
	s.runSettle(ctx, o, &idleGate{count: s.putCount, ticks: t.C, seen: -1})
}

// runSettle is the settler: it waits for puts to stop, runs a pass (which waits again
// whenever puts flow), and after a complete pass waits for the next put before another.
// It returns when ctx ends.
func (s *Store) runSettle(ctx context.Context, o SettleOptions, gate *idleGate) {
	s.settle.mu.Lock()
	s.settle.level = o.Level
	s.settle.mu.Unlock()
	settledAt := int64(-1) // the put count when the last complete pass began
	warnedSpace := false
	for {
		if _, err := gate.wait(ctx); err != nil {
			return
		}
		if s.putCount() == settledAt {
			// Nothing was put since a complete pass: wait for a put, then for quiet.
			select {
			case <-ctx.Done():
				return
			case <-gate.ticks:
			}
			continue
		}
		began := s.putCount()
		_, err := s.settlePass(ctx, o, gate)
		switch {
		case err == nil:
			settledAt, warnedSpace = began, false
			continue
		case ctx.Err() != nil:
			return
		case errors.Is(err, ErrNoSpace):
			// Settling is new data to the free-space rule: it waits, like puts, for
			// a collection or the operator to make room.
			if !warnedSpace {
				s.log.Warn("settling paused: the data directory is too full for new copies of blocks", "err", err)
				warnedSpace = true
			}
		default:
			s.log.Error("settling", "err", err)
		}
		select { // whatever failed, not again at once
		case <-ctx.Done():
			return
		case <-gate.ticks:
		}
	}
}
