package cas

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ebsd/ebsd/cas/core"
)

// ErrCorruptMapped is CompleteSnapshot's refusal of a snapshot that maps a block whose
// stored copy is known to be corrupt. It wraps ErrChecksumMismatch so that protocols
// answer it as they answer a bad checksum (EBS: 400 ValidationException
// INVALID_PARAMETER_VALUE): the client's request is fine to repeat only after it puts
// the named blocks again, never blindly.
var ErrCorruptMapped = fmt.Errorf("%w: the snapshot maps blocks whose stored copy is corrupt", ErrChecksumMismatch)

// prefixCorrupt keys the durable set of digests whose stored copy failed verification:
// x + digest → corruptMark (JSON). Small, so it lives in the LSM tree.
const prefixCorrupt = 'x'

func corruptKey(d Digest) []byte {
	k := make([]byte, 1+len(d))
	k[0] = prefixCorrupt
	copy(k[1:], d[:])
	return k
}

// corruptMark is what the store remembers about a corrupt block.
type corruptMark struct {
	Found   time.Time `json:"found"`
	Problem string    `json:"problem"`
}

// healState is the known-corrupt set. Puts of a digest in it verify the stored copy
// and replace it when it does not verify; a put of any other digest pays one atomic
// load (n == 0) or one map lookup under a shared lock, never a read of the stored copy.
type healState struct {
	n      atomic.Int64 // len(marks): the put path's fast check
	mu     sync.RWMutex
	marks  map[Digest]corruptMark
	healed atomic.Int64 // corrupt copies replaced by puts since open
}

// loadCorruptMarks reads the durable known-corrupt set at open.
func (s *Store) loadCorruptMarks() error {
	marks := make(map[Digest]corruptMark)
	err := s.view(context.Background(), func(txn core.CatalogTx) error {
		return txn.Scan([]byte{prefixCorrupt}, nil, func(k, v []byte) (bool, error) {
			if len(k) != 1+len(Digest{}) {
				return true, nil // not ours; scrub reports it
			}
			var m corruptMark
			_ = json.Unmarshal(v, &m) // a damaged mark still marks
			marks[Digest(k[1:])] = m
			return true, nil
		})
	})
	if err != nil {
		return fmt.Errorf("cas: load corrupt-block marks: %w", err)
	}
	s.heal.mu.Lock()
	s.heal.marks = marks
	s.heal.n.Store(int64(len(marks)))
	s.heal.mu.Unlock()
	if len(marks) > 0 {
		s.log.Warn("the store holds blocks known to be corrupt; a put of the right bytes heals each (ebsctl scrub lists them)", "corrupt_blocks", len(marks))
	}
	return nil
}

// knownCorrupt says whether d is in the known-corrupt set.
func (s *Store) knownCorrupt(d Digest) bool {
	if s.heal.n.Load() == 0 {
		return false
	}
	s.heal.mu.RLock()
	defer s.heal.mu.RUnlock()
	_, ok := s.heal.marks[d]
	return ok
}

// CorruptBlocks returns the digests known to be corrupt (found by reads or scrubs and
// not healed since).
func (s *Store) CorruptBlocks() []Digest {
	s.heal.mu.RLock()
	defer s.heal.mu.RUnlock()
	out := make([]Digest, 0, len(s.heal.marks))
	for d := range s.heal.marks {
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b Digest) int { return strings.Compare(string(a[:]), string(b[:])) })
	return out
}

// verifyStored reads the stored copy of d afresh and says why it does not verify; ""
// when it does. Missing is a problem too: a block map may point at it.
func (s *Store) verifyStored(d Digest, scratch []byte) (problem string, err error) {
	if d == ZeroDigest {
		return "", nil
	}
	err = s.blocks.Read(context.Background(), d, func(tag byte, v []byte) error {
		problem = s.checkValue(scratch, v, codec(tag), d)
		return nil
	})
	switch {
	case errors.Is(err, ErrBlockNotFound):
		return "missing", nil
	case err != nil && s.local != nil:
		// The embedded engine cannot read its own copy: that copy is what is wrong.
		return "cannot read: " + err.Error(), nil
	case err != nil:
		return "", fmt.Errorf("cas: read block %s: %w", d, err)
	}
	return problem, nil
}

// checkValue decodes a stored value into scratch and says why it is not the block d.
func (s *Store) checkValue(scratch, v []byte, tag codec, d Digest) string {
	out, err := s.comp.decode(scratch[:0], v, tag)
	switch {
	case err != nil:
		return "cannot decode: " + err.Error()
	case len(out) != BlockSize:
		return fmt.Sprintf("decodes to %d bytes, not %d", len(out), BlockSize)
	case Sum(out) != d:
		return "does not hash to its key"
	}
	return ""
}

// noteCorrupt is told of a block that failed to verify (a read, a scrub). It checks
// again under the block's stripe held exclusively — no put is between its check and its
// commit, so a heal that just committed is seen and a block that verifies now is not
// marked — and records the mark durably. It returns the problem found, "" if none.
func (s *Store) noteCorrupt(d Digest) (string, error) {
	if d == ZeroDigest || s.Closed() {
		return "", nil
	}
	stripe := &s.stripes[d[0]]
	stripe.Lock()
	defer stripe.Unlock()
	buf := s.getBuf()
	defer s.putBuf(buf)
	problem, err := s.verifyStored(d, (*buf)[:0:cap(*buf)])
	if err != nil || problem == "" {
		return "", err
	}
	if s.knownCorrupt(d) {
		return problem, nil
	}
	m := corruptMark{Found: s.clock.Now(), Problem: problem}
	if err := s.commit(context.Background(), func(txn core.CatalogTx) error { return putJSON(txn, corruptKey(d), m) }); err != nil {
		return problem, fmt.Errorf("cas: mark block %s corrupt: %w", d, err)
	}
	s.heal.mu.Lock()
	if _, ok := s.heal.marks[d]; !ok {
		s.heal.marks[d] = m
		s.heal.n.Add(1)
	}
	s.heal.mu.Unlock()
	s.log.Error("stored block is corrupt; a put of the right bytes heals it", "digest", d.String(), "problem", problem)
	return problem, nil
}

// clearCorrupt forgets the mark of d. The caller holds d's stripe (shared after a
// healing commit, exclusively when a re-check found the block sound), so no noteCorrupt
// of d runs meanwhile.
func (s *Store) clearCorrupt(d Digest) error {
	if !s.knownCorrupt(d) {
		return nil
	}
	if err := s.commit(context.Background(), func(txn core.CatalogTx) error { return txn.Delete(corruptKey(d)) }); err != nil {
		return fmt.Errorf("cas: clear corrupt mark of %s: %w", d, err)
	}
	s.heal.mu.Lock()
	if _, ok := s.heal.marks[d]; ok {
		delete(s.heal.marks, d)
		s.heal.n.Add(-1)
	}
	s.heal.mu.Unlock()
	return nil
}

// recheckCorrupt verifies the stored copy of a marked block again, under its stripe
// held exclusively, and clears the mark if it verifies now (a heal whose commit landed
// but whose mark a crash kept). It says whether d is still corrupt.
func (s *Store) recheckCorrupt(d Digest) (bool, error) {
	stripe := &s.stripes[d[0]]
	stripe.Lock()
	defer stripe.Unlock()
	buf := s.getBuf()
	defer s.putBuf(buf)
	problem, err := s.verifyStored(d, (*buf)[:0:cap(*buf)])
	if err != nil {
		return true, err
	}
	if problem != "" {
		return true, nil
	}
	return false, s.clearCorrupt(d)
}

// healOnPut decides, for a put of d whose key exists, whether the stored copy must be
// replaced. Only digests in the known-corrupt set are read back; the caller holds d's
// stripe shared, so the answer holds until its commit.
func (s *Store) healOnPut(d Digest) (bool, error) {
	if !s.knownCorrupt(d) {
		return false, nil
	}
	buf := s.getBuf()
	defer s.putBuf(buf)
	problem, err := s.verifyStored(d, (*buf)[:0:cap(*buf)])
	if err != nil {
		return false, err
	}
	return problem != "", nil
}

// healed is called after a put of d committed while d was marked: the stored copy is
// the put's verified bytes now (or verified before), so the mark goes. A crash before
// the mark is cleared leaves it; the next put, CompleteSnapshot or scrub re-checks the
// stored copy and clears it then.
func (s *Store) healed(d Digest, replaced bool) error {
	if replaced {
		s.heal.healed.Add(1)
		s.log.Info("corrupt block healed by a put of its bytes", "digest", d.String())
	}
	return s.clearCorrupt(d)
}

// maxNamedIndexes bounds the block indexes a CompleteSnapshot refusal names.
const maxNamedIndexes = 32

// checkMappedSound refuses a snapshot whose own block map points at a block known to
// be corrupt, naming the indexes to put again. Marked blocks are verified again first,
// so a mark a crash left behind never refuses a snapshot. The caller holds the
// snapshot's lock exclusively, so no put changes its map meanwhile.
func (s *Store) checkMappedSound(ctx context.Context, id string) error {
	if s.heal.n.Load() == 0 {
		return nil
	}
	byDigest := make(map[Digest][]int64)
	err := s.view(ctx, func(txn core.CatalogTx) error {
		return mergeMaps(ctx, txn, []string{id}, 0, func(index int64, _ int, d Digest) (bool, error) {
			if s.knownCorrupt(d) {
				byDigest[d] = append(byDigest[d], index)
			}
			return true, nil
		})
	})
	if err != nil {
		return fmt.Errorf("cas: check blocks of %s: %w", id, err)
	}
	var bad []int64
	for d, idx := range byDigest {
		still, err := s.recheckCorrupt(d)
		if err != nil {
			return err
		}
		if still {
			bad = append(bad, idx...)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	slices.Sort(bad)
	named := bad[:min(len(bad), maxNamedIndexes)]
	parts := make([]string, len(named))
	for i, n := range named {
		parts[i] = fmt.Sprint(n)
	}
	more := ""
	if len(bad) > len(named) {
		more = fmt.Sprintf(" and %d more", len(bad)-len(named))
	}
	return fmt.Errorf("%w: put block indexes %s%s of %s again (%d in all), then complete it again; it stays pending",
		ErrCorruptMapped, strings.Join(parts, ", "), more, id, len(bad))
}

// markAfterFailedRead records a block a read refused, so that the next put of its bytes
// replaces it and CompleteSnapshot refuses snapshots that map it. Failing to record it
// is logged: the read fails either way.
func (s *Store) markAfterFailedRead(d Digest) {
	if _, err := s.noteCorrupt(d); err != nil {
		s.log.Error("cannot record a corrupt block", "digest", d.String(), "err", err)
	}
}
