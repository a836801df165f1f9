package cas

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ebsd/ebsd/cas/core"
)

// Moving a store copies it, engine to engine: the embedded Badger store into S3 and
// PostgreSQL when one machine is outgrown, or back. Blocks are copied as stored (tag and
// encoded bytes) and records key by key, so snapshot ids, client tokens, tags, lineage,
// corrupt marks and the secret that signs pagination tokens all stay what they were.
// Afterwards the destination is opened afresh and every block of every live snapshot's
// view is read through it and verified against its digest, and every record is
// compared with the source's.

// MoveOptions say what to copy where. Both stores are opened by Move and must not be
// served meanwhile (the embedded store's directory lock refuses a running daemon).
type MoveOptions struct {
	From, To Options
	Logger   *slog.Logger
}

// MoveReport says what a move copied and verified.
type MoveReport struct {
	Blocks        int64         `json:"blocks"`
	StoredBytes   int64         `json:"storedBytes"`
	Records       int64         `json:"records"`
	Snapshots     int           `json:"snapshots"`
	BlocksChecked int64         `json:"blocksVerified"`
	Duration      time.Duration `json:"durationNs"`
}

// movedPrefixes are the record kinds a move copies. Blocks go through the block
// stores; the rows only shared catalogs keep (activity, block use, view leases)
// describe running daemons, not the store.
var movedPrefixes = []byte{prefixSnapshot, prefixMap, prefixToken, prefixCorrupt, prefixMeta}

// errDestinationNotEmpty refuses to merge one store into another.
var errDestinationNotEmpty = errors.New("the destination already holds records: a move copies into an empty store only")

const moveBatch = 512 // records per destination transaction, blocks per put

// Move copies the store From describes into the empty store To describes, then
// verifies the copy.
func Move(ctx context.Context, o MoveOptions) (rep MoveReport, err error) {
	began := time.Now()
	o.From.ExpireInterval, o.To.ExpireInterval = -1, -1 // nothing changes a record while it is copied
	o.From.GCInterval, o.To.GCInterval, o.From.ScrubInterval, o.To.ScrubInterval = 0, 0, 0, 0
	o.From.Recompress, o.To.Recompress = RecompressOff, RecompressOff
	src, err := Open(o.From)
	if err != nil {
		return rep, fmt.Errorf("cas: move: open the source: %w", err)
	}
	defer func() { _ = src.Close() }()
	dst, err := Open(o.To)
	if err != nil {
		return rep, fmt.Errorf("cas: move: open the destination: %w", err)
	}
	if err := dst.mustBeEmpty(ctx); err != nil {
		_ = dst.Close()
		return rep, err
	}
	if rep.Blocks, rep.StoredBytes, err = copyBlocks(ctx, src.blocks, dst.blocks); err != nil {
		_ = dst.Close()
		return rep, err
	}
	if rep.Records, err = copyRecords(ctx, src.cat, dst.cat); err != nil {
		_ = dst.Close()
		return rep, err
	}
	if err := dst.sync(); err != nil {
		_ = dst.Close()
		return rep, err
	}
	if err := dst.Close(); err != nil {
		return rep, fmt.Errorf("cas: move: close the destination: %w", err)
	}
	if o.Logger != nil {
		o.Logger.Info("move copied", "blocks", rep.Blocks, "stored_bytes", rep.StoredBytes, "records", rep.Records)
	}
	// Verified through a fresh open: what a daemon started on the destination sees.
	dst, err = Open(o.To)
	if err != nil {
		return rep, fmt.Errorf("cas: move: reopen the destination: %w", err)
	}
	defer func() { _ = dst.Close() }()
	if rep.Snapshots, rep.BlocksChecked, err = verifyMove(ctx, src, dst); err != nil {
		return rep, err
	}
	rep.Duration = time.Since(began)
	return rep, nil
}

func (s *Store) mustBeEmpty(ctx context.Context) error {
	found := false
	err := s.view(ctx, func(txn core.CatalogTx) error {
		return txn.Scan([]byte{prefixSnapshot}, nil, func(_, _ []byte) (bool, error) {
			found = true
			return false, nil
		})
	})
	if err != nil {
		return fmt.Errorf("cas: move: read the destination: %w", err)
	}
	if found {
		return fmt.Errorf("cas: move: %w", errDestinationNotEmpty)
	}
	return nil
}

// copyBlocks copies every stored block as it is stored.
func copyBlocks(ctx context.Context, from, to core.BlockStore) (n, bytesCopied int64, err error) {
	var batch []core.StoredBlock
	flush := func() error {
		if err := to.Put(ctx, batch); err != nil {
			return fmt.Errorf("cas: move: write blocks: %w", err)
		}
		batch = batch[:0]
		return nil
	}
	err = from.Walk(ctx, Digest{}, func(d Digest, _ int64) error {
		err := from.Read(ctx, d, func(tag byte, data []byte) error {
			batch = append(batch, core.StoredBlock{Digest: d, Tag: tag, Data: bytes.Clone(data)})
			n++
			bytesCopied += int64(len(data))
			return nil
		})
		if err != nil {
			return fmt.Errorf("cas: move: read block %s: %w", d, err)
		}
		if len(batch) == 16 {
			return flush()
		}
		return nil
	})
	if err == nil && len(batch) > 0 {
		err = flush()
	}
	return n, bytesCopied, err
}

// copyRecords copies the records of every moved kind, a batch per transaction.
func copyRecords(ctx context.Context, from, to core.Catalog) (int64, error) {
	var n int64
	for _, p := range movedPrefixes {
		var after []byte
		for more := true; more; {
			type kv struct{ k, v []byte }
			var page []kv
			err := from.View(ctx, func(txn core.CatalogTx) error {
				page, more = page[:0], false
				return txn.Scan([]byte{p}, after, func(k, v []byte) (bool, error) {
					if after != nil && bytes.Equal(k, after) {
						return true, nil
					}
					if len(page) == moveBatch {
						more = true
						return false, nil
					}
					page = append(page, kv{bytes.Clone(k), bytes.Clone(v)})
					return true, nil
				})
			})
			if err != nil {
				return n, fmt.Errorf("cas: move: read records: %w", err)
			}
			if p == prefixMeta {
				page = dropSettleTotals(page, func(e kv) []byte { return e.k })
			}
			err = to.Update(ctx, func(txn core.CatalogTx) error {
				for _, e := range page {
					if err := txn.Set(e.k, e.v); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return n, fmt.Errorf("cas: move: write records: %w", err)
			}
			n += int64(len(page))
			if len(page) > 0 {
				after = page[len(page)-1].k
			}
		}
	}
	return n, nil
}

// dropSettleTotals leaves out what settling did to the source: it describes the
// source's value log, not the blocks.
func dropSettleTotals[T any](page []T, key func(T) []byte) []T {
	out := page[:0]
	for _, e := range page {
		if !bytes.Equal(key(e), metaKey(settleTotalsKey)) {
			out = append(out, e)
		}
	}
	return out
}

// verifyMove checks the copy: every snapshot record and client token as the source
// has it, and every block of every live completed snapshot's view read through the
// destination's verified read path (one read per distinct block).
func verifyMove(ctx context.Context, src, dst *Store) (snapshots int, checked int64, err error) {
	for _, p := range []byte{prefixSnapshot, prefixToken} {
		want, err := allRecords(ctx, src.cat, p)
		if err != nil {
			return 0, 0, err
		}
		got, err := allRecords(ctx, dst.cat, p)
		if err != nil {
			return 0, 0, err
		}
		if len(got) != len(want) {
			return 0, 0, fmt.Errorf("cas: move: the destination holds %d records of kind %q, the source %d", len(got), p, len(want))
		}
		for k, v := range want {
			if !bytes.Equal(got[k], v) {
				return 0, 0, fmt.Errorf("cas: move: record %q differs in the destination", k)
			}
		}
	}
	seen := make(map[Digest]bool)
	buf := make([]byte, 0, BlockSize)
	for _, snap := range dst.allEntries() {
		if snap.Status != StatusCompleted || !snap.DeletedAt.IsZero() {
			continue
		}
		snapshots++
		var readErr error
		err := dst.ViewFrom(ctx, snap.OwnerID, snap.ID, 0, func(sl Slot) bool {
			if seen[sl.Digest] || sl.Digest == ZeroDigest { // zeros are not stored
				return true
			}
			seen[sl.Digest] = true
			if _, err := dst.readBlock(ctx, buf[:0], sl.Digest); err != nil {
				readErr = fmt.Errorf("cas: move: %s block %d: %w", snap.ID, sl.Index, err)
				return false
			}
			checked++
			return true
		})
		if err = errors.Join(err, readErr); err != nil {
			return snapshots, checked, err
		}
	}
	return snapshots, checked, nil
}

func allRecords(ctx context.Context, cat core.Catalog, prefix byte) (map[string][]byte, error) {
	out := make(map[string][]byte)
	err := cat.View(ctx, func(txn core.CatalogTx) error {
		clear(out)
		return txn.Scan([]byte{prefix}, nil, func(k, v []byte) (bool, error) {
			out[string(k)] = bytes.Clone(v)
			return true, nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("cas: move: read records: %w", err)
	}
	return out, nil
}
