package cas

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/pb"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/ristretto/v2/z"
	"google.golang.org/protobuf/proto"
)

// badTable finds the table file Badger names when it refuses to open one.
// (at open, or from the check of every table's blocks that follows it).
var badTable = regexp.MustCompile(`(?:Opening table: "|damaged table: )([^",]+\.sst)`)

// openFailure explains a Badger open error. A damaged table file makes Badger refuse the
// whole store; the operator needs to know which file, that nothing was changed, and how
// to get every snapshot that still verifies out of it.
func openFailure(dir string, err error) error {
	m := badTable.FindStringSubmatch(err.Error())
	if m == nil {
		return fmt.Errorf("cas: open badger in %s: %w", dir, err)
	}
	return fmt.Errorf("cas: the store in %s cannot be opened: its table file %s is damaged. Keep %s as it is (do not delete the file), "+
		"then copy every snapshot whose blocks still verify into a new store with `ebsctl salvage --from %s --to NEWDIR` "+
		"and start ebsd with --data-dir NEWDIR (docs/salvage.md): %w", dir, m[1], dir, dir, err)
}

// SalvageOptions say where to salvage from and to.
type SalvageOptions struct {
	From   string // data directory of the damaged store; never written
	To     string // new data directory; must not exist or be empty
	Logger *slog.Logger
}

// SalvageReport says what a salvage saved and what it could not.
type SalvageReport struct {
	// CorruptTables are the table files left out: every key they held is lost (newer
	// versions of a key in them fall back to what older tables hold).
	CorruptTables []string `json:"corruptTables"`
	// Saved are the snapshots copied with every block they and their ancestors map.
	Saved []string `json:"saved"`
	// Lost are the snapshots the readable tables know of that could not be copied.
	Lost               []LostSnapshot `json:"lost"`
	BlocksCopied       int64          `json:"blocksCopied"`
	BytesCopied        int64          `json:"bytesCopied"`
	TokensCopied       int            `json:"tokensCopied"`
	TokensDropped      int            `json:"tokensDropped"` // of snapshots not saved
	UnreadableRecords  []string       `json:"unreadableRecords"`
	DeletedNotNeeded   int            `json:"deletedNotNeeded"` // deleted snapshots no saved one descends from: left out
	CorruptBlocksFound int            `json:"corruptBlocksFound"`
}

// LostSnapshot is a snapshot salvage could not save, and why.
type LostSnapshot struct {
	ID         string  `json:"id"`
	OwnerID    string  `json:"ownerId"`
	Reason     string  `json:"reason"`
	BadIndexes []int64 `json:"badIndexes,omitempty"` // at most 100
}

// Salvage copies every snapshot of the store in o.From whose blocks (and whose
// ancestors' blocks) still read and verify into a new store in o.To, keeping snapshot
// ids, records (state, tags, lineage), client tokens and the store's secrets (so block
// and page tokens stay valid). Table files that fail their checksums are left out. The
// damaged store is only read: its files are copied to a work directory beside o.To,
// which is removed at the end.
func Salvage(ctx context.Context, o SalvageOptions) (rep SalvageReport, err error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rep = SalvageReport{CorruptTables: []string{}, Saved: []string{}, Lost: []LostSnapshot{}, UnreadableRecords: []string{}}
	if o.From == "" || o.To == "" {
		return rep, errors.New("cas: salvage needs a source and a destination directory")
	}
	if entries, err := os.ReadDir(o.To); err == nil && len(entries) > 0 {
		return rep, fmt.Errorf("cas: salvage destination %s is not empty", o.To)
	}
	work := filepath.Join(filepath.Dir(filepath.Clean(o.To)), "."+filepath.Base(o.To)+".salvage-work")
	if err := os.RemoveAll(work); err != nil {
		return rep, fmt.Errorf("cas: clear salvage work directory: %w", err)
	}
	defer os.RemoveAll(work)
	if err := copyDir(o.From, work); err != nil {
		return rep, err
	}
	bad, err := corruptTables(work)
	if err != nil {
		return rep, err
	}
	for _, p := range bad {
		rep.CorruptTables = append(rep.CorruptTables, filepath.Join(o.From, filepath.Base(p)))
		log.Warn("salvage: leaving out a damaged table file", "file", filepath.Join(o.From, filepath.Base(p)))
	}
	if err := dropTables(work, bad); err != nil {
		return rep, err
	}
	if err := removeEmptyValueLogs(work, log); err != nil {
		return rep, err
	}
	src, err := badger.Open(badger.DefaultOptions(work).WithLogger(badgerLogger{log}).WithNumVersionsToKeep(1).
		WithChecksumVerificationMode(options.OnBlockRead))
	if err != nil {
		return rep, fmt.Errorf("cas: open the readable part of %s: %w", o.From, err)
	}
	defer src.Close()
	comp, err := newCompressor(CompressNone)
	if err != nil {
		return rep, err
	}
	defer comp.close()
	sv := salvager{src: src, comp: comp, rep: &rep, verdict: make(map[Digest]bool)}
	if err := sv.readCatalog(ctx); err != nil {
		return rep, err
	}
	if err := sv.verify(ctx); err != nil {
		return rep, err
	}
	dst, err := Open(Options{Dir: o.To, ExpireInterval: -1, Logger: log})
	if err != nil {
		return rep, err
	}
	if err := sv.copyTo(ctx, dst); err != nil {
		_ = dst.Close()
		return rep, err
	}
	if err := dst.Close(); err != nil {
		return rep, err
	}
	// Opening the new store loads its catalog: a store that does not open is not saved.
	dst, err = Open(Options{Dir: o.To, ExpireInterval: -1, Logger: log})
	if err != nil {
		return rep, fmt.Errorf("cas: the salvaged store does not open: %w", err)
	}
	if err := dst.Close(); err != nil {
		return rep, err
	}
	log.Info("salvage done", "saved", len(rep.Saved), "lost", len(rep.Lost), "corrupt_tables", len(rep.CorruptTables),
		"blocks_copied", rep.BlocksCopied, "bytes_copied", rep.BytesCopied)
	return rep, nil
}

// copyDir copies the regular files of a data directory (a damaged store is never
// opened in place: Badger writes to the directory it opens).
func copyDir(from, to string) error {
	entries, err := os.ReadDir(from)
	if err != nil {
		return fmt.Errorf("cas: read %s: %w", from, err)
	}
	if err := os.MkdirAll(to, 0o750); err != nil {
		return fmt.Errorf("cas: create salvage work directory: %w", err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() || !badgerFile(e.Name()) {
			continue // the lock, the space reserve, credentials: nothing a salvage reads
		}
		if err := copyFile(filepath.Join(from, e.Name()), filepath.Join(to, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// badgerFile says whether a file of a data directory is one of Badger's.
func badgerFile(name string) bool {
	switch name {
	case badger.ManifestFilename, "KEYREGISTRY", "DISCARD":
		return true
	}
	ext := filepath.Ext(name)
	return ext == ".sst" || ext == ".vlog" || ext == ".mem"
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return fmt.Errorf("cas: copy %s: %w", from, err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("cas: copy %s: %w", from, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("cas: copy %s: %w", from, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("cas: copy %s: %w", from, err)
	}
	return nil
}

// corruptTables returns the table files of dir whose index or data blocks fail their
// checksums.
func corruptTables(dir string) ([]string, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil {
		return nil, fmt.Errorf("cas: list table files: %w", err)
	}
	return corruptTablesOf(paths), nil
}

// liveTables are the table files an open DB reads from: not the one a flush or a
// compaction is writing, which is no table yet (and would not verify).
func liveTables(db *badger.DB, dir string) []string {
	var paths []string
	for _, t := range db.Tables() {
		paths = append(paths, filepath.Join(dir, fmt.Sprintf("%06d.sst", t.ID)))
	}
	return paths
}

// corruptTablesOf returns the table files among paths that fail their checksums.
func corruptTablesOf(paths []string) []string {
	var bad []string
	for _, p := range paths {
		if err := checkTable(p); err != nil {
			if _, serr := os.Stat(p); errors.Is(serr, os.ErrNotExist) {
				continue // compacted away meanwhile (a running store)
			}
			bad = append(bad, p)
		}
	}
	return bad
}

// checkTable opens one table file with every checksum verified. A damaged file may
// make the table code panic rather than fail; that is a failure too.
func checkTable(path string) (err error) {
	mf, err := z.OpenMmapFile(path, os.O_RDONLY, 0)
	if err != nil && !errors.Is(err, z.NewFile) {
		return err
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("table %s: %v", path, r)
		}
		_ = mf.Close(-1)
	}()
	_, err = table.OpenTable(mf, table.Options{ReadOnly: true, ChkMode: options.OnTableRead, BlockSize: 4 << 10})
	return err
}

// dropTables deletes table files from a copy of a store and records their deletion in
// its MANIFEST, the way Badger itself appends a change set: length and CRC-32C (both
// big-endian), then the ManifestChangeSet.
func dropTables(dir string, paths []string) error {
	if len(paths) == 0 {
		return nil
	}
	set := &pb.ManifestChangeSet{}
	for _, p := range paths {
		id, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(p), ".sst"), 10, 64)
		if err != nil {
			return fmt.Errorf("cas: table file name %s: %w", p, err)
		}
		set.Changes = append(set.Changes, &pb.ManifestChange{Id: id, Op: pb.ManifestChange_DELETE})
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("cas: drop damaged table: %w", err)
		}
	}
	buf, err := proto.Marshal(set)
	if err != nil {
		return fmt.Errorf("cas: encode manifest change: %w", err)
	}
	var head [8]byte
	binary.BigEndian.PutUint32(head[0:4], uint32(len(buf)))
	binary.BigEndian.PutUint32(head[4:8], crc32.Checksum(buf, crc32.MakeTable(crc32.Castagnoli)))
	f, err := os.OpenFile(filepath.Join(dir, badger.ManifestFilename), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("cas: open manifest: %w", err)
	}
	if _, err := f.Write(append(head[:], buf...)); err != nil {
		f.Close()
		return fmt.Errorf("cas: append to manifest: %w", err)
	}
	return f.Close()
}

// salvager holds what a salvage learned from the readable part of the store.
type salvager struct {
	src     *badger.DB
	comp    *compressor
	rep     *SalvageReport
	recs    map[string]json.RawMessage
	snaps   map[string]Snapshot
	selfOK  map[string]bool
	verdict map[Digest]bool // stored copy verifies
	saved   map[string]bool
}

func (sv *salvager) readCatalog(ctx context.Context) error {
	sv.recs = make(map[string]json.RawMessage)
	sv.snaps = make(map[string]Snapshot)
	return sv.src.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixSnapshot}, PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			k := it.Item().KeyCopy(nil)
			v, err := it.Item().ValueCopy(nil)
			var rec Snapshot
			if err == nil {
				err = json.Unmarshal(v, &rec)
			}
			if err != nil || rec.ID != string(k[1:]) {
				sv.rep.UnreadableRecords = append(sv.rep.UnreadableRecords, strconv.Quote(string(k)))
				continue
			}
			sv.recs[rec.ID] = v
			sv.snaps[rec.ID] = rec
		}
		return nil
	})
}

// verify decides which snapshots are saved: a snapshot is saved when every block its
// own map points at verifies and its parent is saved. Deleted snapshots are copied only
// as ancestors of saved ones.
func (sv *salvager) verify(ctx context.Context) error {
	needed := make(map[string]bool)
	for id, rec := range sv.snaps {
		if !rec.DeletedAt.IsZero() {
			continue
		}
		for cur := id; cur != "" && !needed[cur]; cur = sv.snaps[cur].ParentID {
			needed[cur] = true
			if _, ok := sv.snaps[cur]; !ok {
				break
			}
		}
	}
	sv.selfOK = make(map[string]bool)
	bad := make(map[string][]int64)
	ids := make([]string, 0, len(needed))
	for id := range needed {
		if _, ok := sv.snaps[id]; ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		idx, err := sv.checkMap(ctx, id)
		if err != nil {
			return err
		}
		sv.selfOK[id] = len(idx) == 0
		bad[id] = idx
	}
	for _, ok := range sv.verdict {
		if !ok {
			sv.rep.CorruptBlocksFound++
		}
	}
	sv.saved = make(map[string]bool)
	var savedOf func(id string) (bool, string)
	savedOf = func(id string) (bool, string) {
		rec := sv.snaps[id]
		if !sv.selfOK[id] {
			return false, "blocks that do not verify"
		}
		if rec.ParentID == "" {
			return true, ""
		}
		if _, known := sv.snaps[rec.ParentID]; !known {
			return false, "its parent " + rec.ParentID + " is lost (its record was in a damaged table)"
		}
		if ok, _ := savedOf(rec.ParentID); !ok {
			return false, "its parent " + rec.ParentID + " is not saved"
		}
		return true, ""
	}
	for _, id := range ids {
		ok, why := savedOf(id)
		rec := sv.snaps[id]
		switch {
		case ok:
			sv.saved[id] = true
			if rec.DeletedAt.IsZero() {
				sv.rep.Saved = append(sv.rep.Saved, id)
			}
		case rec.DeletedAt.IsZero():
			sv.rep.Lost = append(sv.rep.Lost, LostSnapshot{ID: id, OwnerID: rec.OwnerID, Reason: why, BadIndexes: bad[id][:min(len(bad[id]), 100)]})
		}
	}
	sv.rep.DeletedNotNeeded = len(sv.snaps) - len(ids)
	return nil
}

// checkMap verifies every block a snapshot's own map points at and returns the
// indexes whose block is missing, damaged or not a digest.
func (sv *salvager) checkMap(ctx context.Context, id string) ([]int64, error) {
	var bad []int64
	scratch := make([]byte, 0, BlockSize)
	err := sv.src.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: mapPrefix(id), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			k := it.Item().Key()
			index := indexFromMapKey(k)
			v, err := it.Item().ValueCopy(nil)
			if err != nil || len(v) != len(Digest{}) {
				bad = append(bad, index)
				continue
			}
			d := Digest(v)
			if d == ZeroDigest {
				continue
			}
			ok, seen := sv.verdict[d]
			if !seen {
				ok = sv.blockVerifies(txn, d, scratch)
				sv.verdict[d] = ok
			}
			if !ok {
				bad = append(bad, index)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cas: salvage: check blocks of %s: %w", id, err)
	}
	return bad, nil
}

func (sv *salvager) blockVerifies(txn *badger.Txn, d Digest, scratch []byte) bool {
	item, err := txn.Get(blockKey(d))
	if err != nil {
		return false
	}
	var ok bool
	err = item.Value(func(v []byte) error {
		out, err := sv.comp.decode(scratch[:0], v, codec(item.UserMeta()))
		ok = err == nil && len(out) == BlockSize && Sum(out) == d
		return nil
	})
	return err == nil && ok
}

// copyTo writes the saved snapshots (records, maps, blocks as stored), their client
// tokens and the store's settings into the new store.
func (sv *salvager) copyTo(ctx context.Context, dst *Store) error {
	wb := dst.db.NewWriteBatch()
	defer wb.Cancel()
	written := make(map[Digest]bool)
	ids := make([]string, 0, len(sv.saved))
	for id := range sv.saved {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if err := wb.Set(snapshotKey(id), sv.recs[id]); err != nil {
			return err
		}
		err := sv.src.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: mapPrefix(id), PrefetchValues: true})
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				if err := ctx.Err(); err != nil {
					return err
				}
				v, err := it.Item().ValueCopy(nil)
				if err != nil {
					return err
				}
				if err := wb.Set(it.Item().KeyCopy(nil), v); err != nil {
					return err
				}
				d := Digest(v)
				if d == ZeroDigest || written[d] {
					continue
				}
				item, err := txn.Get(blockKey(d))
				if err != nil {
					return err
				}
				val, err := item.ValueCopy(nil)
				if err != nil {
					return err
				}
				if err := wb.SetEntry(badger.NewEntry(blockKey(d), val).WithMeta(item.UserMeta())); err != nil {
					return err
				}
				written[d] = true
				sv.rep.BlocksCopied++
				sv.rep.BytesCopied += int64(len(val))
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("cas: salvage: copy %s: %w", id, err)
		}
	}
	err := sv.src.View(func(txn *badger.Txn) error {
		for _, prefix := range []byte{prefixToken, prefixMeta} {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefix}, PrefetchValues: true})
			for it.Rewind(); it.Valid(); it.Next() {
				k := it.Item().KeyCopy(nil)
				v, err := it.Item().ValueCopy(nil)
				if err != nil {
					continue // an unreadable setting or token: not saved
				}
				if prefix == prefixToken {
					var tok tokenRecord
					if json.Unmarshal(v, &tok) != nil || !sv.saved[tok.SnapshotID] {
						sv.rep.TokensDropped++
						continue
					}
					sv.rep.TokensCopied++
				} else if string(k) == string(metaKey("gc-flush")) || bytes.HasPrefix(k, metaKey(rotatePrefix)) {
					continue
				}
				if err := wb.Set(k, v); err != nil {
					it.Close()
					return err
				}
			}
			it.Close()
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("cas: salvage: copy tokens and settings: %w", err)
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("cas: salvage: write the new store: %w", err)
	}
	return dst.sync()
}
