package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// defaultProvider is the provider URL used when --provider is not given.
const defaultProvider = "local://"

func init() {
	register(&command{
		name:    "run",
		summary: "run a command in a new sandbox and stream its output",
		run:     runCmd,
	})
}

// envFlags collects repeated --env K=V flags.
type envFlags map[string]string

func (e envFlags) String() string { return "" }

func (e envFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want K=V, got %q", s)
	}
	e[k] = v
	return nil
}

func runCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("perimeter run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	provider := fs.String("provider", defaultProvider, "provider `URL`")
	env := envFlags{}
	fs.Var(env, "env", "set an environment variable `K=V` (repeatable)")
	dir := fs.String("dir", "", "working `directory` inside the sandbox")
	timeout := fs.Duration("timeout", 0, "kill the command after this long (0: no limit)")
	interactive := fs.Bool("i", false, "pass standard input to the command")
	keep := fs.Bool("keep", false, "do not terminate the sandbox afterwards; print its ID on stderr")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: perimeter run [flags] -- CMD [ARGS...]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	argv := fs.Args()
	if len(argv) == 0 {
		fs.Usage()
		return 2
	}

	// The sandbox is terminated on every path out, Ctrl-C included (ctx is
	// done by then; close does not use it).
	ss, ok := newSession(ctx, *provider, *keep, stderr)
	if !ok {
		return 1
	}
	defer ss.close(ctx, stderr)
	cmd := &sandbox.Cmd{Args: argv, Dir: *dir, Env: env, Stdout: stdout, Stderr: stderr, Timeout: *timeout}
	if *interactive {
		cmd.Stdin = stdin
	}
	proc, err := ss.sb.Start(ctx, cmd)
	if err != nil {
		fmt.Fprintf(stderr, "perimeter: %v\n", err)
		return 1
	}
	st, err := proc.Wait(context.WithoutCancel(ctx))
	switch {
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(stderr, "perimeter: interrupted; command killed")
		return 130
	case err != nil:
		fmt.Fprintf(stderr, "perimeter: %v\n", err)
		return 1
	}
	return exitCode(st, stderr)
}

// exitCode maps a status to this process's exit code as a shell would.
func exitCode(st sandbox.ExitStatus, stderr io.Writer) int {
	switch {
	case st.TimedOut:
		fmt.Fprintln(stderr, "perimeter: command timed out")
		return 124
	case st.Signal != "":
		if n := unix.SignalNum(string(st.Signal)); n != 0 {
			return 128 + int(n)
		}
		return 128 + int(syscall.SIGKILL)
	case st.Code < 0 || st.Code > 255:
		return 1
	}
	return st.Code
}
