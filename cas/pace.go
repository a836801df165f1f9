package cas

import (
	"context"
	"time"
)

// pacer keeps background work (scrub, settling) to rate bytes per second on average
// since it last (re)started: a pause earns no burst afterwards. It sleeps at most once
// per granularity bytes, so small reads are not each a timer.
type pacer struct {
	rate        int64 // bytes per second; ≤ 0: no bound
	granularity int64
	clock       Clock
	sleep       func(ctx context.Context, d time.Duration) error

	start   time.Time
	total   int64
	pending int64
}

func (p *pacer) restart() { p.start, p.total, p.pending = p.clock.Now(), 0, 0 }

// wait accounts n bytes and sleeps until the average rate is back under the bound.
func (p *pacer) wait(ctx context.Context, n int64) error {
	if p.rate <= 0 {
		return nil
	}
	p.total += n
	p.pending += n
	if p.pending < p.granularity {
		return nil
	}
	p.pending = 0
	due := p.start.Add(time.Duration(float64(p.total) / float64(p.rate) * float64(time.Second)))
	if d := due.Sub(p.clock.Now()); d > 0 {
		return p.sleep(ctx, d)
	}
	return nil
}

// sleepCtx waits d, or less if ctx ends or the store closes.
func (s *Store) sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.stop:
		return ErrClosed
	}
}
