package cas

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// A block-map value shorter than a digest (a damaged record) is counted and logged by
// Stats, which used to panic converting it to a Digest.
func TestStatsCountsShortBlockMapValueAsCorrupt(t *testing.T) {
	var logged bytes.Buffer
	s, err := Open(Options{Dir: t.TempDir(), ExpireInterval: -1, Compression: CompressNone,
		Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	id := writeSnap(t, s, "", map[int64]uint64{0: 1})
	zero := make([]byte, BlockSize)
	snap, err := s.StartSnapshot(context.Background(), StartParams{OwnerID: owner, VolumeSize: 1, TimeoutMinutes: 60})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutBlock(context.Background(), owner, snap.ID, 3, zero, Sum(zero)); err != nil {
		t.Fatal(err)
	}
	// Damage: a map entry of the completed snapshot whose value is 5 bytes.
	if err := s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(mapKey(id, 7), []byte("short"))
	}); err != nil {
		t.Fatal(err)
	}

	st, err := s.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.MappedBlocks != 3 || st.ZeroBlocks != 1 || st.CorruptRecords != 1 {
		t.Fatalf("stats %+v: want 3 mapped, 1 zero, 1 corrupt", st)
	}
	if !strings.Contains(logged.String(), "corrupt block-map entry") {
		t.Fatalf("the corrupt entry was not logged: %s", logged.String())
	}
}
