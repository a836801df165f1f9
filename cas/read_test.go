package cas

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/ebsd/ebsd/cas/castest"
)

const owner = "111122223333"

func openTestStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(Options{Dir: t.TempDir(), ExpireInterval: -1})
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

func TestCacheSingleFlightAndCancel(t *testing.T) {
	s := openTestStore(t)
	data := make([]byte, BlockSize)
	castest.CompressibleBlock(data, 2)
	d := putOne(t, s, data)
	cache := NewBlockCache(s, 4*BlockSize, 2)
	defer cache.Close()

	// A reader that gives up at once does not spoil the fetch for the others.
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := cache.Block(cancelled, d); !errors.Is(err, context.Canceled) {
		t.Logf("cancelled reader got %v (a cached hit is fine too)", err)
	}
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			got, err := cache.Block(context.Background(), d)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("concurrent read: %v", err)
			}
		})
	}
	wg.Wait()
	if st := cache.Stats(); st.Blocks != 1 {
		t.Fatalf("cache holds %d blocks, want 1", st.Blocks)
	}
	if zero, err := cache.Block(context.Background(), ZeroDigest); err != nil || !bytes.Equal(zero, make([]byte, BlockSize)) {
		t.Fatal("zero block")
	}
	cache.Prefetch(d)
	deadline := time.Now().Add(5 * time.Second)
	for cache.Stats().Misses > 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
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
