package statuspage

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ebsd/ebsd/cas"
)

// *cas.Store is what the daemon hands the page.
var _ Source = (*cas.Store)(nil)

// fakeSource serves fixed metadata; Usage counts its calls and may block or fail.
type fakeSource struct {
	snaps       []cas.Snapshot
	runs        []cas.GCRun
	scrubs      []cas.ScrubRun // newest first, as the store keeps them
	scrubTotals cas.ScrubTotals

	mu       sync.Mutex
	usage    cas.Usage
	usageErr error
	calls    int
	// during, when set, runs inside every Usage call (to block, or to advance a clock).
	during func(ctx context.Context)
}

func (f *fakeSource) AllSnapshots() []cas.Snapshot { return slices.Clone(f.snaps) }
func (f *fakeSource) GCHistory() []cas.GCRun       { return slices.Clone(f.runs) }
func (f *fakeSource) ScrubHistory() []cas.ScrubRun { return slices.Clone(f.scrubs) }
func (f *fakeSource) ScrubTotals() cas.ScrubTotals { return f.scrubTotals }

func (f *fakeSource) Usage(ctx context.Context) (cas.Usage, error) {
	f.mu.Lock()
	f.calls++
	during := f.during
	f.mu.Unlock()
	if during != nil {
		during(ctx)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return cas.Usage{}, err
	}
	if f.usageErr != nil {
		return cas.Usage{}, f.usageErr // as the store does
	}
	return f.usage, nil
}

func (f *fakeSource) usageCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

const (
	acctA = "111122223333"
	acctB = "444455556666"
	mib   = int64(1) << 20
	gib   = int64(1) << 30

	idBase         = "snap-0a0000000000000b1"
	idDaily1       = "snap-0a0000000000000d1"
	idDaily2       = "snap-0a0000000000000d2"
	idDaily3       = "snap-0a0000000000000d3"
	idClone        = "snap-0a0000000000000c1"
	idOrphan       = "snap-0a00000000000000f"
	idGone         = "snap-0a0000000000000ee" // deleted: the orphan's parent
	idDB           = "snap-0b0000000000000a1"
	idDBNext       = "snap-0b0000000000000a2"
	xssDesc        = `restore test <script>alert("x")</script>`
	failedErr      = "cas: mark: context canceled"
	scrubFailedErr = "cas: scrub blocks: context canceled"
	// healHint is what the page tells the operator to do about corrupt blocks.
	healHint = "ebsctl scrub for the snapshots and indexes; a put of the same bytes heals a block"
)

// fixtureNow is the fake "now" of the page.
var fixtureNow = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

// newFixture is two accounts with a small lineage tree each, a snapshot whose parent
// is deleted, a pending one the usage scan has not seen yet, three collections, and
// three scrubs (clean, cancelled, one that found two corrupt blocks, still unhealed).
//
//	111122223333: base ─┬─ daily1 ── daily2 ── daily3 (pending)
//	                    └─ clone
//	              orphan (parent deleted)
//	444455556666: db ── dbnext (error)
func newFixture() *fakeSource {
	at := func(ago time.Duration) time.Time { return fixtureNow.Add(-ago) }
	done := func(id, owner, parent string, gibs int64, started time.Duration, desc string) cas.Snapshot {
		return cas.Snapshot{
			ID: id, OwnerID: owner, Region: "us-east-1", VolumeSize: gibs, ParentID: parent, Description: desc,
			Status: cas.StatusCompleted, StartTime: at(started), CompleteTime: at(started - 3*time.Minute),
		}
	}
	day := 24 * time.Hour
	snaps := []cas.Snapshot{
		done(idClone, acctA, idBase, 8, 7*day, xssDesc),
		done(idBase, acctA, "", 8, 10*day, "web-01 root volume"),
		done(idDaily1, acctA, idBase, 8, 9*day, ""),
		done(idDaily2, acctA, idDaily1, 8, 8*day, ""),
		{ID: idDaily3, OwnerID: acctA, VolumeSize: 8, ParentID: idDaily2, Status: cas.StatusPending, StartTime: at(5 * time.Minute)},
		done(idOrphan, acctA, idGone, 8, 2*day, ""),
		done(idDB, acctB, "", 100, 3*day, "postgres data"),
		{ID: idDBNext, OwnerID: acctB, VolumeSize: 100, ParentID: idDB, Status: cas.StatusError,
			StatusMessage: "no put or complete for 60 minutes (Timeout)", StartTime: at(day)},
	}
	per := func(written, unique, stored float64) cas.SnapshotUsage {
		return cas.SnapshotUsage{
			WrittenBytes: int64(written * float64(mib)), UniqueBytes: int64(unique * float64(mib)),
			StoredBytes: int64(stored * float64(mib)),
		}
	}
	usage := cas.Usage{
		Computed: at(30 * time.Second), Duration: 1200 * time.Millisecond,
		Snapshots: map[string]cas.SnapshotUsage{ // no idDaily3: it started after the scan
			idBase: per(180, 4, 1.3), idDaily1: per(12, 3, 1.1), idDaily2: per(9, 5, 2),
			idClone: per(6, 6, 2.5), idOrphan: per(160, 150, 52), idDB: per(140, 120, 40), idDBNext: per(0, 0, 0),
		},
		LogicalBytes: 248 * gib, WrittenBytes: 520 * mib, UniqueBlocks: 720, UniqueBytes: 360 * mib,
		StoredBytes: 121 * mib, OtherBlocks: 12, OtherStoredBytes: 6 * mib, DiskBytes: 140 * mib, Passes: 1,
	}
	runs := []cas.GCRun{ // oldest first: the page orders them
		{Start: at(day), Duration: 400 * time.Millisecond, Err: failedErr,
			Report: cas.GCReport{DiskBytesBefore: 640 * mib, DiskBytesAfter: 640 * mib}},
		{Start: at(2 * time.Hour), Duration: 1800 * time.Millisecond,
			Report: cas.GCReport{DryRun: true, SnapshotMapsReleased: 2, BlocksReclaimed: 1200, BytesReclaimed: 310 * mib,
				BlocksKept: 720, DiskBytesBefore: 620 * mib, DiskBytesAfter: 620 * mib}},
		{Start: at(50 * time.Minute), Duration: 42 * time.Second,
			Report: cas.GCReport{SnapshotMapsReleased: 2, RecordsDropped: 1, BlocksReclaimed: 1200, BytesReclaimed: 310 * mib,
				BlocksKept: 720, ValueLogFilesRewritten: 3, DiskBytesBefore: 620 * mib, DiskBytesAfter: 300 * mib}},
	}
	scrubs := []cas.ScrubRun{ // newest first
		{Start: at(40 * time.Minute), Duration: 115 * time.Second, // ebsctl scrub: no rate bound
			Report: cas.ScrubReport{BlocksChecked: 720, BytesChecked: 121 * mib, RecordsChecked: 1480,
				CorruptBlockCount: 2, CorruptRecordCount: 1, MarksCleared: 1}},
		{Start: at(30 * time.Hour), Duration: 12 * time.Second, Err: scrubFailedErr,
			Report: cas.ScrubReport{BlocksChecked: 200, BytesChecked: 40 * mib, BytesPerSec: 64 * mib}},
		{Start: at(2 * day), Duration: 125 * time.Second,
			Report: cas.ScrubReport{BlocksChecked: 715, BytesChecked: 120 * mib, RecordsChecked: 1470, BytesPerSec: 64 * mib}},
	}
	totals := cas.ScrubTotals{Runs: 2, Failures: 1, CorruptBlocksFound: 2, CorruptRecordsFound: 1,
		LastSuccess: scrubs[0].Start, Last: scrubs[0], CorruptBlocksKnown: 2, BlocksHealed: 1}
	return &fakeSource{snaps: snaps, runs: runs, scrubs: scrubs, scrubTotals: totals, usage: usage}
}

// checkStatusDOM asserts what a person must see on the fixture's page, on any DOM of
// it: the server's HTML or what a browser made of it.
func checkStatusDOM(t *testing.T, doc *domNode) {
	t.Helper()

	// Nothing active and nothing fetched: no scripts, forms, frames or resources.
	for _, bad := range []string{"script", "form", "input", "button", "textarea", "select", "iframe", "object", "embed", "img", "link"} {
		if n := doc.all(tag(bad)); len(n) > 0 {
			t.Errorf("the page has %d <%s> elements", len(n), bad)
		}
	}
	for _, el := range doc.all(func(*domNode) bool { return true }) {
		for k, v := range el.attrs {
			if k == "src" || strings.HasPrefix(k, "on") || (k == "href" && !strings.HasPrefix(v, "#")) {
				t.Errorf("<%s %s=%q>: the page must load and run nothing", el.tag, k, v)
			}
		}
	}

	// The table: every live snapshot of both accounts, by account, newest first.
	table := doc.one(t, "table#snapshot-table", attr("table", "id", "snapshot-table"))
	var order []string
	rows := map[string]string{}
	for _, tr := range table.all(tag("tr")) {
		if id := tr.attrs["data-snapshot"]; id != "" {
			order = append(order, id)
			rows[id] = tr.textContent()
		}
	}
	wantOrder := []string{idDaily3, idOrphan, idClone, idDaily2, idDaily1, idBase, idDBNext, idDB}
	if !slices.Equal(order, wantOrder) {
		t.Errorf("table rows %v, want %v", order, wantOrder)
	}
	for id, want := range map[string][]string{
		idBase:   {acctA, "completed", "8 GiB", "web-01 root volume", "2026-11-10 12:00", "10 days ago · completed in 3 min", "180.0 MiB", "4.0 MiB", "1.3 MiB"},
		idClone:  {xssDesc, idBase, "6.0 MiB", "2.5 MiB"},
		idDaily3: {"pending", idDaily2, "2026-11-20 11:55 5 min ago — — —"}, // started after the scan: no sizes yet
		idOrphan: {idGone, "deleted", "160.0 MiB", "150.0 MiB", "52.0 MiB"},
		idDB:     {acctB, "100 GiB", "postgres data", "140.0 MiB", "120.0 MiB", "40.0 MiB"},
		idDBNext: {"error", "no put or complete for 60 minutes (Timeout)", "0 B"},
	} {
		for _, w := range want {
			if !strings.Contains(rows[id], w) {
				t.Errorf("row %s lacks %q: %q", id, w, rows[id])
			}
		}
	}

	// The lineage: nested where it branches, an only child in its parent's column.
	treeA := doc.one(t, "tree of "+acctA, attr("ul", "data-account", acctA))
	if got := childItems(treeA); !slices.Equal(got, []string{idBase, idOrphan}) {
		t.Errorf("%s's roots %v, want base then orphan", acctA, got)
	}
	base := treeA.one(t, "tree item of base", attr("li", "data-snapshot", idBase))
	baseKids := base.all(tag("ul"))
	if len(baseKids) == 0 || !slices.Equal(childItems(baseKids[0]), []string{idDaily1, idClone}) {
		t.Errorf("base's branches %v, want daily1 then clone nested under it", childItems(baseKids[0]))
	}
	daily1 := treeA.one(t, "tree item of daily1", attr("li", "data-snapshot", idDaily1))
	if daily1.closest("li") != base {
		t.Errorf("daily1 is not nested in base's item")
	}
	var chain []string
	for _, box := range daily1.all(func(n *domNode) bool { return n.tag == "div" && hasClass(n, "node") }) {
		chain = append(chain, box.attrs["data-snapshot"]+"<"+box.attrs["data-parent"])
	}
	if want := []string{idDaily1 + "<" + idBase, idDaily2 + "<" + idDaily1, idDaily3 + "<" + idDaily2}; !slices.Equal(chain, want) {
		t.Errorf("daily1's item holds %v, want the chain %v", chain, want)
	}
	orphan := treeA.one(t, "tree item of orphan", attr("li", "data-snapshot", idOrphan))
	if !strings.Contains(orphan.textContent(), "from deleted "+idGone) {
		t.Errorf("orphan's node does not name its deleted parent: %q", orphan.textContent())
	}
	treeB := doc.one(t, "tree of "+acctB, attr("ul", "data-account", acctB))
	if got := childItems(treeB); !slices.Equal(got, []string{idDB}) || !strings.Contains(treeB.textContent(), idDBNext) {
		t.Errorf("%s's tree: roots %v, text %q", acctB, got, treeB.textContent())
	}

	// The efficiency chart: four bars, each no longer than the stage before; written is
	// so small next to logical that the last three are drawn again, enlarged.
	svg := doc.one(t, "svg#efficiency-chart", attr("svg", "id", "efficiency-chart"))
	for _, panel := range []struct {
		class string
		want  [][2]string
	}{
		{"bar", [][2]string{{"logical", "248.0 GiB"}, {"written", "520.0 MiB"}, {"unique", "360.0 MiB"}, {"stored", "121.0 MiB"}}},
		{"zoom", [][2]string{{"written", "520.0 MiB"}, {"unique", "360.0 MiB"}, {"stored", "121.0 MiB"}}},
	} {
		var stages []string
		var widths []int
		for _, g := range svg.all(func(n *domNode) bool { return n.tag == "g" && hasClass(n, panel.class) }) {
			stages = append(stages, g.attrs["data-stage"]+" "+g.textContent())
			for _, r := range g.all(tag("rect")) {
				if !hasClass(r, "track") {
					w, _ := strconv.Atoi(r.attrs["width"])
					widths = append(widths, w)
				}
			}
		}
		if len(stages) != len(panel.want) || len(widths) != len(panel.want) || widths[0] != chartBarMaxW {
			t.Fatalf("%s panel: stages %q, bar widths %v", panel.class, stages, widths)
		}
		for i, want := range panel.want {
			if !strings.HasPrefix(stages[i], want[0]+" ") || !strings.Contains(stages[i], want[1]) {
				t.Errorf("%s panel: stage %d is %q, want %s of %s", panel.class, i, stages[i], want[0], want[1])
			}
			if widths[i] <= 0 || (i > 0 && widths[i] > widths[i-1]) {
				t.Errorf("%s panel: bar widths %v do not shrink stage by stage", panel.class, widths)
			}
		}
	}
	savings := doc.one(t, "dl#savings", attr("dl", "id", "savings")).textContent()
	for _, want := range []string{"Skipping zeros, incremental 488×", "Deduplication 1.4×", "Compression 3.0×", "Overall 2099×"} {
		if !strings.Contains(savings, want) {
			t.Errorf("savings %q lack %q", savings, want)
		}
	}
	if s := doc.one(t, "#efficiency-summary", attr("p", "id", "efficiency-summary")).textContent(); !strings.Contains(s, "2099× less than logical") {
		t.Errorf("efficiency summary %q", s)
	}

	// Garbage collection, newest first, a failure shown as one.
	gc := doc.one(t, "table#gc-table", attr("table", "id", "gc-table"))
	var runs []string
	for _, tr := range gc.all(func(n *domNode) bool { return n.tag == "tr" && hasClass(n, "gc-run") }) {
		runs = append(runs, tr.textContent())
	}
	if len(runs) != 3 {
		t.Fatalf("%d GC rows, want 3: %q", len(runs), runs)
	}
	for i, want := range [][]string{
		{"2026-11-20 11:10", "42.0 s", "collection", "1200", "310.0 MiB", "620.0 MiB → 300.0 MiB", "ok"},
		{"2026-11-20 10:00", "dry run", "310.0 MiB would be", "ok"},
		{"2026-11-19 12:00", "400 ms", "failed", failedErr},
	} {
		for _, w := range want {
			if !strings.Contains(runs[i], w) {
				t.Errorf("GC row %d lacks %q: %q", i, w, runs[i])
			}
		}
	}

	// Blocks known corrupt: a red banner above everything with what to do, a red card,
	// and the scrub section says it again.
	alert := doc.one(t, "#corrupt-alert", attr("p", "id", "corrupt-alert"))
	if s := alert.textContent(); !hasClass(alert, "alert") || !strings.HasPrefix(s, "2 blocks known corrupt. Run "+healHint) {
		t.Errorf("corrupt-block banner (class %q): %q", alert.attrs["class"], s)
	}
	if main := doc.one(t, "main", tag("main")); len(main.all(tag("p"))) == 0 || main.all(tag("p"))[0] != alert {
		t.Errorf("the corrupt-block banner is not the first thing in <main>")
	}
	card := doc.one(t, "#card-corrupt", attr("div", "id", "card-corrupt"))
	if s := card.textContent(); !hasClass(card, "bad") || s != "Corrupt blocks 2 known now · last scrub 40 min ago" {
		t.Errorf("corrupt-blocks card (class %q): %q", card.attrs["class"], s)
	}
	known := doc.one(t, "#corrupt-known", attr("p", "id", "corrupt-known"))
	if s := known.textContent(); !hasClass(known, "bad") || !strings.HasPrefix(s, "2 blocks known corrupt") ||
		!strings.Contains(s, "run "+healHint) || !strings.Contains(s, "1 healed by puts since the daemon started") {
		t.Errorf("scrub section's corrupt-block notice (class %q): %q", known.attrs["class"], s)
	}

	// The scrubs, newest first: what each checked and found, a failure shown as one.
	if n := doc.all(attr("p", "id", "scrub-none")); len(n) != 0 {
		t.Errorf("the page says no scrub ran, yet three did")
	}
	scrub := doc.one(t, "table#scrub-table", attr("table", "id", "scrub-table"))
	var scrubs [][]string
	var corruptCells []string
	for _, tr := range scrub.all(func(n *domNode) bool { return n.tag == "tr" && hasClass(n, "scrub-run") }) {
		var cells []string
		for _, td := range tr.all(tag("td")) {
			cells = append(cells, td.textContent())
			if hasClass(td, "bad") {
				corruptCells = append(corruptCells, td.textContent())
			}
		}
		scrubs = append(scrubs, cells)
	}
	wantScrubs := [][]string{
		{"2026-11-20 11:20 40 min ago", "1 min 55 s no read-rate bound", "720", "121.0 MiB", "1480", "2", "1", "1", "corruption found"},
		{"2026-11-19 06:00 30 h ago", "12.0 s at most 64.0 MiB/s", "200", "40.0 MiB", "0", "0", "0", "0", "failed " + scrubFailedErr},
		{"2026-11-18 12:00 2 days ago", "2 min 5 s at most 64.0 MiB/s", "715", "120.0 MiB", "1470", "0", "0", "0", "ok"},
	}
	if len(scrubs) != len(wantScrubs) {
		t.Fatalf("%d scrub rows, want %d: %q", len(scrubs), len(wantScrubs), scrubs)
	}
	for i, want := range wantScrubs {
		if !slices.Equal(scrubs[i], want) {
			t.Errorf("scrub row %d:\n got %q\nwant %q", i, scrubs[i], want)
		}
	}
	if !slices.Equal(corruptCells, []string{"2", "1"}) {
		t.Errorf("cells marked corrupt %q, want the newest scrub's 2 blocks and 1 record", corruptCells)
	}
}

// childItems lists the data-snapshot of the <li> children of a <ul>.
func childItems(ul *domNode) []string {
	var out []string
	for _, c := range ul.children {
		if c.tag == "li" {
			out = append(out, c.attrs["data-snapshot"])
		}
	}
	return out
}

var errScan = errors.New("cas: usage: badger: disk on fire")
