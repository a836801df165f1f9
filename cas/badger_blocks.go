package cas

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/dgraph-io/badger/v4"
	"github.com/ebsd/ebsd/cas/core"
)

// badgerBlocks is the embedded block store: blocks under prefixBlock in the store's
// own Badger DB, the codec tag in each entry's UserMeta byte so that the value holds
// the encoded bytes alone and reads decode straight out of the memory-mapped value
// log. Its Put is one Badger commit for the whole slice: Badger copies each batch
// through a freshly grown buffer, so one commit of many blocks costs far less than
// one per block (group_commit.go).
type badgerBlocks struct {
	db *badger.DB
	// sync is the store's one Sync of the DB (badger_sync.go).
	sync *valueLogSync
	// gate is taken around every write: the store holds it exclusively while a
	// collection flushes Badger's memtable, which makes Badger refuse writes.
	gate func(func() error) error
	// maxTxnBytes bounds the block bytes of one transaction: half a value-log file
	// (DESIGN.md rule 34).
	maxTxnBytes int
}

var _ core.BlockStore = (*badgerBlocks)(nil)

func (b *badgerBlocks) Put(ctx context.Context, blocks []core.StoredBlock) error {
	if len(blocks) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// The group committer never needs more than one transaction (its groups are
	// bounded the same way); a move's batches may. Blocks are content-addressed, so
	// writing them in several transactions changes nothing a reader can see: a block
	// map names them only after Put returns.
	for len(blocks) > 0 {
		n, size := 1, len(blocks[0].Data)
		for n < len(blocks) && size+len(blocks[n].Data) <= b.maxTxnBytes {
			size += len(blocks[n].Data)
			n++
		}
		err := b.gate(func() error {
			return b.db.Update(func(txn *badger.Txn) error {
				for _, bl := range blocks[:n] {
					if err := txn.SetEntry(badger.NewEntry(blockKey(bl.Digest), bl.Data).WithMeta(bl.Tag)); err != nil {
						return err
					}
				}
				return nil
			})
		})
		if err != nil {
			return fmt.Errorf("badger blocks: put %d: %w", n, err)
		}
		blocks = blocks[n:]
	}
	return nil
}

func (b *badgerBlocks) Read(ctx context.Context, d core.Digest, fn func(tag byte, data []byte) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var fnErr error
	err := b.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(blockKey(d))
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			fnErr = fn(item.UserMeta(), v)
			return fnErr
		})
	})
	switch {
	case fnErr != nil:
		return fnErr
	case errors.Is(err, badger.ErrKeyNotFound):
		return fmt.Errorf("badger blocks: %s: %w", d, core.ErrBlockNotFound)
	case err != nil:
		return fmt.Errorf("badger blocks: read %s: %w", d, err)
	}
	return nil
}

func (b *badgerBlocks) Stat(ctx context.Context, d core.Digest) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	var size int64
	err := b.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(blockKey(d))
		if err != nil {
			return err
		}
		size = valueLen(item)
		return nil
	})
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return 0, fmt.Errorf("badger blocks: %s: %w", d, core.ErrBlockNotFound)
	case err != nil:
		return 0, fmt.Errorf("badger blocks: stat %s: %w", d, err)
	}
	return size, nil
}

func (b *badgerBlocks) Delete(ctx context.Context, ds []core.Digest) error {
	if len(ds) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err := b.gate(func() error {
		return b.db.Update(func(txn *badger.Txn) error {
			for _, d := range ds {
				if err := txn.Delete(blockKey(d)); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("badger blocks: delete %d: %w", len(ds), err)
	}
	return nil
}

// walkKeysPerTxn bounds how many keys one read transaction of a walk visits, so a walk
// of a large store never pins one read view (and the value-log files it can see) for
// long.
const walkKeysPerTxn = 16384

func (b *badgerBlocks) Walk(ctx context.Context, from core.Digest, fn func(d core.Digest, size int64) error) error {
	return b.walkTags(ctx, from, func(d core.Digest, size int64, _ byte) error { return fn(d, size) })
}

// walkTags is Walk with each block's tag, which Badger keeps in the key's entry: no
// value is read. Stats and settling use it to tell settled blocks apart.
func (b *badgerBlocks) walkTags(ctx context.Context, from core.Digest, fn func(d core.Digest, size int64, tag byte) error) error {
	seek := blockKey(from)
	inclusive := true
	for {
		n := 0
		var fnErr error
		err := b.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixBlock}})
			defer it.Close()
			for it.Seek(seek); it.Valid(); it.Next() {
				if err := ctx.Err(); err != nil {
					return err
				}
				item := it.Item()
				k := item.Key()
				if !inclusive && string(k) == string(seek) {
					continue // the last key of the previous transaction
				}
				if n == walkKeysPerTxn {
					return nil
				}
				n++
				seek, inclusive = item.KeyCopy(seek[:0]), false
				if len(k) != 1+len(core.Digest{}) {
					continue // not a block key: scrub reports it
				}
				if fnErr = fn(core.Digest(k[1:]), valueLen(item), item.UserMeta()); fnErr != nil {
					return fnErr
				}
			}
			n = -1 // the end
			return nil
		})
		switch {
		case fnErr != nil:
			return fnErr
		case err != nil:
			return fmt.Errorf("badger blocks: walk: %w", err)
		case n < 0:
			return nil
		}
	}
}

func (b *badgerBlocks) Sync(context.Context) error {
	if err := b.sync.Sync(); err != nil {
		return fmt.Errorf("badger blocks: fsync: %w", err)
	}
	return nil
}

// valueLen is the length of an entry's value without reading it. Badger's ValueSize is
// exact for values kept in the LSM tree, but for values in the value log it guesses
// the entry header at 6 bytes. The header is meta, user meta and three varints (key
// length with the 8-byte version, value length, expiry): for block keys and no expiry,
// 4 bytes plus the value length's varint. EstimatedSize is the whole entry there (key
// and value alone in the LSM tree), so the length can be solved for exactly. The
// conformance suite's size checks catch a Badger whose layout differs.
func valueLen(item *badger.Item) int64 {
	est, key := item.ValueSize(), item.KeySize()
	entry := item.EstimatedSize()
	if entry == key+est {
		return est // in the LSM tree: exact
	}
	rest := entry - (key + 8) - crc32.Size - 4 // = v + uvarintLen(v)
	for k := int64(1); k <= binary.MaxVarintLen64; k++ {
		if v := rest - k; v >= 0 && int64(uvarintLen(uint64(v))) == k {
			return v
		}
	}
	return est
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}
