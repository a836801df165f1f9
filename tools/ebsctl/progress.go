package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// progress prints bytes done, MB/s and ETA on one line, but only to a terminal: scripts
// and CI see nothing. Its owner stops it.
type progress struct {
	out   io.Writer
	label string
	total int64
	done  atomic.Int64
	start time.Time
	stop  chan struct{}
	wg    sync.WaitGroup
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func newProgress(g *globalOptions, label string, total int64) *progress {
	p := &progress{label: label, total: total, start: time.Now(), stop: make(chan struct{})}
	if g.quiet || !isTerminal(os.Stderr) {
		return p
	}
	p.out = os.Stderr
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				p.print()
				fmt.Fprintln(p.out)
				return
			case <-t.C:
				p.print()
			}
		}
	}()
	return p
}

func (p *progress) add(n int64) { p.done.Add(n) }

func (p *progress) print() {
	done := p.done.Load()
	secs := time.Since(p.start).Seconds()
	rate := float64(done) / 1e6 / max(secs, 1e-9)
	eta := "?"
	if rate > 0 && p.total > done {
		eta = (time.Duration(float64(p.total-done)/1e6/rate) * time.Second).Round(time.Second).String()
	}
	pct := 100.0
	if p.total > 0 {
		pct = 100 * float64(done) / float64(p.total)
	}
	fmt.Fprintf(p.out, "\r%s %6.1f%% %s / %s  %7.1f MB/s  ETA %s   ", p.label, pct, mib(done), mib(p.total), rate, eta)
}

func (p *progress) finish() {
	close(p.stop)
	p.wg.Wait()
}
