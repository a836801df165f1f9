package cas

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/dgraph-io/badger/v4"
	"github.com/ebsd/ebsd/cas/core"
)

// maxGroup bounds how many block writes share one commit (and so one Badger
// transaction: 16 blocks stay well under its size limit).
const maxGroup = 16

// writeOp is one put's share of a group commit.
type writeOp struct {
	block  *StoredBlock // nil when the block is zero or already stored
	fresh  bool         // the block was absent when the put looked it up
	race   *putsOfBlock // the puts of the block in flight with this one
	mapKey []byte
	snapID string
	digest Digest
	done   chan error
}

// blockBytes is what the op adds to its group's block-store write.
func (op *writeOp) blockBytes() int {
	if op.block == nil {
		return 0
	}
	return len(op.block.Data)
}

// putsInFlight tracks, per digest, the puts between their lookup of the block and
// their commit, so that a commit can tell whether its block may have been stored by
// another put since its lookup said it was absent (DESIGN.md rule 2): only then does
// it look again. A put alone with its block — nearly every put — costs the store no
// second lookup (on S3, no second HEAD in the one committing goroutine).
type putsInFlight struct {
	mu     sync.Mutex
	blocks map[Digest]*putsOfBlock
}

type putsOfBlock struct {
	n          int  // puts of the block in flight
	overlapped bool // two or more were in flight at once since the first entered
}

func (p *putsInFlight) enter(d Digest) *putsOfBlock {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.blocks == nil {
		p.blocks = make(map[Digest]*putsOfBlock)
	}
	b := p.blocks[d]
	if b == nil {
		b = &putsOfBlock{}
		p.blocks[d] = b
	}
	b.n++
	if b.n > 1 {
		b.overlapped = true
	}
	return b
}

func (p *putsInFlight) leave(d Digest) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if b := p.blocks[d]; b != nil {
		if b.n--; b.n == 0 {
			delete(p.blocks, d)
		}
	}
}

func (b *putsOfBlock) overlappedNow(p *putsInFlight) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return b.overlapped
}

// groupCommitLoop commits the block writes of concurrent puts together. Badger writes
// each batch of requests through a freshly grown buffer, so one 512 KiB value per
// commit spends more time in allocation and copying than in I/O; puts that queue up
// while a commit is running share the next one (measured: 2.6× the ingest rate of
// one block per commit with eight writers, see BENCHMARKS.md). Nothing waits for a
// timer: a lone put commits at once.
func (s *Store) groupCommitLoop() {
	defer s.wg.Done()
	group := make([]*writeOp, 0, maxGroup)
	var next *writeOp // an op that would have taken the last group past its bytes
	for {
		if next == nil {
			select {
			case <-s.stop:
				return
			case op := <-s.writes:
				next = op
			}
		}
		group = append(group[:0], next)
		size := next.blockBytes()
		next = nil
	fill:
		for len(group) < maxGroup {
			select {
			case op := <-s.writes:
				if size+op.blockBytes() > s.groupBlockBytes {
					next = op // it starts the next group
					break fill
				}
				group = append(group, op)
				size += op.blockBytes()
			default:
				break fill
			}
		}
		refused, err := s.commitGroup(group)
		for _, op := range group {
			if err == nil {
				op.done <- refused[op]
			} else {
				op.done <- err
			}
		}
	}
}

// commitGroup writes the group's blocks to the block store, then its block-map entries
// in one catalog commit: a map entry is never committed before the block it names. On
// a shared catalog, ops of snapshots another daemon completed, expired or deleted
// meanwhile are refused (shared.go) and the rest commit.
func (s *Store) commitGroup(group []*writeOp) (map[*writeOp]error, error) {
	var tally putTally
	var refused map[*writeOp]error
	err := s.putGroupBlocks(group, &tally)
	if err == nil {
		err = s.commit(context.Background(), func(txn core.CatalogTx) error {
			tally.resetMaps() // a catalog may run this more than once
			if s.shared() {
				var err error
				if refused, err = acceptPending(txn, group); err != nil {
					return err
				}
			}
			now := s.clock.Now().UnixNano()
			active := map[string]bool{}
			for _, op := range group {
				if refused[op] != nil {
					continue
				}
				if err := tally.noteMap(txn, op); err != nil {
					return err
				}
				if err := txn.Set(op.mapKey, op.digest[:]); err != nil {
					return err
				}
				if s.shared() && !active[op.snapID] {
					// Other daemons judge idleness by it (Timeout): one small write per
					// snapshot per group.
					active[op.snapID] = true
					if err := txn.Set(activityKey(op.snapID), binary.BigEndian.AppendUint64(nil, uint64(now))); err != nil {
						return err
					}
				}
			}
			return nil
		})
	}
	s.ctr.noteGroup(len(group), err)
	if err == nil {
		s.applyPuts(&tally)
	}
	return refused, err
}

// putGroupBlocks stores the group's blocks in one call to the block store and tallies
// which of them are new. Commits are serialised by the group committer, so the check
// sees every earlier commit: of two first puts of one block (DESIGN.md rule 2) the
// later one finds the earlier here and counts as a dedup.
func (s *Store) putGroupBlocks(group []*writeOp, tally *putTally) error {
	var blocks []StoredBlock
	seen := make(map[Digest]bool, len(group))
	for _, op := range group {
		switch {
		case op.digest == ZeroDigest:
			tally.zero++
			continue
		case op.block == nil || seen[op.digest]:
			tally.dedup++
			continue
		}
		seen[op.digest] = true
		has := !op.fresh // a heal replaces a stored copy
		if op.fresh && op.race.overlappedNow(&s.firstPuts) {
			// Another put of the block overlapped this one: it may have stored it
			// since this put's lookup, and then this put only deduplicates.
			var err error
			if has, err = s.hasBlock(context.Background(), op.digest); err != nil {
				return fmt.Errorf("cas: count block: %w", err)
			}
		}
		if has {
			tally.dedup++ // stored meanwhile, or a heal replacing a corrupt copy
		} else {
			tally.stored++
			// Every engine stores a value at exactly its length (the conformance
			// suite checks Stat): the size is known without asking the store again.
			tally.newBlocks++
			tally.newBytes += int64(len(op.block.Data))
		}
		blocks = append(blocks, *op.block)
	}
	return s.blocks.Put(context.Background(), blocks)
}

// submit hands op to the group committer and waits for its commit.
func (s *Store) submit(op *writeOp) error {
	op.done = make(chan error, 1)
	select {
	case s.writes <- op:
	case <-s.stop:
		return ErrClosed
	}
	if err := <-op.done; err != nil {
		if errors.Is(err, badger.ErrTxnTooBig) { // the embedded catalog's limit
			return fmt.Errorf("cas: group commit too big for one transaction: %w", err)
		}
		return err
	}
	return nil
}
