package cas

import (
	"time"

	"github.com/ebsd/ebsd/cas/core"
)

// The domain types live in cas/core, where no storage engine is imported; these names
// keep them where the store's users (api, fusefs, tools) have always found them.

const (
	BlockSize    = core.BlockSize
	BlocksPerGiB = core.BlocksPerGiB

	StatusPending   = core.StatusPending
	StatusCompleted = core.StatusCompleted
	StatusError     = core.StatusError
)

type (
	Digest      = core.Digest
	Snapshot    = core.Snapshot
	Status      = core.Status
	Tag         = core.Tag
	Slot        = core.Slot
	Clock       = core.Clock
	SystemClock = core.SystemClock
	ManualClock = core.ManualClock
	BlockStore  = core.BlockStore
	Catalog     = core.Catalog
	StoredBlock = core.StoredBlock
)

var (
	ZeroDigest = core.ZeroDigest

	ErrSnapshotNotFound  = core.ErrSnapshotNotFound
	ErrNotOwner          = core.ErrNotOwner
	ErrNotPending        = core.ErrNotPending
	ErrNotCompleted      = core.ErrNotCompleted
	ErrTokenConflict     = core.ErrTokenConflict
	ErrPendingLimit      = core.ErrPendingLimit
	ErrParentNotReady    = core.ErrParentNotReady
	ErrVolumeTooSmall    = core.ErrVolumeTooSmall
	ErrBlockOutOfRange   = core.ErrBlockOutOfRange
	ErrChecksumMismatch  = core.ErrChecksumMismatch
	ErrCountMismatch     = core.ErrCountMismatch
	ErrAggregateMismatch = core.ErrAggregateMismatch
	ErrCorruptBlock      = core.ErrCorruptBlock
	ErrUnrelated         = core.ErrUnrelated
	ErrTooManyTags       = core.ErrTooManyTags
	ErrClosed            = core.ErrClosed
	ErrBlockNotFound     = core.ErrBlockNotFound
)

// Sum hashes a block (core.Sum).
func Sum(data []byte) Digest { return core.Sum(data) }

// ParseBase64Digest decodes an EBS-style checksum header value (core.ParseBase64Digest).
func ParseBase64Digest(s string) (Digest, bool) { return core.ParseBase64Digest(s) }

// ValidSnapshotID reports whether id has the shape of a snapshot id.
func ValidSnapshotID(id string) bool { return core.ValidSnapshotID(id) }

// NewManualClock returns a clock stopped at t.
func NewManualClock(t time.Time) *ManualClock { return core.NewManualClock(t) }
