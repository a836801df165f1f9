package blocktest

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/ebsd/ebsd/cas/core"
)

var _ core.BlockStore = (*Memory)(nil)

// Memory is a core.BlockStore held in memory. It copies data on the way in and on the
// way out, so neither a caller reusing its buffers nor a Read callback writing to the
// bytes it was given can change what is stored. It is safe for concurrent use, and
// Walk holds no lock while its callback runs, so the callback may call the store.
// Sync does nothing: nothing outlives the process anyway.
type Memory struct {
	mu     sync.RWMutex
	blocks map[core.Digest]memBlock
	sorted []core.Digest // the keys of blocks, ascending
}

type memBlock struct {
	tag  byte
	data []byte
}

// NewMemory returns an empty Memory.
func NewMemory() *Memory {
	return &Memory{blocks: make(map[core.Digest]memBlock)}
}

func compareDigests(a, b core.Digest) int { return bytes.Compare(a[:], b[:]) }

// Put stores copies of the blocks; a digest given twice in one call keeps the last.
func (m *Memory) Put(ctx context.Context, blocks []core.StoredBlock) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("blocktest: memory put: %w", err)
	}
	copies := make([]memBlock, len(blocks))
	for i, b := range blocks {
		copies[i] = memBlock{tag: b.Tag, data: bytes.Clone(b.Data)}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, b := range blocks {
		if _, ok := m.blocks[b.Digest]; !ok {
			at, _ := slices.BinarySearchFunc(m.sorted, b.Digest, compareDigests)
			m.sorted = slices.Insert(m.sorted, at, b.Digest)
		}
		m.blocks[b.Digest] = copies[i]
	}
	return nil
}

// Read calls fn with the tag and a copy of the bytes of block d.
func (m *Memory) Read(ctx context.Context, d core.Digest, fn func(tag byte, data []byte) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("blocktest: memory read %s: %w", d, err)
	}
	m.mu.RLock()
	b, ok := m.blocks[d]
	var data []byte
	if ok {
		data = bytes.Clone(b.data)
	}
	m.mu.RUnlock()
	if !ok {
		return fmt.Errorf("blocktest: memory read %s: %w", d, core.ErrBlockNotFound)
	}
	return fn(b.tag, data)
}

// Stat returns the length of the bytes stored for block d.
func (m *Memory) Stat(ctx context.Context, d core.Digest) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("blocktest: memory stat %s: %w", d, err)
	}
	m.mu.RLock()
	b, ok := m.blocks[d]
	m.mu.RUnlock()
	if !ok {
		return 0, fmt.Errorf("blocktest: memory stat %s: %w", d, core.ErrBlockNotFound)
	}
	return int64(len(b.data)), nil
}

// Delete removes the blocks; digests not stored are skipped.
func (m *Memory) Delete(ctx context.Context, ds []core.Digest) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("blocktest: memory delete: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, d := range ds {
		if _, ok := m.blocks[d]; !ok {
			continue
		}
		delete(m.blocks, d)
		if at, found := slices.BinarySearchFunc(m.sorted, d, compareDigests); found {
			m.sorted = slices.Delete(m.sorted, at, at+1)
		}
	}
	return nil
}

// Walk calls fn for each block from digest from on, ascending. Each step looks up the
// first digest after the last one visited, so blocks put or deleted during the walk
// are seen or not according to where the walk has got to.
func (m *Memory) Walk(ctx context.Context, from core.Digest, fn func(d core.Digest, size int64) error) error {
	next, inclusive := from, true
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("blocktest: memory walk: %w", err)
		}
		m.mu.RLock()
		at, found := slices.BinarySearchFunc(m.sorted, next, compareDigests)
		if found && !inclusive {
			at++
		}
		if at >= len(m.sorted) {
			m.mu.RUnlock()
			return nil
		}
		d := m.sorted[at]
		size := int64(len(m.blocks[d].data))
		m.mu.RUnlock()
		if err := fn(d, size); err != nil {
			return err
		}
		next, inclusive = d, false
	}
}

// Sync does nothing but honour ctx.
func (m *Memory) Sync(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("blocktest: memory sync: %w", err)
	}
	return nil
}

// Len returns how many blocks are stored.
func (m *Memory) Len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.blocks)
}
