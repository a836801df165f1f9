package statuspage

import (
	"testing"
	"time"
)

func TestHumanFormats(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{humanBytes(0), "0 B"},
		{humanBytes(1023), "1023 B"},
		{humanBytes(1024), "1.0 KiB"},
		{humanBytes(512 << 10), "512.0 KiB"},
		{humanBytes(180 << 20), "180.0 MiB"},
		{humanBytes(1536 << 20), "1.5 GiB"},
		{humanBytes(3 << 40), "3.0 TiB"},
		{humanBytes(5000 << 50), "5000.0 PiB"},
		{humanDuration(350 * time.Microsecond), "350 µs"},
		{humanDuration(42 * time.Millisecond), "42 ms"},
		{humanDuration(1200 * time.Millisecond), "1.2 s"},
		{humanDuration(3 * time.Minute), "3 min"},
		{humanDuration(125 * time.Second), "2 min 5 s"},
		{humanDuration(62 * time.Minute), "1 h 2 min"},
		{ago(fixtureNow, fixtureNow.Add(-30*time.Second)), "just now"},
		{ago(fixtureNow, fixtureNow.Add(-5*time.Minute)), "5 min ago"},
		{ago(fixtureNow, fixtureNow.Add(-30*time.Hour)), "30 h ago"},
		{ago(fixtureNow, fixtureNow.Add(-10*24*time.Hour)), "10 days ago"},
		{ago(fixtureNow, fixtureNow.Add(time.Hour)), "in the future"},
		{humanTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("X", 3600))), "2026-01-02 02:04"},
		{ratio(2048, 61), "34×"},
		{ratio(180, 100), "1.8×"},
		{ratio(10, 0), ""},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}
