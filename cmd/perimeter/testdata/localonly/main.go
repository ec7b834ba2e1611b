// Command localonly is what `perimeter run -- CMD` does (open local://,
// create a sandbox, run CMD in it, terminate it) in a program that links
// only the core and the local provider. BenchmarkRunTrueVsBwrap times it
// beside the CLI: the floor for a `run` whose binary carries no cloud SDK.
package main

import (
	"context"
	"fmt"
	"os"

	_ "github.com/perimeter-sdk/perimeter/providers/local"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: localonly CMD [ARGS...]")
		os.Exit(2)
	}
	ctx := context.Background()
	p, err := sandbox.Open(ctx, "local://")
	if err != nil {
		fail(err)
	}
	sb, err := p.Create(ctx, nil)
	if err != nil {
		fail(err)
	}
	res, err := sandbox.Run(ctx, sb, &sandbox.Cmd{Args: os.Args[1:], Stdout: os.Stdout, Stderr: os.Stderr}, nil)
	if terr := sb.Terminate(ctx); err == nil {
		err = terr
	}
	if err != nil {
		fail(err)
	}
	if !res.Status.Success() {
		os.Exit(1)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "localonly:", err)
	os.Exit(1)
}
