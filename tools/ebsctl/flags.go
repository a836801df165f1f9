package main

import (
	"flag"
	"fmt"
	"strings"
)

// parse parses a subcommand's arguments the way git, kubectl and the AWS CLI do: flags
// may come before or after the positional arguments (`upload disk.img --wait`), global
// flags are accepted after the subcommand too (`ls --endpoint-url URL`), and "--" ends
// the flags. The subcommand's own flags win over global ones of the same name.
//
// It reorders rather than reimplementing flag syntax: the subcommand's flags go to
// fs.Parse, the global ones to g.flags.Parse, each with its tokens in their order, so
// errors, -h/--help and -flag=value forms behave exactly as the flag package makes them.
func (g *globalOptions) parse(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(g.stderr)
	if own := fs.Usage; own != nil && g.flags != nil {
		fs.Usage = func() {
			own()
			fmt.Fprintf(fs.Output(), "\nGlobal flags (before or after the command):\n")
			g.flags.SetOutput(fs.Output())
			g.flags.PrintDefaults()
		}
	}
	var own, global, positional []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			positional = append(positional, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			positional = append(positional, a)
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimPrefix(a[1:], "-"), "=")
		dest := &own
		f := fs.Lookup(name)
		if f == nil && g.flags != nil {
			if f = g.flags.Lookup(name); f != nil {
				dest = &global
			}
		}
		// An unknown flag (or -h/--help) goes to fs.Parse, which reports it.
		*dest = append(*dest, a)
		if f != nil && !hasValue && !isBoolFlag(f) && i+1 < len(args) {
			i++ // the flag's value, whatever it looks like, as the flag package takes it
			*dest = append(*dest, args[i])
		}
	}
	if len(global) > 0 {
		if err := g.flags.Parse(global); err != nil {
			return err
		}
	}
	// Two passes: the flags alone (so a flag missing its value says so), then "--" and
	// the positional arguments, which become fs.Args().
	if err := fs.Parse(own); err != nil {
		return err
	}
	return fs.Parse(append([]string{"--"}, positional...))
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}
