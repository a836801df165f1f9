package fusefs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// statfs answers statfs(2) on any path of the export. The kernel asks the node of
// the path, and go-fuse leaves what no node answers zero: a name length of 0, which
// pathconf(_PC_NAME_MAX) passes on to programs that size names by it. The export
// holds no free space, so the counts stay zero (df shows a read-only file system
// of no size).
func statfs(out *fuse.StatfsOut) syscall.Errno {
	out.Bsize = 4096
	out.Frsize = 4096
	out.NameLen = 255
	return 0
}

var (
	_ fs.NodeStatfser = (*root)(nil)
	_ fs.NodeStatfser = (*accountDir)(nil)
	_ fs.NodeStatfser = (*imageFile)(nil)
	_ fs.NodeStatfser = (*metaFile)(nil)
)

func (r *root) Statfs(_ context.Context, out *fuse.StatfsOut) syscall.Errno       { return statfs(out) }
func (d *accountDir) Statfs(_ context.Context, out *fuse.StatfsOut) syscall.Errno { return statfs(out) }
func (f *imageFile) Statfs(_ context.Context, out *fuse.StatfsOut) syscall.Errno  { return statfs(out) }
func (m *metaFile) Statfs(_ context.Context, out *fuse.StatfsOut) syscall.Errno   { return statfs(out) }
