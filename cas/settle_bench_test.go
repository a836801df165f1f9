package cas

import (
	"bytes"
	"io"
	"os"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/ebsd/ebsd/cas/castest"
)

// settleBenchBlocks are the non-zero blocks of the image named by EBSD_SETTLE_IMAGE
// (a volume image, e.g. scripts/make-image.sh --debootstrap), or 64 MiB of the files
// under /usr.
func settleBenchBlocks(b *testing.B) [][]byte {
	var data []byte
	if p := os.Getenv("EBSD_SETTLE_IMAGE"); p != "" {
		f, err := os.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		zero := make([]byte, BlockSize)
		for {
			blk := make([]byte, BlockSize)
			if _, err := io.ReadFull(f, blk); err != nil {
				break
			}
			if !bytes.Equal(blk, zero) {
				data = append(data, blk...)
			}
		}
	} else {
		data = castest.RealCorpus(b, 64<<20)
	}
	var out [][]byte
	for off := 0; off+BlockSize <= len(data); off += BlockSize {
		out = append(out, data[off:off+BlockSize])
	}
	return out
}

// BenchmarkSettleLevels measures, per zstd level, the ratio over the blocks (logical
// over encoded) and the encode rate of one core: what settling gains and costs.
//
//	EBSD_SETTLE_IMAGE=base.img go test -run '^$' -bench SettleLevels -benchtime 1x ./cas
func BenchmarkSettleLevels(b *testing.B) {
	blocks := settleBenchBlocks(b)
	for _, lv := range []struct {
		name  string
		level zstd.EncoderLevel
	}{{"fastest", zstd.SpeedFastest}, {"default", zstd.SpeedDefault}, {"better", zstd.SpeedBetterCompression}, {"best", zstd.SpeedBestCompression}} {
		b.Run(lv.name, func(b *testing.B) {
			enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(lv.level), zstd.WithEncoderConcurrency(1),
				zstd.WithEncoderCRC(false), zstd.WithWindowSize(BlockSize), zstd.WithZeroFrames(true))
			if err != nil {
				b.Fatal(err)
			}
			defer enc.Close()
			dst := make([]byte, 0, BlockSize)
			var in, out int64
			b.SetBytes(int64(len(blocks) * BlockSize))
			for b.Loop() {
				in, out = 0, 0
				for _, blk := range blocks {
					dst = enc.EncodeAll(blk, dst[:0])
					in += BlockSize
					out += int64(min(len(dst), BlockSize)) // stored raw when it does not shrink
				}
			}
			b.ReportMetric(float64(in)/float64(out), "ratio")
			b.ReportMetric(float64(out)/(1<<20), "stored-MiB")
		})
	}
}
