package cas

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"syscall"

	"github.com/ebsd/ebsd/cas/core"
)

// Stats describe what the store holds. They are computed by a scan of keys (values
// are not read), so they cost O(stored blocks + map entries), not O(volume size).
type Stats struct {
	Snapshots int `json:"snapshots"`
	// UniqueBlocks are distinct non-zero blocks stored; StoredBytes their size on disk
	// after compression: the length of the encoded values the block store holds.
	UniqueBlocks int64 `json:"uniqueBlocks"`
	StoredBytes  int64 `json:"storedBytes"`
	// MappedBlocks are block-map entries over all snapshots (each index written in each
	// snapshot); ZeroBlocks those of them that are all zeros.
	MappedBlocks int64 `json:"mappedBlocks"`
	ZeroBlocks   int64 `json:"zeroBlocks"`
	// CorruptRecords are block-map entries whose value is not a digest (it has the
	// wrong length); each is logged. They count in MappedBlocks.
	CorruptRecords int64 `json:"corruptRecords,omitempty"`
	// KnownCorruptBlocks are stored blocks a read or a scrub found corrupt and no put
	// has healed yet (`ebsctl scrub` lists them with the snapshots that map them).
	KnownCorruptBlocks int64 `json:"knownCorruptBlocks"`
	// LSMBytes and VlogBytes are Badger's own file sizes.
	LSMBytes  int64 `json:"lsmBytes"`
	VlogBytes int64 `json:"vlogBytes"`
	// SettledBlocks are the stored blocks settling re-encoded at a stronger level
	// (settle.go), SettledBytes their stored size; they count in UniqueBlocks and
	// StoredBytes. Settled is what settling has done since the store was created
	// (blocks collected since included); RecompressLevel the level it runs at now.
	SettledBlocks   int64           `json:"settledBlocks"`
	SettledBytes    int64           `json:"settledBytes"`
	Settled         SettleTotals    `json:"settled"`
	RecompressLevel RecompressLevel `json:"recompressLevel"`
}

// Stats scans the store.
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	s.snapsMu.RLock()
	st.Snapshots = len(s.snaps)
	s.snapsMu.RUnlock()
	st.KnownCorruptBlocks = s.heal.n.Load()
	count := func(_ Digest, size int64, tag byte) error {
		st.UniqueBlocks++
		st.StoredBytes += size
		if codec(tag)&codecSettled != 0 {
			st.SettledBlocks++
			st.SettledBytes += size
		}
		return nil
	}
	var err error
	if s.local != nil {
		err = s.local.walkTags(ctx, Digest{}, count) // the tag is in the key's entry: no value read
	} else {
		err = s.blocks.Walk(ctx, Digest{}, func(d Digest, size int64) error { return count(d, size, 0) })
	}
	if err != nil {
		return st, fmt.Errorf("cas: stats: %w", err)
	}
	err = s.view(ctx, func(txn core.CatalogTx) error {
		st.MappedBlocks, st.ZeroBlocks, st.CorruptRecords = 0, 0, 0
		return txn.Scan([]byte{prefixMap}, nil, func(k, v []byte) (bool, error) {
			if err := ctx.Err(); err != nil {
				return false, err
			}
			st.MappedBlocks++
			// Converting a short slice to a Digest panics: a damaged entry must not
			// take the daemon down with it.
			if len(v) != len(Digest{}) {
				st.CorruptRecords++
				s.log.Error("corrupt block-map entry: value is not a digest",
					"key", fmt.Sprintf("%q", k), "value_bytes", len(v))
				return true, nil
			}
			if Digest(v) == ZeroDigest {
				st.ZeroBlocks++
			}
			return true, nil
		})
	})
	st.LSMBytes, st.VlogBytes = s.db.Size()
	sc := s.SettleCounters()
	st.Settled, st.RecompressLevel = sc.Totals, sc.Level
	return st, err
}

// dirBytes is the space the files under dir take on disk (allocated blocks, as du
// counts them: Badger's value-log files are sparse). The space reserve (space.go) is
// not the store's data and is left out: it is the same size whatever is stored.
func dirBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == spaceReserveFile {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			n += st.Blocks * 512
		}
		return nil
	})
	return n
}
