package fusefs

import (
	"context"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/ebsd/ebsd/cas"
)

const metaSuffix = ".json"

// root is the mount's only directory: one image file and one metadata file per
// completed snapshot, listed afresh on every readdir so a snapshot appears the moment
// it completes.
type root struct {
	fs.Inode
	exp *export
}

var (
	_ fs.NodeReaddirer = (*root)(nil)
	_ fs.NodeLookuper  = (*root)(nil)
	_ fs.NodeGetattrer = (*root)(nil)
)

func (r *root) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFDIR | 0o555
	setTimes(&out.Attr, r.exp.mounted)
	return 0
}

func (r *root) Readdir(context.Context) (fs.DirStream, syscall.Errno) {
	var entries []fuse.DirEntry
	for _, s := range r.exp.src.Snapshots(r.exp.owner) {
		if s.Status != cas.StatusCompleted {
			continue
		}
		entries = append(entries,
			fuse.DirEntry{Name: s.ID, Mode: syscall.S_IFREG, Ino: inodeOf(s.ID, false)},
			fuse.DirEntry{Name: s.ID + metaSuffix, Mode: syscall.S_IFREG, Ino: inodeOf(s.ID, true)})
	}
	return fs.NewListDirStream(entries), 0
}

func (r *root) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	id, meta := strings.CutSuffix(name, metaSuffix)
	if !cas.ValidSnapshotID(id) {
		return nil, syscall.ENOENT
	}
	snap, err := r.exp.src.Snapshot(ctx, r.exp.owner, id)
	if err != nil || snap.Status != cas.StatusCompleted {
		return nil, syscall.ENOENT
	}
	// Completed snapshots never change: the kernel may keep names and attributes.
	out.SetEntryTimeout(r.exp.cacheTimeout)
	out.SetAttrTimeout(r.exp.cacheTimeout)
	if meta {
		node := newMetaFile(snap)
		node.attr(&out.Attr)
		return r.NewInode(ctx, node, fs.StableAttr{Mode: syscall.S_IFREG, Ino: inodeOf(id, true)}), 0
	}
	node := &imageFile{exp: r.exp, snap: snap}
	node.attr(&out.Attr)
	return r.NewInode(ctx, node, fs.StableAttr{Mode: syscall.S_IFREG, Ino: inodeOf(id, false)}), 0
}

func setTimes(a *fuse.Attr, t time.Time) {
	a.SetTimes(&t, &t, &t)
}
