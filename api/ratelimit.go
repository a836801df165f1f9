package api

import (
	"sync"
	"time"
)

// AccountLimiter is a token bucket per account: each account may make Rate requests
// a second on average and Burst at once. Over it, requests are refused with
// RequestThrottledException, which the SDKs retry with back-off.
type AccountLimiter struct {
	rate  float64
	burst float64
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// NewAccountLimiter returns a limiter; now is the clock (time.Now when nil).
func NewAccountLimiter(rate float64, burst int, now func() time.Time) *AccountLimiter {
	if now == nil {
		now = time.Now
	}
	return &AccountLimiter{rate: rate, burst: float64(burst), now: now, buckets: map[string]*bucket{}}
}

// Allow takes a token from the account's bucket, if it has one.
func (l *AccountLimiter) Allow(account string) bool {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[account]
	if b == nil {
		// Accounts are few and known (the keyring), so buckets are never dropped.
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[account] = b
	}
	if elapsed := now.Sub(b.last).Seconds(); elapsed > 0 {
		b.tokens = min(l.burst, b.tokens+elapsed*l.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
