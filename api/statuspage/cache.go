package statuspage

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/ebsd/ebsd/cas"
)

// usageCache runs the store's usage scan at most once at a time and reuses its result,
// so that a refresh storm (many tabs, a reload loop) cannot keep the daemon scanning.
// A result is reused for max(minAge, costFactor × the scan's duration): however slow
// the store, it spends at most about 1/costFactor of its time on this page.
type usageCache struct {
	src    func(context.Context) (cas.Usage, error)
	now    func() time.Time
	minAge time.Duration
	log    *slog.Logger

	// turn is a one-slot semaphore: the request holding it scans, the others wait for
	// it (or for their own context) and then find the fresh result.
	turn chan struct{}

	mu    sync.Mutex
	have  bool
	u     cas.Usage
	err   error
	until time.Time // the result is reused until then
}

const costFactor = 10

func newUsageCache(src func(context.Context) (cas.Usage, error), now func() time.Time, minAge time.Duration, log *slog.Logger) *usageCache {
	return &usageCache{src: src, now: now, minAge: minAge, log: log, turn: make(chan struct{}, 1)}
}

// get returns the cached usage while it is fresh, else scans. A request whose context
// ends while another scans gets the previous result, if there is one.
func (c *usageCache) get(ctx context.Context) (cas.Usage, error) {
	select {
	case c.turn <- struct{}{}:
	case <-ctx.Done():
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.have {
			return c.u, c.err
		}
		return cas.Usage{}, ctx.Err()
	}
	defer func() { <-c.turn }()

	c.mu.Lock()
	if c.have && c.now().Before(c.until) {
		u, err := c.u, c.err
		c.mu.Unlock()
		return u, err
	}
	c.mu.Unlock()

	began := c.now()
	u, err := c.src(ctx)
	took := c.now().Sub(began)
	if err != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		// The client went away: not the store's answer, so nothing to remember.
		return u, err
	}
	if err != nil {
		c.log.Warn("status page: store usage scan failed", "err", err, "took", took)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil && c.have && c.err == nil {
		// Keep showing the last good numbers; the page says they could not be renewed.
		c.err = err
	} else {
		c.u, c.err, c.have = u, err, true
	}
	c.until = c.now().Add(max(c.minAge, costFactor*took))
	return c.u, c.err
}
