package toolexec

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// Bash tool defaults.
const (
	// DefaultBashTimeout bounds each bash call unless BashOptions.Timeout
	// says otherwise.
	DefaultBashTimeout = 120 * time.Second
	// DefaultBashOutputLimit is how many bytes of a call's output are kept
	// (the tail) unless BashOptions.OutputLimit says otherwise.
	DefaultBashOutputLimit = 100 << 10
)

// BashOptions configures the bash tool.
type BashOptions struct {
	// Timeout bounds each call; zero means DefaultBashTimeout. When it
	// passes, the shell's whole process tree is killed and the next call
	// gets a fresh shell.
	Timeout time.Duration
	// OutputLimit is how many bytes of a call's output are kept, the last
	// ones; zero means DefaultBashOutputLimit.
	OutputLimit int
	// Env is added to the shell's environment. The shell starts with the
	// sandbox's own environment (what the provider gives every command), then
	// [NonInteractiveEnv], then this map (which may override those), then
	// PS1="", PS2="", TERM=dumb, HISTFILE="". Nothing is taken from the host
	// process's environment, and keys starting with ANTHROPIC_ are dropped
	// from this map, so API keys cannot reach the model's commands.
	Env map[string]string
	// Dir is the shell's starting directory; empty means the sandbox's
	// working directory.
	Dir string
	// Shell is the argv that starts the shell; nil means
	// ["/bin/bash", "--noprofile", "--norc"]. It must be bash: the session
	// starts it with "-c" to prepare the shell's input and output, which
	// then re-executes it with "-s" to read commands from its stdin.
	Shell []string
}

// BashInput is the bash tool's input. TimeoutMS is not part of
// bash_20250124; it is the optional per-call timeout of the Managed Agents
// toolset's bash (agent_toolset_20260401), honoured when positive.
type BashInput struct {
	Command   *string `json:"command,omitempty"`
	Restart   bool    `json:"restart,omitempty"`
	TimeoutMS int64   `json:"timeout_ms,omitempty"`
}

// NonInteractiveEnv is added to the bash tool's shell so that programs which
// would wait for a person (a pager, a credential prompt, an editor, a
// package's configuration questions) do not hold a call until its timeout.
// Commands' output is a pipe in every mode, so most programs do not page
// anyway; these cover the ones that page or prompt regardless. Values in
// BashOptions.Env override them.
var NonInteractiveEnv = map[string]string{
	"PAGER":               "cat",
	"GIT_PAGER":           "cat", // also overrides git config core.pager
	"MANPAGER":            "cat",
	"SYSTEMD_PAGER":       "cat",
	"GH_PAGER":            "cat",
	"AWS_PAGER":           "",
	"GIT_TERMINAL_PROMPT": "0",    // fail instead of asking for credentials
	"GIT_EDITOR":          "true", // commit/merge/rebase take their default message
	"DEBIAN_FRONTEND":     "noninteractive",
}

type bashTool struct {
	target Target
	opts   BashOptions

	mu   sync.Mutex // serialises calls: one shell, one command at a time
	sess shellSession
}

// shellSession runs commands with state kept between calls.
type shellSession interface {
	// exec runs command and returns its cleaned output and exit code, or
	// errTimedOut or a *shellExit (with the partial output), or another
	// failure.
	exec(ctx context.Context, command string, timeout time.Duration) (string, int, error)
	// close ends the session and releases what it holds.
	close()
}

func newBashTool(target Target, opts BashOptions) *bashTool {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultBashTimeout
	}
	if opts.OutputLimit <= 0 {
		opts.OutputLimit = DefaultBashOutputLimit
	}
	if opts.Shell == nil {
		opts.Shell = []string{"/bin/bash", "--noprofile", "--norc"}
	}
	return &bashTool{target: target, opts: opts}
}

func (t *bashTool) run(ctx context.Context, input json.RawMessage) (string, bool, error) {
	var in BashInput
	if msg, bad := decode("bash", input, &in); bad {
		return msg, true, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if in.Restart {
		t.stop()
		if in.Command == nil || *in.Command == "" {
			return "bash session restarted", false, nil
		}
	}
	if in.Command == nil || *in.Command == "" {
		return "bash: command is required", true, nil
	}
	if t.sess == nil {
		caps := t.target.Capabilities()
		if caps.Stdin || caps.PTY {
			s, err := startBash(ctx, t.target, t.opts)
			if err != nil {
				return "bash: starting the shell: " + infraMessage(err), true, err
			}
			t.sess = s
		} else {
			s, err := newStatelessSession(t.target, t.opts)
			if err != nil {
				return "bash: starting the shell: " + infraMessage(err), true, err
			}
			t.sess = s
		}
	}
	timeout := t.opts.Timeout
	if in.TimeoutMS > 0 {
		timeout = time.Duration(in.TimeoutMS) * time.Millisecond
	}
	out, code, err := t.sess.exec(ctx, *in.Command, timeout)
	if err != nil {
		// The shell's state is unknown (a command may still be running and
		// its output and sentinel would land in the next call): always
		// start afresh.
		t.stop()
		if errors.Is(err, errTimedOut) {
			return fmt.Sprintf("%s\n[timed out after %s]\nsession restarted after timeout", out, seconds(timeout)), true, nil
		}
		var exit *shellExit
		if errors.As(err, &exit) {
			msg := "bash: " + exit.Error() + "; the session was restarted, so the working directory, variables and functions are reset"
			if out != "" {
				msg = out + "\n" + msg
			}
			return msg, true, nil
		}
		var te toolErr
		if errors.As(err, &te) {
			return "bash: " + err.Error(), true, nil
		}
		// The host gets the details as the Go error; the model its kind.
		return "bash: " + infraMessage(err) + "; the session was restarted", true, err
	}
	if code != 0 {
		return fmt.Sprintf("%s\nexit code: %d", out, code), true, nil
	}
	return out, false, nil
}

// stop ends the session, if any. t.mu is held.
func (t *bashTool) stop() {
	if t.sess != nil {
		t.sess.close()
		t.sess = nil
	}
}

func (t *bashTool) close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stop()
	return nil
}

var errTimedOut = errors.New("command timed out")

// shellExit reports that the shell itself ended during a call (the command
// ran exit, or set -e took effect, or it was killed).
type shellExit struct {
	status sandbox.ExitStatus
	err    error // waiting for the shell failed: its status is unknown
}

func (e *shellExit) Error() string {
	if e.err != nil {
		return "the shell ended: " + e.err.Error()
	}
	if e.status.Signal != "" {
		return fmt.Sprintf("the shell was killed by %s", e.status.Signal)
	}
	return fmt.Sprintf("the shell exited with code %d", e.status.Code)
}

// seconds formats a timeout as the model reads it: "120s", "1.5s".
func seconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s"
}

// bashSession is one long-lived shell process in the sandbox. Commands are
// written to its stdin (a pipe, or a PTY where the sandbox offers one) and
// framed by a per-call random sentinel that carries the exit code.
//
// In both modes the shell is started with "-c" and a short script that
// prepares it, then re-executes itself as "bash -s": a non-interactive shell
// reading commands from its stdin, named "bash" in its messages. On a PTY the
// script first puts the terminal in raw mode without echo, and gives the
// final shell (and so every command) a pipe to a cat process on the
// terminal as stdout and stderr: commands see the same pipe as in the
// pipe mode, so nothing pages or prompts on the terminal and the output does
// not depend on the provider, while the terminal carries the shell's input.
type bashSession struct {
	cancel context.CancelFunc
	stdin  *io.PipeWriter
	out    *sessionOutput
	tty    bool
	limit  int
	exited chan struct{} // closed when the shell has exited
	status *shellExit    // how the shell ended, once exited is closed
}

func startBash(ctx context.Context, target Target, opts BashOptions) (*bashSession, error) {
	env := shellEnv(opts)
	ready, err := newSentinel()
	if err != nil {
		return nil, err
	}
	// The final shell: argv[0] "bash" names it so in its messages
	// ("bash: line 1: x: command not found") whatever the path.
	final := "exec -a bash " + shellWords(opts.Shell) + " -s"
	tty := target.Capabilities().PTY
	script := final
	if tty {
		// Raw mode without echo: what we write reaches the shell byte for
		// byte (no line-length limit, no signal or flow-control characters,
		// no CR translation) and is not echoed back into the output. The
		// ready line, written through the pipe once it exists, tells the
		// session that input written from now on is read raw.
		script = fmt.Sprintf(`stty raw -echo || exit 97
exec {__perimeter_out}> >(exec cat) || exit 98
printf '%%s''%%s\n' %s %s >&$__perimeter_out
%s >&$__perimeter_out 2>&$__perimeter_out {__perimeter_out}>&-`, shellQuote(ready[:len(ready)/2]), shellQuote(ready[len(ready)/2:]), final)
	}

	// The shell outlives this call: its life is bounded by its own context,
	// cancelled by close. Values (not deadlines) of ctx are kept.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	pr, pw := io.Pipe()
	out := newSessionOutput(opts.OutputLimit + 4096)
	cmd := &sandbox.Cmd{
		Args:   append(slices.Clone(opts.Shell), "-c", script),
		Dir:    opts.Dir,
		Env:    env,
		Stdin:  pr,
		Stdout: out,
		Stderr: out,
	}
	if tty {
		// A standard size for programs that ask the terminal for it.
		cmd.TTY = &sandbox.TTY{Rows: 24, Cols: 80, Term: "dumb"}
	}
	p, err := target.Start(sctx, cmd)
	if err != nil {
		cancel()
		pw.Close()
		return nil, err
	}
	s := &bashSession{cancel: cancel, stdin: pw, out: out, tty: tty, limit: opts.OutputLimit, exited: make(chan struct{})}
	go func() {
		// Owned by the session: ends when the shell exits, which close
		// guarantees by cancelling sctx.
		st, err := p.Wait(context.Background())
		s.status = &shellExit{status: st, err: err}
		pr.CloseWithError(io.ErrClosedPipe)
		close(s.exited)
		out.wake()
	}()
	if tty {
		if err := s.waitReady(ctx, ready); err != nil {
			s.close()
			return nil, fmt.Errorf("setting up the terminal: %w", err)
		}
	}
	return s, nil
}

// waitReady waits for the PTY set-up script's ready line.
func (s *bashSession) waitReady(ctx context.Context, ready string) error {
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	for {
		buf, _ := s.out.snapshot()
		if i := bytes.Index(buf, []byte(ready+"\n")); i >= 0 {
			s.out.reset()
			return nil
		}
		select {
		case <-s.out.notify:
		case <-s.exited:
			buf, _ := s.out.snapshot()
			if bytes.Contains(buf, []byte(ready+"\n")) {
				continue // ready, then exited: the next call reports it
			}
			return fmt.Errorf("%w: %s", s.status, strings.TrimSpace(string(buf)))
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			buf, _ := s.out.snapshot()
			return fmt.Errorf("no ready line after 30s: %q", buf)
		}
	}
}

// shellEnv is the environment the shell is started with (added to the
// sandbox's own): NonInteractiveEnv, the host's choice minus ANTHROPIC_*
// keys, and the variables that keep the output clean.
func shellEnv(opts BashOptions) map[string]string {
	env := maps.Clone(NonInteractiveEnv)
	for k, v := range opts.Env {
		if strings.HasPrefix(k, "ANTHROPIC_") {
			continue
		}
		env[k] = v
	}
	env["PS1"], env["PS2"], env["TERM"], env["HISTFILE"] = "", "", "dumb", ""
	return env
}

// exec runs command in the shell and returns its cleaned output and exit
// code.
func (s *bashSession) exec(ctx context.Context, command string, timeout time.Duration) (string, int, error) {
	sentinel, err := newSentinel()
	if err != nil {
		return "", -1, err
	}
	half := len(sentinel) / 2
	// eval keeps cd, variables and functions in the shell, and a syntax
	// error in command is eval's failure, not the shell's. Commands that
	// read stdin (cat, read) get EOF rather than swallowing the next command
	// or hanging. The sentinel is written as two adjacent quoted halves so
	// that no echo of this line can contain it whole.
	line := fmt.Sprintf("eval %s </dev/null 2>&1; printf '\\n%s''%s%%d\\n' $?\n", shellQuote(command), sentinel[:half], sentinel[half:])
	s.out.reset()
	// The write may block while the shell is busy; it runs beside the wait
	// so the timeout still applies. Closing the session unblocks it.
	written := make(chan error, 1)
	go func() {
		_, err := io.WriteString(s.stdin, line)
		written <- err
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	marker := []byte("\n" + sentinel)
	find := func() (string, int, bool) {
		buf, dropped := s.out.snapshot()
		i := bytes.Index(buf, marker)
		if i < 0 {
			return "", 0, false
		}
		rest := buf[i+len(marker):]
		j := bytes.IndexByte(rest, '\n')
		if j < 0 {
			return "", 0, false
		}
		code, err := strconv.Atoi(strings.TrimSpace(string(rest[:j])))
		if err != nil {
			code = -1 // corrupt framing is a failure, never a success
		}
		return clean(buf[:i], dropped, s.limit), code, true
	}
	partial := func() string {
		buf, dropped := s.out.snapshot()
		return clean(buf, dropped, s.limit)
	}
	for {
		if out, code, ok := find(); ok {
			return out, code, nil
		}
		select {
		case <-s.out.notify:
		case err := <-written:
			written = nil
			if err != nil && !errors.Is(err, io.ErrClosedPipe) {
				return "", -1, fmt.Errorf("writing to the shell: %w", err)
			}
			// A closed pipe means the shell has exited: reported below.
		case <-s.exited:
			if out, code, ok := find(); ok {
				return out, code, nil
			}
			return partial(), -1, s.status
		case <-ctx.Done():
			return "", -1, ctx.Err()
		case <-timer.C:
			return partial(), -1, errTimedOut
		}
	}
}

var ansiEscape = regexp.MustCompile(`\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)`)

// clean turns raw shell output into the tool's text, the same in every
// mode: ANSI escapes removed, CRLF made LF and stray CRs dropped (as the
// reference executor does on its terminal), leading newlines trimmed, and
// the tail kept with a line saying how much was dropped when over the limit.
// dropped counts output bytes already dropped before b.
func clean(b []byte, dropped int64, limit int) string {
	out := ansiEscape.ReplaceAll(b, nil)
	out = bytes.ReplaceAll(out, []byte("\r\n"), []byte("\n"))
	out = bytes.ReplaceAll(out, []byte("\r"), nil)
	if dropped == 0 {
		out = bytes.TrimLeft(out, "\n")
	}
	if len(out) > limit {
		dropped += int64(len(out) - limit)
		out = out[len(out)-limit:]
	}
	if dropped > 0 {
		return fmt.Sprintf("[output truncated: the first %d bytes were dropped; the last %d bytes follow]\n", dropped, len(out)) + string(out)
	}
	return string(out)
}

// close kills the shell's process tree (by cancelling the context it was
// started with), closes its stdin and waits for it to be gone.
func (s *bashSession) close() {
	s.cancel()
	s.stdin.Close()
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		// A provider that cannot confirm the kill; the waiter goroutine
		// still ends when the process does.
	}
}

func newSentinel() (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return "__PERIMETER_" + hex.EncodeToString(b[:]) + "_DONE__", nil
}

// shellWords quotes argv for a POSIX shell.
func shellWords(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}

// shellQuote quotes s for a POSIX shell as one word.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// sessionOutput collects a shell's output for the current call, keeping the
// last limit bytes, and wakes the waiting call on every write.
type sessionOutput struct {
	mu      sync.Mutex
	buf     []byte
	limit   int
	dropped int64 // bytes of this call's output dropped from the front
	notify  chan struct{}
}

func newSessionOutput(limit int) *sessionOutput {
	return &sessionOutput{limit: limit, notify: make(chan struct{}, 1)}
}

func (o *sessionOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	o.buf = append(o.buf, p...)
	if over := len(o.buf) - o.limit; over > 0 {
		o.buf = append(o.buf[:0], o.buf[over:]...)
		o.dropped += int64(over)
	}
	o.mu.Unlock()
	o.wake()
	return len(p), nil
}

func (o *sessionOutput) wake() {
	select {
	case o.notify <- struct{}{}:
	default:
	}
}

func (o *sessionOutput) reset() {
	o.mu.Lock()
	o.buf = o.buf[:0]
	o.dropped = 0
	o.mu.Unlock()
}

func (o *sessionOutput) snapshot() ([]byte, int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return bytes.Clone(o.buf), o.dropped
}
