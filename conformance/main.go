package conformance

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// ErrUsage, wrapped in an Opener's error, reports a command line the opener
// cannot use (a missing URL, say): Command prints the usage and exits 2.
var ErrUsage = errors.New("usage")

// Opener returns the harness of a command-line run. args are the positional
// arguments left after the flags (a provider URL, say). The run closes the
// harness's Provider when it ends.
type Opener func(ctx context.Context, args []string) (*Harness, error)

// CommandOptions describes a command that runs the suite.
type CommandOptions struct {
	// Name is the command's name in its usage and errors; empty means the
	// program's base name.
	Name string
	// ArgsUsage names the positional arguments in the usage line, such as
	// "PROVIDER-URL"; empty means none.
	ArgsUsage string
	// Open opens the provider under test. Required.
	Open Opener
}

// Main runs the suite as a program's whole main function and exits with
// Command's exit code. An interrupt (SIGINT, SIGTERM) stops the run, which
// still terminates the sandboxes it created. A provider's conformance
// command is ten lines:
//
//	func main() {
//		conformance.Main(func(ctx context.Context, args []string) (*conformance.Harness, error) {
//			d, err := myprovider.NewDriver(ctx, nil)
//			if err != nil {
//				return nil, err
//			}
//			return &conformance.Harness{Provider: sandbox.NewProvider(d, nil)}, nil
//		})
//	}
func Main(open Opener) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Command(ctx, os.Args[1:], os.Stdout, os.Stderr, &CommandOptions{Open: open})
	stop()
	os.Exit(code)
}

// Command runs the suite as a command line asks and returns the exit code:
// 0 when no MUST check failed (a check that does not apply is not a
// failure), 1 when one did, sandboxes were left behind or the provider could
// not be opened, 2 for a bad command line, and 130 when ctx ended (an
// interrupt) before the report, which it then does not print. -h and --help
// print the usage and return 0. Flags may come before or after the
// positional arguments; "--" ends them. The perimeter CLI's "conformance"
// command is this function.
//
// Flags: --json (the report as JSON instead of a table), --run REGEXP (only
// the checks whose ID matches), --list (list the checks and exit),
// --check-timeout (each check's bound, default 3m), --parallel N (checks
// at once, default GOMAXPROCS up to 4), --network none|open (the egress of sandboxes
// whose check sets none: open for a provider whose port tunnels reach a
// sandbox from outside its network) and --busybox (the image is BusyBox:
// the harness serves HTTP with its httpd and connects with its nc, where
// the Opener set neither). The report goes to stdout; progress
// and errors to stderr.
func Command(ctx context.Context, args []string, stdout, stderr io.Writer, opts *CommandOptions) int {
	name := opts.Name
	if name == "" {
		name = filepath.Base(os.Args[0])
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	run := fs.String("run", "", "run only the checks whose ID matches this `regexp`")
	timeout := fs.Duration("check-timeout", 3*time.Minute, "time limit of each check")
	parallel := fs.Int("parallel", min(4, runtime.GOMAXPROCS(0)), "how many checks run at once")
	list := fs.Bool("list", false, "list the checks and exit")
	network := fs.String("network", "none", "egress of the sandboxes the checks create where a check sets none itself: `none` or open (for a provider whose port tunnels reach the sandbox from outside its network)")
	busybox := fs.Bool("busybox", false, "the sandboxes' image is BusyBox (no python3 or bash): serve HTTP with its httpd and test connections with its nc")
	usage := func() {
		fmt.Fprintf(stderr, "usage: %s [flags] %s\n", name, opts.ArgsUsage)
		fs.PrintDefaults()
	}
	fs.Usage = usage
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			return 2
		}
		rest := fs.Args()
		if len(rest) == 0 || (len(rest) < len(args) && args[len(args)-len(rest)-1] == "--") {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if *run != "" {
		re, err := regexp.Compile(*run)
		if err != nil {
			fmt.Fprintf(stderr, "%s: --run %q: %v\n", name, *run, err)
			return 2
		}
		if !slices.ContainsFunc(Checks(), func(c CheckInfo) bool { return re.MatchString(c.ID) }) {
			fmt.Fprintf(stderr, "%s: --run %q matches no check (--list lists them)\n", name, *run)
			return 2
		}
	}
	if *list {
		for _, ch := range Checks() {
			fmt.Fprintf(stdout, "%-38s %-6s %s\n", ch.ID, ch.Level, ch.Title)
		}
		return 0
	}
	if *network != "none" && *network != "open" {
		fmt.Fprintf(stderr, "%s: --network %q: want none or open\n", name, *network)
		return 2
	}
	if *parallel < 1 {
		fmt.Fprintf(stderr, "%s: --parallel %d: want at least 1\n", name, *parallel)
		return 2
	}
	if opts.Open == nil {
		fmt.Fprintf(stderr, "%s: no Opener: CommandOptions.Open is required\n", name)
		return 2
	}
	h, err := opts.Open(ctx, pos)
	if err != nil && ctx.Err() != nil {
		return 130
	}
	if errors.Is(err, ErrUsage) {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		usage()
		return 2
	}
	if err == nil && (h == nil || h.Provider == nil) {
		err = errors.New("the Opener returned no Harness.Provider")
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
	defer h.Provider.Close()
	if *busybox {
		hc := *h
		if hc.HTTPServer == nil {
			hc.HTTPServer = func(port int) []string { return []string{"httpd", "-f", "-p", strconv.Itoa(port), "-h", "."} }
		}
		if hc.Connect == nil {
			hc.Connect = func(host string, port int) []string { return []string{"nc", "-z", "-w", "5", host, strconv.Itoa(port)} }
		}
		h = &hc
	}
	if *network == "open" {
		base := h.Spec
		hc := *h
		hc.Spec = func() *sandbox.Spec {
			var s sandbox.Spec
			if base != nil {
				if b := base(); b != nil {
					s = *b
				}
			}
			s.Network = &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}
			return &s
		}
		h = &hc
	}

	total := len(Checks())
	n := 0
	tty := isTerminal(stderr)
	ropts := &Options{
		Run:      *run,
		Timeout:  *timeout,
		Parallel: *parallel,
		OnStart: func(ci CheckInfo) {
			n++
			if tty {
				fmt.Fprintf(stderr, "\r\033[K[%d/%d] %s", n, total, ci.ID)
			}
		},
		OnResult: func(r Result) {
			if !tty && ctx.Err() == nil {
				verdict := string(r.Outcome)
				if r.Outcome == Fail {
					verdict = "FAIL"
				}
				fmt.Fprintf(stderr, "%s %s (%v)\n", verdict, r.ID, r.Duration.Round(time.Millisecond))
			}
		},
	}
	rep, err := RunChecks(ctx, h, ropts)
	if tty {
		fmt.Fprint(stderr, "\r\033[K")
	}
	if ctx.Err() != nil {
		return 130
	}
	if rep == nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}
	if *asJSON {
		rep.WriteJSON(stdout)
	} else {
		rep.WriteTable(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
	if !rep.OK() {
		return 1
	}
	return 0
}

// isTerminal reports whether w is a character device, such as a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
