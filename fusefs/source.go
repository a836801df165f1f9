// Package fusefs exports every completed snapshot as a read-only image file over FUSE.
package fusefs

import (
	"context"
	"hash/fnv"

	"github.com/ebsd/ebsd/cas"
)

// Source is what the export needs of the store.
type Source interface {
	Snapshots(owner string) []cas.Snapshot
	Snapshot(ctx context.Context, owner, id string) (cas.Snapshot, error)
	OpenView(ctx context.Context, owner, id string) (*cas.View, error)
}

// Blocks is what the export needs of the block cache: Borrow lends a block until its
// release is called (the export replies with the block's own bytes and gives it back
// once the reply is written), and Prefetch asks for the blocks a sequential reader will
// want next.
type Blocks interface {
	Borrow(ctx context.Context, d cas.Digest) (block []byte, release func(), err error)
	Prefetch(d cas.Digest) bool
}

// Inode numbers are derived from ids so they are stable across restarts. 1 is the
// root. The top bit tells directories from files, so an account's directory never
// takes a snapshot's number; snapshot ids are unique across accounts, so files need
// no account in theirs.
const dirInodeBit = 1 << 63

// inodeOf numbers a snapshot's files: the image and its metadata file differ in the
// lowest bit.
func inodeOf(id string, meta bool) uint64 {
	ino := hashOf(id) &^ (dirInodeBit | 1)
	if ino < 2 {
		ino = 2
	}
	if meta {
		ino |= 1
	}
	return ino
}

// dirInodeOf numbers an account's directory.
func dirInodeOf(accountID string) uint64 { return hashOf(accountID) | dirInodeBit }

func hashOf(id string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(id))
	return h.Sum64()
}
