package vercel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

// startPTY runs cmd on a terminal through Vercel's interactive session:
// POST …/interactive gives a WebSocket URL and token; the command is sent as
// a "start" text frame, stdin goes as binary frames, output comes back as
// binary frames (or non-JSON text frames), a "resize" text frame changes the
// size and an "exit" text frame reports the exit code. This protocol is not
// in Vercel's API reference; it is the one Vercel's CLI speaks.
func (s *Sandbox) startPTY(ctx context.Context, cmd *sandbox.Cmd, dir string) (driver.Process, error) {
	const op = "exec"
	var out struct {
		URL   string `json:"url"`
		Token string `json:"token"`
	}
	err := s.onSession(ctx, op, func(sid string) error {
		return s.p.c.call(ctx, http.MethodPost, s.sessionPath(sid, "/interactive"), nil, map[string]any{}, &out)
	})
	if err != nil {
		return nil, wrap(s.name, op, err)
	}
	u, err := url.Parse(out.URL)
	if err != nil || (u.Scheme != "wss" && u.Scheme != "ws") {
		return nil, sandbox.Errorf(providerName, s.name, op, sandbox.ErrUnavailable,
			"the API returned an interactive URL %q that is not a WebSocket URL", out.URL)
	}
	q := u.Query()
	q.Set("token", out.Token)
	u.RawQuery = q.Encode()

	// The connection outlives Start's ctx: when ctx ends, the session is
	// closed, which ends the command.
	connCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	dctx, dcancel := context.WithTimeout(ctx, time.Minute)
	conn, _, err := websocket.Dial(dctx, u.String(), &websocket.DialOptions{HTTPClient: s.p.c.http})
	dcancel()
	if err != nil {
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, sandbox.NewError(providerName, s.name, op, sandbox.ErrUnavailable, fmt.Errorf("connecting the interactive session: %w", err))
	}
	conn.SetReadLimit(maxLine)
	term := cmd.TTY.Term
	if term == "" {
		term = "xterm-256color"
	}
	env := []string{"TERM=" + term}
	keys := make([]string, 0, len(cmd.Env))
	for k := range cmd.Env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		env = append(env, k+"="+cmd.Env[k])
	}
	start, _ := json.Marshal(map[string]any{
		"type": "start", "command": cmd.Args[0], "args": append([]string{}, cmd.Args[1:]...),
		"env": env, "cwd": dir, "cols": cmd.TTY.Cols, "rows": cmd.TTY.Rows,
	})
	if err := conn.Write(ctx, websocket.MessageText, start); err != nil {
		conn.CloseNow()
		cancel()
		return nil, sandbox.NewError(providerName, s.name, op, sandbox.ErrUnavailable, err)
	}
	p := &ptyProcess{s: s, conn: conn, ctx: connCtx, cancel: cancel, stdout: cmd.Stdout,
		timeout: cmd.Timeout, done: make(chan struct{})}
	go p.run(ctx)
	if cmd.Stdin != nil {
		go p.pumpStdin(cmd.Stdin)
	}
	return p, nil
}

// ptyProcess is a command on an interactive session. Its run goroutine
// owns the connection; the stdin pump ends when Cmd.Stdin returns after the
// connection is gone.
type ptyProcess struct {
	s       *Sandbox
	conn    *websocket.Conn
	ctx     context.Context
	cancel  context.CancelFunc
	stdout  io.Writer
	timeout time.Duration

	mu       sync.Mutex
	ctxErr   error
	timedOut bool
	killed   bool

	done   chan struct{}
	status sandbox.ExitStatus
	err    error
}

func (p *ptyProcess) run(startCtx context.Context) {
	defer close(p.done)
	defer p.cancel()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var timer <-chan time.Time
		if p.timeout > 0 {
			t := time.NewTimer(p.timeout)
			defer t.Stop()
			timer = t.C
		}
		select {
		case <-stop:
			return
		case <-startCtx.Done():
			p.mu.Lock()
			p.ctxErr = startCtx.Err()
			p.mu.Unlock()
		case <-timer:
			p.mu.Lock()
			p.timedOut = true
			p.mu.Unlock()
		}
		// Closing the session ends the command.
		p.conn.Close(websocket.StatusNormalClosure, "terminated by the client")
	}()
	code, err := p.read()
	close(stop)
	wg.Wait()
	p.conn.CloseNow()

	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.ctxErr != nil:
		p.status, p.err = sandbox.ExitStatus{Code: -1, Signal: sandbox.SIGKILL}, p.ctxErr
	case p.timedOut:
		p.status = sandbox.ExitStatus{Code: -1, Signal: sandbox.SIGKILL, TimedOut: true}
	case p.killed:
		p.status = sandbox.ExitStatus{Code: -1, Signal: sandbox.SIGKILL}
	case err != nil:
		p.status = sandbox.ExitStatus{Code: -1}
		p.err = sandbox.NewError(providerName, p.s.name, "exec", sandbox.ErrUnavailable, err)
	default:
		p.status = sandbox.ExitStatus{Code: code}
	}
}

// read copies output until the exit frame.
func (p *ptyProcess) read() (int, error) {
	for {
		typ, data, err := p.conn.Read(p.ctx)
		if err != nil {
			return 0, fmt.Errorf("the interactive session ended without an exit status: %w", err)
		}
		if typ == websocket.MessageText {
			var msg struct {
				Type string `json:"type"`
				Code *int   `json:"code"`
			}
			if json.Unmarshal(data, &msg) == nil {
				if msg.Type == "exit" {
					if msg.Code == nil {
						return 0, errors.New("the exit frame has no code")
					}
					return *msg.Code, nil
				}
				continue
			}
		}
		if p.stdout != nil {
			if _, err := p.stdout.Write(data); err != nil {
				p.conn.Close(websocket.StatusNormalClosure, "output writer failed")
				return 0, fmt.Errorf("writing the command's output: %w", err)
			}
		}
	}
}

// pumpStdin sends Cmd.Stdin as binary frames. A terminal has no end of
// input but the EOF character, so at EOF it sends ^D, which a program
// reading the terminal in canonical mode takes as the end.
func (p *ptyProcess) pumpStdin(r io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if p.conn.Write(p.ctx, websocket.MessageBinary, buf[:n]) != nil {
				return
			}
		}
		if err != nil {
			if err == io.EOF {
				p.conn.Write(p.ctx, websocket.MessageBinary, []byte{4})
			}
			return
		}
	}
}

// As reports false: the process has no native type to expose.
func (p *ptyProcess) As(any) bool { return false }

// Wait waits for the exit frame.
func (p *ptyProcess) Wait(ctx context.Context) (sandbox.ExitStatus, error) {
	select {
	case <-p.done:
		return p.status, p.err
	case <-ctx.Done():
		return sandbox.ExitStatus{}, ctx.Err()
	}
}

// Signal is not available for commands on a terminal: Vercel's interactive
// session has no signal message. SIGKILL closes the session, which ends the
// command.
func (p *ptyProcess) Signal(ctx context.Context, sig sandbox.Signal) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if sig == sandbox.SIGKILL {
		p.mu.Lock()
		p.killed = true
		p.mu.Unlock()
		p.conn.Close(websocket.StatusNormalClosure, "killed by the client")
		return nil
	}
	return sandbox.Errorf(providerName, p.s.name, "signal", sandbox.ErrNotSupported, "Vercel's interactive sessions carry no signals (only SIGKILL, by closing the session)")

}

// Resize sends a resize frame.
func (p *ptyProcess) Resize(ctx context.Context, rows, cols int) error {
	if rows <= 0 || cols <= 0 {
		return sandbox.Errorf(providerName, p.s.name, "resize", sandbox.ErrInvalidArgument, "size %dx%d", rows, cols)
	}
	msg, _ := json.Marshal(map[string]any{"type": "resize", "cols": cols, "rows": rows})
	if err := p.conn.Write(ctx, websocket.MessageText, msg); err != nil {
		select {
		case <-p.done:
			return sandbox.Errorf(providerName, p.s.name, "resize", sandbox.ErrInvalidArgument, "the process has exited")
		default:
		}
		return sandbox.NewError(providerName, p.s.name, "resize", sandbox.ErrUnavailable, err)
	}
	return nil
}
