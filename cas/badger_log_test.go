package cas

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// recordingHandler keeps every record it is handed.
type recordingHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r)
	return nil
}
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler      { return h }

// Badger's own log lines reach the store's slog handler, as records with levels
// (its chatty info lines at debug), not as unstructured lines on stderr.
func TestBadgerLogsGoThroughSlog(t *testing.T) {
	h := &recordingHandler{}
	s, err := Open(Options{Dir: t.TempDir(), ExpireInterval: -1, Logger: slog.New(h)})
	if err != nil {
		t.Fatal(err)
	}
	writeSnap(t, s, "", map[int64]uint64{0: 1})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	n, debug := 0, 0
	for _, r := range h.records {
		if strings.HasPrefix(r.Message, "badger: ") {
			n++
			if r.Level == slog.LevelDebug {
				debug++
			}
			if r.Level != slog.LevelDebug && r.Level != slog.LevelWarn && r.Level != slog.LevelError {
				t.Errorf("badger line at level %s: %q", r.Level, r.Message)
			}
		}
	}
	if n == 0 || debug == 0 {
		t.Fatalf("%d Badger log lines reached the slog handler, %d at debug; opening and closing a store logs several at info, which go to debug", n, debug)
	}
}
