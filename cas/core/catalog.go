package core

import (
	"bytes"
	"context"
	"errors"
)

// Catalog is where the store's records live: snapshot records, block maps, client
// tokens, tags, corrupt-block marks and store-wide settings, under keys the store lays
// out (cas/keys.go). It is an ordered, transactional key-value store, the model JuiceFS
// runs its metadata on for TiKV, etcd and Badger alike: the store's layout and logic
// are one code path whatever engine holds them, and an engine needs only keys, values,
// ordered scans and transactions. The embedded engine is the store's own Badger DB;
// PostgreSQL (cas/pgcatalog) lets several daemons share one catalog.
//
// Every implementation runs the conformance suite in cas/catalogtest. Its MUST rules:
//   - Update runs fn in a read-write transaction: every write of fn commits together or
//     none does, and fn's reads see the transaction's own earlier writes. When Update
//     returns nil the writes survive a crash of this process (kill -9); surviving power
//     loss may need Sync, which covers every Update that returned before it was called.
//   - View and Update may run fn more than once (an engine retries a transaction that
//     lost a conflict, or, like the embedded one, restarts it to take a lock before it
//     begins); fn must keep no state across runs but what it recomputes, and must
//     return the errors of the transaction's methods (wrapped or not).
//   - View runs fn in a read-only transaction that sees only committed writes.
//   - A key never written, or deleted, is ErrKeyNotFound from Get, wrapped.
//   - Scan visits the keys with prefix from the first key greater than or equal to
//     from (from shorter than prefix means the start of the prefix), ascending by
//     bytes, until fn returns false or an error (returned as it is); key and value are
//     valid only while fn runs. Keys written by the transaction itself are visited.
//   - Lock takes a named lock (any byte string, present as a key or not) until the
//     transaction ends: exclusive locks exclude every other holder, shared ones only
//     exclusive holders, across every process that shares the catalog. A transaction
//     waits for a lock (until ctx ends). Reads after a Lock see everything committed
//     by transactions that held the lock before.
//   - Methods are safe for concurrent use, and errors are wrapped with %w.
type Catalog interface {
	View(ctx context.Context, fn func(tx CatalogTx) error) error
	Update(ctx context.Context, fn func(tx CatalogTx) error) error
	Sync(ctx context.Context) error
}

// CatalogTx is one transaction of a Catalog. It is used by one goroutine at a time
// and only while the View or Update that made it runs.
type CatalogTx interface {
	Get(key []byte) ([]byte, error)
	// Set stores value under key; value is only read during the call.
	Set(key, value []byte) error
	Delete(key []byte) error
	Scan(prefix, from []byte, fn func(key, value []byte) (bool, error)) error
	Lock(name []byte, exclusive bool) error
}

// ErrKeyNotFound says a Catalog holds no value under a key.
var ErrKeyNotFound = errors.New("key not found")

// ScanStart returns the first key a Scan of prefix from from may visit: from, but the
// start of the prefix when from is shorter than prefix (the rule above, whatever from's
// bytes) or sorts before it. Engines share it so that they agree.
func ScanStart(prefix, from []byte) []byte {
	if len(from) < len(prefix) || bytes.Compare(from, prefix) < 0 {
		return prefix
	}
	return from
}

// PrefixEnd returns the least key greater than every key with prefix, and false if
// there is none (prefix is empty or all 0xff bytes).
func PrefixEnd(prefix []byte) ([]byte, bool) {
	// Not bytes.TrimRight: it takes its cutset as UTF-8, and 0xff is none.
	n := len(prefix)
	for n > 0 && prefix[n-1] == 0xff {
		n--
	}
	if n == 0 {
		return nil, false
	}
	end := bytes.Clone(prefix[:n])
	end[n-1]++
	return end, true
}
