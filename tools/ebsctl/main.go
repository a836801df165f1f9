// Command ebsctl is the command-line companion of ebsd: it talks to a daemon (or to
// AWS itself) through the public APIs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// command is one subcommand: its own flag set, options struct and run function.
type command struct {
	name  string
	short string
	run   func(ctx context.Context, g *globalOptions, args []string, stdout io.Writer) error
}

func commands() []command {
	return []command{
		{"upload", "write an image file or device as a snapshot (resumable)", runUpload},
		{"download", "restore a snapshot into a sparse file or a device", runDownload},
		{"verify", "dd-style restore test: compare a snapshot with an image", runVerify},
		{"diff", "changed block ranges between two snapshots", runDiff},
		{"ls", "list snapshots", runLs},
		{"describe", "show snapshots", runDescribe},
		{"rm", "delete snapshots", runRm},
		{"bench", "storage-efficiency report (dedup, compression, growth) for images or a store", runBench},
		{"stats", "show what an ebsd store holds (ebsd only)", runStats},
		{"gc", "reclaim the space of deleted snapshots now (ebsd only)", runGC},
		{"scrub", "verify every stored block and record now; list what is corrupt (ebsd only)", runScrub},
		{"salvage", "copy every snapshot that still verifies out of a damaged data directory", runSalvage},
		{"move", "copy a whole store between engines: a data directory into S3 + PostgreSQL, or back", runMove},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ebsctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	// Subcommands parse the global flags again where they follow the command name.
	g := &globalOptions{flags: fs, stderr: stderr, loaded: &loadedConfig{}}
	g.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: ebsctl [flags] COMMAND [flags] [ARGS]\n\nFlags may come before or after the command and its arguments; -- ends them.\n\nCommands:\n")
		for _, c := range commands() {
			fmt.Fprintf(stderr, "  %-10s %s\n", c.name, c.short)
		}
		fmt.Fprintf(stderr, "\nGlobal flags:\n")
		fs.PrintDefaults()
		fmt.Fprintf(stderr, "\nExamples:\n  ebsctl --endpoint-url http://127.0.0.1:8600 upload --wait disk.img\n  ebsctl verify snap-0123456789abcdef0 disk.img --mount /var/lib/ebsd/mnt\n  ebsctl COMMAND --help (or ebsctl help COMMAND)\n")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	name, args := fs.Arg(0), fs.Args()[1:]
	if name == "help" {
		if len(args) == 0 { // what the usage offers, without a command: the usage
			fs.Usage()
			return 0
		}
		if len(args) == 1 {
			name, args = args[0], []string{"--help"}
		}
	}
	for _, c := range commands() {
		if c.name == name {
			if err := c.run(ctx, g, args, stdout); err != nil {
				if errors.Is(err, flag.ErrHelp) {
					return 0
				}
				fmt.Fprintf(stderr, "ebsctl %s: %v\n", c.name, err)
				return 1
			}
			return 0
		}
	}
	fmt.Fprintf(stderr, "ebsctl: unknown command %q (ebsctl --help lists them)\n", name)
	return 2
}
