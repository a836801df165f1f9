package cas

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	simd "github.com/minio/sha256-simd"

	"github.com/ebsd/ebsd/cas/castest"
)

// BenchmarkSHA256 compares the two SHA-256 implementations on one block: the faster
// one is what Sum uses.
func BenchmarkSHA256(b *testing.B) {
	data := make([]byte, BlockSize)
	castest.CompressibleBlock(data, 1)
	b.Run("stdlib", func(b *testing.B) {
		b.SetBytes(BlockSize)
		for b.Loop() {
			sha256.Sum256(data)
		}
	})
	b.Run("sha256-simd", func(b *testing.B) {
		b.SetBytes(BlockSize)
		for b.Loop() {
			simd.Sum256(data)
		}
	})
}

// BenchmarkValueThreshold isolates Badger: 8 writers put unique, uncompressed blocks of
// real data through PutBlock with blocks in the value log (threshold 4 KiB, the
// default here) and inside the LSM tree (threshold 1 MiB, Badger's own default). It
// reports ingest speed, bytes the process wrote to disk per logical byte (write
// amplification, compactions included) and disk use per logical byte.
func BenchmarkValueThreshold(b *testing.B) {
	corpus := castest.RealCorpus(b, 64<<20)
	for _, th := range []int64{4 << 10, 1 << 20} {
		b.Run("threshold="+strconv.FormatInt(th>>10, 10)+"KiB", func(b *testing.B) {
			dir := b.TempDir()
			s, err := Open(Options{Dir: dir, ValueThreshold: th, ExpireInterval: -1, Compression: CompressNone})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			snap, err := s.StartSnapshot(ctx, StartParams{OwnerID: "111122223333", VolumeSize: 65536, TimeoutMinutes: 60})
			if err != nil {
				b.Fatal(err)
			}
			blocks := make([][]byte, b.N)
			sums := make([]Digest, b.N)
			for i := range blocks {
				off := (i * BlockSize) % (len(corpus) - BlockSize)
				blocks[i] = append([]byte(nil), corpus[off:off+BlockSize]...)
				binary.LittleEndian.PutUint64(blocks[i], uint64(i)+1)
				sums[i] = Sum(blocks[i])
			}
			written0 := processWriteBytes(b)
			var next atomic.Int64
			var wg sync.WaitGroup
			b.SetBytes(BlockSize)
			b.ResetTimer()
			for range 8 {
				wg.Go(func() {
					for i := int(next.Add(1) - 1); i < b.N; i = int(next.Add(1) - 1) {
						if err := s.PutBlock(ctx, "111122223333", snap.ID, int64(i), blocks[i], sums[i]); err != nil {
							b.Error(err)
						}
					}
				})
			}
			wg.Wait()
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			logical := float64(b.N) * BlockSize
			b.ReportMetric(float64(processWriteBytes(b)-written0)/logical, "disk-writes/logical")
			b.ReportMetric(float64(dirSize(b, dir))/logical, "disk-use/logical")
		})
	}
}

func processWriteBytes(b *testing.B) int64 {
	raw, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Skip("no /proc/self/io")
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "write_bytes: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

func dirSize(b *testing.B, dir string) int64 {
	var n int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return err
	})
	if err != nil {
		b.Fatal(fmt.Errorf("size of %s: %w", dir, err))
	}
	return n
}

func BenchmarkCompress(b *testing.B) {
	corpus := castest.RealCorpus(b, 64<<20)
	for _, kind := range []Compression{CompressZstd, CompressS2} {
		b.Run(string(kind), func(b *testing.B) {
			c, err := newCompressor(kind)
			if err != nil {
				b.Fatal(err)
			}
			defer c.close()
			dst := make([]byte, 0, BlockSize)
			var in, out int64
			b.SetBytes(BlockSize)
			i := 0
			for b.Loop() {
				off := (i * BlockSize) % len(corpus)
				v, _ := c.encode(dst, corpus[off:off+BlockSize])
				in += BlockSize
				out += int64(len(v))
				i++
			}
			b.ReportMetric(float64(in)/float64(out), "ratio")
		})
	}
}
