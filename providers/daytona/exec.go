package daytona

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/perimeter-sdk/perimeter/internal/httpretry"

	"github.com/coder/websocket"
	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
	"github.com/perimeter-sdk/perimeter/sandbox/driver/driverutil"
)

var signalNumbers = map[sandbox.Signal]int{
	sandbox.SIGHUP: 1, sandbox.SIGINT: 2, sandbox.SIGQUIT: 3, sandbox.SIGKILL: 9,
	sandbox.SIGUSR1: 10, sandbox.SIGUSR2: 12, sandbox.SIGTERM: 15,
}

// outerScript starts the job in a new session (so its process group is
// its own and can be signalled as a whole) and waits for it. The
// subshell is never a process-group leader, so setsid needs no fork. An
// image without setsid runs the job in the session's group and signals
// are refused.
const outerScript = `j=$1; shift
if command -v setsid >/dev/null 2>&1; then
  ( exec setsid sh -c "$j" perimeter "$@" )
else
  PERIMETER_NO_SETSID=1 sh -c "$j" perimeter "$@"
fi`

// jobScript reports its process group on stderr (the adapter strips the
// line), enters the directory and runs the argv: with stdin decoded from
// the framed input (a line with a length, then that many base64 bytes; a
// length of 0 is the end), or with /dev/null.
const jobScript = `m=$1; d=$2; shift 2
if [ -n "$PERIMETER_NO_SETSID" ]; then unset PERIMETER_NO_SETSID; g=0; else g=$$; fi
printf '\036perimeter-pgid %s\036\n' "$g" >&2
cd "$d" || exit 1
if [ "$m" = 1 ]; then
  while IFS= read -r n; do
    [ -z "$n" ] && continue
    [ "$n" -gt 0 ] 2>/dev/null || break
    head -c "$n" | base64 -d || exit 1
  done | exec "$@"
else
  exec "$@" </dev/null
fi`

const pgidPrefix = "\x1eperimeter-pgid "

// stdinChunk is how many bytes of stdin one input request carries.
const stdinChunk = 48 << 10

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// commandText is the text a session runs for cmd in dir.
func commandText(cmd *sandbox.Cmd, dir string) string {
	var b strings.Builder
	keys := make([]string, 0, len(cmd.Env))
	for k := range cmd.Env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b.WriteString(k + "=" + shellQuote(cmd.Env[k]) + " ")
	}
	mode := "0"
	if cmd.Stdin != nil {
		mode = "1"
	}
	b.WriteString("sh -c " + shellQuote(outerScript) + " perimeter " + shellQuote(jobScript) + " " + mode + " " + shellQuote(dir))
	for _, a := range cmd.Args {
		b.WriteString(" " + shellQuote(a))
	}
	return b.String()
}

// validateCmd checks what Daytona needs beyond the portable layer's
// checks: a terminal of at most 1000 rows and columns, and environment
// names the shell can assign.
func (s *Sandbox) validateCmd(op string, cmd *sandbox.Cmd) error {
	bad := func(kind error, msg string) error { return sandbox.Errorf(providerName, s.id, op, kind, "%s", msg) }
	if cmd.TTY != nil && (cmd.TTY.Rows > 1000 || cmd.TTY.Cols > 1000) {
		return bad(sandbox.ErrInvalidArgument, fmt.Sprintf("Cmd.TTY size %dx%d (1..1000 each)", cmd.TTY.Rows, cmd.TTY.Cols))
	}
	for k := range cmd.Env {
		if !validEnvName(k) {
			return bad(sandbox.ErrInvalidArgument, fmt.Sprintf("Cmd.Env %q is not a shell variable name", k))
		}
	}
	return nil
}

// dir resolves and checks Cmd.Dir.
func (s *Sandbox) cmdDir(ctx context.Context, op, dir string) (string, error) {
	if dir == "" {
		return s.workDir(ctx, op)
	}
	p, err := s.name(ctx, op, dir)
	if err != nil {
		return "", err
	}
	fi, err := s.Stat(ctx, p)
	if err != nil {
		return "", relabel(err, op)
	}
	if !fi.IsDir() {
		return "", sandbox.Errorf(providerName, s.id, op, sandbox.ErrInvalidArgument, "%s", "Cmd.Dir "+dir+" is not a directory")
	}
	return p, nil
}

// Start runs cmd.Args through a toolbox session: the command runs
// asynchronously (POST …/exec {runAsync}), its output is followed over
// the logs WebSocket with stdout and stderr apart, stdin is sent with
// POST …/input, and the exit code is read from the command's record.
// With Cmd.TTY it runs on a PTY session instead.
func (s *Sandbox) Start(ctx context.Context, cmd *sandbox.Cmd) (driver.Process, error) {
	const op = "exec"
	if err := s.validateCmd(op, cmd); err != nil {
		return nil, err
	}
	dir, err := s.cmdDir(ctx, op, cmd.Dir)
	if err != nil {
		return nil, err
	}
	if cmd.TTY != nil {
		return s.startPTY(ctx, cmd, dir)
	}
	sid, err := s.session(ctx, op)
	if err != nil {
		return nil, err
	}
	var res wireSessionExecResult
	err = s.call(ctx, op, func(base string) error {
		return s.p.c.toolbox(ctx, base, http.MethodPost, "/process/session/"+url.PathEscape(sid)+"/exec", nil,
			wireSessionExec{Command: commandText(cmd, dir), RunAsync: true}, &res)
	})
	if err != nil {
		s.dropSession(sid)
		return nil, err
	}
	if res.CmdID == "" {
		s.dropSession(sid)
		return nil, sandbox.Errorf(providerName, s.id, op, sandbox.ErrUnavailable, "the daemon returned no command ID")
	}
	p := &process{
		s: s, sid: sid, cmdID: res.CmdID, base: s.toolboxBase(),
		stdout: cmd.Stdout, stderr: cmd.Stderr,
		done: make(chan struct{}), pgidKnown: make(chan struct{}),
	}
	if p.stdout == nil {
		p.stdout = io.Discard
	}
	if p.stderr == nil {
		p.stderr = io.Discard
	}
	life, stopLife := context.WithCancel(context.WithoutCancel(ctx))
	p.stopLife = stopLife
	go p.run(life)
	go p.watch(ctx, cmd.Timeout)
	if cmd.Stdin != nil {
		go p.feed(life, cmd.Stdin)
	}
	return p, nil
}

// session takes an idle session of this handle or creates one. Each
// running command has a session of its own.
func (s *Sandbox) session(ctx context.Context, op string) (string, error) {
	s.mu.Lock()
	if n := len(s.sessions); n > 0 {
		sid := s.sessions[n-1]
		s.sessions = s.sessions[:n-1]
		s.mu.Unlock()
		return sid, nil
	}
	s.mu.Unlock()
	var b [8]byte
	rand.Read(b[:])
	sid := "perimeter-" + hex.EncodeToString(b[:])
	err := s.call(ctx, op, func(base string) error {
		return s.p.c.toolbox(ctx, base, http.MethodPost, "/process/session", nil, wireCreateSession{SessionID: sid}, nil)
	})
	if err != nil {
		return "", err
	}
	return sid, nil
}

// releaseSession returns an idle session for the next command.
func (s *Sandbox) releaseSession(sid string) {
	s.mu.Lock()
	if !s.terminated && len(s.sessions) < 16 {
		s.sessions = append(s.sessions, sid)
		s.mu.Unlock()
		return
	}
	terminated := s.terminated
	s.mu.Unlock()
	if !terminated {
		s.deleteSession(sid)
	}
}

// dropSession deletes a session whose state is not known to be clean.
func (s *Sandbox) dropSession(sid string) { s.deleteSession(sid) }

func (s *Sandbox) deleteSession(sid string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s.p.c.toolbox(ctx, s.toolboxBase(), http.MethodDelete, "/process/session/"+url.PathEscape(sid), nil, nil, nil)
}

// process is a command running in a session.
type process struct {
	s              *Sandbox
	sid, cmdID     string
	base           string
	stdout, stderr io.Writer
	stopLife       context.CancelFunc

	pgidOnce  sync.Once
	pgidKnown chan struct{}
	pgid      int

	mu       sync.Mutex
	sent     sandbox.Signal // the last signal sent by Signal
	timedOut bool
	ctxErr   error // Start's ctx ended the process

	done   chan struct{}
	status sandbox.ExitStatus
	err    error
}

var _ driver.Process = (*process)(nil)

// As reaches no driver-specific type: it reports false.
func (p *process) As(any) bool { return false }

func (p *process) cmdPath(rest string) string {
	return "/process/session/" + url.PathEscape(p.sid) + "/command/" + url.PathEscape(p.cmdID) + rest
}

// setPgid records the job's process group (0: unknown).
func (p *process) setPgid(g int) {
	p.pgidOnce.Do(func() {
		p.pgid = g
		close(p.pgidKnown)
	})
}

// run follows the output, reads the exit code and finishes the process.
func (p *process) run(life context.Context) {
	defer p.stopLife()
	status, err := p.follow(life)
	p.mu.Lock()
	switch {
	case p.ctxErr != nil:
		// Cancelling Start's ctx is the caller's act: its error, whatever
		// the stream did.
		status = sandbox.ExitStatus{Code: -1, Signal: sandbox.SIGKILL}
		err = p.ctxErr
	case err != nil:
	case p.timedOut:
		status = sandbox.ExitStatus{Code: -1, Signal: sandbox.SIGKILL, TimedOut: true}
	case p.sent != "" && status.Code == 128+signalNumbers[p.sent]:
		status = sandbox.ExitStatus{Code: -1, Signal: p.sent}
	}
	clean := err == nil && p.ctxErr == nil && !p.timedOut
	p.mu.Unlock()
	p.setPgid(0)
	if clean {
		p.s.releaseSession(p.sid)
	} else {
		p.s.dropSession(p.sid)
	}
	p.status, p.err = status, err
	close(p.done)
}

// follow streams the logs WebSocket into the writers and returns the exit
// status. A stream that breaks is completed from the logs endpoint once
// the command has exited.
func (p *process) follow(life context.Context) (sandbox.ExitStatus, error) {
	d := &demux{p: p}
	serr := p.stream(life, d)
	if serr != nil && life.Err() != nil {
		return sandbox.ExitStatus{}, life.Err()
	}
	// The record has the exit code once the stream has ended; a daemon
	// that never gives one is an error, not a hang.
	ectx, cancel := context.WithTimeout(life, 2*time.Minute)
	code, err := p.exitCode(ectx)
	cancel()
	if err != nil {
		if life.Err() != nil {
			return sandbox.ExitStatus{}, life.Err()
		}
		if errors.Is(err, context.DeadlineExceeded) {
			err = sandbox.Errorf(providerName, p.s.id, "exec", sandbox.ErrUnavailable,
				"the command's output ended but the daemon gave no exit code within 2 minutes")
		}
		var ae *APIError
		if errors.As(err, &ae) && !ae.Daemon {
			// The proxy refused: a sandbox stopped under the command.
			if w, rerr := p.s.refresh(life); rerr == nil && resumable(w.State) {
				err = sandbox.Errorf(providerName, p.s.id, "exec", sandbox.ErrUnavailable,
					"%s", "the sandbox was stopped ("+w.State+") while the command ran; its processes ended")
			}
		}
		return sandbox.ExitStatus{}, err
	}
	if serr != nil {
		if err := p.completeFromLogs(life, d); err != nil {
			return sandbox.ExitStatus{Code: code}, sandbox.NewError(providerName, p.s.id, "exec", sandbox.ErrUnavailable,
				fmt.Errorf("the output stream broke (%v) and the logs could not be read: %w", serr, err))
		}
	}
	d.flush()
	return sandbox.ExitStatus{Code: code}, nil
}

// stream reads the follow WebSocket until the daemon closes it normally.
func (p *process) stream(ctx context.Context, d *demux) error {
	u := toolboxURL(p.base, p.cmdPath("/logs"), url.Values{"follow": {"true"}})
	conn, err := p.s.p.dial(ctx, u)
	if err != nil {
		return err
	}
	defer conn.CloseNow()
	conn.SetReadLimit(-1)
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			if websocket.CloseStatus(err) == websocket.StatusNormalClosure {
				return nil
			}
			return err
		}
		if err := d.write(data); err != nil {
			return err
		}
	}
}

// dial opens a WebSocket to a toolbox URL with the client's headers.
func (p *Provider) dial(ctx context.Context, rawURL string) (*websocket.Conn, error) {
	u := "ws" + strings.TrimPrefix(rawURL, "http")
	h := http.Header{}
	p.c.header(h)
	conn, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: p.c.http, HTTPHeader: h})
	if err != nil {
		if resp != nil && resp.StatusCode >= 300 {
			return nil, readAPIError(resp)
		}
		return nil, err
	}
	return conn, nil
}

// exitCode polls the command's record until it has an exit code.
func (p *process) exitCode(ctx context.Context) (int, error) {
	delay := 10 * time.Millisecond
	for {
		var c wireCommand
		err := p.s.p.c.toolbox(ctx, p.base, http.MethodGet, p.cmdPath(""), nil, nil, &c)
		if err != nil {
			return 0, wrap(p.s.id, "exec", err)
		}
		if c.ExitCode != nil {
			return *c.ExitCode, nil
		}
		if err := httpretry.Sleep(ctx, delay); err != nil {
			return 0, err
		}
		delay = min(delay*2, 500*time.Millisecond)
	}
}

// completeFromLogs writes what the broken stream did not deliver, from
// GET …/logs (JSON, with the split streams).
func (p *process) completeFromLogs(ctx context.Context, d *demux) error {
	var logs struct {
		Stdout string `json:"stdout"`
		Stderr string `json:"stderr"`
	}
	if err := p.s.p.c.toolbox(ctx, p.base, http.MethodGet, p.cmdPath("/logs"), nil, nil, &logs); err != nil {
		return err
	}
	d.flush()
	errAll := logs.Stderr
	if strings.HasPrefix(errAll, pgidPrefix) {
		if i := strings.IndexByte(errAll, '\n'); i >= 0 {
			errAll = errAll[i+1:]
		}
	}
	if int64(len(logs.Stdout)) > d.outN {
		if _, err := io.WriteString(p.stdout, logs.Stdout[d.outN:]); err != nil {
			return err
		}
	}
	if int64(len(errAll)) > d.errN {
		if _, err := io.WriteString(p.stderr, errAll[d.errN:]); err != nil {
			return err
		}
	}
	return nil
}

// demux splits the daemon's log stream: \x01\x01\x01 switches to stdout,
// \x02\x02\x02 to stderr. A marker may be split across messages, so up to
// two trailing bytes that may start one are held back. The job's first
// stderr line (its process group) is taken out.
type demux struct {
	p          *process
	toErr      bool
	held       []byte
	errHead    []byte // stderr before the process-group line is complete
	headDone   bool
	outN, errN int64 // bytes delivered
}

func (d *demux) write(data []byte) error {
	buf := append(d.held, data...)
	d.held = nil
	start := 0
	i := 0
	for i < len(buf) {
		c := buf[i]
		if c != 1 && c != 2 {
			i++
			continue
		}
		if len(buf)-i < 3 {
			// Maybe the start of a marker: keep it for the next message.
			if bytes.Equal(buf[i:], bytes.Repeat([]byte{c}, len(buf)-i)) {
				if err := d.emit(buf[start:i]); err != nil {
					return err
				}
				d.held = append([]byte(nil), buf[i:]...)
				return nil
			}
			i++
			continue
		}
		if buf[i+1] == c && buf[i+2] == c {
			if err := d.emit(buf[start:i]); err != nil {
				return err
			}
			d.toErr = c == 2
			i += 3
			start = i
			continue
		}
		i++
	}
	return d.emit(buf[start:])
}

// flush delivers held bytes at the end of the stream.
func (d *demux) flush() {
	if len(d.held) > 0 {
		d.emit(d.held)
		d.held = nil
	}
	if !d.headDone && len(d.errHead) > 0 {
		d.headDone = true
		d.p.stderr.Write(d.errHead)
		d.errN += int64(len(d.errHead))
	}
}

func (d *demux) emit(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if !d.toErr {
		d.outN += int64(len(b))
		_, err := d.p.stdout.Write(b)
		return err
	}
	if !d.headDone {
		d.errHead = append(d.errHead, b...)
		nl := bytes.IndexByte(d.errHead, '\n')
		if nl < 0 && len(d.errHead) < 64 && bytes.HasPrefix([]byte(pgidPrefix), d.errHead[:min(len(d.errHead), len(pgidPrefix))]) {
			return nil // the line is not complete yet
		}
		d.headDone = true
		rest := d.errHead
		if nl >= 0 && bytes.HasPrefix(d.errHead, []byte(pgidPrefix)) {
			line := strings.TrimSuffix(string(d.errHead[len(pgidPrefix):nl]), "\x1e")
			g, _ := strconv.Atoi(line)
			d.p.setPgid(g)
			rest = d.errHead[nl+1:]
		}
		d.errHead = nil
		b = rest
		if len(b) == 0 {
			return nil
		}
	}
	d.errN += int64(len(b))
	_, err := d.p.stderr.Write(b)
	return err
}

// feed sends stdin in framed, base64-encoded chunks, and the end.
func (p *process) feed(ctx context.Context, r io.Reader) {
	buf := make([]byte, stdinChunk)
	send := func(data string) bool {
		err := p.s.p.c.toolbox(ctx, p.base, http.MethodPost, p.cmdPath("/input"), nil, wireInput{Data: data}, nil)
		return err == nil
	}
	for {
		n, err := r.Read(buf)
		if n > 0 {
			enc := base64.StdEncoding.EncodeToString(buf[:n])
			if !send(strconv.Itoa(len(enc)) + "\n" + enc) {
				return
			}
		}
		if err != nil {
			send("0\n")
			return
		}
		select {
		case <-p.done:
			return
		default:
		}
	}
}

// watch ends the process when Start's ctx ends or Cmd.Timeout passes.
func (p *process) watch(ctx context.Context, timeout time.Duration) {
	ctxErr, timedOut := driverutil.AwaitEnd(ctx, p.done, timeout)
	if ctxErr == nil && !timedOut {
		return
	}
	p.mu.Lock()
	p.ctxErr, p.timedOut = ctxErr, timedOut
	p.mu.Unlock()
	kctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.kill(kctx, sandbox.SIGKILL); err != nil {
		// The group could not be reached: end the session instead, and
		// stop following.
		p.s.dropSession(p.sid)
		p.stopLife()
	}
}

// kill signals the job's process group through /process/execute.
func (p *process) kill(ctx context.Context, sig sandbox.Signal) error {
	select {
	case <-p.pgidKnown:
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	if p.pgid <= 0 {
		return sandbox.Errorf(providerName, p.s.id, "signal", sandbox.ErrNotSupported,
			"the sandbox's image has no setsid, so the command's process group is unknown")
	}
	name := strings.TrimPrefix(string(sig), "SIG")
	var res wireExecuteResult
	err := p.s.p.c.toolbox(ctx, p.base, http.MethodPost, "/process/execute", nil,
		wireExecute{Command: fmt.Sprintf("kill -s %s -- -%d 2>/dev/null; true", name, p.pgid)}, &res)
	return wrap(p.s.id, "signal", err)
}

// Wait waits for the exit and for the output to be written.
func (p *process) Wait(ctx context.Context) (sandbox.ExitStatus, error) {
	select {
	case <-p.done:
		return p.status, p.err
	case <-ctx.Done():
		return sandbox.ExitStatus{}, ctx.Err()
	}
}

// Signal sends sig to the command's process group (kill through
// /process/execute; Daytona has no signal endpoint).
func (p *process) Signal(ctx context.Context, sig sandbox.Signal) error {
	if _, ok := signalNumbers[sig]; !ok {
		return sandbox.Errorf(providerName, p.s.id, "signal", sandbox.ErrInvalidArgument, "unknown signal %q", sig)
	}
	select {
	case <-p.done:
		return nil
	default:
	}
	p.mu.Lock()
	p.sent = sig
	p.mu.Unlock()
	err := p.kill(ctx, sig)
	var se *sandbox.Error
	if errors.As(err, &se) && errors.Is(err, sandbox.ErrNotFound) {
		return nil // the command and its session are gone
	}
	return err
}
