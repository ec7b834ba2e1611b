package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
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
	spec, err := runSpec(res, *network, allow)
	if err != nil {
		fmt.Fprintf(stderr, "perimeter run: %v\n", err)
		return 2
	}

	// The sandbox is terminated on every path out, Ctrl-C included (ctx is
	// done by then; close does not use it).
	ss, ok := newSpecSession(ctx, *provider, *keep, spec, stderr)
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

// newSpecSession is newSession creating the sandbox from spec.
func newSpecSession(ctx context.Context, url string, keep bool, spec *sandbox.Spec, stderr io.Writer) (*session, bool) {
	if spec == nil {
		return newSession(ctx, url, keep, stderr)
	}
	p, err := sandbox.Open(ctx, url)
	if err != nil {
		fmt.Fprintf(stderr, "perimeter: %v\n", err)
		return nil, false
	}
	sb, err := p.Create(ctx, spec)
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
