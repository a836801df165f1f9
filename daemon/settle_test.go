package main

import (
	"encoding/json"
	"net/http"
	"regexp"
	"testing"

	"github.com/ebsd/ebsd/cas"
)

var blockSettledLine = regexp.MustCompile(`msg="block settled"`)

// kill -9 while the daemon settles (--recompress) loses nothing: the child settles at
// 1 MiB/s, so a pass over the snapshot takes seconds, and is killed as soon as it logs
// its first settled block. Restarted, the snapshot reads back identical with some
// blocks settled; restarted with settling again, the next pass settles the rest, and
// the snapshot still reads back identical.
func TestKill9MidSettle(t *testing.T) {
	dir := t.TempDir()
	env := []string{"EBSD_GC_INTERVAL=0", "EBSD_COMPRESSION=none", "EBSD_VLOG_FILE_MB=4", "EBSD_LOG_LEVEL=debug",
		"EBSD_RECOMPRESS=better", "EBSD_RECOMPRESS_IDLE=50ms"}
	const n = 24
	blocks := map[int32][]byte{}
	for i := range int32(n) {
		blocks[i] = uniqueBlock(int(i)) // mostly one byte value: every block shrinks
	}
	child := startChild(t, dir, append(env, "EBSD_RECOMPRESS_MB_PER_SEC=1")...)
	settled := child.expect(blockSettledLine)
	id := writeSnapshot(t, child.client(), "", 1, blocks)
	child.await(t, settled, "the first settled block")
	child.kill9(t)

	stats := func(c *childDaemon) cas.Stats {
		t.Helper()
		ans := sendAdmin(signedAdminRequest(t, c.addr, "GET", "/ebsd/v1/stats"))
		var st cas.Stats
		if ans.err != nil || ans.status != http.StatusOK || json.Unmarshal(ans.body, &st) != nil {
			t.Fatalf("stats: %d %s %v", ans.status, ans.body, ans.err)
		}
		return st
	}
	child = startChild(t, dir, "EBSD_GC_INTERVAL=0", "EBSD_VLOG_FILE_MB=4") // no settling
	sameBlocks(t, readSnapshot(t, child.client(), id), blocks)
	st := stats(child)
	if st.UniqueBlocks != n || st.SettledBlocks < 1 || st.SettledBlocks >= n || st.Settled.Blocks != st.SettledBlocks {
		t.Fatalf("after kill -9 mid-settle: %d blocks, %d settled, totals %d; want %d, some but not all settled, totals equal",
			st.UniqueBlocks, st.SettledBlocks, st.Settled.Blocks, n)
	}
	t.Logf("killed after %d of %d blocks settled", st.SettledBlocks, n)
	child.terminate(t)

	child = startChild(t, dir, append(env, "EBSD_RECOMPRESS_MB_PER_SEC=0")...)
	passed := child.expect(regexp.MustCompile(`msg="settle pass"`))
	child.await(t, passed, "the settle pass after the restart")
	sameBlocks(t, readSnapshot(t, child.client(), id), blocks)
	if st := stats(child); st.SettledBlocks != n || st.Settled.Blocks != n || st.RecompressLevel != cas.RecompressBetter {
		t.Fatalf("after the next pass: %d settled, totals %d, level %q; want all %d", st.SettledBlocks, st.Settled.Blocks, st.RecompressLevel, n)
	}
	child.terminate(t)
}
