package vercel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

// ndjsonType is the exact content type of command streams.
const ndjsonType = "application/x-ndjson"

// maxLine bounds one NDJSON line (a log chunk or a command record).
const maxLine = 16 << 20

// streamResumes is how many times a dropped log stream is resumed before
// Wait reports the loss.
const streamResumes = 3

var signalNumbers = map[sandbox.Signal]int{
	sandbox.SIGHUP: 1, sandbox.SIGINT: 2, sandbox.SIGQUIT: 3, sandbox.SIGKILL: 9,
	sandbox.SIGUSR1: 10, sandbox.SIGUSR2: 12, sandbox.SIGTERM: 15,
}

type wireCommand struct {
	ID       string `json:"id"`
	ExitCode *int   `json:"exitCode"`
}

// streamLine is one NDJSON line: a command record, or a log line whose data
// is a string (stdout, stderr) or an error object.
type streamLine struct {
	Command *wireCommand    `json:"command"`
	Stream  string          `json:"stream"`
	Data    json.RawMessage `json:"data"`
}

// Start runs cmd.Args in the sandbox with POST …/cmd {wait:true, logs:true}
// and streams its NDJSON output to cmd.Stdout and cmd.Stderr as it comes.
// Cmd.Stdin and Cmd.TTY are ErrNotSupported: Vercel has no stdin for
// commands outside its interactive PTY, which this adapter does not use.
func (s *Sandbox) Start(ctx context.Context, cmd *sandbox.Cmd) (driver.Process, error) {
	const op = "exec"
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dir := s.dir()
	if cmd.Dir != "" {
		dir = s.abs(cmd.Dir)
	}
	if cmd.TTY != nil {
		return s.startPTY(ctx, cmd, dir)
	}
	req := map[string]any{
		"command": cmd.Args[0], "args": append([]string{}, cmd.Args[1:]...), "cwd": dir,
		"env": map[string]string{}, "sudo": false, "wait": true, "logs": true,
	}
	if len(cmd.Env) > 0 {
		req["env"] = cmd.Env
	}
	if cmd.Timeout > 0 {
		// The sandbox enforces it with SIGKILL, even if this client is gone.
		req["timeout"] = max(cmd.Timeout.Milliseconds(), 1)
	}

	// The stream outlives Start's ctx by design: when ctx ends, the
	// command is killed and its end is still read.
	streamCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	// The sandbox starts its timeout clock after this, so time since sent
	// is never shorter than the command's run time there.
	sent := time.Now()
	// Until the command has started, Start's ctx bounds the request.
	stopWatch := context.AfterFunc(ctx, cancel)
	var resp *http.Response
	var sid string
	err := s.onSession(ctx, op, func(id string) error {
		sid = id
		b, err := jsonBody(req)
		if err != nil {
			return err
		}
		resp, err = s.p.c.do(streamCtx, http.MethodPost, s.sessionPath(id, "/cmd"), nil, b)
		return err
	})
	if err != nil {
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, wrap(s.name, op, err)
	}
	if err := checkNDJSON(resp); err != nil {
		resp.Body.Close()
		cancel()
		return nil, sandbox.NewError(providerName, s.name, op, sandbox.ErrUnavailable, err)
	}
	lr := newLineReader(resp.Body)
	first, _, err := lr.readLine()
	if !stopWatch() || err != nil || first.Command == nil || first.Command.ID == "" {
		resp.Body.Close()
		cancel()
		if ctx.Err() != nil {
			// The command may have started; it is ended by its stream
			// closing only if the service does so. Its id is known only
			// when the first line arrived.
			if first.Command != nil && first.Command.ID != "" {
				kctx, kcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
				s.p.c.call(kctx, http.MethodPost, s.sessionPath(sid, "/cmd/"+url.PathEscape(first.Command.ID)+"/kill"),
					nil, map[string]int{"signal": 9}, nil)
				kcancel()
			}
			return nil, ctx.Err()
		}
		if err == nil {
			err = errors.New("the command stream did not start with a command record")
		}
		return nil, sandbox.NewError(providerName, s.name, op, sandbox.ErrUnavailable, err)
	}
	p := &process{
		s: s, sid: sid, id: first.Command.ID, stdout: cmd.Stdout, stderr: cmd.Stderr,
		timeout: cmd.Timeout, started: sent, cancel: cancel, done: make(chan struct{}),
	}
	go p.run(ctx, streamCtx, resp.Body, lr)
	return p, nil
}

func checkNDJSON(resp *http.Response) error {
	ct := resp.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != ndjsonType {
		return fmt.Errorf("expected a stream of command data (%s), got content type %q", ndjsonType, ct)
	}
	return nil
}

// process is a command started by Start. Its goroutine (run) owns the
// stream and ends when the command's end is known or reported lost.
type process struct {
	s       *Sandbox
	sid, id string
	stdout  io.Writer
	stderr  io.Writer
	timeout time.Duration
	started time.Time
	cancel  context.CancelFunc

	mu      sync.Mutex
	sent    sandbox.Signal // the last signal this process was sent
	timedUp bool
	ctxErr  error

	delivered [2]int64 // bytes written to stdout, stderr

	done   chan struct{}
	status sandbox.ExitStatus
	err    error
}

func (p *process) run(startCtx, streamCtx context.Context, body io.ReadCloser, lr *lineReader) {
	defer close(p.done)
	defer p.cancel()

	// Watch Start's ctx and the timeout; both kill the command, whose end
	// is then read from the stream as usual.
	watchDone := make(chan struct{})
	var watch sync.WaitGroup
	watch.Add(1)
	go func() {
		defer watch.Done()
		var timer <-chan time.Time
		if p.timeout > 0 {
			// A backstop a little after the sandbox's own enforcement.
			t := time.NewTimer(p.timeout + 2*time.Second)
			defer t.Stop()
			timer = t.C
		}
		select {
		case <-watchDone:
		case <-startCtx.Done():
			p.mu.Lock()
			p.ctxErr = startCtx.Err()
			p.mu.Unlock()
			p.kill(streamCtx)
		case <-timer:
			p.mu.Lock()
			p.timedUp = true
			p.mu.Unlock()
			p.kill(streamCtx)
		}
	}()
	defer func() { close(watchDone); watch.Wait() }()

	code, err := p.consume(lr)
	body.Close()
	for attempt := 0; err != nil && attempt < streamResumes; attempt++ {
		if streamCtx.Err() != nil {
			break
		}
		var apiLoss *streamError
		if errors.As(err, &apiLoss) {
			break // the service said why; nothing to resume
		}
		var ew errWriter
		if errors.As(err, &ew) {
			// Nobody reads the output any more: end the command, as a
			// closed pipe would.
			p.kill(streamCtx)
			break
		}
		code, err = p.resumeStream(streamCtx)
	}
	p.finish(code, err)
}

// streamError is an {"stream":"error"} line.
type streamError struct{ Code, Message string }

func (e *streamError) Error() string { return e.Code + ": " + e.Message }

// consume copies log lines until the final command record. A stream that
// ends without one is an error: output may be missing.
func (p *process) consume(lr *lineReader) (*int, error) {
	for {
		l, data, err := lr.readLine()
		if err != nil {
			if err == io.EOF {
				err = errors.New("stream_ended_early: the command stream ended before the command did")
			}
			return nil, err
		}
		if l.Command != nil {
			if l.Command.ExitCode != nil {
				return l.Command.ExitCode, nil
			}
			continue
		}
		if err := p.log(l, data, nil); err != nil {
			return nil, err
		}
	}
}

// log writes a log line. skip, if not nil, holds how many bytes of each
// stream to drop first (already delivered before a resume).
func (p *process) log(l streamLine, b []byte, skip *[2]int64) error {
	var idx int
	var w io.Writer
	switch l.Stream {
	case "stdout":
		idx, w = 0, p.stdout
	case "stderr":
		idx, w = 1, p.stderr
	case "error":
		var e streamError
		json.Unmarshal(l.Data, &e)
		if e.Code == "" {
			e.Code = "error"
		}
		return &e
	default:
		return nil // unknown lines are ignored, as the SDK does
	}
	if skip != nil {
		n := min(skip[idx], int64(len(b)))
		skip[idx] -= n
		b = b[n:]
	}
	if len(b) == 0 {
		return nil
	}
	p.delivered[idx] += int64(len(b))
	if w != nil {
		if _, err := w.Write(b); err != nil {
			return errWriter{err}
		}
	}
	return nil
}

// errWriter is a failed write to Cmd.Stdout or Cmd.Stderr.
type errWriter struct{ error }

// resumeStream reads GET …/logs, which replays the command's output from
// the start, skipping what was delivered, then GET …/cmd/{id}?wait=true for
// the exit code.
func (p *process) resumeStream(ctx context.Context) (*int, error) {
	c := p.s.p.c
	resp, err := c.do(ctx, http.MethodGet, p.s.sessionPath(p.sid, "/cmd/"+url.PathEscape(p.id)+"/logs"), nil, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if err := checkNDJSON(resp); err != nil {
		return nil, err
	}
	skip := p.delivered
	lr := newLineReader(resp.Body)
	for {
		l, data, err := lr.readLine()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if l.Command != nil {
			continue
		}
		if err := p.log(l, data, &skip); err != nil {
			return nil, err
		}
	}
	if skip != [2]int64{} {
		return nil, errors.New("the replayed logs are shorter than the output already delivered")
	}
	var out struct {
		Command wireCommand `json:"command"`
	}
	if err := c.call(ctx, http.MethodGet, p.s.sessionPath(p.sid, "/cmd/"+url.PathEscape(p.id)),
		url.Values{"wait": {"true"}}, nil, &out); err != nil {
		return nil, err
	}
	if out.Command.ExitCode == nil {
		return nil, errors.New("the command has no exit code after waiting")
	}
	return out.Command.ExitCode, nil
}

func (p *process) finish(code *int, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		var ew errWriter
		var se *streamError
		switch {
		case errors.As(err, &ew):
			p.err = sandbox.NewError(providerName, p.s.name, "exec", sandbox.ErrInvalidArgument,
				fmt.Errorf("writing the command's output: %w", ew.error))
		case errors.As(err, &se) && p.s.checkLive("exec") != nil:
			p.err = sandbox.NewError(providerName, p.s.name, "exec", sandbox.ErrTerminated, err)
		default:
			p.err = wrap(p.s.name, "exec", fmt.Errorf("command %s: output lost: %w", p.id, err))
		}
		p.status = sandbox.ExitStatus{Code: -1}
		if p.ctxErr != nil {
			p.err = p.ctxErr
		}
		return
	}
	st := sandbox.ExitStatus{Code: *code}
	// A command this process killed exits as a shell reports a signal
	// (128+n); report it as the signal.
	if p.sent != "" && *code == 128+signalNumbers[p.sent] {
		st = sandbox.ExitStatus{Code: -1, Signal: p.sent}
	}
	if p.timeout > 0 && *code != 0 && (p.timedUp || time.Since(p.started) >= p.timeout) {
		st = sandbox.ExitStatus{Code: -1, Signal: sandbox.SIGKILL, TimedOut: true}
	}
	p.status = st
	p.err = p.ctxErr
}

func (p *process) kill(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	p.signal(ctx, sandbox.SIGKILL)
}

// As reports false: the process has no native type to expose.
func (p *process) As(any) bool { return false }

// Wait waits for the command's end and for its output to be written.
func (p *process) Wait(ctx context.Context) (sandbox.ExitStatus, error) {
	select {
	case <-p.done:
		return p.status, p.err
	case <-ctx.Done():
		return sandbox.ExitStatus{}, ctx.Err()
	}
}

// Signal sends sig with POST …/cmd/{id}/kill. Signalling an ended command
// is not an error.
func (p *process) Signal(ctx context.Context, sig sandbox.Signal) error {
	if _, ok := signalNumbers[sig]; !ok {
		return sandbox.Errorf(providerName, p.s.name, "signal", sandbox.ErrInvalidArgument, "unknown signal %q", sig)
	}
	select {
	case <-p.done:
		return nil
	default:
	}
	return p.signal(ctx, sig)
}

func (p *process) signal(ctx context.Context, sig sandbox.Signal) error {
	p.mu.Lock()
	p.sent = sig
	p.mu.Unlock()
	err := p.s.p.c.call(ctx, http.MethodPost, p.s.sessionPath(p.sid, "/cmd/"+url.PathEscape(p.id)+"/kill"), nil,
		map[string]int{"signal": signalNumbers[sig]}, nil)
	if err != nil {
		select {
		case <-p.done:
			return nil
		default:
		}
		var ae *APIError
		if errors.As(err, &ae) && ae.stopped() {
			return nil // the session, and so the command, has ended
		}
		return wrap(p.s.name, "signal", err)
	}
	return nil
}
