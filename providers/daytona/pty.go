package daytona

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
	"github.com/perimeter-sdk/perimeter/sandbox/driver/driverutil"
)

// startPTY runs cmd on a toolbox PTY session. The session starts the
// user's shell on the terminal; the adapter types one line that turns
// echo off, prints a marker with the shell's pid, and execs the argv
// (through sh -c, so a missing program exits 127). Output before the
// marker (the prompt, the typed line) is dropped.
func (s *Sandbox) startPTY(ctx context.Context, cmd *sandbox.Cmd, dir string) (driver.Process, error) {
	const op = "exec"
	var b [8]byte
	rand.Read(b[:])
	id := "perimeter-pty-" + hex.EncodeToString(b[:])
	envs := map[string]string{"TERM": "xterm-256color"}
	if cmd.TTY.Term != "" {
		envs["TERM"] = cmd.TTY.Term
	}
	for k, v := range cmd.Env {
		envs[k] = v
	}
	err := s.call(ctx, op, func(base string) error {
		return s.p.c.toolbox(ctx, base, http.MethodPost, "/process/pty", nil,
			wirePtyCreate{ID: id, Cols: cmd.TTY.Cols, Rows: cmd.TTY.Rows, Cwd: dir, Envs: envs}, nil)
	})
	if err != nil {
		return nil, err
	}
	p := &ptyProcess{s: s, id: id, base: s.toolboxBase(), out: cmd.Stdout, done: make(chan struct{}), ready: make(chan struct{})}
	if p.out == nil {
		p.out = io.Discard
	}
	life, stopLife := context.WithCancel(context.WithoutCancel(ctx))
	conn, err := s.p.dial(ctx, toolboxURL(p.base, "/process/pty/"+url.PathEscape(id)+"/connect", nil))
	if err != nil {
		stopLife()
		p.delete()
		return nil, wrap(s.id, op, err)
	}
	conn.SetReadLimit(-1)
	p.conn, p.stopLife = conn, stopLife
	p.marker = "\x1eperimeter-" + hex.EncodeToString(b[:]) + " "
	var line strings.Builder
	line.WriteString("stty -echo 2>/dev/null; printf '\\036perimeter-%s %s\\036' " + shellQuote(hex.EncodeToString(b[:])) + " \"$$\"; exec sh -c 'exec \"$@\"' sh")
	for _, a := range cmd.Args {
		line.WriteString(" " + shellQuote(a))
	}
	line.WriteString("\n")
	if err := conn.Write(ctx, websocket.MessageBinary, []byte(line.String())); err != nil {
		stopLife()
		conn.CloseNow()
		p.delete()
		return nil, wrap(s.id, op, err)
	}
	go p.run(life)
	go p.watch(ctx, cmd.Timeout)
	if cmd.Stdin != nil {
		go p.feed(life, cmd.Stdin)
	}
	return p, nil
}

// ptyProcess is a command on a PTY session.
type ptyProcess struct {
	s        *Sandbox
	id, base string
	conn     *websocket.Conn
	out      io.Writer
	stopLife context.CancelFunc
	marker   string

	ready    chan struct{} // the marker has been seen
	mu       sync.Mutex
	pid      int
	sent     sandbox.Signal
	timedOut bool
	ctxErr   error

	done   chan struct{}
	status sandbox.ExitStatus
	err    error
}

var (
	_ driver.Process = (*ptyProcess)(nil)
	_ driver.Resizer = (*ptyProcess)(nil)
)

// As reaches no driver-specific type: it reports false.
func (p *ptyProcess) As(any) bool { return false }

func (p *ptyProcess) delete() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p.s.p.c.toolbox(ctx, p.base, http.MethodDelete, "/process/pty/"+url.PathEscape(p.id), nil, nil, nil)
}

func (p *ptyProcess) run(life context.Context) {
	defer p.stopLife()
	st, err := p.read(life)
	p.mu.Lock()
	switch {
	case p.ctxErr != nil:
		st = sandbox.ExitStatus{Code: -1, Signal: sandbox.SIGKILL}
		err = p.ctxErr
	case err != nil:
	case p.timedOut:
		st = sandbox.ExitStatus{Code: -1, Signal: sandbox.SIGKILL, TimedOut: true}
	case p.sent != "" && st.Code == 128+signalNumbers[p.sent]:
		st = sandbox.ExitStatus{Code: -1, Signal: p.sent}
	}
	p.mu.Unlock()
	p.conn.CloseNow()
	p.delete()
	p.status, p.err = st, err
	close(p.done)
}

// read copies terminal output after the marker and reads the exit from
// the close reason.
func (p *ptyProcess) read(ctx context.Context) (sandbox.ExitStatus, error) {
	var pre []byte
	seen := false
	for {
		typ, data, err := p.conn.Read(ctx)
		if err != nil {
			if websocket.CloseStatus(err) == -1 {
				return sandbox.ExitStatus{}, wrap(p.s.id, "exec", err)
			}
			var ce websocket.CloseError
			errors.As(err, &ce)
			var exit wirePtyExit
			if ce.Reason != "" {
				if jerr := json.Unmarshal([]byte(ce.Reason), &exit); jerr != nil {
					return sandbox.ExitStatus{}, sandbox.Errorf(providerName, p.s.id, "exec", sandbox.ErrUnavailable,
						"%s", "the PTY closed with reason "+ce.Reason)
				}
			}
			if exit.Error != "" && exit.ExitCode == nil {
				return sandbox.ExitStatus{}, sandbox.Errorf(providerName, p.s.id, "exec", sandbox.ErrUnavailable, "%s", "PTY: "+exit.Error)
			}
			code := 0
			if exit.ExitCode != nil {
				code = *exit.ExitCode
			}
			return sandbox.ExitStatus{Code: code}, nil
		}
		if typ == websocket.MessageText {
			var ctl struct {
				Type, Status, Error string
			}
			if json.Unmarshal(data, &ctl) == nil && ctl.Type == "control" {
				if ctl.Status == "error" {
					return sandbox.ExitStatus{}, sandbox.Errorf(providerName, p.s.id, "exec", sandbox.ErrUnavailable, "%s", "PTY: "+ctl.Error)
				}
				continue
			}
		}
		if seen {
			if _, err := p.out.Write(data); err != nil {
				return sandbox.ExitStatus{}, err
			}
			continue
		}
		pre = append(pre, data...)
		i := bytes.Index(pre, []byte(p.marker))
		if i < 0 {
			continue
		}
		rest := pre[i+len(p.marker):]
		end := bytes.IndexByte(rest, 0x1e)
		if end < 0 {
			continue
		}
		var pid int
		fmt.Sscanf(string(rest[:end]), "%d", &pid)
		p.mu.Lock()
		p.pid = pid
		p.mu.Unlock()
		seen = true
		close(p.ready)
		if tail := rest[end+1:]; len(tail) > 0 {
			if _, err := p.out.Write(tail); err != nil {
				return sandbox.ExitStatus{}, err
			}
		}
		pre = nil
	}
}

// feed types stdin into the terminal once the command runs.
func (p *ptyProcess) feed(ctx context.Context, r io.Reader) {
	select {
	case <-p.ready:
	case <-p.done:
		return
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 && p.conn.Write(ctx, websocket.MessageBinary, buf[:n]) != nil {
			return
		}
		if err != nil {
			return
		}
	}
}

func (p *ptyProcess) watch(ctx context.Context, timeout time.Duration) {
	ctxErr, timedOut := driverutil.AwaitEnd(ctx, p.done, timeout)
	if ctxErr == nil && !timedOut {
		return
	}
	p.mu.Lock()
	p.ctxErr, p.timedOut = ctxErr, timedOut
	p.mu.Unlock()
	kctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if p.signal(kctx, sandbox.SIGKILL) != nil {
		// The process could not be reached: end the session, stop reading.
		p.delete()
		p.stopLife()
	}
}

func (p *ptyProcess) signal(ctx context.Context, sig sandbox.Signal) error {
	select {
	case <-p.ready:
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	p.mu.Lock()
	pid := p.pid
	p.mu.Unlock()
	if pid <= 0 {
		return sandbox.Errorf(providerName, p.s.id, "signal", sandbox.ErrUnavailable, "the terminal's process is unknown")
	}
	name := strings.TrimPrefix(string(sig), "SIG")
	var res wireExecuteResult
	err := p.s.p.c.toolbox(ctx, p.base, http.MethodPost, "/process/execute", nil,
		wireExecute{Command: fmt.Sprintf("kill -s %s -- -%d 2>/dev/null || kill -s %s %d 2>/dev/null; true", name, pid, name, pid)}, &res)
	return wrap(p.s.id, "signal", err)
}

// Wait waits for the command to exit.
func (p *ptyProcess) Wait(ctx context.Context) (sandbox.ExitStatus, error) {
	select {
	case <-p.done:
		return p.status, p.err
	case <-ctx.Done():
		return sandbox.ExitStatus{}, ctx.Err()
	}
}

// Signal sends sig to the terminal's process group.
func (p *ptyProcess) Signal(ctx context.Context, sig sandbox.Signal) error {
	if _, ok := signalNumbers[sig]; !ok {
		return sandbox.Errorf(providerName, p.s.id, "signal", sandbox.ErrInvalidArgument, "unknown signal %q", sig)
	}
	p.mu.Lock()
	p.sent = sig
	p.mu.Unlock()
	return p.signal(ctx, sig)
}

// Resize changes the terminal's size (POST /process/pty/{id}/resize).
func (p *ptyProcess) Resize(ctx context.Context, rows, cols int) error {
	if rows <= 0 || cols <= 0 || rows > 1000 || cols > 1000 {
		return sandbox.Errorf(providerName, p.s.id, "resize", sandbox.ErrInvalidArgument, "size %dx%d (1..1000 each)", rows, cols)
	}
	err := p.s.p.c.toolbox(ctx, p.base, http.MethodPost, "/process/pty/"+url.PathEscape(p.id)+"/resize", nil,
		wirePtyResize{Cols: cols, Rows: rows}, nil)
	return wrap(p.s.id, "resize", err)
}
