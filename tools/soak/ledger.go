package main

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
)

const (
	blockSize = 512 << 10
	// indexSpace is where blocks are written: the first 32 MiB of a 1 GiB volume, so
	// lineages overlap and a full read of a snapshot stays cheap.
	indexSpace = 64
	volumeGiB  = 1
)

type digest = [32]byte

var zeroDigest = sha256.Sum256(make([]byte, blockSize))

// blockData is the block a seed stands for: seed 0 is the zero block; any other seed
// gives half a block of pseudo-random bytes followed by a repeated pattern, so zstd has
// something to do. The ledger keeps seeds and digests, never data.
func blockData(seed uint64) []byte {
	b := make([]byte, blockSize)
	if seed == 0 {
		return b
	}
	p := rand.NewPCG(seed, 0x50a6)
	for i := 0; i < blockSize/2; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], p.Uint64())
	}
	for i := blockSize / 2; i < blockSize; i += 4096 {
		copy(b[i:i+4096], b[:4096])
	}
	return b
}

// snapshot is what the soak knows of one snapshot it started.
type snapshot struct {
	id, token, parent string
	view              map[int32]digest // the whole point-in-time view, parent's included; immutable once completed
	completed         bool             // CompleteSnapshot answered "completed"
	deleted           bool             // DeleteSnapshot acknowledged
	deleting          bool             // a delete is in flight (or in doubt at the end)
	users             int              // readers and child starts holding it
}

// ledger is every acknowledged fact of the run: what the daemon must still show after
// any number of kills.
type ledger struct {
	mu        sync.Mutex
	snaps     map[string]*snapshot
	completed []string          // ids in completion order, for random picks
	tokens    map[string]string // client token → the snapshot id it was acknowledged with
	losses    []string
	unexpect  []string

	// Counters, read for progress lines.
	puts, zeroPuts, dupPuts, putBytes     atomic.Int64
	apiSnapReads, apiBlockReads           atomic.Int64
	fuseSnapReads, fuseBlockReads         atomic.Int64
	deletes, gcRuns, scrubRuns, expected  atomic.Int64
	tokenRetries, interruptedReads, ops   atomic.Int64
	gcReclaimedBlocks, scrubFindingsCount atomic.Int64
	scrubBlocks                           atomic.Int64
}

func newLedger() *ledger {
	return &ledger{snaps: map[string]*snapshot{}, tokens: map[string]string{}}
}

func (l *ledger) lose(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.losses = append(l.losses, fmt.Sprintf(format, args...))
}

func (l *ledger) unexpected(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.unexpect = append(l.unexpect, fmt.Sprintf(format, args...))
}

// started records an acknowledged StartSnapshot.
func (l *ledger) started(id, token, parent string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tokens[token] = id
	l.snaps[id] = &snapshot{id: id, token: token, parent: parent}
}

// complete records an acknowledged CompleteSnapshot and the view it froze.
func (l *ledger) complete(id string, view map[int32]digest) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.snaps[id]
	s.view, s.completed = view, true
	l.completed = append(l.completed, id)
}

// live counts completed snapshots not deleted and not being deleted.
func (l *ledger) live() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, id := range l.completed {
		if s := l.snaps[id]; !s.deleted && !s.deleting {
			n++
		}
	}
	return n
}

// acquire picks a random live completed snapshot and holds it against deletion until
// release. ok is false when there is none.
func (l *ledger) acquire(rng *rand.Rand) (s *snapshot, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cand := l.liveLocked()
	if len(cand) == 0 {
		return nil, false
	}
	s = cand[rng.IntN(len(cand))]
	s.users++
	return s, true
}

func (l *ledger) release(s *snapshot) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s.users--
}

// pickForDelete picks a live completed snapshot nobody holds and marks it deleting.
func (l *ledger) pickForDelete(rng *rand.Rand) (*snapshot, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var cand []*snapshot
	for _, s := range l.liveLocked() {
		if s.users == 0 {
			cand = append(cand, s)
		}
	}
	if len(cand) == 0 {
		return nil, false
	}
	s := cand[rng.IntN(len(cand))]
	s.deleting = true
	return s, true
}

func (l *ledger) deleted(s *snapshot) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s.deleted, s.deleting = true, false
}

func (l *ledger) liveLocked() []*snapshot {
	var out []*snapshot
	for _, id := range l.completed {
		if s := l.snaps[id]; !s.deleted && !s.deleting {
			out = append(out, s)
		}
	}
	return out
}

// final is the ledger's content, sorted, for the end-of-run check (workers have stopped).
type final struct {
	live, deleted, deleteInDoubt []*snapshot
	pending                      int
	tokens                       []string
}

func (l *ledger) final() final {
	l.mu.Lock()
	defer l.mu.Unlock()
	var f final
	for _, s := range l.snaps {
		switch {
		case !s.completed:
			f.pending++
		case s.deleted:
			f.deleted = append(f.deleted, s)
		case s.deleting:
			f.deleteInDoubt = append(f.deleteInDoubt, s)
		default:
			f.live = append(f.live, s)
		}
	}
	for t := range l.tokens {
		f.tokens = append(f.tokens, t)
	}
	for _, ss := range [][]*snapshot{f.live, f.deleted, f.deleteInDoubt} {
		sort.Slice(ss, func(i, j int) bool { return ss[i].id < ss[j].id })
	}
	sort.Strings(f.tokens)
	return f
}

func (l *ledger) tokenID(token string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tokens[token]
}

func (l *ledger) problems() (losses, unexpected []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.losses...), append([]string(nil), l.unexpect...)
}
