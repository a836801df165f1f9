package fusefs

import (
	"os"
	"strings"
)

// Access is who owns an account's files in the mount, and what their modes let others
// do. The kernel enforces it only with AllowOther (default_permissions); without, no
// user but the daemon's can open the mount at all.
type Access struct {
	UID, GID uint32
	// FileMode is the permission bits of image and .json files; the account's directory
	// gets x wherever FileMode has r (0400 → 0500, 0440 → 0550). Write bits are dropped:
	// the mount is read-only. The zero Access is the daemon's own user and group with
	// 0400: nothing is shared by omission.
	FileMode uint32
}

// AccountDir is an account other than the default whose snapshots appear in a
// directory named after its id.
type AccountDir struct {
	ID     string
	Access Access
}

// orDaemon returns a, or the daemon's user and group with 0400 when a is zero.
func (a Access) orDaemon() Access {
	if a == (Access{}) {
		return Access{UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), FileMode: 0o400}
	}
	return a
}

// fileMode is the permission bits of the account's files.
func (a Access) fileMode() uint32 { return a.FileMode & 0o777 &^ 0o222 }

// dirMode is the permission bits of the account's directory: r and x wherever its
// files have r, so whoever may read the images may also list and reach them.
func (a Access) dirMode() uint32 {
	r := a.FileMode & 0o444
	return r | r>>2
}

// validAccountID reports whether id is a 12-digit account id: only those become
// directories, so an account's name can never be mistaken for a snapshot's.
func validAccountID(id string) bool {
	return len(id) == 12 && strings.Trim(id, "0123456789") == ""
}
