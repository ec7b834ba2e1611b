// Command perimeter runs commands in sandboxes, checks providers against the
// conformance suite, executes agent tool calls, and runs the ends of the MCP
// tunnel.
//
// Usage:
//
//	perimeter run [--provider URL] [--env K=V]... [--dir D] -- CMD [ARGS...]
//	perimeter conformance [--json] [--run REGEXP] URL
//	perimeter worker --environment-id ID [--provider URL] [--spec FILE] [--max-sessions N]
//	perimeter help
//
// The default provider is local (a workspace directory under the system's
// temporary directory). Each subcommand lives in its own file and registers
// itself in init.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/perimeter-sdk/perimeter/providers/local"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// command is one subcommand of the CLI.
type command struct {
	name    string
	summary string
	// run executes the subcommand with the arguments after its name and
	// returns the process's exit code. ctx is cancelled on SIGINT or SIGTERM.
	run func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int
}

var commands = map[string]*command{}

// register adds c to the CLI; subcommand files call it from init.
func register(c *command) {
	if _, dup := commands[c.name]; dup {
		panic("perimeter: command registered twice: " + c.name)
	}
	commands[c.name] = c
}

func main() {
	// When this binary is started as a local sandbox's init, become it; the
	// package's own init would do it too, this makes the hand-over visible.
	local.Init()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := dispatch(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// dispatch runs the subcommand named by args[0].
func dispatch(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "perimeter: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	return c.run(ctx, args[1:], stdin, stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: perimeter COMMAND [ARGS...]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-12s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'perimeter COMMAND -h' for a command's flags.")
}

// session is a provider and one sandbox made for a command.
type session struct {
	p    *sandbox.Provider
	sb   *sandbox.Sandbox
	keep bool
}

// newSession opens the provider at url and creates a sandbox, printing the
// error to stderr on failure. If keep is set, the sandbox's ID is printed
// and close leaves it running.
func newSession(ctx context.Context, url string, keep bool, stderr io.Writer) (*session, bool) {
	p, err := sandbox.Open(ctx, url)
	if err != nil {
		fmt.Fprintf(stderr, "perimeter: %v\n", err)
		return nil, false
	}
	sb, err := p.Create(ctx, nil)
	if err != nil {
		p.Close()
		fmt.Fprintf(stderr, "perimeter: %v\n", err)
		return nil, false
	}
	if keep {
		fmt.Fprintf(stderr, "perimeter: sandbox %s\n", sb.ID())
	}
	return &session{p: p, sb: sb, keep: keep}, true
}

// close terminates the sandbox (unless kept) and closes the provider. It
// works after ctx is done, as after Ctrl-C.
func (s *session) close(ctx context.Context, stderr io.Writer) {
	if !s.keep {
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := s.sb.Terminate(tctx); err != nil {
			fmt.Fprintf(stderr, "perimeter: %v\n", err)
		}
	}
	s.p.Close()
}
