package core

import (
	"crypto/rand"
	"encoding/hex"
	"regexp"
	"slices"
	"time"
)

// Status is a snapshot's state. pending → completed or pending → error; never back.
type Status string

const (
	StatusPending   Status = "pending"
	StatusCompleted Status = "completed"
	StatusError     Status = "error"
)

// Tag is a key/value pair attached to a snapshot.
type Tag struct {
	Key   string `json:"k"`
	Value string `json:"v"`
}

// Snapshot is the catalog record of one snapshot. It is small and its size does not
// depend on the volume size: block data lives in the block map.
type Snapshot struct {
	ID             string    `json:"id"`
	OwnerID        string    `json:"owner"`
	Region         string    `json:"region"`
	VolumeSize     int64     `json:"gib"`
	ParentID       string    `json:"parent,omitempty"`
	Description    string    `json:"desc,omitempty"`
	Tags           []Tag     `json:"tags,omitempty"`
	KmsKeyArn      string    `json:"kms,omitempty"`
	Encrypted      bool      `json:"enc,omitempty"`
	TimeoutMinutes int       `json:"timeout"`
	ClientToken    string    `json:"token,omitempty"`
	Status         Status    `json:"status"`
	StartTime      time.Time `json:"start"`
	CompleteTime   time.Time `json:"complete,omitzero"`
	// ChangedBlocks is the number of indices written in this snapshot, set on completion.
	ChangedBlocks int64 `json:"changed,omitempty"`
	// DataBlocks is the number of non-zero blocks in the point-in-time view (own and
	// inherited), set on completion; it is what st_blocks and SEEK_DATA report.
	DataBlocks int64 `json:"data,omitempty"`
	// StoredBytes is the compressed size of the distinct non-zero blocks this snapshot
	// wrote itself (a block shared with other snapshots counts in full), set on completion.
	StoredBytes int64 `json:"stored,omitempty"`
	// StatusMessage says why a snapshot is in error.
	StatusMessage string `json:"msg,omitempty"`
	// DeletedAt is when the snapshot was deleted. A deleted snapshot is invisible; its
	// record stays (for client-token retries, and as an ancestor of live snapshots)
	// until garbage collection drops it.
	DeletedAt time.Time `json:"deleted,omitzero"`
	// MapReleased says garbage collection has dropped the block map of a deleted snapshot.
	MapReleased bool `json:"released,omitempty"`
}

// Clone returns a copy that shares nothing mutable with s.
func (s Snapshot) Clone() Snapshot {
	s.Tags = slices.Clone(s.Tags)
	return s
}

// Blocks is the number of block slots of the volume.
func (s *Snapshot) Blocks() int64 { return s.VolumeSize * BlocksPerGiB }

// snapshotIDPattern is the service model's (`^snap-[0-9a-f]+$`, at most 64 characters):
// an id of that shape that names no snapshot is not found, not malformed.
var snapshotIDPattern = regexp.MustCompile(`^snap-[0-9a-f]{1,59}$`)

// ValidSnapshotID reports whether id has the shape of a snapshot id.
func ValidSnapshotID(id string) bool { return snapshotIDPattern.MatchString(id) }

// NewSnapshotID returns "snap-" and 17 random hex digits, the shape AWS uses.
func NewSnapshotID() string {
	var b [9]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return "snap-" + hex.EncodeToString(b[:])[:17]
}

// Slot is one block of a view: the digest of the data at Index. Zero data (written
// zeros) has ZeroDigest; indices never written are not slots at all.
type Slot struct {
	Index  int64
	Digest Digest
}
