package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"html"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/klauspost/compress/zstd"
)

type benchOptions struct {
	simulate   bool
	svg        string
	throughput bool
	recompress string // with images: also estimate what ebsd's --recompress at this level stores
}

// efficiencyRow is one image (or snapshot) of the efficiency report. Unique and stored
// bytes are what the image adds to everything before it in the list: its growth.
type efficiencyRow struct {
	Name          string  `json:"name"`
	LogicalBytes  int64   `json:"logicalBytes"`
	ZeroBlocks    int64   `json:"zeroBlocks"`
	WrittenBytes  int64   `json:"writtenBytes"`
	NewUnique     int64   `json:"newUniqueBytes"`
	NewStored     int64   `json:"newStoredBytes"`
	NewSettled    int64   `json:"newSettledBytes,omitempty"` // --recompress: NewStored once settled
	DedupRatio    float64 `json:"dedupRatio"`
	CompressRatio float64 `json:"compressionRatio"`
	UploadMBps    float64 `json:"uploadMBps,omitempty"`
	ReadMBps      float64 `json:"readBackMBps,omitempty"`
}

type efficiencyReport struct {
	Rows          []efficiencyRow `json:"rows"`
	TotalLogical  int64           `json:"totalLogicalBytes"`
	TotalWritten  int64           `json:"totalWrittenBytes"`
	TotalUnique   int64           `json:"totalUniqueBytes"`
	TotalStored   int64           `json:"totalStoredBytes"`
	TotalSettled  int64           `json:"totalSettledBytes,omitempty"`
	Recompress    string          `json:"recompress,omitempty"`
	DedupRatio    float64         `json:"dedupRatio"`
	CompressRatio float64         `json:"compressionRatio"`
	Overall       float64         `json:"logicalOverStored"`
	// Settled is what the daemon's settling (--recompress) did to the stored figure;
	// absent when it never settled anything.
	Settled *settledFigure `json:"settled,omitempty"`
}

// settledFigure is the daemon's settling as the efficiency report shows it.
type settledFigure struct {
	Level        string `json:"level"`
	Blocks       int64  `json:"blocks"`      // stored blocks settled now
	StoredBytes  int64  `json:"storedBytes"` // their stored size
	SavedBytes   int64  `json:"savedBytes"`  // since the store was created, collected blocks included
	UniqueBlocks int64  `json:"uniqueBlocks"`
}

func runBench(ctx context.Context, g *globalOptions, args []string, stdout io.Writer) error {
	var o benchOptions
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.BoolVar(&o.simulate, "simulate", false, "measure image files without storing anything (zstd at ebsd's level)")
	fs.StringVar(&o.svg, "svg", "", "also write a bar chart to this SVG file")
	fs.BoolVar(&o.throughput, "throughput", false, "with images and a daemon: also time upload and read-back (verify) of each")
	fs.StringVar(&o.recompress, "recompress", "", "with images: also estimate the stored bytes once ebsd --recompress LEVEL (default, better or best) has settled them; best re-encodes ~8 MB/s")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: ebsctl bench [flags] IMAGE...
       ebsctl bench            (the store of an ebsd daemon)

The storage-efficiency report: logical bytes, written (non-zero) bytes, unique bytes after
dedup, stored bytes after compression, the ratios, and what each image adds over the
ones before it (the growth of an incremental snapshot).

Examples:
  ebsctl bench --simulate --svg report.svg base.img next.img
  ebsctl --endpoint-url http://127.0.0.1:8600 bench --throughput base.img next.img
  ebsctl --endpoint-url http://127.0.0.1:8600 bench

Flags:
`)
		fs.PrintDefaults()
	}
	if err := g.parse(fs, args); err != nil {
		return err
	}
	var rep efficiencyReport
	switch {
	case o.recompress != "" && fs.NArg() == 0:
		return errors.New("--recompress estimates image files: give them")
	case fs.NArg() > 0:
		var err error
		if rep, err = simulate(ctx, g, o, fs.Args()); err != nil {
			return err
		}
	case o.simulate:
		return errors.New("--simulate needs image files")
	default:
		st, err := fetchStats(ctx, g)
		if err != nil {
			return err
		}
		written := (st.MappedBlocks - st.ZeroBlocks) * blockSize
		rep.Rows = []efficiencyRow{{Name: g.endpoint, LogicalBytes: st.MappedBlocks * blockSize, ZeroBlocks: st.ZeroBlocks,
			WrittenBytes: written, NewUnique: st.UniqueBlocks * blockSize, NewStored: st.StoredBytes}}
		if st.SettledBlocks > 0 || st.Settled.Blocks > 0 {
			rep.Settled = &settledFigure{Level: st.level(), Blocks: st.SettledBlocks, StoredBytes: st.SettledBytes,
				SavedBytes: st.Settled.BytesBefore - st.Settled.BytesAfter, UniqueBlocks: st.UniqueBlocks}
		}
	}
	rep.Recompress = o.recompress
	rep.finish()
	if o.svg != "" {
		if err := os.WriteFile(o.svg, []byte(rep.svg()), 0o644); err != nil {
			return err
		}
	}
	if g.json {
		return json.NewEncoder(stdout).Encode(rep)
	}
	return rep.table(stdout)
}

// simulate reads each image once: zero blocks, SHA-256 for dedup across all images, and
// zstd (as ebsd stores) for the stored size of each new unique block.
func simulate(ctx context.Context, g *globalOptions, o benchOptions, images []string) (efficiencyReport, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderCRC(false), zstd.WithWindowSize(blockSize))
	if err != nil {
		return efficiencyReport{}, err
	}
	defer enc.Close()
	var settle *zstd.Encoder // ebsd's settler at --recompress, when asked for
	if o.recompress != "" {
		lvl, ok := map[string]zstd.EncoderLevel{"default": zstd.SpeedDefault, "better": zstd.SpeedBetterCompression, "best": zstd.SpeedBestCompression}[o.recompress]
		if !ok {
			return efficiencyReport{}, fmt.Errorf("--recompress %q: want default, better or best", o.recompress)
		}
		if settle, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(lvl), zstd.WithEncoderCRC(false), zstd.WithWindowSize(blockSize)); err != nil {
			return efficiencyReport{}, err
		}
		defer settle.Close()
	}
	seen := map[[32]byte]bool{}
	var rep efficiencyReport
	buf := make([]byte, blockSize)
	dst := make([]byte, 0, blockSize)
	for _, path := range images {
		im, err := openImage(path)
		if err != nil {
			return rep, err
		}
		row := efficiencyRow{Name: filepath.Base(path), LogicalBytes: im.blocks() * blockSize}
		for i := range im.blocks() {
			if err := ctx.Err(); err != nil {
				im.Close()
				return rep, err
			}
			if err := im.block(i, buf); err != nil {
				im.Close()
				return rep, err
			}
			if isZero(buf) {
				row.ZeroBlocks++
				continue
			}
			row.WrittenBytes += blockSize
			d := sha256.Sum256(buf)
			if seen[d] {
				continue
			}
			seen[d] = true
			row.NewUnique += blockSize
			stored := int64(min(len(enc.EncodeAll(buf, dst[:0])), blockSize))
			row.NewStored += stored
			if settle != nil {
				// As ebsd's settler decides (cas/settle.go): rewritten only when it
				// shrinks the block by at least 1/32.
				if n := int64(len(settle.EncodeAll(buf, dst[:0]))); n <= stored-stored/32 {
					stored = n
				}
				row.NewSettled += stored
			}
		}
		im.Close()
		if o.throughput && !o.simulate {
			if err := timeRoundTrip(ctx, g, path, &row); err != nil {
				return rep, err
			}
		}
		rep.Rows = append(rep.Rows, row)
	}
	return rep, nil
}

// timeRoundTrip uploads the image to the daemon and verifies it back, timing both.
func timeRoundTrip(ctx context.Context, g *globalOptions, path string, row *efficiencyRow) error {
	quiet := *g
	quiet.quiet, quiet.json = true, true
	start := time.Now()
	var out strings.Builder
	if err := runUpload(ctx, &quiet, []string{"--state-dir", os.TempDir(), path}, &out); err != nil {
		return err
	}
	row.UploadMBps = float64(row.LogicalBytes) / 1e6 / time.Since(start).Seconds()
	var res uploadResult
	if err := json.Unmarshal([]byte(out.String()), &res); err != nil {
		return err
	}
	start = time.Now()
	if err := runVerify(ctx, &quiet, []string{res.SnapshotID, path}, io.Discard); err != nil {
		return err
	}
	row.ReadMBps = float64(row.LogicalBytes) / 1e6 / time.Since(start).Seconds()
	return nil
}

func ratio(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func (r *efficiencyReport) finish() {
	for i := range r.Rows {
		row := &r.Rows[i]
		row.DedupRatio = ratio(row.WrittenBytes, row.NewUnique)
		row.CompressRatio = ratio(row.NewUnique, row.NewStored)
		r.TotalLogical += row.LogicalBytes
		r.TotalWritten += row.WrittenBytes
		r.TotalUnique += row.NewUnique
		r.TotalStored += row.NewStored
		r.TotalSettled += row.NewSettled
	}
	r.DedupRatio = ratio(r.TotalWritten, r.TotalUnique)
	r.CompressRatio = ratio(r.TotalUnique, r.TotalStored)
	r.Overall = ratio(r.TotalLogical, r.TotalStored)
}

func (r *efficiencyReport) table(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "image\tlogical\tzero blocks\twritten\tnew unique\tnew stored\tdedup\tcompression\tupload MB/s\tread MB/s\t")
	for _, row := range r.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%.2f\t%.2f\t%s\t%s\t\n", row.Name, mib(row.LogicalBytes), row.ZeroBlocks, mib(row.WrittenBytes),
			mib(row.NewUnique), mib(row.NewStored), row.DedupRatio, row.CompressRatio, rate(row.UploadMBps), rate(row.ReadMBps))
	}
	fmt.Fprintf(tw, "total\t%s\t\t%s\t%s\t%s\t%.2f\t%.2f\t\t\t\n", mib(r.TotalLogical), mib(r.TotalWritten), mib(r.TotalUnique), mib(r.TotalStored), r.DedupRatio, r.CompressRatio)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "logical / stored: %.1f×\n", r.Overall)
	if r.TotalSettled > 0 {
		parts := make([]string, len(r.Rows))
		for i, row := range r.Rows {
			parts[i] = row.Name + " " + mib(row.NewSettled)
		}
		fmt.Fprintf(w, "once settled (--recompress %s, estimated): %s stored (%.1f× logical); new stored: %s\n",
			r.Recompress, mib(r.TotalSettled), ratio(r.TotalLogical, r.TotalSettled), strings.Join(parts, ", "))
	}
	if st := r.Settled; st != nil {
		// The stored figure above is already the settled one; this says how much of it
		// is, and what it was before settling.
		fmt.Fprintf(w, "settled (--recompress %s): %d of %d blocks, %s; stored would be %s unsettled (%.1f×)\n",
			st.Level, st.Blocks, st.UniqueBlocks, mib(st.StoredBytes), mib(r.TotalStored+st.SavedBytes), ratio(r.TotalLogical, r.TotalStored+st.SavedBytes))
	}
	return nil
}

func rate(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", v)
}

// svg draws, per image, bars for logical, written, new unique and new stored bytes.
func (r *efficiencyReport) svg() string {
	const barH, gap, left, width = 18, 6, 160, 560
	maxV := int64(1)
	for _, row := range r.Rows {
		maxV = max(maxV, row.LogicalBytes)
	}
	series := []struct {
		name, colour string
		v            func(efficiencyRow) int64
	}{
		{"logical", "#c8c8c8", func(x efficiencyRow) int64 { return x.LogicalBytes }},
		{"written (non-zero)", "#7fa7d9", func(x efficiencyRow) int64 { return x.WrittenBytes }},
		{"new unique (dedup)", "#3b6fb6", func(x efficiencyRow) int64 { return x.NewUnique }},
		{"new stored (compressed)", "#1d3a66", func(x efficiencyRow) int64 { return x.NewStored }},
	}
	var b strings.Builder
	height := 40 + len(r.Rows)*(len(series)*barH+3*gap) + 30
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", left+width+140, height)
	fmt.Fprintf(&b, `<text x="10" y="20" font-size="15">Storage efficiency: %.1f× logical over stored (dedup %.2f, compression %.2f)</text>`+"\n", r.Overall, r.DedupRatio, r.CompressRatio)
	y := 40
	for _, row := range r.Rows {
		fmt.Fprintf(&b, `<text x="10" y="%d">%s</text>`+"\n", y+barH, html.EscapeString(row.Name))
		for _, s := range series {
			w := int(float64(width) * float64(s.v(row)) / float64(maxV))
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"><title>%s</title></rect>`, left, y, max(w, 1), barH-2, s.colour, s.name)
			fmt.Fprintf(&b, `<text x="%d" y="%d">%s %s</text>`+"\n", left+max(w, 1)+6, y+barH-6, mib(s.v(row)), s.name)
			y += barH
		}
		y += 3 * gap
	}
	b.WriteString("</svg>\n")
	return b.String()
}
