package statuspage

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ebsd/ebsd/cas"
)

// page is everything the template shows, formatted: the template only lays it out.
type page struct {
	Generated    string
	GeneratedISO string
	RefreshSecs  int

	Snapshots int
	Accounts  int
	ByStatus  []statusCount

	// Sizes are from the usage scan; SizesNote says how old they are, SizesError why
	// they are missing or stale.
	HaveSizes  bool
	SizesNote  string
	SizesError string
	Chart      chart
	Stored     size
	Disk       string
	Other      string
	OtherBytes int64

	Rows     []row
	Lineages []accountLineage

	GC      []gcRow
	LastGC  string
	GCTotal string

	// Scrub is the recent scrubs, newest first. CorruptKnown counts the blocks known to
	// be corrupt now (found by reads or scrubs, not healed), whether or not a scrub ran.
	Scrub        []scrubRow
	LastScrub    string
	LastScrubOK  bool // the most recent scrub finished and found nothing corrupt
	CorruptKnown int64
	Healed       int64
}

type statusCount struct {
	Status string
	N      int
}

// size is a byte count with its human form and the exact number for a tooltip.
type size struct {
	Human string
	Exact string
}

func sizeOf(n int64) size {
	return size{Human: humanBytes(n), Exact: strconv.FormatInt(n, 10) + " bytes"}
}

// row is one snapshot of the table and one node of the lineage tree.
type row struct {
	ID, Account, Status, Message, Description string
	Volume                                    string
	Parent                                    string
	ParentMissing                             bool // the parent is deleted: not in the listing
	Started, StartedISO, StartedAgo           string
	Took                                      string // from start to completion
	HaveSizes                                 bool
	Written, Unique, Stored                   size
}

// accountLineage is one account's snapshots: its rows of the table (newest first) and
// its lineage trees.
type accountLineage struct {
	Account string
	Count   int
	Rows    []*row
	Roots   []*treeNode
}

// treeNode is a snapshot in its lineage. A chain of only children is laid out as a
// flat run of siblings (Chain) rather than nested one level deeper each: daily
// incrementals make chains hundreds long, and nesting only where the lineage branches
// keeps the tree readable (and under the browsers' nesting limits).
type treeNode struct {
	Row      *row
	Chain    []*row      // descendants that are each the only child of the one before
	Children []*treeNode // where the lineage branches: children of the chain's last
}

type gcRow struct {
	Started, StartedISO, StartedAgo string
	Took                            string
	Kind                            string
	DryRun                          bool
	MapsReleased, RecordsDropped    int
	BlocksReclaimed                 int64
	Reclaimed                       size
	DiskBefore, DiskAfter           size
	VlogRewritten                   int
	Err                             string
}

type scrubRow struct {
	Started, StartedISO, StartedAgo string
	Took                            string
	Rate                            string // the read-rate bound it ran under
	BlocksChecked, RecordsChecked   int64
	Checked                         size
	CorruptBlocks, CorruptRecords   int
	MarksCleared                    int
	Err                             string
}

// chart is the efficiency funnel as horizontal SVG bars, laid out here so the page
// needs no script. Bars are linear in bytes. Written data is often a few per cent of
// the logical size or less (zero blocks are never sent), which leaves the last three
// bars a sliver; then a second panel draws them again on the scale of written.
type chart struct {
	Width, Height int
	LabelX, BarX  int // right edge of the labels, left edge of the bars
	BarMaxW, BarH int
	Bars          []bar
	Zoom          *zoomPanel
	Summary       string
	Savings       []saving
}

// saving is what one mechanism of the store saves, as a factor.
type saving struct {
	Name, Factor, How string
}

type zoomPanel struct {
	TitleY int
	Title  string
	Bars   []bar
}

type bar struct {
	Label, Caption string
	Value          size
	Class          string
	Y, W           int    // top of the bar and its width in px
	TextY, ValueX  int    // baseline of the label and value, left of the value
	CapY           int    // baseline of the caption under the bar
	Step           string // how much smaller than the stage before
}

const (
	chartWidth   = 760
	chartLabelW  = 150
	chartBarMaxW = 440
	chartRowH    = 52
	chartBarH    = 26
	// zoomBelow is the share of the logical size under which written data gets the
	// enlarged panel: below a tenth, the three bars are too short to compare.
	zoomBelow = 10
)

type stage struct {
	label, caption string
	n              int64
}

func newChart(u cas.Usage) chart {
	stages := []stage{
		{"logical", "volume sizes of all snapshots", u.LogicalBytes},
		{"written", "non-zero blocks the snapshots wrote", u.WrittenBytes},
		{"unique", "after deduplication", u.UniqueBytes},
		{"stored", "after compression", u.StoredBytes},
	}
	c := chart{
		Width: chartWidth, LabelX: chartLabelW - 10, BarX: chartLabelW, BarMaxW: chartBarMaxW, BarH: chartBarH,
	}
	c.Bars = layoutBars(stages, 4)
	c.Height = 4 + len(stages)*chartRowH
	if u.WrittenBytes > 0 && u.WrittenBytes*zoomBelow < u.LogicalBytes {
		z := &zoomPanel{
			TitleY: c.Height + 18,
			Title:  "The same, enlarged " + ratio(u.LogicalBytes, u.WrittenBytes) + ": written, unique and stored on the scale of written",
		}
		z.Bars = layoutBars(stages[1:], z.TitleY+14)
		z.Bars[0].Caption = "full scale of this panel"
		for i := range z.Bars {
			z.Bars[i].Step = "" // the panel above says it
		}
		c.Zoom = z
		c.Height = z.TitleY + 14 + (len(stages)-1)*chartRowH
	}
	if r := ratio(u.LogicalBytes, u.StoredBytes); r != "" {
		c.Summary = "stored is " + r + " less than logical"
	}
	for _, s := range []struct {
		name, how string
		a, b      int64
	}{
		{"Skipping zeros, incremental", "blocks never written or all zeros take nothing, and a child snapshot stores only what it changed", u.LogicalBytes, u.WrittenBytes},
		{"Deduplication", "a block written many times, by any snapshot of any account, is stored once", u.WrittenBytes, u.UniqueBytes},
		{"Compression", "each block is compressed on its own", u.UniqueBytes, u.StoredBytes},
		{"Overall", "logical size over stored size", u.LogicalBytes, u.StoredBytes},
	} {
		if r := ratio(s.a, s.b); r != "" {
			c.Savings = append(c.Savings, saving{s.name, r, s.how})
		}
	}
	return c
}

// layoutBars draws stages from y0 down, the first stage as long as the longest bar may
// be and the others in proportion.
func layoutBars(stages []stage, y0 int) []bar {
	top := int64(1)
	for _, s := range stages {
		top = max(top, s.n)
	}
	var out []bar
	for i, s := range stages {
		w := int(float64(chartBarMaxW) * float64(s.n) / float64(top))
		if s.n > 0 && w < 2 {
			w = 2 // visible however small
		}
		b := bar{Label: s.label, Caption: s.caption, Value: sizeOf(s.n), Class: s.label, Y: y0 + i*chartRowH, W: w}
		b.TextY = b.Y + chartBarH/2 + 5
		b.ValueX = chartLabelW + w + 8
		b.CapY = b.Y + chartBarH + 14
		if i > 0 {
			if r := ratio(stages[i-1].n, s.n); r != "" {
				b.Step = "÷" + strings.TrimSuffix(r, "×") + " vs " + stages[i-1].label
			}
		}
		out = append(out, b)
	}
	return out
}

func buildPage(now time.Time, snaps []cas.Snapshot, u cas.Usage, usageErr error, runs []cas.GCRun, refresh time.Duration) *page {
	p := &page{
		Generated:    humanTime(now),
		GeneratedISO: now.UTC().Format(time.RFC3339),
		RefreshSecs:  int(refresh / time.Second),
		Snapshots:    len(snaps),
		HaveSizes:    !u.Computed.IsZero(),
	}
	if usageErr != nil {
		p.SizesError = usageErr.Error()
	}
	if p.HaveSizes {
		p.SizesNote = "Sizes as of " + humanTime(u.Computed) + " (" + ago(now, u.Computed) + "); the scan took " +
			humanDuration(u.Duration) + " and is reused for a while so that reloading this page cannot keep the store busy."
		p.Chart = newChart(u)
		p.Stored = sizeOf(u.StoredBytes)
		p.Disk = humanBytes(u.DiskBytes)
		p.Other = humanBytes(u.OtherStoredBytes)
		p.OtherBytes = u.OtherStoredBytes
	}

	// The table: by account, newest first within one.
	slices.SortFunc(snaps, func(a, b cas.Snapshot) int {
		return cmp.Or(cmp.Compare(a.OwnerID, b.OwnerID), b.StartTime.Compare(a.StartTime), cmp.Compare(a.ID, b.ID))
	})
	byID := make(map[string]*row, len(snaps))
	counts := map[string]int{}
	accounts := map[string]int{}
	for _, s := range snaps {
		r := newRow(now, s, u)
		p.Rows = append(p.Rows, r)
		counts[r.Status]++
		accounts[s.OwnerID]++
	}
	for i := range p.Rows {
		byID[p.Rows[i].ID] = &p.Rows[i]
	}
	for _, st := range []cas.Status{cas.StatusCompleted, cas.StatusPending, cas.StatusError} {
		if counts[string(st)] > 0 {
			p.ByStatus = append(p.ByStatus, statusCount{string(st), counts[string(st)]})
		}
	}
	p.Accounts = len(accounts)
	p.Lineages = lineages(p.Rows, byID)

	slices.SortFunc(runs, func(a, b cas.GCRun) int { return b.Start.Compare(a.Start) })
	var reclaimed int64
	for _, run := range runs {
		p.GC = append(p.GC, newGCRow(now, run))
		if !run.Report.DryRun { // a failed run may have reclaimed some before it failed
			reclaimed += run.Report.BytesReclaimed
		}
	}
	if len(runs) > 0 {
		p.LastGC = ago(now, runs[0].Start)
		p.GCTotal = humanBytes(reclaimed)
	}
	return p
}

func newRow(now time.Time, s cas.Snapshot, u cas.Usage) row {
	r := row{
		ID: s.ID, Account: s.OwnerID, Status: string(s.Status), Message: s.StatusMessage,
		Description: s.Description, Volume: strconv.FormatInt(s.VolumeSize, 10) + " GiB",
		Parent:  s.ParentID,
		Started: humanTime(s.StartTime), StartedISO: s.StartTime.UTC().Format(time.RFC3339),
		StartedAgo: ago(now, s.StartTime),
	}
	if !s.CompleteTime.IsZero() {
		r.Took = humanDuration(s.CompleteTime.Sub(s.StartTime))
	}
	if su, ok := u.Snapshots[s.ID]; ok {
		r.HaveSizes = true
		r.Written, r.Unique, r.Stored = sizeOf(su.WrittenBytes), sizeOf(su.UniqueBytes), sizeOf(su.StoredBytes)
	}
	return r
}

// lineages groups rows (sorted by account) into one forest per account. Roots and
// siblings go oldest first, the order they were taken in.
func lineages(rows []row, byID map[string]*row) []accountLineage {
	children := make(map[string][]*row)
	var out []accountLineage
	for i := range rows {
		r := &rows[i]
		if r.Parent != "" && byID[r.Parent] == nil {
			r.ParentMissing = true
		}
		if r.Parent != "" && !r.ParentMissing {
			children[r.Parent] = append(children[r.Parent], r)
		}
	}
	oldestFirst := func(a, b *row) int { return cmp.Or(cmp.Compare(a.StartedISO, b.StartedISO), cmp.Compare(a.ID, b.ID)) }
	for _, kids := range children {
		slices.SortFunc(kids, oldestFirst)
	}
	var node func(r *row) *treeNode
	node = func(r *row) *treeNode {
		n := &treeNode{Row: r}
		last := r
		for len(children[last.ID]) == 1 {
			last = children[last.ID][0]
			n.Chain = append(n.Chain, last)
		}
		for _, k := range children[last.ID] {
			n.Children = append(n.Children, node(k))
		}
		return n
	}
	for i := range rows {
		r := &rows[i]
		if len(out) == 0 || out[len(out)-1].Account != r.Account {
			out = append(out, accountLineage{Account: r.Account})
		}
		out[len(out)-1].Count++
		out[len(out)-1].Rows = append(out[len(out)-1].Rows, r)
		if r.Parent == "" || r.ParentMissing {
			out[len(out)-1].Roots = append(out[len(out)-1].Roots, node(r))
		}
	}
	for _, l := range out {
		slices.SortFunc(l.Roots, func(a, b *treeNode) int { return oldestFirst(a.Row, b.Row) })
	}
	return out
}

func newGCRow(now time.Time, run cas.GCRun) gcRow {
	rep := run.Report
	kind := "collection"
	if rep.DryRun {
		kind = "dry run"
	}
	return gcRow{
		Started: humanTime(run.Start), StartedISO: run.Start.UTC().Format(time.RFC3339), StartedAgo: ago(now, run.Start),
		Took: humanDuration(run.Duration), Kind: kind, DryRun: rep.DryRun,
		MapsReleased: rep.SnapshotMapsReleased, RecordsDropped: rep.RecordsDropped,
		BlocksReclaimed: rep.BlocksReclaimed, Reclaimed: sizeOf(rep.BytesReclaimed),
		DiskBefore: sizeOf(rep.DiskBytesBefore), DiskAfter: sizeOf(rep.DiskBytesAfter),
		VlogRewritten: rep.ValueLogFilesRewritten, Err: run.Err,
	}
}

// addScrub fills the scrub section: the runs newest first, and the known-corrupt count.
func (p *page) addScrub(now time.Time, runs []cas.ScrubRun, totals cas.ScrubTotals) {
	slices.SortStableFunc(runs, func(a, b cas.ScrubRun) int { return b.Start.Compare(a.Start) })
	for _, run := range runs {
		p.Scrub = append(p.Scrub, newScrubRow(now, run))
	}
	if len(runs) > 0 {
		p.LastScrub = ago(now, runs[0].Start)
		last := runs[0]
		p.LastScrubOK = last.Err == "" && last.Report.CorruptBlockCount == 0 && last.Report.CorruptRecordCount == 0
	}
	p.CorruptKnown = max(totals.CorruptBlocksKnown, 0)
	p.Healed = totals.BlocksHealed
}

func newScrubRow(now time.Time, run cas.ScrubRun) scrubRow {
	rep := run.Report
	rate := "no read-rate bound"
	if rep.BytesPerSec > 0 {
		rate = "at most " + humanBytes(rep.BytesPerSec) + "/s"
	}
	return scrubRow{
		Started: humanTime(run.Start), StartedISO: run.Start.UTC().Format(time.RFC3339), StartedAgo: ago(now, run.Start),
		Took: humanDuration(run.Duration), Rate: rate,
		BlocksChecked: rep.BlocksChecked, RecordsChecked: rep.RecordsChecked, Checked: sizeOf(rep.BytesChecked),
		CorruptBlocks: rep.CorruptBlockCount, CorruptRecords: rep.CorruptRecordCount, MarksCleared: rep.MarksCleared,
		Err: run.Err,
	}
}
