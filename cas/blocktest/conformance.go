package blocktest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/ebsd/ebsd/cas/core"
)

// suiteTimeout bounds each subtest's context: generous for a network engine, and a
// store that ignores its context still ends at go test's -timeout.
const suiteTimeout = 2 * time.Minute

// watchdog bounds the calls that a store with a lock held across a callback, or
// between goroutines, could deadlock in: such a store fails the subtest instead of
// hanging it.
const watchdog = 30 * time.Second

// errStop is what the suite's callbacks return to stop a Walk or fail a Read.
var errStop = errors.New("blocktest: the callback stopped")

// Run is the conformance suite of core.BlockStore: it checks, in subtests, the rules
// the interface's documentation says every implementation MUST keep. open returns a
// fresh, empty store each call (registering with t whatever cleanup it needs); every
// subtest opens its own.
//
// Beyond the documented rules the suite requires what the rules leave implicit: a
// block of zero bytes is stored and read back like any other, Read does not call fn
// for an absent block, Walk calls fn no more once its context has ended (not even for
// blocks it has already fetched), and Walk's callback may call the store (Read, Put,
// Delete) without deadlock. It cannot check that blocks survive a crash or power loss;
// engines test that themselves.
//
// The suite runs in well under a second on a local engine and moves about 3 MiB of
// block data each way in about 1,200 calls, so a network engine can afford it.
func Run(t *testing.T, open func(t *testing.T) core.BlockStore) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s core.BlockStore)
	}{
		{"EmptyStore", testEmptyStore},
		{"RoundTripTags", testRoundTripTags},
		{"Absent", testAbsent},
		{"ZeroLength", testZeroLength},
		{"Replace", testReplace},
		{"Delete", testDelete},
		{"PutMany", testPutMany},
		{"FullSizeBlocks", testFullSizeBlocks},
		{"PutDataReuse", testPutDataReuse},
		{"ReadFnError", testReadFnError},
		{"WalkOrder", testWalkOrder},
		{"WalkFrom", testWalkFrom},
		{"WalkStop", testWalkStop},
		{"WalkCancelled", testWalkCancelled},
		{"WalkWhileModifying", testWalkWhileModifying},
		{"Sync", testSync},
		{"Concurrent", testConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			if s == nil {
				t.Fatal("open returned a nil store")
			}
			tc.fn(t, s)
		})
	}
}

// --- helpers ---

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), suiteTimeout)
	t.Cleanup(cancel)
	return ctx
}

// randomData returns n incompressible bytes, the same for the same seed.
func randomData(seed uint64, n int) []byte {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	key[31] = 0xb1 // not all zero, whatever the seed
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(key).Read(b) // ChaCha8.Read never fails
	return b
}

// compressibleData returns n bytes of repetitive text, the same for the same seed.
func compressibleData(seed uint64, n int) []byte {
	var buf bytes.Buffer
	for i := 0; buf.Len() < n; i++ {
		fmt.Fprintf(&buf, "block %d of seed %d: the quick brown fox jumps over the lazy dog\n", i, seed)
	}
	return buf.Bytes()[:n]
}

// randomBlock returns a block of n random bytes under their SHA-256.
func randomBlock(seed uint64, tag byte, n int) core.StoredBlock {
	data := randomData(seed, n)
	return core.StoredBlock{Digest: core.Sum(data), Tag: tag, Data: data}
}

// digestOf returns a digest unlike any real block's: the SHA-256 of name.
func digestOf(format string, args ...any) core.Digest {
	return core.Sum(fmt.Appendf(nil, format, args...))
}

// nextDigest returns d+1 as a big-endian number; ok is false if d is all 0xff.
func nextDigest(d core.Digest) (core.Digest, bool) {
	for i := len(d) - 1; i >= 0; i-- {
		d[i]++
		if d[i] != 0 {
			return d, true
		}
	}
	return d, false
}

// prevDigest returns d-1 as a big-endian number; ok is false if d is all zero.
func prevDigest(d core.Digest) (core.Digest, bool) {
	for i := len(d) - 1; i >= 0; i-- {
		d[i]--
		if d[i] != 0xff {
			return d, true
		}
	}
	return d, false
}

func put(t *testing.T, ctx context.Context, s core.BlockStore, blocks ...core.StoredBlock) {
	t.Helper()
	if err := s.Put(ctx, blocks); err != nil {
		t.Fatalf("Put of %d blocks: %v", len(blocks), err)
	}
}

func del(t *testing.T, ctx context.Context, s core.BlockStore, ds ...core.Digest) {
	t.Helper()
	if err := s.Delete(ctx, ds); err != nil {
		t.Fatalf("Delete of %d digests: %v", len(ds), err)
	}
}

// read returns a copy of block d's tag and bytes and how many times fn was called.
func read(ctx context.Context, s core.BlockStore, d core.Digest) (tag byte, data []byte, calls int, err error) {
	err = s.Read(ctx, d, func(tg byte, b []byte) error {
		calls++
		tag, data = tg, bytes.Clone(b)
		return nil
	})
	return tag, data, calls, err
}

// diffData describes how got differs from want, or returns "" if they are equal.
func diffData(got, want []byte) string {
	if bytes.Equal(got, want) {
		return ""
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	return fmt.Sprintf("%d bytes, want %d; first difference at offset %d", len(got), len(want), i)
}

// wantBlock checks that Read returns b's tag and bytes and Stat its length.
func wantBlock(t *testing.T, ctx context.Context, s core.BlockStore, b core.StoredBlock) {
	t.Helper()
	tag, data, calls, err := read(ctx, s, b.Digest)
	switch {
	case err != nil:
		t.Errorf("Read %s: %v", b.Digest, err)
	case calls != 1:
		t.Errorf("Read %s called fn %d times, want once", b.Digest, calls)
	default:
		if tag != b.Tag {
			t.Errorf("Read %s: tag %#x, want %#x", b.Digest, tag, b.Tag)
		}
		if d := diffData(data, b.Data); d != "" {
			t.Errorf("Read %s: data of %s", b.Digest, d)
		}
	}
	size, err := s.Stat(ctx, b.Digest)
	if err != nil {
		t.Errorf("Stat %s: %v", b.Digest, err)
	} else if size != int64(len(b.Data)) {
		t.Errorf("Stat %s = %d, want %d", b.Digest, size, len(b.Data))
	}
}

// wantAbsent checks that Read and Stat say block d is not stored.
func wantAbsent(t *testing.T, ctx context.Context, s core.BlockStore, d core.Digest) {
	t.Helper()
	_, _, calls, err := read(ctx, s, d)
	if !errors.Is(err, core.ErrBlockNotFound) {
		t.Errorf("Read of absent block %s: error %v, want one wrapping core.ErrBlockNotFound", d, err)
	}
	if calls != 0 {
		t.Errorf("Read of absent block %s called fn %d times", d, calls)
	}
	size, err := s.Stat(ctx, d)
	if !errors.Is(err, core.ErrBlockNotFound) {
		t.Errorf("Stat of absent block %s = %d, %v; want an error wrapping core.ErrBlockNotFound", d, size, err)
	}
}

type walked struct {
	d    core.Digest
	size int64
}

// walk returns what a Walk from from visits, failing t if the walk errs or visits
// digests out of order or before from.
func walk(t *testing.T, ctx context.Context, s core.BlockStore, from core.Digest) []walked {
	t.Helper()
	var got []walked
	err := s.Walk(ctx, from, func(d core.Digest, size int64) error {
		got = append(got, walked{d, size})
		return nil
	})
	if err != nil {
		t.Fatalf("Walk from %s: %v", from, err)
	}
	if err := checkWalkOrder(from, got); err != nil {
		t.Fatal(err)
	}
	return got
}

// checkWalkOrder checks that got is ascending, without repeats, and from from on.
func checkWalkOrder(from core.Digest, got []walked) error {
	for i, w := range got {
		if i == 0 && compareDigests(w.d, from) < 0 {
			return fmt.Errorf("walk from %s visited %s first, a digest before from", from, w.d)
		}
		if i > 0 && compareDigests(got[i-1].d, w.d) >= 0 {
			return fmt.Errorf("walk from %s visited %s after %s: not strictly ascending", from, w.d, got[i-1].d)
		}
	}
	return nil
}

// wantWalk checks that a Walk from from visits exactly the blocks of want at or after
// from, with their sizes.
func wantWalk(t *testing.T, ctx context.Context, s core.BlockStore, from core.Digest, want []core.StoredBlock) {
	t.Helper()
	var exp []walked
	for _, b := range want {
		if compareDigests(b.Digest, from) >= 0 {
			exp = append(exp, walked{b.Digest, int64(len(b.Data))})
		}
	}
	slices.SortFunc(exp, func(a, b walked) int { return compareDigests(a.d, b.d) })
	got := walk(t, ctx, s, from)
	if slices.Equal(got, exp) {
		return
	}
	t.Errorf("Walk from %s visited %d blocks, want %d", from, len(got), len(exp))
	for i := range max(len(got), len(exp)) {
		var g, e walked
		if i < len(got) {
			g = got[i]
		}
		if i < len(exp) {
			e = exp[i]
		}
		if g != e {
			t.Errorf("first difference at visit %d: got %s size %d, want %s size %d", i, g.d, g.size, e.d, e.size)
			return
		}
	}
}

// within runs f on another goroutine and waits at most watchdog for it, so a store
// that deadlocks fails the test instead of hanging it. f must not use t.
func within(t *testing.T, ctx context.Context, what string, f func() error) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, watchdog)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		t.Fatalf("%s did not return within %v: deadlock? (%v)", what, watchdog, context.Cause(ctx))
		return nil
	}
}

// --- subtests ---

func testEmptyStore(t *testing.T, s core.BlockStore) {
	ctx := testContext(t)
	var maxDigest core.Digest
	for i := range maxDigest {
		maxDigest[i] = 0xff
	}
	for _, from := range []core.Digest{{}, core.ZeroDigest, maxDigest} {
		if got := walk(t, ctx, s, from); len(got) != 0 {
			t.Errorf("Walk of an empty store from %s visited %d blocks", from, len(got))
		}
	}
	wantAbsent(t, ctx, s, digestOf("never put"))
	wantAbsent(t, ctx, s, core.Digest{})
	if err := s.Put(ctx, nil); err != nil {
		t.Errorf("Put of no blocks: %v", err)
	}
	if err := s.Put(ctx, []core.StoredBlock{}); err != nil {
		t.Errorf("Put of an empty slice: %v", err)
	}
	if err := s.Delete(ctx, nil); err != nil {
		t.Errorf("Delete of no digests: %v", err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Errorf("Sync of an empty store: %v", err)
	}
	if got := walk(t, ctx, s, core.Digest{}); len(got) != 0 {
		t.Errorf("Walk after empty Puts visited %d blocks", len(got))
	}
}

func testRoundTripTags(t *testing.T, s core.BlockStore) {
	ctx := testContext(t)
	tags := []byte{0x00, 0x01, 0x02, 0x7f, 0x80, 0x81, 0xfe, 0xff}
	var blocks []core.StoredBlock
	for i, tag := range tags {
		blocks = append(blocks, randomBlock(uint64(100+i), tag, 1+i*997))
	}
	// Half in one call, the rest one call each.
	put(t, ctx, s, blocks[:4]...)
	for _, b := range blocks[4:] {
		put(t, ctx, s, b)
	}
	for _, b := range blocks {
		wantBlock(t, ctx, s, b)
	}
	wantWalk(t, ctx, s, core.Digest{}, blocks)
	// Reading again gives the same: a read consumes nothing.
	wantBlock(t, ctx, s, blocks[0])
}

func testAbsent(t *testing.T, s core.BlockStore) {
	ctx := testContext(t)
	b := randomBlock(200, 0x81, 300)
	put(t, ctx, s, b)
	wantBlock(t, ctx, s, b)
	// Digests next to a stored one, and ones sharing its prefix, are still absent.
	near := []core.Digest{digestOf("absent")}
	if d, ok := nextDigest(b.Digest); ok {
		near = append(near, d)
	}
	if d, ok := prevDigest(b.Digest); ok {
		near = append(near, d)
	}
	flipped := b.Digest
	flipped[0] ^= 0x80
	near = append(near, flipped)
	for _, d := range near {
		wantAbsent(t, ctx, s, d)
	}
}

func testZeroLength(t *testing.T, s core.BlockStore) {
	ctx := testContext(t)
	empty := []core.StoredBlock{
		{Digest: digestOf("empty nil"), Tag: 0x81, Data: nil},
		{Digest: digestOf("empty slice"), Tag: 0x00, Data: []byte{}},
	}
	put(t, ctx, s, empty...)
	for _, b := range empty {
		wantBlock(t, ctx, s, b)
	}
	wantWalk(t, ctx, s, core.Digest{}, empty)
	// A block can change to empty and back.
	b := randomBlock(300, 1, 1000)
	put(t, ctx, s, b)
	emptied := core.StoredBlock{Digest: b.Digest, Tag: 2}
	put(t, ctx, s, emptied)
	wantBlock(t, ctx, s, emptied)
	put(t, ctx, s, b)
	wantBlock(t, ctx, s, b)
	wantWalk(t, ctx, s, core.Digest{}, append(empty, b))
}

func testReplace(t *testing.T, s core.BlockStore) {
	ctx := testContext(t)
	first := randomBlock(400, 0x00, 5000)
	other := randomBlock(401, 0x01, 700)
	put(t, ctx, s, first, other)
	versions := []core.StoredBlock{
		{Digest: first.Digest, Tag: 0x81, Data: randomData(402, 1200)},   // smaller
		{Digest: first.Digest, Tag: 0x02, Data: randomData(403, 1200)},   // same size, other bytes
		{Digest: first.Digest, Tag: 0x02, Data: randomData(404, 9000)},   // larger, same tag
		{Digest: first.Digest, Tag: 0x00, Data: compressibleData(5, 64)}, // back to tag 0
	}
	for i, v := range versions {
		put(t, ctx, s, v)
		wantBlock(t, ctx, s, v)
		wantWalk(t, ctx, s, core.Digest{}, []core.StoredBlock{v, other})
		if t.Failed() {
			t.Fatalf("after replacement %d", i)
		}
	}
	wantBlock(t, ctx, s, other)
	// A replacement inside a batch with a new block.
	last := core.StoredBlock{Digest: first.Digest, Tag: 0x7f, Data: randomData(405, 33)}
	fresh := randomBlock(406, 0x80, 44)
	put(t, ctx, s, fresh, last)
	wantBlock(t, ctx, s, last)
	wantBlock(t, ctx, s, fresh)
	wantWalk(t, ctx, s, core.Digest{}, []core.StoredBlock{last, other, fresh})
}

func testDelete(t *testing.T, s core.BlockStore) {
	ctx := testContext(t)
	var blocks []core.StoredBlock
	for i := range 6 {
		blocks = append(blocks, randomBlock(uint64(500+i), byte(i), 100+i))
	}
	put(t, ctx, s, blocks...)
	a, b, c, d, e, f := blocks[0], blocks[1], blocks[2], blocks[3], blocks[4], blocks[5]

	del(t, ctx, s, a.Digest)
	wantAbsent(t, ctx, s, a.Digest)
	wantBlock(t, ctx, s, b)
	wantWalk(t, ctx, s, core.Digest{}, blocks[1:])

	// Several in one call, with a digest never put, one already deleted and a repeat.
	del(t, ctx, s, b.Digest, digestOf("never put"), a.Digest, c.Digest, b.Digest)
	for _, x := range []core.StoredBlock{a, b, c} {
		wantAbsent(t, ctx, s, x.Digest)
	}
	for _, x := range []core.StoredBlock{d, e, f} {
		wantBlock(t, ctx, s, x)
	}
	wantWalk(t, ctx, s, core.Digest{}, []core.StoredBlock{d, e, f})

	// Deleting what is absent is not an error.
	if err := s.Delete(ctx, []core.Digest{a.Digest}); err != nil {
		t.Errorf("Delete of a deleted block: %v", err)
	}
	if err := s.Delete(ctx, []core.Digest{digestOf("also never put")}); err != nil {
		t.Errorf("Delete of a block never put: %v", err)
	}

	// A deleted block can be put again, with another tag.
	again := core.StoredBlock{Digest: b.Digest, Tag: 0x81, Data: randomData(510, 77)}
	put(t, ctx, s, again)
	wantBlock(t, ctx, s, again)

	del(t, ctx, s, again.Digest, d.Digest, e.Digest, f.Digest)
	for _, x := range blocks {
		wantAbsent(t, ctx, s, x.Digest)
	}
	if got := walk(t, ctx, s, core.Digest{}); len(got) != 0 {
		t.Errorf("Walk after every block was deleted visited %d blocks", len(got))
	}
}

func testPutMany(t *testing.T, s core.BlockStore) {
	ctx := testContext(t)
	rng := rand.New(rand.NewPCG(600, 1))
	blocks := make([]core.StoredBlock, 300)
	for i := range blocks {
		blocks[i] = randomBlock(uint64(600_000+i), byte(i), 1+rng.IntN(2048))
	}
	put(t, ctx, s, blocks...)
	for _, b := range blocks {
		wantBlock(t, ctx, s, b)
		if t.Failed() {
			t.FailNow()
		}
	}
	wantWalk(t, ctx, s, core.Digest{}, blocks)
	// And many deleted in one call.
	ds := make([]core.Digest, 0, len(blocks)/2)
	for _, b := range blocks[:len(blocks)/2] {
		ds = append(ds, b.Digest)
	}
	del(t, ctx, s, ds...)
	wantWalk(t, ctx, s, core.Digest{}, blocks[len(blocks)/2:])
	wantAbsent(t, ctx, s, blocks[0].Digest)
}

func testFullSizeBlocks(t *testing.T, s core.BlockStore) {
	ctx := testContext(t)
	zeros := make([]byte, core.BlockSize)
	compressible := compressibleData(700, core.BlockSize)
	blocks := []core.StoredBlock{
		randomBlock(701, 0x81, core.BlockSize),
		randomBlock(702, 0x00, core.BlockSize-1),
		{Digest: core.ZeroDigest, Tag: 0x01, Data: zeros},
		{Digest: core.Sum(compressible), Tag: 0x02, Data: compressible},
		randomBlock(703, 0xff, 1),
		randomBlock(704, 0x80, 64<<10+1),
	}
	put(t, ctx, s, blocks...)
	for _, b := range blocks {
		wantBlock(t, ctx, s, b)
	}
	wantWalk(t, ctx, s, core.Digest{}, blocks)

	// A full block replaced by a small encoding of it, and back.
	small := core.StoredBlock{Digest: blocks[0].Digest, Tag: 0x03, Data: randomData(705, 10)}
	put(t, ctx, s, small)
	wantBlock(t, ctx, s, small)
	put(t, ctx, s, blocks[0])
	wantBlock(t, ctx, s, blocks[0])
}

func testPutDataReuse(t *testing.T, s core.BlockStore) {
	ctx := testContext(t)
	buf := randomData(800, 8192)
	batch := []core.StoredBlock{
		{Digest: digestOf("reuse 1"), Tag: 0x81, Data: buf[:4096]},
		{Digest: digestOf("reuse 2"), Tag: 0x00, Data: buf[4096:]},
	}
	want := []core.StoredBlock{
		{Digest: batch[0].Digest, Tag: batch[0].Tag, Data: bytes.Clone(batch[0].Data)},
		{Digest: batch[1].Digest, Tag: batch[1].Tag, Data: bytes.Clone(batch[1].Data)},
	}
	put(t, ctx, s, batch...)
	// The caller reuses everything it passed: the bytes, and the slice of blocks.
	for i := range buf {
		buf[i] = 0xa5
	}
	batch[0] = core.StoredBlock{Digest: digestOf("other"), Tag: 0x55, Data: buf}
	batch[1].Tag = 0x66
	for _, b := range want {
		wantBlock(t, ctx, s, b)
	}
	wantAbsent(t, ctx, s, digestOf("other"))
	wantWalk(t, ctx, s, core.Digest{}, want)
}

func testReadFnError(t *testing.T, s core.BlockStore) {
	ctx := testContext(t)
	b := randomBlock(900, 0x81, 2048)
	put(t, ctx, s, b)
	calls := 0
	err := s.Read(ctx, b.Digest, func(byte, []byte) error {
		calls++
		return errStop
	})
	if !errors.Is(err, errStop) {
		t.Errorf("Read whose fn failed returned %v, want fn's error", err)
	}
	if errors.Is(err, core.ErrBlockNotFound) {
		t.Errorf("Read whose fn failed says the block is absent: %v", err)
	}
	if calls != 1 {
		t.Errorf("Read called fn %d times, want once", calls)
	}
	// fn's error on a block that is there changes nothing.
	wantBlock(t, ctx, s, b)
}

// walkKeys returns a set of digests with the edge cases of ordering: the smallest
// digest, one short of the largest, neighbours differing in the last byte only, digests
// differing in the first byte only, and random ones.
func walkKeys() []core.Digest {
	rng := rand.New(rand.NewPCG(1000, 2))
	random := func() core.Digest {
		var d core.Digest
		for i := 0; i < len(d); i += 8 {
			binary.BigEndian.PutUint64(d[i:], rng.Uint64())
		}
		return d
	}
	var top core.Digest
	for i := range top {
		top[i] = 0xff
	}
	top[len(top)-1] = 0xfe
	keys := []core.Digest{{}, top}
	base := random()
	base[len(base)-1] = 0x10
	next, _ := nextDigest(base)
	keys = append(keys, base, next)
	carry := random()
	for i := 16; i < len(carry); i++ {
		carry[i] = 0xff
	}
	afterCarry, _ := nextDigest(carry) // differs from carry from byte 15 on
	keys = append(keys, carry, afterCarry)
	firstByte := random()
	firstByte[0] = 0x00
	keys = append(keys, firstByte)
	firstByte[0] = 0x80
	keys = append(keys, firstByte)
	firstByte[0] = 0x7f
	keys = append(keys, firstByte)
	for range 9 {
		keys = append(keys, random())
	}
	return keys
}

// putWalkKeys stores a block under each of walkKeys, in shuffled order over three
// calls, and returns the blocks.
func putWalkKeys(t *testing.T, ctx context.Context, s core.BlockStore) []core.StoredBlock {
	t.Helper()
	rng := rand.New(rand.NewPCG(1001, 3))
	keys := walkKeys()
	blocks := make([]core.StoredBlock, len(keys))
	for i, d := range keys {
		blocks[i] = core.StoredBlock{Digest: d, Tag: byte(rng.UintN(256)), Data: randomData(uint64(1100+i), 1+rng.IntN(200))}
	}
	shuffled := slices.Clone(blocks)
	rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	third := len(shuffled) / 3
	put(t, ctx, s, shuffled[:third]...)
	put(t, ctx, s, shuffled[third:2*third]...)
	put(t, ctx, s, shuffled[2*third:]...)
	return blocks
}

func testWalkOrder(t *testing.T, s core.BlockStore) {
	ctx := testContext(t)
	blocks := putWalkKeys(t, ctx, s)
	wantWalk(t, ctx, s, core.Digest{}, blocks)
	for _, b := range blocks {
		wantBlock(t, ctx, s, b)
	}
}

func testWalkFrom(t *testing.T, s core.BlockStore) {
	ctx := testContext(t)
	blocks := putWalkKeys(t, ctx, s)
	froms := []core.Digest{{}}
	for _, b := range blocks {
		// from itself is visited; from just after a key is between keys (or on the
		// next, for neighbours); from just before one is visited from that key.
		froms = append(froms, b.Digest)
		if d, ok := nextDigest(b.Digest); ok {
			froms = append(froms, d)
		}
		if d, ok := prevDigest(b.Digest); ok {
			froms = append(froms, d)
		}
	}
	var past core.Digest
	for i := range past {
		past[i] = 0xff
	}
	froms = append(froms, past) // past every key: nothing
	for _, from := range froms {
		wantWalk(t, ctx, s, from, blocks)
		if t.Failed() {
			t.FailNow()
		}
	}
	if got := walk(t, ctx, s, past); len(got) != 0 {
		t.Errorf("Walk from past every key visited %d blocks", len(got))
	}
}

func testWalkStop(t *testing.T, s core.BlockStore) {
	ctx := testContext(t)
	blocks := putWalkKeys(t, ctx, s)
	all := walk(t, ctx, s, core.Digest{})
	if len(all) != len(blocks) {
		t.Fatalf("Walk visited %d blocks, want %d", len(all), len(blocks))
	}
	for _, stopAt := range []int{1, 4, len(all)} {
		var got []walked
		err := s.Walk(ctx, core.Digest{}, func(d core.Digest, size int64) error {
			got = append(got, walked{d, size})
			if len(got) == stopAt {
				return errStop
			}
			return nil
		})
		if !errors.Is(err, errStop) {
			t.Errorf("Walk whose fn failed at visit %d returned %v, want fn's error", stopAt, err)
		}
		if !slices.Equal(got, all[:min(len(got), len(all))]) || len(got) != stopAt {
			t.Errorf("Walk whose fn failed at visit %d made %d visits, want %d (fn is not called after it fails)",
				stopAt, len(got), stopAt)
		}
	}
	// A wrapped error is returned too, and from any from.
	wrapped := fmt.Errorf("visiting: %w", errStop)
	err := s.Walk(ctx, all[3].d, func(core.Digest, int64) error { return wrapped })
	if !errors.Is(err, errStop) {
		t.Errorf("Walk whose fn failed with a wrapped error returned %v", err)
	}
}

func testWalkCancelled(t *testing.T, s core.BlockStore) {
	ctx := testContext(t)
	putWalkKeys(t, ctx, s)

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	calls := 0
	err := s.Walk(cancelled, core.Digest{}, func(core.Digest, int64) error { calls++; return nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Walk with a cancelled context returned %v, want an error wrapping context.Canceled", err)
	}
	if calls != 0 {
		t.Errorf("Walk with a cancelled context called fn %d times", calls)
	}

	expired, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancel()
	calls = 0
	err = s.Walk(expired, core.Digest{}, func(core.Digest, int64) error { calls++; return nil })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Walk with an expired context returned %v, want an error wrapping context.DeadlineExceeded", err)
	}
	if calls != 0 {
		t.Errorf("Walk with an expired context called fn %d times", calls)
	}

	// Cancelled by fn during the walk: no visit after that, though blocks remain.
	const cancelAt = 3
	midway, cancel := context.WithCancel(ctx)
	defer cancel()
	calls = 0
	err = s.Walk(midway, core.Digest{}, func(core.Digest, int64) error {
		calls++
		if calls == cancelAt {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Walk whose context was cancelled during it returned %v, want an error wrapping context.Canceled", err)
	}
	if calls != cancelAt {
		t.Errorf("Walk whose context was cancelled at visit %d made %d visits", cancelAt, calls)
	}
}

func testWalkWhileModifying(t *testing.T, s core.BlockStore) {
	ctx := testContext(t)
	blocks := putWalkKeys(t, ctx, s)
	sorted := slices.Clone(blocks)
	slices.SortFunc(sorted, func(a, b core.StoredBlock) int { return compareDigests(a.Digest, b.Digest) })
	const modifyAt = 2
	deleted := sorted[modifyAt+3]
	replaced := core.StoredBlock{Digest: sorted[modifyAt+5].Digest, Tag: 0x42, Data: randomData(1200, 999)}
	added := randomBlock(1201, 0x43, 555)
	behind := core.StoredBlock{Digest: sorted[0].Digest, Tag: 0x44, Data: randomData(1202, 1)}

	var got []walked
	var problems []string
	err := within(t, ctx, "Walk whose fn calls the store", func() error {
		return s.Walk(ctx, core.Digest{}, func(d core.Digest, size int64) error {
			got = append(got, walked{d, size})
			_, _, _, err := read(ctx, s, d)
			if err != nil && !(d == deleted.Digest && errors.Is(err, core.ErrBlockNotFound)) {
				problems = append(problems, fmt.Sprintf("Read of %s during the walk: %v", d, err))
			}
			if len(got) == modifyAt {
				if err := s.Delete(ctx, []core.Digest{deleted.Digest}); err != nil {
					return fmt.Errorf("Delete during the walk: %w", err)
				}
				if err := s.Put(ctx, []core.StoredBlock{replaced, added, behind}); err != nil {
					return fmt.Errorf("Put during the walk: %w", err)
				}
			}
			return nil
		})
	})
	if err != nil {
		t.Fatalf("Walk whose fn modified the store: %v", err)
	}
	for _, p := range problems {
		t.Error(p)
	}
	if err := checkWalkOrder(core.Digest{}, got); err != nil {
		t.Fatal(err)
	}
	// Every block neither deleted nor added during the walk is visited exactly once
	// (order makes it at most once), with its size before or after a replacement.
	visits := make(map[core.Digest]int64, len(got))
	for _, w := range got {
		visits[w.d] = w.size
	}
	for _, b := range blocks {
		if b.Digest == deleted.Digest {
			continue
		}
		size, ok := visits[b.Digest]
		if !ok {
			t.Errorf("Walk during modifications skipped %s, a block stored all along", b.Digest)
			continue
		}
		switch b.Digest {
		case replaced.Digest:
			if size != int64(len(b.Data)) && size != int64(len(replaced.Data)) {
				t.Errorf("Walk visited replaced block %s with size %d, want %d or %d", b.Digest, size, len(b.Data), len(replaced.Data))
			}
		case behind.Digest:
			if size != int64(len(b.Data)) {
				t.Errorf("Walk visited %s with size %d before it was replaced with %d bytes, want %d", b.Digest, size, len(behind.Data), len(b.Data))
			}
		default:
			if size != int64(len(b.Data)) {
				t.Errorf("Walk visited %s with size %d, want %d", b.Digest, size, len(b.Data))
			}
		}
	}
	// Afterwards the store holds exactly the result of the modifications.
	final := []core.StoredBlock{added}
	for _, b := range blocks {
		switch b.Digest {
		case deleted.Digest:
		case replaced.Digest:
			final = append(final, replaced)
		case behind.Digest:
			final = append(final, behind)
		default:
			final = append(final, b)
		}
	}
	wantWalk(t, ctx, s, core.Digest{}, final)
	wantAbsent(t, ctx, s, deleted.Digest)
	wantBlock(t, ctx, s, replaced)
	wantBlock(t, ctx, s, added)
	wantBlock(t, ctx, s, behind)
}

func testSync(t *testing.T, s core.BlockStore) {
	ctx := testContext(t)
	if err := s.Sync(ctx); err != nil {
		t.Fatalf("Sync of an empty store: %v", err)
	}
	a := randomBlock(1300, 0x81, 4096)
	put(t, ctx, s, a)
	if err := s.Sync(ctx); err != nil {
		t.Fatalf("Sync after a Put: %v", err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatalf("Sync again: %v", err)
	}
	b := randomBlock(1301, 0x00, 100)
	put(t, ctx, s, b)
	del(t, ctx, s, a.Digest)
	if err := s.Sync(ctx); err != nil {
		t.Fatalf("Sync after a Delete: %v", err)
	}
	wantAbsent(t, ctx, s, a.Digest)
	wantBlock(t, ctx, s, b)
	wantWalk(t, ctx, s, core.Digest{}, []core.StoredBlock{b})
}

// Concurrent use: workers each own some digests (so each can tell what they must hold)
// and share others, whose values are self-checking so a torn value (one writer's tag
// with another's bytes, or mixed bytes) shows. A walker walks meanwhile.
const (
	concWorkers    = 4
	concIterations = 60
	concOwn        = 4
	concShared     = 3
)

func ownDigest(worker, i int) core.Digest { return digestOf("own %d %d", worker, i) }
func sharedDigest(i int) core.Digest      { return digestOf("shared %d", i) }
func sharedSize(i int) int                { return 1000 + 500*i }

// selfChecking returns a block whose bytes begin with seed and whose tag and remaining
// bytes are derived from it.
func selfChecking(d core.Digest, seed uint64, size int) core.StoredBlock {
	data := make([]byte, 8, size)
	binary.LittleEndian.PutUint64(data, seed)
	data = append(data, randomData(seed, size-8)...)
	return core.StoredBlock{Digest: d, Tag: byte(seed*0x9e3779b97f4a7c15>>56) | 1, Data: data}
}

// checkSelfChecking returns the seed of a value made by selfChecking, or an error if
// the value is not one it makes.
func checkSelfChecking(d core.Digest, tag byte, data []byte) (uint64, error) {
	if len(data) < 8 {
		return 0, fmt.Errorf("block %s: %d bytes, too short to be a value the test put", d, len(data))
	}
	seed := binary.LittleEndian.Uint64(data)
	want := selfChecking(d, seed, len(data))
	if tag != want.Tag {
		return seed, fmt.Errorf("block %s: tag %#x with the bytes of a put whose tag was %#x: torn value", d, tag, want.Tag)
	}
	if diff := diffData(data, want.Data); diff != "" {
		return seed, fmt.Errorf("block %s: data of %s from what the writer put: torn value", d, diff)
	}
	return seed, nil
}

type concResult struct {
	worker int
	err    error
	own    map[core.Digest]int64 // the own blocks the worker left, with their sizes
}

func concWorker(ctx context.Context, s core.BlockStore, w int) concResult {
	res := concResult{worker: w}
	fail := func(format string, args ...any) concResult {
		res.err = fmt.Errorf(format, args...)
		return res
	}
	rng := rand.New(rand.NewPCG(uint64(w), 1400))
	type state struct {
		seed uint64
		size int
	}
	model := map[int]state{}
	for it := range concIterations {
		seed := uint64(w+1)<<32 | uint64(it+1)
		j, k := rng.IntN(concOwn), rng.IntN(concShared)
		switch rng.IntN(10) {
		case 0, 1:
			size := 8 + rng.IntN(4096)
			if err := s.Put(ctx, []core.StoredBlock{selfChecking(ownDigest(w, j), seed, size)}); err != nil {
				return fail("Put: %v", err)
			}
			model[j] = state{seed, size}
		case 2:
			tag, data, _, err := read(ctx, s, ownDigest(w, j))
			st, ok := model[j]
			switch {
			case !ok && !errors.Is(err, core.ErrBlockNotFound):
				return fail("Read of own block %d, absent: %v", j, err)
			case ok && err != nil:
				return fail("Read of own block %d: %v", j, err)
			case ok:
				got, err := checkSelfChecking(ownDigest(w, j), tag, data)
				if err != nil {
					return fail("Read of own block %d: %v", j, err)
				}
				if got != st.seed {
					return fail("Read of own block %d: value of put %#x, want the last, %#x", j, got, st.seed)
				}
			}
		case 3:
			size, err := s.Stat(ctx, ownDigest(w, j))
			st, ok := model[j]
			switch {
			case !ok && !errors.Is(err, core.ErrBlockNotFound):
				return fail("Stat of own block %d, absent: %d, %v", j, size, err)
			case ok && (err != nil || size != int64(st.size)):
				return fail("Stat of own block %d = %d, %v; want %d", j, size, err, st.size)
			}
		case 4:
			if err := s.Delete(ctx, []core.Digest{ownDigest(w, j)}); err != nil {
				return fail("Delete: %v", err)
			}
			delete(model, j)
		case 5:
			if err := s.Put(ctx, []core.StoredBlock{selfChecking(sharedDigest(k), seed, sharedSize(k))}); err != nil {
				return fail("Put of shared block: %v", err)
			}
		case 6:
			tag, data, _, err := read(ctx, s, sharedDigest(k))
			if errors.Is(err, core.ErrBlockNotFound) {
				continue
			}
			if err != nil {
				return fail("Read of shared block %d: %v", k, err)
			}
			if _, err := checkSelfChecking(sharedDigest(k), tag, data); err != nil {
				return fail("Read of shared block %d: %v", k, err)
			}
		case 7:
			size, err := s.Stat(ctx, sharedDigest(k))
			if err != nil && !errors.Is(err, core.ErrBlockNotFound) || err == nil && size != int64(sharedSize(k)) {
				return fail("Stat of shared block %d = %d, %v; want %d or absent", k, size, err, sharedSize(k))
			}
		case 8:
			if err := s.Delete(ctx, []core.Digest{sharedDigest(k), ownDigest(w, j)}); err != nil {
				return fail("Delete of shared and own block: %v", err)
			}
			delete(model, j)
		case 9:
			j2 := (j + 1) % concOwn
			size, size2 := 8+rng.IntN(2048), 8+rng.IntN(2048)
			batch := []core.StoredBlock{
				selfChecking(ownDigest(w, j), seed, size),
				selfChecking(sharedDigest(k), seed, sharedSize(k)),
				selfChecking(ownDigest(w, j2), seed^1, size2),
			}
			if err := s.Put(ctx, batch); err != nil {
				return fail("Put of a batch: %v", err)
			}
			model[j], model[j2] = state{seed, size}, state{seed ^ 1, size2}
		}
	}
	// No one else touches this worker's blocks: they hold what it put last.
	res.own = make(map[core.Digest]int64)
	for j := range concOwn {
		d := ownDigest(w, j)
		tag, data, _, err := read(ctx, s, d)
		st, ok := model[j]
		if !ok {
			if !errors.Is(err, core.ErrBlockNotFound) {
				return fail("own block %d, deleted last, reads %v", j, err)
			}
			continue
		}
		if err != nil {
			return fail("own block %d: %v", j, err)
		}
		if got, err := checkSelfChecking(d, tag, data); err != nil || got != st.seed {
			return fail("own block %d: value of put %#x (%v), want the last, %#x", j, got, err, st.seed)
		}
		res.own[d] = int64(st.size)
	}
	return res
}

func concWalker(ctx context.Context, s core.BlockStore) error {
	shared := make(map[core.Digest]int64, concShared)
	for k := range concShared {
		shared[sharedDigest(k)] = int64(sharedSize(k))
	}
	for range 5 {
		var got []walked
		err := s.Walk(ctx, core.Digest{}, func(d core.Digest, size int64) error {
			got = append(got, walked{d, size})
			return nil
		})
		if err != nil {
			return fmt.Errorf("Walk during concurrent use: %w", err)
		}
		if err := checkWalkOrder(core.Digest{}, got); err != nil {
			return err
		}
		for _, w := range got {
			if want, ok := shared[w.d]; ok && w.size != want {
				return fmt.Errorf("Walk visited shared block %s with size %d, want %d", w.d, w.size, want)
			}
		}
	}
	return nil
}

func testConcurrent(t *testing.T, s core.BlockStore) {
	ctx := testContext(t)
	ctx, cancel := context.WithTimeout(ctx, watchdog)
	defer cancel()
	results := make(chan concResult, concWorkers+1) // buffered: no sender waits if the test gave up
	for w := range concWorkers {
		go func() { results <- concWorker(ctx, s, w) }()
	}
	go func() { results <- concResult{worker: -1, err: concWalker(ctx, s)} }()

	own := make(map[core.Digest]int64)
	for range concWorkers + 1 {
		select {
		case r := <-results:
			if r.err != nil {
				if r.worker < 0 {
					t.Errorf("walker: %v", r.err)
				} else {
					t.Errorf("worker %d: %v", r.worker, r.err)
				}
			}
			for d, size := range r.own {
				own[d] = size
			}
		case <-ctx.Done():
			t.Fatalf("concurrent calls did not finish within %v: deadlock? (%v)", watchdog, context.Cause(ctx))
		}
	}
	if t.Failed() {
		return
	}
	// A final walk sees exactly the own blocks the workers left, and shared blocks
	// at their fixed sizes.
	isOwn := make(map[core.Digest]bool)
	for w := range concWorkers {
		for j := range concOwn {
			isOwn[ownDigest(w, j)] = true
		}
	}
	seen := 0
	for _, w := range walk(t, ctx, s, core.Digest{}) {
		if isOwn[w.d] {
			size, ok := own[w.d]
			if !ok {
				t.Errorf("Walk visited %s, deleted last by its worker", w.d)
			} else if size != w.size {
				t.Errorf("Walk visited %s with size %d, want %d", w.d, w.size, size)
			}
			seen++
		}
	}
	if seen != len(own) {
		t.Errorf("Walk visited %d of the workers' blocks, want %d", seen, len(own))
	}
}
