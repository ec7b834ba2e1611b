package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

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

// cmdFlags are the flags of a command started in a sandbox, by run and exec.
type cmdFlags struct {
	env         envFlags
	dir         string
	timeout     time.Duration
	interactive bool
}

func (c *cmdFlags) add(fs *flag.FlagSet) {
	c.env = envFlags{}
	fs.Var(c.env, "env", "set an environment variable `K=V` (repeatable)")
	fs.StringVar(&c.dir, "dir", "", "working `directory` inside the sandbox")
	fs.DurationVar(&c.timeout, "timeout", 0, "kill the command after this long (0: no limit)")
	fs.BoolVar(&c.interactive, "i", false, "pass standard input to the command even from a terminal (a pipe or file is passed without it)")
}

// check reports a flag value no sandbox would accept, before one is made.
func (c *cmdFlags) check() error {
	if c.timeout < 0 {
		return fmt.Errorf("--timeout %v: must not be negative", c.timeout)
	}
	return nil
}

func runCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("perimeter run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	provider := fs.String("provider", defaultProvider, "provider `URL`")
	var cf cmdFlags
	cf.add(fs)
	keep := fs.Bool("keep", false, "do not terminate the sandbox afterwards; print its ID on stderr (for exec, cp, ls, rm)")
	ttl := fs.Duration("ttl", 0, "the sandbox's lifetime: it is terminated after this long, whatever runs in it (0: no limit)")
	var res sandbox.Resources
	fs.Func("memory", "memory limit `SIZE` (bytes, or with K, M, G, T: 512M)", sizeFlag(&res.Memory))
	fs.Float64Var(&res.CPU, "cpus", 0, "CPU limit in `cores` (fractions allowed)")
	fs.IntVar(&res.PIDs, "pids", 0, "process limit")
	fs.Func("disk", "writable storage `SIZE` (/tmp and /workspace; bytes, or with K, M, G, T)", sizeFlag(&res.Disk))
	network := fs.String("network", "", "egress `mode`: none, allowlist or open (default: the provider's)")
	var allow []string
	fs.Func("allow", "a `host` (name, *.suffix, IP or CIDR) the allowlist network mode may reach (repeatable, or comma-separated)", func(v string) error {
		for _, h := range strings.Split(v, ",") {
			if h = strings.TrimSpace(h); h != "" {
				allow = append(allow, h)
			}
		}
		return nil
	})
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: perimeter run [flags] [--] CMD [ARGS...]")
		fmt.Fprintln(fs.Output(), "\nCreates a sandbox, runs CMD in it with its output streamed, and terminates")
		fmt.Fprintln(fs.Output(), "the sandbox. Flags go before CMD: what follows CMD is its own. Standard")
		fmt.Fprintln(fs.Output(), "input is passed when it is a pipe or a file, from a terminal only with -i.")
		fmt.Fprintln(fs.Output(), "The exit code is the command's (124 after --timeout, 128+N after signal N).")
		fmt.Fprintln(fs.Output(), "With --keep the sandbox outlives the command until perimeter rm ID (or its")
		fmt.Fprintln(fs.Output(), "--ttl); an isolated local sandbox is then held by a keeper process that")
		fmt.Fprintln(fs.Output(), "exits when the sandbox ends.")
		fs.PrintDefaults()
	}
	argv, code, ok := parseFlags(fs, args, 0)
	if !ok {
		return code
	}
	if len(argv) == 0 {
		fmt.Fprintln(stderr, "perimeter run: no command given")
		fs.Usage()
		return 2
	}
	spec, err := runSpec(res, *network, allow)
	if err == nil {
		err = cf.check()
	}
	switch {
	case err != nil:
	case *ttl < 0:
		err = fmt.Errorf("--ttl %v: must not be negative", *ttl)
	case *ttl > 0:
		if spec == nil {
			spec = &sandbox.Spec{}
		}
		spec.Timeout = *ttl
	}
	if err != nil {
		fmt.Fprintf(stderr, "perimeter run: %v\n", err)
		return 2
	}

	// The sandbox is terminated on every path out, Ctrl-C included (ctx is
	// done by then; close does not use it).
	ss, code := newSession(ctx, *provider, *keep, spec, stderr)
	if ss == nil {
		return code
	}
	defer ss.close(ctx, stderr)
	if cf.dir != "" {
		// A new sandbox has only its working directory: --dir makes the
		// one asked for, as docker run -w does.
		if err := ss.sb.MkdirAll(ctx, cf.dir, 0o755); err != nil {
			if interrupted(ctx) {
				return 130
			}
			printErr(stderr, "perimeter run", fmt.Errorf("--dir %s: %w", cf.dir, err))
			return 1
		}
	}
	return startAndWait(ctx, ss.sb, argv, &cf, stdin, stdout, stderr)
}

// startAndWait runs argv in sb with cf's settings, streaming its output, and
// returns the exit code a shell would give.
func startAndWait(ctx context.Context, sb *sandbox.Sandbox, argv []string, cf *cmdFlags, stdin io.Reader, stdout, stderr io.Writer) int {
	cmd := &sandbox.Cmd{Args: argv, Dir: cf.dir, Env: cf.env, Stdout: stdout, Stderr: stderr, Timeout: cf.timeout}
	switch {
	case cf.interactive:
		cmd.Stdin = stdin
	case stdin == nil || isTerminal(stdin) || emptyInput(stdin):
	case sb.Capabilities().Stdin:
		cmd.Stdin = stdin
	default:
		fmt.Fprintf(stderr, "perimeter: standard input not passed: %s sandboxes take none outside a terminal\n", sb.Provider().Name())
	}
	proc, err := sb.Start(ctx, cmd)
	if err != nil {
		if interrupted(ctx) {
			return 130
		}
		printErr(stderr, "perimeter", err)
		return 1
	}
	st, err := proc.Wait(context.WithoutCancel(ctx))
	switch {
	case err != nil && interrupted(ctx):
		fmt.Fprintln(stderr, "perimeter: interrupted; command killed")
		return 130
	case err != nil:
		printErr(stderr, "perimeter", err)
		return 1
	}
	return exitCode(st, stderr)
}

// emptyInput reports whether r is a file that can hold no input: a
// character device such as /dev/null (terminals are told apart before).
func emptyInput(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
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

// runSpec is the sandbox the run flags ask for; nil when they ask nothing.
func runSpec(res sandbox.Resources, network string, allow []string) (*sandbox.Spec, error) {
	if res.CPU < 0 || res.PIDs < 0 {
		return nil, errors.New("--cpus and --pids must not be negative")
	}
	spec := &sandbox.Spec{Resources: res}
	switch sandbox.NetworkMode(network) {
	case "":
		if len(allow) > 0 {
			network = string(sandbox.NetworkAllowlist)
		}
	case sandbox.NetworkNone, sandbox.NetworkAllowlist, sandbox.NetworkOpen:
	default:
		return nil, fmt.Errorf("--network %q: want none, allowlist or open", network)
	}
	if len(allow) > 0 && network != string(sandbox.NetworkAllowlist) {
		return nil, fmt.Errorf("--allow is for --network allowlist, not %q", network)
	}
	if network != "" {
		spec.Network = &sandbox.NetworkPolicy{Mode: sandbox.NetworkMode(network), Allow: allow}
	}
	if spec.Network == nil && res == (sandbox.Resources{}) {
		return nil, nil
	}
	return spec, nil
}

// sizeFlag parses a size in bytes, with an optional K, M, G or T suffix
// (powers of 1024; "KiB", "MB" and the like are read the same).
func sizeFlag(dst *int64) func(string) error {
	return func(v string) error {
		s := strings.ToUpper(strings.TrimSpace(v))
		s = strings.TrimSuffix(strings.TrimSuffix(s, "B"), "I")
		mult := int64(1)
		if n := len(s); n > 0 {
			if i := strings.IndexByte("KMGT", s[n-1]); i >= 0 {
				mult = int64(1) << (10 * (i + 1))
				s = s[:n-1]
			}
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 || n > (1<<62)/mult {
			return fmt.Errorf("want a positive size such as 512M or 2G, got %q", v)
		}
		*dst = n * mult
		return nil
	}
}
