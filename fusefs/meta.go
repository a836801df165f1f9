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
// snapshot without the API. Unlike the image, it changes: CreateTags and DeleteTags
// work on completed snapshots. So it is rendered from the snapshot's record at each
// open and at each getattr, the kernel keeps its attributes for metaTimeout only, and
// its reads bypass the page cache (FOPEN_DIRECT_IO), so a reader sees the tags of
// when it opened the file, whatever the kernel cached before.
type metaFile struct {
	fs.Inode
	exp       *export
	owner     string // the account whose directory holds it
	id        string
	completed time.Time
}

var (
	_ fs.NodeGetattrer = (*metaFile)(nil)
	_ fs.NodeOpener    = (*metaFile)(nil)
)

// metaTimeout is how long the kernel may keep a metadata file's size: a tag change
// shows in stat within it.
const metaTimeout = time.Second

type metaJSON struct {
	SnapshotID       string    `json:"snapshotId"`
	ParentSnapshotID string    `json:"parentSnapshotId,omitempty"`
	OwnerID          string    `json:"ownerId"`
	Description      string    `json:"description,omitempty"`
	Tags             []metaTag `json:"tags,omitempty"`
	VolumeSizeGiB    int64     `json:"volumeSizeGiB"`
	BlockSize        int       `json:"blockSize"`
	StartTime        time.Time `json:"startTime"`
	CompleteTime     time.Time `json:"completeTime"`
	ChangedBlocks    int64     `json:"changedBlocks"`
	DataBlocks       int64     `json:"dataBlocks"`
	StoredBytes      int64     `json:"storedBytes"`
}

// metaTag names its fields as DescribeSnapshots does, not as the store keeps them.
type metaTag struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

func newMetaFile(exp *export, owner string, s cas.Snapshot) *metaFile {
	return &metaFile{exp: exp, owner: owner, id: s.ID, completed: s.CompleteTime}
}

// metaContent renders a snapshot's metadata file.
func metaContent(s cas.Snapshot) []byte {
	m := metaJSON{
		SnapshotID: s.ID, ParentSnapshotID: s.ParentID, OwnerID: s.OwnerID, Description: s.Description,
		VolumeSizeGiB: s.VolumeSize, BlockSize: cas.BlockSize, StartTime: s.StartTime,
		CompleteTime: s.CompleteTime, ChangedBlocks: s.ChangedBlocks, DataBlocks: s.DataBlocks, StoredBytes: s.StoredBytes,
	}
	for _, t := range s.Tags {
		m.Tags = append(m.Tags, metaTag{Key: t.Key, Value: t.Value})
	}
	b, _ := json.MarshalIndent(m, "", "  ") // plain strings, numbers and times: cannot fail
	return append(b, '\n')
}

// content is the file as the snapshot's record says now; ENOENT once the snapshot or
// its account is gone.
func (m *metaFile) content(ctx context.Context) ([]byte, Access, syscall.Errno) {
	acc, ok := m.exp.accessOf(m.owner)
	if !ok {
		return nil, acc, syscall.ENOENT // the account was removed
	}
	s, err := m.exp.src.Snapshot(ctx, m.owner, m.id)
	if err != nil || s.Status != cas.StatusCompleted {
		return nil, acc, syscall.ENOENT
	}
	return metaContent(s), acc, 0
}

func (m *metaFile) attr(a *fuse.Attr, acc Access, size int) {
	a.Mode = syscall.S_IFREG | acc.fileMode()
	a.Uid, a.Gid = acc.UID, acc.GID
	a.Size = uint64(size)
	a.Nlink = 1
	setTimes(a, m.completed)
}

func (m *metaFile) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	b, acc, errno := m.content(ctx)
	if errno != 0 {
		return errno
	}
	m.attr(&out.Attr, acc, len(b))
	out.SetTimeout(min(metaTimeout, m.exp.attrTimeout(m.owner)))
	return 0
}

func (m *metaFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR) != 0 {
		return nil, 0, syscall.EROFS
	}
	b, _, errno := m.content(ctx)
	if errno != 0 {
		return nil, 0, errno
	}
	return &metaHandle{content: b}, fuse.FOPEN_DIRECT_IO, 0
}

// metaHandle is one open metadata file: the content of when it was opened.
type metaHandle struct{ content []byte }

var (
	_ fs.FileReader  = (*metaHandle)(nil)
	_ fs.FileLseeker = (*metaHandle)(nil)
)

func (h *metaHandle) Read(_ context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= int64(len(h.content)) {
		return fuse.ReadResultData(nil), 0
	}
	return fuse.ReadResultData(h.content[off:min(int64(len(h.content)), off+int64(len(dest)))]), 0
}

// Lseek: the file is all data, no holes.
func (h *metaHandle) Lseek(_ context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	size := uint64(len(h.content))
	if whence != seekData && whence != seekHole {
		return 0, syscall.EINVAL
	}
	if off >= size {
		return 0, syscall.ENXIO
	}
	if whence == seekHole {
		return size, 0
	}
	return off, 0
}
