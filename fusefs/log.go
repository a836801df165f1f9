package fusefs

import (
	"fmt"
	stdlog "log"
	"log/slog"
	"runtime/debug"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// goFuseLogging routes go-fuse's logs, written with the standard log package, to the
// export's handler. Without Debug, go-fuse logs only what went wrong (a reply the
// kernel refused, a request it could not parse), so those are warnings; a panic in a
// handler is an error with its stack, answered with EIO.
func goFuseLogging(log *slog.Logger) (*stdlog.Logger, func(any) fuse.Status) {
	l := log.With("component", "go-fuse")
	onPanic := func(v any) fuse.Status {
		l.Error("panic in FUSE handler", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		return fuse.EIO
	}
	return slog.NewLogLogger(l.Handler(), slog.LevelWarn), onPanic
}
