// Command ebsd serves the Amazon EBS direct APIs on a local, deduplicating,
// compressing block store and exports completed snapshots as image files over FUSE.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"
)

func main() {
	moreProcs(os.Getenv)
	os.Exit(runMain(os.Args[1:], os.Getenv, os.Stderr))
}

// moreProcs gives the daemon twice as many Ps as the runtime would, unless the operator
// set GOMAXPROCS. go-fuse starts one request reader per P, and a reader blocked in
// read(2) on /dev/fuse keeps its P until the runtime's monitor takes it back, so with
// one P per core a cold FUSE read leaves 25–30 % of the cores idle while decodes wait
// to run. Twice the Ps read the same store 8 % faster (median of 6 interleaved cold
// reads, BENCHMARKS.md); four times did no better than twice.
func moreProcs(getenv func(string) string) {
	if getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(2 * runtime.GOMAXPROCS(0))
	}
}

func runMain(args []string, getenv func(string) string, stderr io.Writer) int {
	cfg, err := parseConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "ebsd:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.logLevel}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// SIGHUP is caught before the daemon says it is listening: one sent the moment
	// it is up must reload, not kill it (a SIGHUP's default action).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	d, err := start(cfg, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	if err := d.run(ctx, hup); err != nil {
		log.Error("stopped with error", "err", err)
		return 1
	}
	return 0
}
