package cloudflare

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
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

// ptyShell is the program the adapter asks the bridge's terminal to start.
// It reads one line from the adapter: the command to run.
const ptyShell = "/bin/sh"

// startPTY runs cmd on the bridge's terminal (GET …/pty, a WebSocket). The
// bridge starts a shell, not a command, so the adapter types one line into
// it: echo off, a marker carrying a random token and the shell's pid, then
// cd and exec env(1) with the command. Output before the marker (the
// prompt, the typed line) is dropped; the rest goes to Cmd.Stdout, and
// Cmd.Stdin is sent as keystrokes once the marker is seen. The exit frame
// gives the status.
func (s *Sandbox) startPTY(ctx context.Context, cmd *sandbox.Cmd, dir string) (driver.Process, error) {
	const op = "exec"
	var tok [8]byte
	rand.Read(tok[:])
	token := hex.EncodeToString(tok[:])
	env := map[string]string{"TERM": cmd.TTY.Term}
	for k, v := range cmd.Env {
		env[k] = v
	}
	words := []string{"env", "--"}
	words = append(words, envArgs(env)...)
	words = append(words, cmd.Args...)
	for i, w := range words {
		words[i] = shQuote(w)
	}
	line := fmt.Sprintf("stty -echo; printf 'perimeter-%%s-%%s\\n' %s $$; cd %s || exit 1; exec %s\n",
		token, shQuote(dir), strings.Join(words, " "))

	connCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	dctx, dcancel := context.WithTimeout(ctx, time.Minute)
	h := http.Header{}
	if s.p.c.key != "" {
		h.Set("Authorization", "Bearer "+s.p.c.key)
	}
	if s.session != "" {
		h.Set(headerSession, s.session)
	}
	conn, resp, err := websocket.Dial(dctx, s.p.c.ptyURL(s.id, cmd.TTY.Rows, cmd.TTY.Cols, ptyShell, ""),
		&websocket.DialOptions{HTTPClient: s.p.c.http, HTTPHeader: h})
	dcancel()
	if err != nil {
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			if resp.Body != nil {
				ae := readAPIError(resp)
				return nil, wrap(s.id, op, ae)
			}
			return nil, wrap(s.id, op, &APIError{Status: resp.StatusCode})
		}
		return nil, sandbox.NewError(providerName, s.id, op, sandbox.ErrUnavailable, fmt.Errorf("connecting the terminal: %w", err))
	}
	conn.SetReadLimit(maxEventLine)
	if err := conn.Write(ctx, websocket.MessageBinary, []byte(line)); err != nil {
		conn.CloseNow()
		cancel()
		return nil, sandbox.NewError(providerName, s.id, op, sandbox.ErrUnavailable, fmt.Errorf("typing the command: %w", err))
	}
	p := &ptyProcess{
		process: process{s: s, started: make(chan struct{}), done: make(chan struct{}), cancelStream: cancel},
		conn:    conn, connCtx: connCtx,
		marker: regexp.MustCompile(`perimeter-` + token + `-([0-9]+)\r?\n`),
		stdout: cmd.Stdout, stdin: cmd.Stdin,
	}
	go p.read()
	select {
	case <-p.started:
	case <-p.done:
		if p.err != nil {
			return nil, p.err
		}
		return nil, sandbox.Errorf(providerName, s.id, op, sandbox.ErrUnavailable,
			"the terminal ended (code %d) before the command started: %q", p.code, p.pre.String())
	case <-ctx.Done():
		go p.watch(ctx, 0)
		return nil, ctx.Err()
	}
	if p.stdin != nil {
		go p.copyStdin()
	}
	go p.watch(ctx, cmd.Timeout)
	return p, nil
}

// ptyProcess is a command on the bridge's terminal.
type ptyProcess struct {
	process
	conn    *websocket.Conn
	connCtx context.Context
	marker  *regexp.Regexp
	stdout  io.Writer
	stdin   io.Reader
	pre     bytes.Buffer // output before the marker
	wmu     sync.Mutex   // one writer on the connection at a time
}

var _ driver.Resizer = (*ptyProcess)(nil)

func (p *ptyProcess) read() {
	defer p.conn.CloseNow()
	defer p.cancelStream()
	seen := false
	for {
		typ, data, err := p.conn.Read(p.connCtx)
		if err != nil {
			p.finish(0, wrap(p.s.id, "exec", fmt.Errorf("the terminal closed without an exit frame: %w", err)))
			return
		}
		if typ == websocket.MessageBinary {
			if !seen {
				p.pre.Write(data)
				m := p.marker.FindSubmatchIndex(p.pre.Bytes())
				if m == nil {
					if p.pre.Len() > 1<<20 {
						p.finish(0, sandbox.Errorf(providerName, p.s.id, "exec", sandbox.ErrUnavailable, "the terminal's shell never ran the command"))
						return
					}
					continue
				}
				pid, _ := strconv.Atoi(string(p.pre.Bytes()[m[2]:m[3]]))
				data = p.pre.Bytes()[m[1]:]
				seen = true
				p.setPID(pid)
			}
			if len(data) > 0 && p.stdout != nil {
				if _, err := p.stdout.Write(data); err != nil {
					p.finish(0, sandbox.NewError(providerName, p.s.id, "exec", sandbox.ErrUnavailable, fmt.Errorf("writing terminal output: %w", err)))
					return
				}
			}
			continue
		}
		var msg ptyControl
		if json.Unmarshal(data, &msg) != nil {
			continue
		}
		switch msg.Type {
		case "exit":
			code := 0
			if msg.Code != nil {
				code = *msg.Code
			}
			p.mu.Lock()
			if msg.Signal != "" && p.sent == "" {
				p.sent = sandbox.Signal(msg.Signal)
			}
			p.mu.Unlock()
			p.finish(code, nil)
			p.conn.Close(websocket.StatusNormalClosure, "")
			return
		case "error":
			p.finish(0, sandbox.Errorf(providerName, p.s.id, "exec", sandbox.ErrUnavailable, "terminal error: %s", msg.Message))
			return
		}
	}
}

func (p *ptyProcess) copyStdin() {
	buf := make([]byte, 32<<10)
	for {
		n, err := p.stdin.Read(buf)
		if n > 0 {
			p.wmu.Lock()
			werr := p.conn.Write(p.connCtx, websocket.MessageBinary, buf[:n])
			p.wmu.Unlock()
			if werr != nil {
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				// End of input on a terminal is ^D.
				p.wmu.Lock()
				p.conn.Write(p.connCtx, websocket.MessageBinary, []byte{4})
				p.wmu.Unlock()
			}
			return
		}
	}
}

// Resize sends the bridge's resize frame.
func (p *ptyProcess) Resize(ctx context.Context, rows, cols int) error {
	select {
	case <-p.done:
		return sandbox.Errorf(providerName, p.s.id, "resize", sandbox.ErrInvalidArgument, "the process has exited")
	default:
	}
	data, _ := json.Marshal(ptyControl{Type: "resize", Cols: cols, Rows: rows})
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if err := p.conn.Write(ctx, websocket.MessageText, data); err != nil {
		return sandbox.NewError(providerName, p.s.id, "resize", sandbox.ErrUnavailable, err)
	}
	return nil
}

// shQuote quotes s for a POSIX shell.
func shQuote(s string) string {
	if s != "" && safeWord.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

var safeWord = regexp.MustCompile(`^[A-Za-z0-9@%+=:,./_-]+$`)
