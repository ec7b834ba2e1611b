// Command perimeter runs commands in sandboxes, checks providers against the
// conformance suite, executes agent tool calls, and runs the ends of the MCP
// tunnel.
//
// Usage:
//
//	perimeter run [--provider URL] [--env K=V]... [--dir D] [--keep] -- CMD [ARGS...]
//	perimeter exec [--provider URL] ID -- CMD [ARGS...]
//	perimeter cp [--provider URL] SRC DST      (one of them ID:PATH)
//	perimeter ls [--provider URL]
//	perimeter rm [--provider URL] ID...
//	perimeter conformance [--json] [--run REGEXP] URL
//	perimeter worker --environment-id ID [--provider URL] [--spec FILE] [--max-sessions N]
//	perimeter help [COMMAND]
//	perimeter --version
//
// The default provider is local (a workspace directory under the system's
// temporary directory). Each subcommand lives in its own file and registers
// itself in init.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/perimeter-sdk/perimeter/providers/local"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// command is one subcommand of the CLI.
type command struct {
	name    string
	aliases []string // other names for the same command
	summary string
	// run executes the subcommand with the arguments after its name and
	// returns the process's exit code. ctx is cancelled on SIGINT or SIGTERM.
	run func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int
}

var (
	commands = map[string]*command{} // by name
	aliases  = map[string]*command{} // by alias
)

// register adds c to the CLI; subcommand files call it from init.
func register(c *command) {
	for _, n := range append([]string{c.name}, c.aliases...) {
		if lookup(n) != nil {
			panic("perimeter: command registered twice: " + n)
		}
	}
	commands[c.name] = c
	for _, a := range c.aliases {
		aliases[a] = c
	}
}

// lookup returns the command with name or alias n, or nil.
func lookup(n string) *command {
	if c, ok := commands[n]; ok {
		return c
	}
	return aliases[n]
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
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help":
		usage(stdout)
		return 0
	case "help":
		if len(args) == 1 {
			usage(stdout)
			return 0
		}
		c := lookup(args[1])
		if c == nil {
			fmt.Fprintf(stderr, "perimeter help: unknown command %q\n\n", args[1])
			usage(stderr)
			return 2
		}
		// A command's help is what its -h prints, here on stdout.
		return c.run(ctx, append(slices.Clone(args[2:]), "-h"), stdin, stdout, stdout)
	case keeperArg:
		return runKeeper(ctx, stderr)
	case "-version", "--version", "version":
		fmt.Fprintf(stdout, "perimeter %s (%s, %s/%s)\n", version(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	}
	c := lookup(args[0])
	if c == nil {
		fmt.Fprintf(stderr, "perimeter: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	return c.run(ctx, args[1:], stdin, stdout, stderr)
}

// version is the module version the binary was built from ("devel" for a
// build of a work tree), with its VCS revision when the build recorded one.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	v := bi.Main.Version
	if v == "" || v == "(devel)" {
		v = "devel"
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = ", modified"
			}
		}
	}
	if v == "devel" && rev != "" {
		v += " " + rev[:min(12, len(rev))] + dirty
	}
	return v
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
		c := commands[n]
		label := strings.Join(append([]string{n}, c.aliases...), ", ")
		fmt.Fprintf(w, "  %-14s %s\n", label, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'perimeter help COMMAND' for a command's flags; 'perimeter --version' for the version.")
}

// parseFlags parses args with fs. Flags may follow positional arguments:
// parsing goes on past each one, except after "--" and once stopAfter
// positional arguments are collected (run's command and its arguments,
// say, which stopAfter 0 leaves alone; a negative stopAfter never stops).
// It returns the positional arguments, or ok false and the exit code when
// the command must end: 0 after -h or --help (fs's usage was printed), 2 on
// a bad flag (the flag package names it).
func parseFlags(fs *flag.FlagSet, args []string, stopAfter int) (pos []string, code int, ok bool) {
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, 0, false
			}
			return nil, 2, false
		}
		rest := fs.Args()
		consumed := len(args) - len(rest)
		if len(rest) == 0 || (consumed > 0 && args[consumed-1] == "--") || len(pos) == stopAfter {
			return append(pos, rest...), 0, true
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// flagErrCode is the exit code after fs.Parse failed: 0 when the user asked
// for help (-h, --help; the flag package printed the usage), 2 otherwise.
func flagErrCode(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

// apiNames translates the Go API names that generic errors of the SDK use
// into what a person at the command line typed or can type. It is compiled
// on first use: every start of the program, the sandbox init processes it
// re-executes included, would otherwise pay for it.
var apiNames = sync.OnceValue(func() []apiRewrite {
	return []apiRewrite{
		{regexp.MustCompile(` \(Capabilities\.\w+ is false\)`), ""},
		{regexp.MustCompile(` \(Cmd\.Args(\[0\])?\)`), ""},
		{regexp.MustCompile(`Cmd\.Args\[(\d+)\]`), "argument $1 of the command"},
		{regexp.MustCompile(`\bset Options\.AllowUnisolated \(URL (\S+)\)`), "open $1"},
		{regexp.MustCompile(`\bCmd\.Timeout\b`), "--timeout"},
		{regexp.MustCompile(`\bCmd\.Env\b`), "--env"},
		{regexp.MustCompile(`\bCmd\.Dir\b`), "--dir"},
		{regexp.MustCompile(`\bCmd\.Stdin\b`), "standard input"},
		{regexp.MustCompile(`\bCmd\.TTY\b`), "a terminal"},
		{regexp.MustCompile(`\b(Spec\.)?Resources\.Memory\b`), "--memory"},
		{regexp.MustCompile(`\b(Spec\.)?Resources\.CPU\b`), "--cpus"},
		{regexp.MustCompile(`\b(Spec\.)?Resources\.PIDs\b`), "--pids"},
		{regexp.MustCompile(`\b(Spec\.)?Resources\.Disk\b`), "--disk"},
		{regexp.MustCompile(`\b(Spec\.)?Resources\.GPU\b`), "GPUs"},
		{regexp.MustCompile(`\bSpec\.Resources\b`), "the resource flags"},
		{regexp.MustCompile(`\bNetworkPolicy\.Allow\b`), "--allow"},
		{regexp.MustCompile(`\bSpec\.Network\b`), "--network"},
		{regexp.MustCompile(`\bOptions\.Run\b`), "--run"},
		{regexp.MustCompile(`\bOptions\.Root\b`), "another directory in the provider URL"},
	}
})

type apiRewrite struct {
	re   *regexp.Regexp
	repl string
}

// errText is err's message for a person at a terminal: Go API names are
// replaced by the flags that set them.
func errText(err error) string {
	s := err.Error()
	for _, n := range apiNames() {
		s = n.re.ReplaceAllString(s, n.repl)
	}
	return s
}

// printErr prints err after prefix ("perimeter run", say) for a person.
func printErr(w io.Writer, prefix string, err error) {
	fmt.Fprintf(w, "%s: %s\n", prefix, errText(err))
}

// isTerminal reports whether f is a terminal: an *os.File on one (a
// character device such as /dev/null is not), or a value with a Terminal
// method (the tests' stand-in) that says so.
func isTerminal(f any) bool {
	switch t := f.(type) {
	case interface{ Terminal() bool }:
		return t.Terminal()
	case *os.File:
		_, err := unix.IoctlGetTermios(int(t.Fd()), unix.TCGETS)
		return err == nil
	}
	return false
}

// interrupted reports whether the command was cancelled by Ctrl-C or
// SIGTERM: whatever error followed is its consequence, not news.
func interrupted(ctx context.Context) bool { return ctx.Err() != nil }

// session is a provider and one sandbox made for a command.
type session struct {
	p    *sandbox.Provider
	sb   *sandbox.Sandbox
	keep bool
}

// newSession opens the provider at url and creates a sandbox from spec (nil
// for the provider's defaults). On failure it prints why to stderr and
// returns the exit code: 130, quietly, when ctx was cancelled (Ctrl-C), 1
// otherwise. If keep is set, the sandbox's ID is printed and close leaves
// it running; an isolated local sandbox is then held by a keeper process
// (keep.go).
func newSession(ctx context.Context, url string, keep bool, spec *sandbox.Spec, stderr io.Writer) (*session, int) {
	p, err := sandbox.Open(ctx, url)
	if err != nil {
		if interrupted(ctx) {
			return nil, 130
		}
		printErr(stderr, "perimeter", err)
		return nil, 1
	}
	if lp := isolatedLocal(p); keep && lp != nil {
		// It would end with this process: a keeper holds it.
		return keptSession(ctx, p, lp, url, spec, stderr)
	}
	sb, err := p.Create(ctx, spec)
	if err != nil {
		p.Close()
		if interrupted(ctx) {
			return nil, 130
		}
		printErr(stderr, "perimeter", err)
		return nil, 1
	}
	if keep {
		fmt.Fprintf(stderr, "perimeter: sandbox %s kept; use it with: perimeter exec|cp|rm [--provider URL] %s\n", sb.ID(), sb.ID())
	}
	return &session{p: p, sb: sb, keep: keep}, 0
}

// close terminates the sandbox (unless kept) and closes the provider. It
// works after ctx is done, as after Ctrl-C.
func (s *session) close(ctx context.Context, stderr io.Writer) {
	if !s.keep {
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := s.sb.Terminate(tctx); err != nil {
			printErr(stderr, "perimeter", err)
		}
	}
	s.p.Close()
}
