package core

import (
	"context"
	"errors"
)

// BlockStore is where the bytes of blocks live: one value per digest, written whole and
// never changed except to be replaced by another encoding of the same block (settling,
// healing). It knows nothing of snapshots, compression or verification; those are the
// store's, and caching, retrying and fault injection are decorators around it.
//
// Every implementation runs the conformance suite in cas/blocktest. Its MUST rules:
//   - Put of a digest already stored replaces the value and its tag.
//   - Once Put returns nil, Read, Stat and Walk see every block of the call, and the
//     blocks survive a crash of this process (kill -9). Surviving power loss may need
//     Sync; Sync covers every Put that returned before it was called.
//   - A block absent (never put, or deleted) is ErrBlockNotFound from Read and Stat,
//     wrapped; any other error means the store could not tell, never "absent".
//   - Delete of an absent block is not an error.
//   - Walk visits each stored block once, in ascending digest order, from the first
//     digest greater than or equal to from; a block put or deleted while a walk runs
//     may or may not be visited.
//   - Methods are safe for concurrent use, and errors are wrapped with %w.
type BlockStore interface {
	// Put stores the blocks. data is only read during the call.
	Put(ctx context.Context, blocks []StoredBlock) error
	// Read calls fn with the stored tag and bytes of the block with digest d. data is
	// valid only while fn runs; fn's error is returned as it is.
	Read(ctx context.Context, d Digest, fn func(tag byte, data []byte) error) error
	// Stat returns the stored size in bytes of the block with digest d.
	Stat(ctx context.Context, d Digest) (size int64, err error)
	// Delete removes the blocks.
	Delete(ctx context.Context, ds []Digest) error
	// Walk calls fn for each stored block from digest from on, ascending, until fn
	// returns an error (returned as it is) or ctx ends.
	Walk(ctx context.Context, from Digest, fn func(d Digest, size int64) error) error
	// Sync makes every block put before the call survive power loss.
	Sync(ctx context.Context) error
}

// StoredBlock is one block as a BlockStore holds it: the encoded bytes and a tag byte
// the store reads back with them (which codec encoded them).
type StoredBlock struct {
	Digest Digest
	Tag    byte
	Data   []byte
}

// ErrBlockNotFound says a BlockStore holds no block under a digest.
var ErrBlockNotFound = errors.New("block not stored")
