package core

import (
	"errors"
	"fmt"
)

// Errors the store returns, wrapped with detail by fmt.Errorf("%w: …"). Callers map them
// to their protocol's errors with errors.Is; the wrapped message is meant for people.
var (
	ErrSnapshotNotFound = errors.New("snapshot not found")
	// ErrNotOwner wraps ErrSnapshotNotFound: the snapshot exists but belongs to another
	// account. Protocols that say "not found" for that (EC2) need not tell them apart.
	ErrNotOwner          = fmt.Errorf("%w: it belongs to another account", ErrSnapshotNotFound)
	ErrNotPending        = errors.New("snapshot is not pending")
	ErrNotCompleted      = errors.New("snapshot is not completed")
	ErrTokenConflict     = errors.New("client token already used with other parameters")
	ErrPendingLimit      = errors.New("too many pending snapshots")
	ErrParentNotReady    = errors.New("parent snapshot is not completed")
	ErrVolumeTooSmall    = errors.New("volume size is smaller than the parent's")
	ErrBlockOutOfRange   = errors.New("block index is outside the volume")
	ErrChecksumMismatch  = errors.New("checksum does not match the block data")
	ErrCountMismatch     = errors.New("changed blocks count does not match")
	ErrAggregateMismatch = errors.New("aggregate checksum does not match")
	ErrCorruptBlock      = errors.New("stored block is corrupt")
	ErrUnrelated         = errors.New("snapshots are not of one lineage")
	ErrTooManyTags       = errors.New("too many tags")
	ErrClosed            = errors.New("store is closed")
)
