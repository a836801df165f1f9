package fusefs

import (
	"context"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

const metaSuffix = ".json"

// root is the default account's directory: one image file and one metadata file per
// completed snapshot, and one directory per other account shown, listed afresh on
// every readdir so a snapshot (or an account) appears the moment it exists.
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
	r.exp.dirAttr(&out.Attr, r.exp.def)
	return 0
}

func (r *root) Readdir(context.Context) (fs.DirStream, syscall.Errno) {
	entries := r.exp.snapshotEntries(r.exp.owner)
	for _, a := range r.exp.otherAccounts() {
		entries = append(entries, fuse.DirEntry{Name: a.ID, Mode: syscall.S_IFDIR, Ino: dirInodeOf(a.ID)})
	}
	return fs.NewListDirStream(entries), 0
}

func (r *root) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if !validAccountID(name) {
		return r.exp.lookupSnapshot(ctx, &r.Inode, r.exp.owner, name, out)
	}
	acc, ok := r.exp.accessOf(name)
	if !ok || name == r.exp.owner {
		return nil, syscall.ENOENT
	}
	out.SetEntryTimeout(accountTimeout)
	out.SetAttrTimeout(accountTimeout)
	r.exp.dirAttr(&out.Attr, acc)
	return r.NewInode(ctx, &accountDir{exp: r.exp, id: name}, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: dirInodeOf(name)}), 0
}

func setTimes(a *fuse.Attr, t time.Time) {
	a.SetTimes(&t, &t, &t)
}
