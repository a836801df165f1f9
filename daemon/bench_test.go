package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ebs/types"

	"github.com/ebsd/ebsd/cas"
	"github.com/ebsd/ebsd/cas/castest"
)

const benchClients = 16

// BenchmarkPutSnapshotBlock measures ingest through the Go SDK with 16 concurrent
// clients, for unique blocks of real file-system data, for one block sent over and over
// (dedup) and for zero blocks, per compression setting. Checksums are computed before
// the timer starts: the client is meant to be another machine. "of-sha256" is the
// ingest rate over this machine's single-core SHA-256 rate measured in the same run.
func BenchmarkPutSnapshotBlock(b *testing.B) {
	shaMBps := sha256MBps()
	b.Logf("raw SHA-256 on this machine: %.0f MB/s (one core)", shaMBps)
	corpus := castest.RealCorpus(b, 64<<20)
	for _, tc := range []struct {
		data string
		comp cas.Compression
	}{
		{"unique", cas.CompressZstd}, {"unique", cas.CompressS2}, {"unique", cas.CompressNone},
		{"duplicate", cas.CompressZstd}, {"zero", cas.CompressZstd},
	} {
		b.Run(tc.data+"/"+string(tc.comp), func(b *testing.B) {
			blocks, sums := benchBlocks(b.N, tc.data, corpus)
			td := newTestDaemon(b, func(c *config) { c.compression = tc.comp; c.logLevel = slog.LevelError })
			c := newEBSClient(td.url(), "us-east-1", 1)
			ctx := context.Background()
			id := aws.ToString(startSnapshot(b, c, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(65536)}).SnapshotId)
			work := make(chan int)
			var wg sync.WaitGroup
			b.SetBytes(cas.BlockSize)
			b.ResetTimer()
			for range benchClients {
				wg.Go(func() {
					for i := range work {
						_, err := c.PutSnapshotBlock(ctx, &ebs.PutSnapshotBlockInput{
							SnapshotId: aws.String(id), BlockIndex: aws.Int32(int32(i)), BlockData: bytes.NewReader(blocks[i]),
							DataLength: aws.Int32(cas.BlockSize), Checksum: aws.String(sums[i]),
							ChecksumAlgorithm: types.ChecksumAlgorithmChecksumAlgorithmSha256,
						})
						if err != nil {
							b.Error(err)
						}
					}
				})
			}
			for i := range b.N {
				work <- i
			}
			close(work)
			wg.Wait()
			b.StopTimer()
			mbps := float64(b.N) * cas.BlockSize / 1e6 / b.Elapsed().Seconds()
			b.ReportMetric(mbps/shaMBps, "of-sha256")
			if st, err := td.store().Stats(ctx); err == nil && st.StoredBytes > 0 {
				b.ReportMetric(float64(st.MappedBlocks-st.ZeroBlocks)*cas.BlockSize/float64(st.StoredBytes), "stored-ratio")
			}
		})
	}
}

// benchBlocks returns n blocks and their checksums. Unique blocks are consecutive slices
// of the corpus with a counter in their first bytes, so they compress like real data
// and never deduplicate.
func benchBlocks(n int, kind string, corpus []byte) ([][]byte, []string) {
	blocks := make([][]byte, n)
	sums := make([]string, n)
	switch kind {
	case "unique":
		for i := range blocks {
			off := (i * cas.BlockSize) % (len(corpus) - cas.BlockSize)
			blocks[i] = bytes.Clone(corpus[off : off+cas.BlockSize])
			binary.LittleEndian.PutUint64(blocks[i], uint64(i)+1)
		}
	case "duplicate":
		one := bytes.Clone(corpus[:cas.BlockSize])
		for i := range blocks {
			blocks[i] = one
		}
	case "zero":
		zero := make([]byte, cas.BlockSize)
		for i := range blocks {
			blocks[i] = zero
		}
	default:
		panic(fmt.Sprintf("unknown block kind %q", kind))
	}
	for i := range blocks {
		if i > 0 && &blocks[i][0] == &blocks[i-1][0] {
			sums[i] = sums[i-1]
			continue
		}
		s := sha256.Sum256(blocks[i])
		sums[i] = base64.StdEncoding.EncodeToString(s[:])
	}
	return blocks, sums
}

// sha256MBps measures this machine's single-core SHA-256 rate on block-sized input.
func sha256MBps() float64 {
	data := make([]byte, cas.BlockSize)
	castest.CompressibleBlock(data, 7)
	const n = 256
	start := time.Now()
	for range n {
		sha256.Sum256(data)
	}
	return n * cas.BlockSize / 1e6 / time.Since(start).Seconds()
}
