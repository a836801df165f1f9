package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/ebsd/ebsd/cas"
	"github.com/ebsd/ebsd/cas/castest"
	"github.com/ebsd/ebsd/fusefs"
)

// BenchmarkFUSERead reads whole snapshots through the FUSE export with dd bs=1M in a
// child process: a realistic ext4 image (mostly zeros) and an image whose every block
// holds compressible data, cold (block cache and page cache dropped) and warm, under
// the chosen mount options and with each option changed in turn. "of-pagecache-dd" is
// the rate over dd reading the raw image file from the page cache in the same run.
func BenchmarkFUSERead(b *testing.B) {
	td := newFUSEDaemon(b, "mkfs.ext4", "dd")
	c := td.client()
	work := b.TempDir()
	images := map[string]string{"ext4": filepath.Join(work, "ext4.img"), "alldata": filepath.Join(work, "alldata.img")}
	makeTree(b, filepath.Join(work, "src"), 1)
	makeExt4(b, filepath.Join(work, "src"), images["ext4"])
	makeAllData(b, images["alldata"])
	ids := map[string]string{}
	ceiling := map[string]float64{}
	for name, img := range images {
		ids[name] = uploadImage(b, c, img, "", "")
		ddMBps(b, img) // into the page cache
		ceiling[name] = ddMBps(b, img)
		b.Logf("dd from page cache, %s image: %.0f MB/s", name, ceiling[name])
	}
	variants := []struct {
		name   string
		tuning fusefs.Options
		ra     int
	}{
		{"chosen", fusefs.Options{}, 4096},
		{"kernel-readahead-128KiB", fusefs.Options{}, 0},
		{"max-request-128KiB", fusefs.Options{MaxRequest: 128 << 10}, 4096},
		{"max-background-12", fusefs.Options{MaxBackground: 12}, 4096},
		{"no-keep-cache", fusefs.Options{NoKeepCache: true}, 4096},
	}
	for _, v := range variants {
		td.cfg.fuseTuning, td.cfg.readAheadKB = v.tuning, v.ra
		td.restart()
		for _, name := range []string{"alldata", "ext4"} {
			for _, warm := range []bool{false, true} {
				mode := map[bool]string{false: "cold", true: "warm"}[warm]
				b.Run(fmt.Sprintf("%s/%s/%s", v.name, name, mode), func(b *testing.B) {
					path := filepath.Join(td.cfg.mount, ids[name])
					if warm {
						ddMBps(b, path)
					}
					b.SetBytes(1 << 30)
					var total float64
					for b.Loop() {
						if !warm {
							b.StopTimer()
							td.d.cache.Drop()
							dropPageCache(b)
							b.StartTimer()
						}
						total += ddMBps(b, path)
					}
					b.ReportMetric(total/float64(b.N)/ceiling[name], "of-pagecache-dd")
				})
			}
		}
	}
}

// makeAllData writes a 1 GiB image whose every block is real file-system data with a
// unique first word: compressible, non-zero, never deduplicated.
func makeAllData(b testing.TB, path string) {
	corpus := castest.RealCorpus(b, 64<<20)
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	blk := make([]byte, cas.BlockSize)
	for i := range (1 << 30) / cas.BlockSize {
		off := (i * cas.BlockSize) % (len(corpus) - cas.BlockSize)
		copy(blk, corpus[off:off+cas.BlockSize])
		binary.LittleEndian.PutUint64(blk, uint64(i)+1)
		if _, err := f.Write(blk); err != nil {
			b.Fatal(err)
		}
	}
}

// ddMBps reads a file with dd bs=1M in a child process and returns MB/s.
func ddMBps(b testing.TB, path string) float64 {
	b.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	out, err := exec.Command("dd", "if="+path, "of=/dev/null", "bs=1M", "status=none").CombinedOutput()
	if err != nil {
		b.Fatalf("dd %s: %v %s", path, err, out)
	}
	return float64(fi.Size()) / 1e6 / time.Since(start).Seconds()
}

func dropPageCache(b testing.TB) {
	b.Helper()
	exec.Command("sync").Run()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200); err != nil {
		b.Fatalf("dropping the page cache needs root: %v", err)
	}
}
