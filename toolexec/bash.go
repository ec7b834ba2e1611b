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
	// sandbox's own environment (what the provider gives every command), this
	// map, and PS1="", PS2="", TERM=dumb, HISTFILE="". Nothing is taken from
	// the host process's environment, and keys starting with ANTHROPIC_ are
	// dropped from this map, so API keys cannot reach the model's commands.
	Env map[string]string
	// Dir is the shell's starting directory; empty means the sandbox's
	// working directory.
	Dir string
	// Shell is the argv that starts the shell; nil means
	// ["/bin/bash", "--noprofile", "--norc"]. On a PTY, "/dev/stdin" is
	// appended so that the shell reads the terminal as a script.
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

type bashTool struct {
	target Target
	opts   BashOptions

	mu   sync.Mutex // serialises calls: one shell, one command at a time
	sess shellSession
}

// shellSession runs commands with state kept between calls.
type shellSession interface {
	// exec runs command and returns its cleaned output and exit code, or
	// errTimedOut (with the partial output), errShellDied, or another
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
				return "bash: " + err.Error(), true, err
			}
			t.sess = s
		} else {
			s, err := newStatelessSession(t.target, t.opts)
			if err != nil {
				return "bash: " + err.Error(), true, err
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
			return out + "\n[timed out]\nsession restarted after timeout", true, nil
		}
		var te toolErr
		if errors.Is(err, errShellDied) || errors.As(err, &te) {
			return "bash: " + err.Error(), true, nil
		}
		return "bash: " + err.Error(), true, err
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

var (
	errTimedOut  = errors.New("command timed out")
	errShellDied = errors.New("the shell exited")
)

// bashSession is one long-lived shell process in the sandbox. Commands are
// written to its stdin (a pipe, or a PTY where the sandbox offers one) and
// framed by a per-call random sentinel that carries the exit code.
type bashSession struct {
	cancel context.CancelFunc
	stdin  *io.PipeWriter
	out    *sessionOutput
	tty    bool
	limit  int
	exited chan struct{} // closed when the shell has exited
}

func startBash(ctx context.Context, target Target, opts BashOptions) (*bashSession, error) {
	env := shellEnv(opts)

	// The shell outlives this call: its life is bounded by its own context,
	// cancelled by close. Values (not deadlines) of ctx are kept.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	pr, pw := io.Pipe()
	out := newSessionOutput(opts.OutputLimit + 4096)
	cmd := &sandbox.Cmd{
		Args:   opts.Shell,
		Dir:    opts.Dir,
		Env:    env,
		Stdin:  pr,
		Stdout: out,
		Stderr: out,
	}
	tty := target.Capabilities().PTY
	if tty {
		// The shell reads its commands as a script from the terminal, so it
		// is not interactive: no prompts, job notices, history or line
		// editor (whose redisplay makes long commands crawl).
		cmd.Args = append(slices.Clone(opts.Shell), "/dev/stdin")
		cmd.TTY = &sandbox.TTY{Rows: 50, Cols: 500, Term: "dumb"}
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
		p.Wait(context.Background())
		pr.CloseWithError(errShellDied)
		close(s.exited)
		out.wake()
	}()
	if tty {
		// Raw mode without echo: what we write reaches the shell byte for
		// byte (no line-length limit, no signal or flow-control characters,
		// no CR translation) and is not echoed back into the output.
		out, code, err := s.run(ctx, "stty raw -echo", 30*time.Second, false)
		if err == nil && code != 0 {
			err = fmt.Errorf("stty exited with code %d: %s", code, strings.TrimSpace(out))
		}
		if err != nil {
			s.close()
			return nil, fmt.Errorf("setting up the terminal: %w", err)
		}
	}
	return s, nil
}

// shellEnv is the environment the shell is started with (added to the
// sandbox's own): the host's choice minus ANTHROPIC_* keys, and the
// variables that keep the output clean.
func shellEnv(opts BashOptions) map[string]string {
	env := map[string]string{}
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
	return s.run(ctx, command, timeout, true)
}

func (s *bashSession) run(ctx context.Context, command string, timeout time.Duration, devNull bool) (string, int, error) {
	sentinel, err := newSentinel()
	if err != nil {
		return "", -1, err
	}
	half := len(sentinel) / 2
	redir := ""
	if devNull {
		// Commands that read stdin (cat, read) get EOF rather than
		// swallowing the next command or hanging.
		redir = " </dev/null"
	}
	// eval keeps cd, variables and functions in the shell, and a syntax
	// error in command is eval's failure, not the shell's. The sentinel is
	// written as two adjacent quoted halves so that no echo of this line can
	// contain it whole.
	line := fmt.Sprintf("eval %s%s 2>&1; printf '\\n%s''%s%%d\\n' $?\n", shellQuote(command), redir, sentinel[:half], sentinel[half:])
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
		buf, truncated := s.out.snapshot()
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
		return clean(buf[:i], truncated, s.tty, s.limit), code, true
	}
	for {
		if out, code, ok := find(); ok {
			return out, code, nil
		}
		select {
		case <-s.out.notify:
		case err := <-written:
			written = nil
			if err != nil {
				if errors.Is(err, errShellDied) || errors.Is(err, io.ErrClosedPipe) {
					return "", -1, errShellDied
				}
				return "", -1, fmt.Errorf("writing to the shell: %w", err)
			}
		case <-s.exited:
			if out, code, ok := find(); ok {
				return out, code, nil
			}
			return "", -1, errShellDied
		case <-ctx.Done():
			return "", -1, ctx.Err()
		case <-timer.C:
			buf, truncated := s.out.snapshot()
			return clean(buf, truncated, s.tty, s.limit), -1, errTimedOut
		}
	}
}

var ansiEscape = regexp.MustCompile(`\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)`)

// clean turns raw shell output into the tool's text: ANSI escapes removed
// (on a terminal), CRLF made LF and stray CRs dropped, leading newlines
// trimmed, and the tail kept with a marker when over the limit.
func clean(b []byte, truncated, tty bool, limit int) string {
	out := b
	if tty {
		out = ansiEscape.ReplaceAll(out, nil)
		out = bytes.ReplaceAll(out, []byte("\r\n"), []byte("\n"))
		out = bytes.ReplaceAll(out, []byte("\r"), nil)
	}
	out = bytes.TrimLeft(out, "\n")
	if len(out) > limit {
		out = out[len(out)-limit:]
		truncated = true
	}
	if truncated {
		return "[output truncated]\n" + string(out)
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

// shellQuote quotes s for a POSIX shell as one word.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// sessionOutput collects a shell's output for the current call, keeping the
// last limit bytes, and wakes the waiting call on every write.
type sessionOutput struct {
	mu        sync.Mutex
	buf       []byte
	limit     int
	truncated bool
	notify    chan struct{}
}

func newSessionOutput(limit int) *sessionOutput {
	return &sessionOutput{limit: limit, notify: make(chan struct{}, 1)}
}

func (o *sessionOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	o.buf = append(o.buf, p...)
	if over := len(o.buf) - o.limit; over > 0 {
		o.buf = append(o.buf[:0], o.buf[over:]...)
		o.truncated = true
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
	o.truncated = false
	o.mu.Unlock()
}

func (o *sessionOutput) snapshot() ([]byte, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return bytes.Clone(o.buf), o.truncated
}
