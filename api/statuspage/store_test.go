package statuspage

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/ebsd/ebsd/cas"
	"github.com/ebsd/ebsd/cas/castest"
)

// The page over a real store: what the store records (snapshots, their sizes, a
// collection, a scrub) is what the page shows.
func TestPageOverRealStore(t *testing.T) {
	ctx := context.Background()
	store, err := cas.Open(cas.Options{Dir: t.TempDir(), ExpireInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := store.Close(); err != nil {
			t.Error(err)
		}
	}()
	block := func(seed uint64) []byte {
		b := make([]byte, cas.BlockSize)
		castest.CompressibleBlock(b, seed)
		return b
	}
	snap := func(owner, parent string, seeds ...uint64) string {
		s, err := store.StartSnapshot(ctx, cas.StartParams{OwnerID: owner, VolumeSize: 1, ParentID: parent, TimeoutMinutes: 60})
		if err != nil {
			t.Fatal(err)
		}
		for i, seed := range seeds {
			b := block(seed)
			if err := store.PutBlock(ctx, owner, s.ID, int64(i), b, cas.Sum(b)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := store.CompleteSnapshot(ctx, owner, s.ID, int64(len(seeds)), nil); err != nil {
			t.Fatal(err)
		}
		return s.ID
	}
	base := snap(acctA, "", 1, 2, 3, 4)
	child := snap(acctA, base, 5) // overwrites block 0
	other := snap(acctB, "", 1, 6)
	if _, err := store.GC(ctx, true); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Scrub(ctx, cas.ScrubOptions{}); err != nil {
		t.Fatal(err)
	}

	rec := get(t, New(store, Options{}), http.MethodGet, "/")
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d", rec.Code)
	}
	doc := parseDOM(t, rec.Body.String())
	rows := map[string]string{}
	for _, tr := range doc.all(func(n *domNode) bool { return n.tag == "tr" && n.attrs["data-snapshot"] != "" }) {
		rows[tr.attrs["data-snapshot"]] = tr.textContent()
	}
	// Views: base {1 2 3 4}, child {5 2 3 4}, other {1 6}. Written, then unique:
	for id, want := range map[string]string{
		base:  "2.0 MiB 0 B 0 B",     // 2-4 are in the child's view, 1 in the other account's
		child: "512.0 KiB 512.0 KiB", // 5
		other: "1.0 MiB 512.0 KiB",   // 6
	} {
		if !strings.Contains(rows[id], want) {
			t.Errorf("row %s: %q lacks %q", id, rows[id], want)
		}
	}
	if len(rows) != 3 {
		t.Errorf("%d rows, want 3", len(rows))
	}
	if got := doc.one(t, "tree of "+acctA, attr("ul", "data-account", acctA)); len(got.all(attr("div", "data-snapshot", child))) != 1 {
		t.Errorf("the child is not in %s's tree", acctA)
	}
	chart := doc.one(t, "svg#efficiency-chart", attr("svg", "id", "efficiency-chart")).textContent()
	if !strings.Contains(chart, "3.0 GiB") || !strings.Contains(chart, "3.5 MiB") || !strings.Contains(chart, "3.0 MiB") {
		t.Errorf("chart %q: want logical 3 GiB, written 3.5 MiB, unique 3.0 MiB", chart)
	}
	if gc := doc.all(func(n *domNode) bool { return n.tag == "tr" && hasClass(n, "gc-run") }); len(gc) != 1 || !strings.Contains(gc[0].textContent(), "dry run") {
		t.Errorf("GC history rows: %d", len(gc))
	}
	// The scrub read the 6 distinct blocks and found nothing.
	runs := doc.all(func(n *domNode) bool { return n.tag == "tr" && hasClass(n, "scrub-run") })
	if len(runs) != 1 {
		t.Fatalf("%d scrub rows, want 1", len(runs))
	}
	var cells []string
	for _, td := range runs[0].all(tag("td")) {
		cells = append(cells, td.textContent())
	}
	if len(cells) != 9 || !strings.HasSuffix(cells[1], "no read-rate bound") || cells[2] != "6" || cells[5] != "0" || cells[6] != "0" || cells[8] != "ok" {
		t.Errorf("scrub row %q, want 6 blocks checked, nothing corrupt, ok", cells)
	}
	if s := doc.one(t, "#corrupt-known", attr("p", "id", "corrupt-known")).textContent(); s != "No block is known to be corrupt." {
		t.Errorf("corrupt-block notice: %q", s)
	}
	if s := doc.one(t, "#card-corrupt", attr("div", "id", "card-corrupt")).textContent(); s != "Corrupt blocks 0 known now · last scrub just now" {
		t.Errorf("corrupt-blocks card: %q", s)
	}
}
