package statuspage

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// humanBytes formats a byte count in IEC units with one decimal ("180.0 MiB"), the way
// README.md and BENCHMARKS.md report sizes.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	v := float64(n)
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB", "PiB"} {
		v /= unit
		if math.Abs(v) < unit || u == "PiB" {
			return fmt.Sprintf("%.1f %s", v, u)
		}
	}
	panic("unreachable")
}

// humanTime formats an instant in UTC to the minute (the page says once that times are
// UTC): one zone for every reader of the page and for the daemon's logs alike.
func humanTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04")
}

// ago says how long before now t was, coarsely ("just now", "5 min ago", "3 h ago",
// "12 days ago").
func ago(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "in the future"
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return fmt.Sprintf("%d min ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h ago", int(d/time.Hour))
	default:
		return fmt.Sprintf("%d days ago", int(d/(24*time.Hour)))
	}
}

// humanDuration formats how long something took, to a useful precision.
func humanDuration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%d µs", d/time.Microsecond)
	case d < time.Second:
		return fmt.Sprintf("%d ms", d/time.Millisecond)
	case d < time.Minute:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d < time.Hour:
		return joinUnits(int64(d/time.Minute), "min", int64(d%time.Minute/time.Second), "s")
	default:
		return joinUnits(int64(d/time.Hour), "h", int64(d%time.Hour/time.Minute), "min")
	}
}

// ratio formats how many times smaller b is than a ("33×", "1.6×"), or "" when it
// means nothing.
func ratio(a, b int64) string {
	if a <= 0 || b <= 0 {
		return ""
	}
	r := float64(a) / float64(b)
	if r >= 10 {
		return fmt.Sprintf("%.0f×", r)
	}
	return fmt.Sprintf("%.1f×", r)
}

// joinUnits says "3 min 5 s", or "3 min" when the smaller unit is zero.
func joinUnits(big int64, bigUnit string, small int64, smallUnit string) string {
	if small == 0 {
		return fmt.Sprintf("%d %s", big, bigUnit)
	}
	return fmt.Sprintf("%d %s %d %s", big, bigUnit, small, smallUnit)
}
