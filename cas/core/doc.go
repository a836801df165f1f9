// Package core holds what every part of the store agrees on and no storage engine
// owns: digests, snapshot records, views' slots, the store's errors, the clock, and
// the interfaces a storage engine implements (BlockStore). It imports no engine, so
// engines (Badger, S3) and their decorators depend on it and never on each other.
package core
