// Package castest makes realistic block data for tests and benchmarks.
package castest

import (
	"encoding/binary"
	"math/rand/v2"
)

// CompressibleBlock fills dst with text-like data unique to seed:
// words, numbers and punctuation that zstd shrinks about as much as it shrinks the
// files of a typical root file system. Tests and benchmarks use it as realistic input.
func CompressibleBlock(dst []byte, seed uint64) {
	words := [...]string{"the", "snapshot", "block", "volume", "data", "of", "and", "a", "to", "in",
		"is", "ebs", "file", "system", "kernel", "user", "root", "etc", "usr", "lib", "config",
		"error", "info", "debug", "time", "value", "key", "name", "id", "size"}
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	binary.LittleEndian.PutUint64(dst, seed) // unique even where the words repeat
	i := 8
	for i < len(dst) {
		var w string
		switch n := rng.IntN(40); {
		case n < len(words):
			w = words[n]
		case n < 36:
			w = string(rune('0' + rng.IntN(10)))
		default:
			w = "\n"
		}
		i += copy(dst[i:], w)
		if i < len(dst) {
			dst[i] = ' '
			i++
		}
	}
}
