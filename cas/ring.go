package cas

// ring keeps the last len(buf) items pushed, for the GC and scrub histories. It is not
// safe for concurrent use: its owner's mutex guards it.
type ring[T any] struct {
	buf  []T
	next int // where the next item goes
	n    int // items held, at most len(buf)
}

func newRing[T any](size int) ring[T] { return ring[T]{buf: make([]T, size)} }

func (r *ring[T]) push(v T) {
	r.buf[r.next] = v
	r.next = (r.next + 1) % len(r.buf)
	r.n = min(r.n+1, len(r.buf))
}

// newestFirst returns a copy of the items, the latest first.
func (r *ring[T]) newestFirst() []T {
	out := make([]T, 0, r.n)
	for i := 1; i <= r.n; i++ {
		out = append(out, r.buf[(r.next-i+len(r.buf))%len(r.buf)])
	}
	return out
}
