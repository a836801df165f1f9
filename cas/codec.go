package cas

import (
	"fmt"
	"runtime"

	"github.com/klauspost/compress/zstd"
)

// codec tags a stored block value (in Badger's per-entry UserMeta byte, so the value
// itself needs no header and raw blocks are written without a copy).
type codec byte

const (
	codecRaw  codec = 0
	codecZstd codec = 1
)

// compressor owns one zstd encoder and one decoder shared by every goroutine: their
// EncodeAll/DecodeAll are safe for concurrent use and bound memory by their
// concurrency setting instead of by the number of requests in flight.
type compressor struct {
	enc *zstd.Encoder
	dec *zstd.Decoder
}

func newCompressor(level zstd.EncoderLevel) (*compressor, error) {
	n := runtime.GOMAXPROCS(0)
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(level),
		zstd.WithEncoderConcurrency(n),
		zstd.WithEncoderCRC(false), // the SHA-256 key already verifies every block on read
		zstd.WithWindowSize(BlockSize),
		zstd.WithZeroFrames(true))
	if err != nil {
		return nil, fmt.Errorf("zstd encoder: %w", err)
	}
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(n),
		zstd.WithDecoderMaxMemory(2*BlockSize),
		zstd.WithDecoderMaxWindow(BlockSize))
	if err != nil {
		enc.Close()
		return nil, fmt.Errorf("zstd decoder: %w", err)
	}
	return &compressor{enc: enc, dec: dec}, nil
}

// encode returns the value to store for block and its codec. dst is scratch space
// of capacity ≥ BlockSize; a block that does not shrink is stored raw.
func (c *compressor) encode(dst, block []byte) ([]byte, codec) {
	out := c.enc.EncodeAll(block, dst[:0])
	if len(out) >= len(block) {
		return block, codecRaw
	}
	return out, codecZstd
}

// decode appends the uncompressed block to dst.
func (c *compressor) decode(dst, val []byte, tag codec) ([]byte, error) {
	switch tag {
	case codecRaw:
		return append(dst, val...), nil
	case codecZstd:
		out, err := c.dec.DecodeAll(val, dst)
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("unknown codec tag %d", tag)
	}
}

func (c *compressor) close() {
	c.enc.Close()
	c.dec.Close()
}
