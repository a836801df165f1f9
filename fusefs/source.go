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

// Blocks is what the export needs of the block cache.
type Blocks interface {
	cas.BlockReader
	Prefetch(d cas.Digest) bool
}

// inode numbers are derived from the snapshot id so they are stable across restarts;
// the image and its metadata file differ in the lowest bit. 1 is the root.
func inodeOf(id string, meta bool) uint64 {
	h := fnv.New64a()
	h.Write([]byte(id))
	ino := h.Sum64() &^ 1
	if ino < 2 {
		ino = 2
	}
	if meta {
		ino |= 1
	}
	return ino
}
