package main

import (
	"context"
	"errors"
	"flag"
	"sync"
)

// inParallel runs items 0…n-1 on `workers` goroutines, each with its own function from
// setup (for per-worker buffers), and stops at the first error, which it returns.
func inParallel(ctx context.Context, workers int, n int64, setup func() func(ctx context.Context, i int64) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	work := make(chan int64)
	var wg sync.WaitGroup
	for range max(1, workers) {
		do := setup()
		wg.Go(func() {
			for i := range work {
				if err := do(ctx, i); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
feed:
	for i := range n {
		select {
		case work <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	return context.Cause(ctx)
}

// parseArgs parses a subcommand's flags (before or after its arguments, see
// globalOptions.parse) and insists on exactly want positional arguments, showing the
// usage otherwise.
func parseArgs(g *globalOptions, fs *flag.FlagSet, args []string, want int, what string) error {
	if err := g.parse(fs, args); err != nil {
		return err
	}
	if want >= 0 && fs.NArg() != want {
		fs.Usage()
		return errors.New(fs.Name() + " takes " + what)
	}
	return nil
}
