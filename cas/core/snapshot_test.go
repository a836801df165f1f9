package core

import (
	"strings"
	"testing"
)

// Snapshot ids have the service model's shape, ^snap-[0-9a-f]+$ in at most 64
// characters: ids of that shape that name nothing are unknown, others malformed.
func TestValidSnapshotID(t *testing.T) {
	for id, want := range map[string]bool{
		"snap-0":                          true,
		"snap-abc":                        true,
		"snap-0123456789abcdef0":          true,
		"snap-" + strings.Repeat("f", 59): true,
		"snap-" + strings.Repeat("f", 60): false,
		"snap-":                           false,
		"snap-XYZ":                        false,
		"snap-0123456789ABCDEF0":          false,
		"vol-0123456789abcdef0":           false,
		"snap-0123\n":                     false,
		"":                                false,
	} {
		if got := ValidSnapshotID(id); got != want {
			t.Errorf("ValidSnapshotID(%q) = %v, want %v", id, got, want)
		}
	}
	if id := NewSnapshotID(); !ValidSnapshotID(id) {
		t.Errorf("NewSnapshotID() = %q, not a valid id", id)
	}
}
