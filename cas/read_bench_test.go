package cas

import (
	"context"
	"encoding/binary"
	"sync/atomic"
	"testing"

	"github.com/ebsd/ebsd/cas/castest"
)

// BenchmarkReadBlock reads stored blocks of real data back (Badger read, decompress,
// SHA-256 verify): the per-block cost that bounds cold reads through the API and FUSE.
func BenchmarkReadBlock(b *testing.B) {
	corpus := castest.RealCorpus(b, 64<<20)
	for _, kind := range []Compression{CompressZstd, CompressS2, CompressNone} {
		b.Run(string(kind), func(b *testing.B) {
			s, err := Open(Options{Dir: b.TempDir(), ExpireInterval: -1, Compression: kind})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			snap, err := s.StartSnapshot(ctx, StartParams{OwnerID: owner, VolumeSize: 1, TimeoutMinutes: 60})
			if err != nil {
				b.Fatal(err)
			}
			const n = 128
			digests := make([]Digest, n)
			blk := make([]byte, BlockSize)
			for i := range n {
				copy(blk, corpus[i*BlockSize:])
				binary.LittleEndian.PutUint64(blk, uint64(i)+1)
				digests[i] = Sum(blk)
				if err := s.PutBlock(ctx, owner, snap.ID, int64(i), blk, digests[i]); err != nil {
					b.Fatal(err)
				}
			}
			var next atomic.Int64
			b.SetBytes(BlockSize)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, 0, BlockSize)
				for pb.Next() {
					if _, err := s.ReadBlock(buf, digests[next.Add(1)%n]); err != nil {
						b.Error(err)
					}
				}
			})
		})
	}
}
