package fusefs

import "github.com/hanwen/go-fuse/v2/fuse"

// blockReply answers a read with slices of cached blocks and of the shared zeros,
// written to the kernel as they are (go-fuse writes a reply with Slices in one writev)
// instead of being copied into the request's buffer first. The blocks stay borrowed
// from the cache until go-fuse has written the reply and calls Done.
type blockReply struct {
	parts    [][]byte
	releases []func()
}

var _ fuse.ReadResult = (*blockReply)(nil)

func (r *blockReply) add(part []byte, release func()) {
	r.parts = append(r.parts, part)
	if release != nil {
		r.releases = append(r.releases, release)
	}
}

func (r *blockReply) Size() int {
	n := 0
	for _, p := range r.parts {
		n += len(p)
	}
	return n
}

// Slices is what go-fuse writes: its writev path takes a reply that has it.
func (r *blockReply) Slices() ([][]byte, fuse.Status) { return r.parts, fuse.OK }

// Bytes flattens the reply, for a go-fuse path that wants one slice.
func (r *blockReply) Bytes(buf []byte) ([]byte, fuse.Status) {
	buf = buf[:0]
	for _, p := range r.parts {
		buf = append(buf, p...)
	}
	return buf, fuse.OK
}

// Done gives the borrowed blocks back. go-fuse may call it more than once.
func (r *blockReply) Done() {
	for _, release := range r.releases {
		release()
	}
	r.releases = nil
}
