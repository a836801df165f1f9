package cas

import (
	"fmt"
	"runtime"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// Compression names how new blocks are compressed. Every stored block carries its own
// codec tag, so blocks written under one setting stay readable under any other.
type Compression string

const (
	// CompressZstd is zstd at its fastest level: the best ratio, ~140 MB/s per core here.
	CompressZstd Compression = "zstd"
	// CompressS2 is S2 (Snappy-compatible): about 3× faster than zstd, a lower ratio.
	CompressS2 Compression = "s2"
	// CompressNone stores blocks as they are.
	CompressNone Compression = "none"
)

// ParseCompression checks a compression name.
func ParseCompression(s string) (Compression, error) {
	switch c := Compression(s); c {
	case CompressZstd, CompressS2, CompressNone:
		return c, nil
	}
	return "", fmt.Errorf("unknown compression %q (want zstd, s2 or none)", s)
}

// codec tags a stored block value (in Badger's per-entry UserMeta byte, so the value
// itself needs no header and raw blocks are written without a copy).
type codec byte

const (
	codecRaw  codec = 0
	codecZstd codec = 1
	codecS2   codec = 2

	// codecSettled is a flag on the tag of a block that settling (settle.go) re-encoded
	// at a stronger level: it decodes as the codec without the flag, and tells the
	// settler not to try the block again. A store holding settled blocks needs a
	// version of ebsd that knows the flag.
	codecSettled codec = 0x80
)

// compressor owns one zstd encoder and one decoder shared by every goroutine: their
// EncodeAll/DecodeAll are safe for concurrent use and bound memory by their
// concurrency setting instead of by the number of requests in flight.
type compressor struct {
	kind Compression
	enc  *zstd.Encoder
	dec  *zstd.Decoder
}

func newCompressor(kind Compression) (*compressor, error) {
	n := runtime.GOMAXPROCS(0)
	c := &compressor{kind: kind}
	var err error
	if kind == CompressZstd {
		c.enc, err = zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.SpeedFastest),
			zstd.WithEncoderConcurrency(n),
			zstd.WithEncoderCRC(false), // the SHA-256 key already verifies every block on read
			zstd.WithWindowSize(BlockSize),
			zstd.WithZeroFrames(true))
		if err != nil {
			return nil, fmt.Errorf("zstd encoder: %w", err)
		}
	}
	c.dec, err = zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(n),
		zstd.WithDecoderMaxMemory(2*BlockSize),
		zstd.WithDecoderMaxWindow(BlockSize))
	if err != nil {
		c.close()
		return nil, fmt.Errorf("zstd decoder: %w", err)
	}
	return c, nil
}

// encode returns the value to store for block and its codec. dst is scratch space
// of capacity ≥ s2.MaxEncodedLen(BlockSize); a block that does not shrink is stored raw.
func (c *compressor) encode(dst, block []byte) ([]byte, codec) {
	var out []byte
	var tag codec
	switch c.kind {
	case CompressZstd:
		out, tag = c.enc.EncodeAll(block, dst[:0]), codecZstd
	case CompressS2:
		out, tag = s2.Encode(dst[:cap(dst)], block), codecS2
	default:
		return block, codecRaw
	}
	if len(out) >= len(block) {
		return block, codecRaw
	}
	return out, tag
}

// decode appends the uncompressed block to dst.
func (c *compressor) decode(dst, val []byte, tag codec) ([]byte, error) {
	switch tag &^ codecSettled {
	case codecRaw:
		return append(dst, val...), nil
	case codecZstd:
		out, err := c.dec.DecodeAll(val, dst)
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return out, nil
	case codecS2:
		n, err := s2.DecodedLen(val)
		if err != nil || n != BlockSize {
			return nil, fmt.Errorf("s2: decoded length %d: %w", n, err)
		}
		out := append(dst, make([]byte, n)...)
		if _, err := s2.Decode(out[len(dst):], val); err != nil {
			return nil, fmt.Errorf("s2: %w", err)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("unknown codec tag %d", tag)
	}
}

func (c *compressor) close() {
	if c.enc != nil {
		c.enc.Close()
	}
	if c.dec != nil {
		c.dec.Close()
	}
}
