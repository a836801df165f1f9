package cas

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// settleFixture puts n compressible blocks (seeds 1..n) and, when random > 0, that many
// incompressible ones into one completed snapshot; it returns index → block.
func settleFixture(t *testing.T, s *Store, n, random int) (string, map[int64][]byte) {
	t.Helper()
	id := start(t, s, "")
	want := map[int64][]byte{}
	for i := range n {
		b := testBlock(uint64(i + 1))
		put(t, s, id, int64(i), b)
		want[int64(i)] = b
	}
	for i := n; i < n+random; i++ {
		b := randomBlock(t)
		put(t, s, id, int64(i), b)
		want[int64(i)] = b
	}
	if _, err := s.CompleteSnapshot(context.Background(), owner, id, int64(n+random), nil); err != nil {
		t.Fatal(err)
	}
	return id, want
}

func stats(t *testing.T, s *Store) Stats {
	t.Helper()
	st, err := s.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

var settleLevel = SettleOptions{Level: RecompressBetter} // the level matters little here, and the strongest is slow under -race

// Settling a store of realistic blocks, taken in by each codec, shrinks what is stored,
// leaves every block reading back bit-exact, counts what it did (in the report, the
// counters, the scan and the durable totals, which a restart keeps), and does not try a
// settled or a no-gain block again.
func TestSettleShrinksAndReadsBack(t *testing.T) {
	for _, comp := range []Compression{CompressZstd, CompressS2, CompressNone} {
		t.Run(string(comp), func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(Options{Dir: dir, ExpireInterval: -1, Compression: comp, ValueLogFileSize: 1 << 20})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = s.Close() }()
			<-s.ContentsCounted()
			const n, random = 12, 2
			id, want := settleFixture(t, s, n, random)
			before := stats(t, s)
			rep, err := s.Settle(context.Background(), settleLevel)
			if err != nil {
				t.Fatal(err)
			}
			if rep.BlocksTried != n+random || rep.BlocksSettled != n || rep.BlocksNoGain != random {
				t.Fatalf("report %+v: want %d tried, %d settled, %d without gain", rep, n+random, n, random)
			}
			if rep.BytesAfter >= rep.BytesBefore {
				t.Fatalf("settled blocks grew: %d → %d bytes", rep.BytesBefore, rep.BytesAfter)
			}
			sameView(t, readView(t, s, id), want)
			after := stats(t, s)
			if after.StoredBytes >= before.StoredBytes || after.UniqueBlocks != before.UniqueBlocks {
				t.Fatalf("stored %d → %d bytes, unique %d → %d: want fewer bytes, the same blocks",
					before.StoredBytes, after.StoredBytes, before.UniqueBlocks, after.UniqueBlocks)
			}
			if saved := before.StoredBytes - after.StoredBytes; saved < (rep.BytesBefore-rep.BytesAfter)*9/10 {
				t.Fatalf("the scan sees %d bytes saved, the report %d", saved, rep.BytesBefore-rep.BytesAfter)
			}
			if after.SettledBlocks != n || after.Settled.Blocks != n ||
				after.Settled.BytesBefore != rep.BytesBefore || after.Settled.BytesAfter != rep.BytesAfter {
				t.Fatalf("stats %+v after a pass of %+v", after, rep)
			}
			wantCountersMatchStats(t, s, "after settling")
			c := s.SettleCounters()
			if c.Passes != 1 || c.BlocksSettled != n || c.BlocksNoGain != random || c.BytesBefore != rep.BytesBefore || c.BytesAfter != rep.BytesAfter {
				t.Fatalf("counters %+v after a pass of %+v", c, rep)
			}
			// Settled blocks are skipped, and so are the ones that did not shrink.
			rep2, err := s.Settle(context.Background(), settleLevel)
			if err != nil {
				t.Fatal(err)
			}
			if rep2.BlocksTried != 0 || rep2.BlocksSettled != 0 {
				t.Fatalf("second pass %+v: want nothing tried", rep2)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s2 := countedStore(t, dir, nil)
			defer func() { _ = s2.Close() }()
			sameView(t, readView(t, s2, id), want)
			st := stats(t, s2)
			if st.SettledBlocks != n || st.Settled != after.Settled || st.StoredBytes != after.StoredBytes {
				t.Fatalf("after a restart: %+v, before it %+v", st, after)
			}
			wantCountersMatchStats(t, s2, "after a restart")
		})
	}
}

// copyStore copies a store's files as they are now, as kill -9 would leave them: every
// write Badger made is in the page cache, which reading the files sees.
func copyStore(t *testing.T, from string) string {
	t.Helper()
	to := t.TempDir()
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() || e.Name() == "LOCK" || e.Name() == spaceReserveFile {
			continue
		}
		src, err := os.Open(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		dst, err := os.Create(filepath.Join(to, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(dst, src); err != nil {
			t.Fatal(err)
		}
		_ = src.Close()
		if err := dst.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return to
}

// A crash in the middle of settling loses nothing. The store's files are copied (what
// kill -9 leaves) with the settler stopped after re-encoding a block and before
// rewriting it, and again after the rewrite committed and before anything counted it;
// each copy opens with every block reading back bit-exact, and durable totals that
// count exactly the blocks stored settled.
func TestSettleCrashLosesNothing(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, ExpireInterval: -1, ValueLogFileSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	id, want := settleFixture(t, s, 8, 0)
	copies := map[string]string{}
	var calls int
	s.settle.stage = func(stage string, _ Digest) {
		calls++
		if calls == 5 || calls == 8 { // block 3 encoded, block 4 written
			copies[stage] = copyStore(t, dir)
		}
	}
	if _, err := s.Settle(context.Background(), settleLevel); err != nil {
		t.Fatal(err)
	}
	if len(copies) != 2 {
		t.Fatalf("copies taken at %v", copies)
	}
	for stage, cp := range copies {
		c, err := Open(Options{Dir: cp, ExpireInterval: -1, ValueLogFileSize: 1 << 20})
		if err != nil {
			t.Fatalf("copy taken at %s: %v", stage, err)
		}
		sameView(t, readView(t, c, id), want)
		st := stats(t, c)
		wantSettled := map[string]int64{"encoded": 2, "written": 4}[stage]
		if st.SettledBlocks != wantSettled || st.Settled.Blocks != wantSettled {
			t.Errorf("copy taken at %s: %d blocks settled, totals say %d; want %d", stage, st.SettledBlocks, st.Settled.Blocks, wantSettled)
		}
		if _, err := c.Settle(context.Background(), settleLevel); err != nil {
			t.Fatal(err)
		}
		sameView(t, readView(t, c, id), want)
		if st := stats(t, c); st.SettledBlocks != 8 || st.Settled.Blocks != 8 {
			t.Errorf("copy taken at %s, settled again: %d blocks settled, totals %d", stage, st.SettledBlocks, st.Settled.Blocks)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// A block collected while the settler re-encoded it stays collected, and a block
// rewritten meanwhile (as a heal rewrites a corrupt copy, under its stripe) keeps the
// rewrite: the settler writes only over the very version it read.
func TestSettleNeverResurrectsOrOverwrites(t *testing.T) {
	s := openGCStore(t)
	doomed := writeSnap(t, s, "", map[int64]uint64{0: 1})
	kept := writeSnap(t, s, "", map[int64]uint64{0: 2})
	dDoomed, dKept := Sum(testBlock(1)), Sum(testBlock(2))
	healedTo := testBlock(2) // stored raw: what the put path writes with CompressNone
	s.settle.stage = func(stage string, d Digest) {
		if stage != "encoded" {
			return
		}
		switch d {
		case dDoomed:
			if err := s.DeleteSnapshot(context.Background(), owner, doomed); err != nil {
				t.Error(err)
			}
			if rep, err := s.GC(context.Background(), false); err != nil || rep.BlocksReclaimed != 1 {
				t.Errorf("collection while settling: %+v %v", rep, err)
			}
		case dKept:
			s.stripes[d[0]].Lock()
			err := s.update(func(txn *badger.Txn) error {
				return txn.SetEntry(badger.NewEntry(blockKey(d), healedTo).WithMeta(byte(codecRaw)))
			})
			s.stripes[d[0]].Unlock()
			if err != nil {
				t.Error(err)
			}
		}
	}
	rep, err := s.Settle(context.Background(), settleLevel)
	if err != nil {
		t.Fatal(err)
	}
	if rep.BlocksGone != 2 || rep.BlocksSettled != 0 {
		t.Fatalf("report %+v: want both blocks gone from under the settler", rep)
	}
	if has, err := s.hasBlock(context.Background(), dDoomed); err != nil || has {
		t.Fatalf("collected block is stored again (%v, %v)", has, err)
	}
	if st := stats(t, s); st.SettledBlocks != 0 || st.UniqueBlocks != 1 || st.Settled.Blocks != 0 {
		t.Fatalf("stats %+v", st)
	}
	sameView(t, readView(t, s, kept), map[int64][]byte{0: testBlock(2)})
	wantCountersMatchStats(t, s, "after settling beside a collection")
}

// Settling racing puts (new and deduplicated), reads and collections never loses or
// corrupts a block, and the running counters still equal a scan.
func TestSettleRacingPutsReadsGC(t *testing.T) {
	dir := t.TempDir()
	s := countedStore(t, dir, nil)
	defer func() { _ = s.Close() }()
	ctx := context.Background()
	base, baseWant := settleFixture(t, s, 16, 0)
	var (
		wg   sync.WaitGroup
		stop = make(chan struct{})
		mu   sync.Mutex
		live = map[string]map[int64][]byte{base: baseWant}
	)
	wg.Go(func() { // puts: new snapshots of new and already stored blocks; every other one deleted
		defer close(stop)
		for round := range 12 {
			id := start(t, s, "")
			w := map[int64][]byte{}
			for i := range 6 {
				b := testBlock(uint64(1 + (round*7+i)%40)) // seeds 1–16 are stored already
				put(t, s, id, int64(i), b)
				w[int64(i)] = b
			}
			if _, err := s.CompleteSnapshot(ctx, owner, id, 6, nil); err != nil {
				t.Error(err)
				return
			}
			if round%2 == 1 {
				if err := s.DeleteSnapshot(ctx, owner, id); err != nil {
					t.Error(err)
				}
				continue
			}
			mu.Lock()
			live[id] = w
			mu.Unlock()
		}
	})
	wg.Go(func() { // collections
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.GC(ctx, false); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Go(func() { // reads
		for {
			select {
			case <-stop:
				return
			default:
			}
			for i, b := range baseWant {
				got, err := s.ReadBlock(nil, Sum(b))
				if err != nil || !bytes.Equal(got, b) {
					t.Errorf("block %d read while settling: %v", i, err)
					return
				}
			}
		}
	})
	wg.Go(func() { // settling, pass after pass
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.Settle(ctx, settleLevel); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Wait()
	if _, err := s.Settle(ctx, settleLevel); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(ctx, false); err != nil {
		t.Fatal(err)
	}
	for id, w := range live {
		sameView(t, readView(t, s, id), w)
	}
	wantCountersMatchStats(t, s, "after settling beside puts, reads and collections")
	if rep, err := s.Scrub(ctx, ScrubOptions{}); err != nil || rep.CorruptBlockCount != 0 {
		t.Fatalf("scrub: %+v %v", rep, err)
	}
	if st := stats(t, s); st.SettledBlocks == 0 {
		t.Fatal("nothing was settled")
	}
}

// The background settler waits for puts to stop before it starts and pauses when they
// resume: with the idle ticks under the test's control, it settles nothing until two
// ticks in a row saw no put, and after a put between two blocks it settles nothing
// more until puts have stopped again.
func TestSettleIdlePause(t *testing.T) {
	s := openTestStore(t)
	settleFixture(t, s, 6, 0)
	ticks := make(chan time.Time) // unbuffered: a send returns once the settler took it
	checked := make(chan bool, 16)
	gate := &idleGate{count: s.putCount, ticks: ticks, seen: -1, checked: func(quiet bool) { checked <- quiet }}
	written := make(chan Digest, 16)
	resume := make(chan struct{})
	nWritten := 0 // the settler's goroutine alone counts
	s.settle.stage = func(stage string, d Digest) {
		if stage != "written" {
			return
		}
		nWritten++
		written <- d
		if nWritten == 1 {
			<-resume // the test puts a block before the settler goes on
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.runSettle(ctx, settleLevel, gate) }()
	defer func() { cancel(); <-done }()
	settled := func() int64 { return s.SettleCounters().BlocksSettled }

	tick := func(wantQuiet bool) {
		t.Helper()
		select {
		case ticks <- time.Time{}:
		case <-time.After(30 * time.Second):
			t.Fatal("the settler did not wait for a tick")
		}
		if q := receive(t, checked, "the idle check"); q != wantQuiet {
			t.Fatalf("idle check says quiet=%v, want %v", q, wantQuiet)
		}
	}
	tick(true)
	putOne(t, s, testBlock(100)) // puts flow: not idle yet
	tick(false)
	tick(true)
	if n := settled(); n != 0 {
		t.Fatalf("%d blocks settled before two quiet ticks", n)
	}
	tick(true) // two quiet ticks: the pass starts
	receive(t, written, "the first block settled")
	putOne(t, s, testBlock(101)) // a put in the middle of the pass
	close(resume)
	tick(true)
	if n := settled(); n != 1 {
		t.Fatalf("%d blocks settled while puts flowed, want 1", n)
	}
	tick(true)
	for range 7 { // the other five blocks of the fixture, and the two put since
		receive(t, written, "the rest of the pass")
	}
	if n := settled(); n != 8 {
		t.Fatalf("%d blocks settled, want 8", n)
	}
}

// The rate bound holds: with a clock that moves only when the settler sleeps, a pass
// over n blocks at r bytes per second sleeps n×BlockSize/r in all.
func TestSettleRateLimit(t *testing.T) {
	clock := NewManualClock(time.Unix(1_700_000_000, 0))
	s := openTestStore(t)
	settleFixture(t, s, 6, 0)
	s.settle.clock = clock
	var slept time.Duration
	s.settle.sleep = func(_ context.Context, d time.Duration) error {
		slept += d
		clock.Advance(d)
		return nil
	}
	const rate = 1 << 20
	rep, err := s.Settle(context.Background(), SettleOptions{Level: RecompressBetter, BytesPerSec: rate})
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Duration(rep.BlocksTried) * BlockSize * time.Second / rate; rep.BlocksTried != 6 || slept != want {
		t.Fatalf("%d blocks at %d B/s slept %v, want %v", rep.BlocksTried, rate, slept, want)
	}
}

// Settling is new data to the free-space rule: on a disk too full for new data it
// rewrites nothing and says why.
func TestSettleRefusedOnFullDisk(t *testing.T) {
	s := openTestStore(t)
	id, want := settleFixture(t, s, 3, 0)
	s.space.mu.Lock()
	s.space.statfs = func(string) (uint64, uint64, error) { return 1 << 20, 1 << 30, nil }
	s.space.mu.Unlock()
	_, err := s.Settle(context.Background(), settleLevel)
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("settling on a full disk: %v, want ErrNoSpace", err)
	}
	if st := stats(t, s); st.SettledBlocks != 0 {
		t.Fatalf("%d blocks rewritten on a full disk", st.SettledBlocks)
	}
	sameView(t, readView(t, s, id), want)
}

// The old copies settling leaves behind are garbage Badger sees: once a collection has
// made compaction count them, the value-log files holding them are rewritten and the
// store's files shrink.
func TestSettleSpaceComesBack(t *testing.T) {
	s := openGCStore(t) // 1 MiB value-log files, blocks stored raw: settling halves them
	settleFixture(t, s, 24, 0)
	if _, err := s.Settle(context.Background(), settleLevel); err != nil {
		t.Fatal(err)
	}
	before := dirBytes(s.opts.Dir)
	if err := s.settleDiscards(); err != nil {
		t.Fatal(err)
	}
	rewritten := 0
	for {
		err := s.rewriteValueLogFile(0.5)
		if errors.Is(err, badger.ErrNoRewrite) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		rewritten++
	}
	after := dirBytes(s.opts.Dir)
	if rewritten == 0 || after >= before {
		t.Fatalf("%d value-log files rewritten, the store's files %d → %d bytes", rewritten, before, after)
	}
	wantCountersMatchStats(t, s, "after giving space back")
}

// Settling rewrites the blocks of completed snapshots in image order: each snapshot's
// own block map in index order, oldest snapshot first, then whatever else is stored
// (a pending snapshot's blocks) in digest order. The settled copies therefore sit in
// the value log in the order a sequential read of the image asks for them, and a
// collection that moves them keeps that order. Every block reads back bit-exact.
func TestSettleInImageOrder(t *testing.T) {
	s := openGCStore(t) // 1 MiB value-log files, blocks stored raw: settling shrinks them
	ctx := context.Background()
	var (
		mu      sync.Mutex
		written []Digest
	)
	s.settle.stage = func(stage string, d Digest) {
		if stage == "written" {
			mu.Lock()
			written = append(written, d)
			mu.Unlock()
		}
	}
	// The base: 16 blocks put in a shuffled order, one of them twice (dedup), a zero
	// block and an incompressible one (no gain).
	base := start(t, s, "")
	want := map[int64][]byte{}
	for _, i := range []int64{9, 2, 14, 0, 7, 11, 4, 15, 1, 12, 6, 3, 10, 8, 5, 13} {
		want[i] = testBlock(uint64(100 + i))
	}
	want[16] = want[3] // the same block again
	want[17] = make([]byte, BlockSize)
	want[18] = randomBlock(t)
	for _, i := range []int64{16, 9, 2, 14, 0, 7, 11, 4, 15, 1, 12, 6, 3, 10, 8, 5, 13, 17, 18} {
		put(t, s, base, i, want[i])
	}
	complete(t, s, base, int64(len(want)))
	// A child rewrites two blocks and adds one; a pending snapshot holds two more.
	child := start(t, s, base)
	wantChild := maps.Clone(want)
	for _, i := range []int64{20, 4, 9} {
		wantChild[i] = testBlock(uint64(200 + i))
		put(t, s, child, i, wantChild[i])
	}
	complete(t, s, child, 3)
	pending := start(t, s, "")
	var pendingDigests []Digest
	for i := range int64(2) {
		b := testBlock(uint64(300 + i))
		put(t, s, pending, i, b)
		pendingDigests = append(pendingDigests, Sum(b))
	}

	var order []Digest // what image order is
	for i := range int64(17) {
		if d := Sum(want[i]); !slices.Contains(order, d) {
			order = append(order, d)
		}
	}
	for _, i := range []int64{4, 9, 20} {
		order = append(order, Sum(wantChild[i]))
	}
	slices.SortFunc(pendingDigests, func(a, b Digest) int { return bytes.Compare(a[:], b[:]) })
	order = append(order, pendingDigests...)

	rep, err := s.Settle(ctx, settleLevel)
	if err != nil {
		t.Fatal(err)
	}
	if rep.BlocksSettled != int64(len(order)) || rep.BlocksNoGain != 1 {
		t.Fatalf("report %+v: want %d settled, 1 without gain", rep, len(order))
	}
	if !slices.Equal(written, order) {
		t.Fatalf("blocks rewritten in the order\n%v\nwant image order\n%v", short(written), short(order))
	}
	wantLaidOut(t, s, order[:len(order)-len(pendingDigests)], "after settling")
	sameView(t, readView(t, s, base), want)
	sameView(t, readView(t, s, child), wantChild)

	// The old copies are given back; the settled ones keep their order when moved.
	if err := s.settleDiscards(); err != nil {
		t.Fatal(err)
	}
	for {
		err := s.rewriteValueLogFile(0.01)
		if errors.Is(err, badger.ErrNoRewrite) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	wantLaidOut(t, s, order[:len(order)-len(pendingDigests)], "after giving space back")
	sameView(t, readView(t, s, base), want)
	sameView(t, readView(t, s, child), wantChild)

	// A snapshot completed later is settled in its own index order on the next pass,
	// and what was settled or tried before is not tried again.
	written = nil
	late := start(t, s, "")
	var lateOrder []Digest
	for _, i := range []int64{3, 1, 2, 0} {
		put(t, s, late, i, testBlock(uint64(400+i)))
	}
	for i := range int64(4) {
		lateOrder = append(lateOrder, Sum(testBlock(uint64(400+i))))
	}
	complete(t, s, late, 4)
	rep, err = s.Settle(ctx, settleLevel)
	if err != nil {
		t.Fatal(err)
	}
	if rep.BlocksTried != 4 || !slices.Equal(written, lateOrder) {
		t.Fatalf("second pass %+v rewrote %v, want %v only", rep, short(written), short(lateOrder))
	}
	wantCountersMatchStats(t, s, "after settling in image order")
}

func short(ds []Digest) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.String()[:8]
	}
	return out
}

// wantLaidOut checks that the stored values of blocks sit in the value-log files in
// the order given: file by file (their numbers ascend as Badger writes them), offset
// by offset.
func wantLaidOut(t *testing.T, s *Store, order []Digest, when string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(s.opts.Dir, "*.vlog"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(files) // zero-padded numbers: names sort as the files were created
	contents := make([][]byte, len(files))
	for i, f := range files {
		if contents[i], err = os.ReadFile(f); err != nil {
			t.Fatal(err)
		}
	}
	lastFile, lastOff := -1, -1
	for n, d := range order {
		var val []byte
		err := s.db.View(func(txn *badger.Txn) error {
			item, err := txn.Get(blockKey(d))
			if err != nil {
				return err
			}
			val, err = item.ValueCopy(nil)
			return err
		})
		if err != nil {
			t.Fatalf("%s: block %d of the order: %v", when, n, err)
		}
		file, off := -1, -1
		for i, c := range contents {
			if j := bytes.Index(c, val); j >= 0 {
				file, off = i, j
				break
			}
		}
		if file < 0 {
			t.Fatalf("%s: block %d of the order (%s) is in no value-log file", when, n, d.String()[:8])
		}
		if file < lastFile || (file == lastFile && off < lastOff) {
			t.Fatalf("%s: block %d of the order (%s) is at %s+%d, before the block before it (%s+%d)",
				when, n, d.String()[:8], filepath.Base(files[file]), off, filepath.Base(files[lastFile]), lastOff)
		}
		lastFile, lastOff = file, off
	}
}
