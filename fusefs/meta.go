package fusefs

import (
	"context"
	"encoding/json"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/ebsd/ebsd/cas"
)

// metaFile is snap-….json beside each image: what a person wants to know about the
// snapshot without the API.
type metaFile struct {
	fs.Inode
	exp       *export
	owner     string // the account whose directory holds it
	completed time.Time
	content   []byte
}

var (
	_ fs.NodeGetattrer = (*metaFile)(nil)
	_ fs.NodeOpener    = (*metaFile)(nil)
	_ fs.NodeReader    = (*metaFile)(nil)
)

type metaJSON struct {
	SnapshotID       string    `json:"snapshotId"`
	ParentSnapshotID string    `json:"parentSnapshotId,omitempty"`
	OwnerID          string    `json:"ownerId"`
	Description      string    `json:"description,omitempty"`
	Tags             []cas.Tag `json:"tags,omitempty"`
	VolumeSizeGiB    int64     `json:"volumeSizeGiB"`
	BlockSize        int       `json:"blockSize"`
	StartTime        time.Time `json:"startTime"`
	CompleteTime     time.Time `json:"completeTime"`
	ChangedBlocks    int64     `json:"changedBlocks"`
	DataBlocks       int64     `json:"dataBlocks"`
	StoredBytes      int64     `json:"storedBytes"`
}

func newMetaFile(exp *export, owner string, s cas.Snapshot) *metaFile {
	b, _ := json.MarshalIndent(metaJSON{
		SnapshotID: s.ID, ParentSnapshotID: s.ParentID, OwnerID: s.OwnerID, Description: s.Description,
		Tags: s.Tags, VolumeSizeGiB: s.VolumeSize, BlockSize: cas.BlockSize, StartTime: s.StartTime,
		CompleteTime: s.CompleteTime, ChangedBlocks: s.ChangedBlocks, DataBlocks: s.DataBlocks, StoredBytes: s.StoredBytes,
	}, "", "  ")
	return &metaFile{exp: exp, owner: owner, completed: s.CompleteTime, content: append(b, '\n')}
}

func (m *metaFile) attr(a *fuse.Attr, acc Access) {
	a.Mode = syscall.S_IFREG | acc.fileMode()
	a.Uid, a.Gid = acc.UID, acc.GID
	a.Size = uint64(len(m.content))
	a.Nlink = 1
	setTimes(a, m.completed)
}

func (m *metaFile) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	acc, ok := m.exp.accessOf(m.owner)
	if !ok {
		return syscall.ENOENT // the account was removed
	}
	m.attr(&out.Attr, acc)
	out.SetTimeout(m.exp.attrTimeout(m.owner))
	return 0
}

func (m *metaFile) Open(_ context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR) != 0 {
		return nil, 0, syscall.EROFS
	}
	if _, ok := m.exp.accessOf(m.owner); !ok {
		return nil, 0, syscall.ENOENT // the account was removed since the lookup
	}
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

func (m *metaFile) Read(_ context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= int64(len(m.content)) {
		return fuse.ReadResultData(nil), 0
	}
	return fuse.ReadResultData(m.content[off:min(int64(len(m.content)), off+int64(len(dest)))]), 0
}
