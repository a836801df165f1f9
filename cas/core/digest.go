package core

import (
	"encoding/base64"
	"encoding/hex"

	sha256 "github.com/minio/sha256-simd"
)

// BlockSize is the fixed size of every block, as the EBS direct APIs define it.
const BlockSize = 524288

// BlocksPerGiB is how many block slots one GiB of volume size holds.
const BlocksPerGiB = (1 << 30) / BlockSize

// Digest is the SHA-256 of a block's uncompressed bytes: its identity in the store.
type Digest [sha256.Size]byte

// Sum hashes a block with minio/sha256-simd, the library the project is specified
// with. On this machine it reaches the same SHA-NI instructions as the standard library
// and runs at its speed (BenchmarkSHA256 in cas keeps both side by side).
func Sum(data []byte) Digest { return sha256.Sum256(data) }

// ZeroDigest is the digest of an all-zero block. Zero blocks are recorded in block
// maps under this digest but never stored, so "written zeros" stays distinct from
// "never written" at no storage cost.
var ZeroDigest = Sum(make([]byte, BlockSize))

// Base64 is the encoding the EBS API uses for checksums.
func (d Digest) Base64() string { return base64.StdEncoding.EncodeToString(d[:]) }

func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// ParseBase64Digest decodes an EBS-style checksum header value.
func ParseBase64Digest(s string) (Digest, bool) {
	var d Digest
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(raw) != len(d) {
		return d, false
	}
	copy(d[:], raw)
	return d, true
}
