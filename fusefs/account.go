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

// accountTimeout is how long the kernel may keep the names and attributes of another
// account's directory and files: that account's access comes from a credentials file
// that may be reloaded, and a revoked grant must not outlive it by more than this.
const accountTimeout = time.Second

// accountDir is an account other than the default, as a directory at the root of the
// mount: its completed snapshots, listed as the root lists the default account's.
type accountDir struct {
	fs.Inode
	exp *export
	id  string
}

var (
	_ fs.NodeReaddirer = (*accountDir)(nil)
	_ fs.NodeLookuper  = (*accountDir)(nil)
	_ fs.NodeGetattrer = (*accountDir)(nil)
)

func (d *accountDir) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	acc, ok := d.exp.accessOf(d.id)
	if !ok {
		return syscall.ENOENT // the account was removed since the kernel looked it up
	}
	d.exp.dirAttr(&out.Attr, acc)
	out.SetTimeout(accountTimeout)
	return 0
}

func (d *accountDir) Readdir(context.Context) (fs.DirStream, syscall.Errno) {
	if _, ok := d.exp.accessOf(d.id); !ok {
		return nil, syscall.ENOENT
	}
	return fs.NewListDirStream(d.exp.snapshotEntries(d.id)), 0
}

func (d *accountDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return d.exp.lookupSnapshot(ctx, &d.Inode, d.id, name, out)
}

// accessOf is the access an account's files and directory have now, and false when
// the account is not (or no longer) shown.
func (e *export) accessOf(account string) (Access, bool) {
	if account == e.owner {
		return e.def, true
	}
	for _, a := range e.otherAccounts() {
		if a.ID == account {
			return a.Access, true
		}
	}
	return Access{}, false
}

// otherAccounts are the accounts shown as directories, asked for afresh: valid ids
// other than the default account's, each once (the first entry wins), zero Access
// made the daemon's.
func (e *export) otherAccounts() []AccountDir {
	if e.accounts == nil {
		return nil
	}
	listed := e.accounts()
	out := make([]AccountDir, 0, len(listed))
	seen := make(map[string]bool, len(listed))
	for _, a := range listed {
		if !validAccountID(a.ID) || a.ID == e.owner || seen[a.ID] {
			continue
		}
		seen[a.ID] = true
		out = append(out, AccountDir{ID: a.ID, Access: a.Access.orDaemon()})
	}
	return out
}

// attrTimeout is how long the kernel may keep the attributes of an account's files.
func (e *export) attrTimeout(account string) time.Duration {
	if account == e.owner {
		return e.cacheTimeout // the default account's access is fixed for the mount's life
	}
	return accountTimeout
}

func (e *export) dirAttr(a *fuse.Attr, acc Access) {
	a.Mode = syscall.S_IFDIR | acc.dirMode()
	a.Uid, a.Gid = acc.UID, acc.GID
	a.Nlink = 2
	setTimes(a, e.mounted)
}

// snapshotEntries lists an account's completed snapshots: an image and a .json each.
func (e *export) snapshotEntries(account string) []fuse.DirEntry {
	var entries []fuse.DirEntry
	for _, s := range e.src.Snapshots(account) {
		if s.Status != cas.StatusCompleted {
			continue
		}
		entries = append(entries,
			fuse.DirEntry{Name: s.ID, Mode: syscall.S_IFREG, Ino: inodeOf(s.ID, false)},
			fuse.DirEntry{Name: s.ID + metaSuffix, Mode: syscall.S_IFREG, Ino: inodeOf(s.ID, true)})
	}
	return entries
}

// lookupSnapshot finds name, an image or its .json, among an account's completed
// snapshots, as a child of parent.
func (e *export) lookupSnapshot(ctx context.Context, parent *fs.Inode, account, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	id, meta := strings.CutSuffix(name, metaSuffix)
	if !cas.ValidSnapshotID(id) {
		return nil, syscall.ENOENT
	}
	acc, ok := e.accessOf(account)
	if !ok {
		return nil, syscall.ENOENT
	}
	snap, err := e.src.Snapshot(ctx, account, id)
	if err != nil || snap.Status != cas.StatusCompleted {
		return nil, syscall.ENOENT
	}
	// Completed snapshots never change: the kernel may keep their names (deletion
	// tells it to drop them, see Mount.Forget).
	out.SetEntryTimeout(e.cacheTimeout)
	out.SetAttrTimeout(e.attrTimeout(account))
	if meta {
		node := newMetaFile(e, account, snap)
		node.attr(&out.Attr, acc, len(metaContent(snap)))
		out.SetAttrTimeout(min(metaTimeout, e.attrTimeout(account))) // its tags may change
		return parent.NewInode(ctx, node, fs.StableAttr{Mode: syscall.S_IFREG, Ino: inodeOf(id, true)}), 0
	}
	node := &imageFile{exp: e, owner: account, snap: snap}
	node.attr(&out.Attr, acc)
	return parent.NewInode(ctx, node, fs.StableAttr{Mode: syscall.S_IFREG, Ino: inodeOf(id, false)}), 0
}
