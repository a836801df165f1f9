package cas

import "encoding/binary"

// The key space of the one Badger DB. Prefixes are single bytes so a prefix scan of
// one kind never touches another. Block-map keys end in a big-endian index so a
// prefix iteration yields a snapshot's blocks in ascending index order.
const (
	prefixBlock    = 'b' // b + digest            → block bytes (UserMeta = codec)
	prefixMap      = 'm' // m + snapID + index    → digest of the block written there
	prefixSnapshot = 's' // s + snapID            → snapshot record (JSON)
	prefixToken    = 't' // t + owner/region/tok  → client-token record (JSON)
	prefixMeta     = 'k' // k + name              → store-wide settings (keys, versions)
	prefixActivity = 'a' // a + snapID            → last put, unix nanoseconds (shared catalogs only)
)

func blockKey(d Digest) []byte {
	k := make([]byte, 1+len(d))
	k[0] = prefixBlock
	copy(k[1:], d[:])
	return k
}

func mapPrefix(snapID string) []byte {
	k := make([]byte, 0, 2+len(snapID)+8)
	k = append(k, prefixMap)
	k = append(k, snapID...)
	return append(k, '/')
}

func mapKey(snapID string, index int64) []byte {
	return binary.BigEndian.AppendUint64(mapPrefix(snapID), uint64(index))
}

// indexFromMapKey returns the block index at the end of a block-map key.
func indexFromMapKey(k []byte) int64 {
	return int64(binary.BigEndian.Uint64(k[len(k)-8:]))
}

func snapshotKey(snapID string) []byte {
	return append([]byte{prefixSnapshot}, snapID...)
}

func tokenKey(owner, region, token string) []byte {
	k := []byte{prefixToken}
	k = append(k, owner...)
	k = append(k, '/')
	k = append(k, region...)
	k = append(k, '/')
	return append(k, token...)
}

func metaKey(name string) []byte {
	return append([]byte{prefixMeta}, name...)
}

func activityKey(snapID string) []byte {
	return append([]byte{prefixActivity}, snapID...)
}
