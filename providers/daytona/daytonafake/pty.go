package daytonafake

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"github.com/creack/pty"

	"github.com/perimeter-sdk/perimeter/internal/procgroup"
)

// ptySession is the daemon's PTY session: the user's shell on a terminal.
type ptySession struct {
	id         string
	cols, rows int
	cwd        string
	envs       map[string]string
	created    time.Time

	mu        sync.Mutex
	ptmx      *os.File
	cmd       *exec.Cmd
	leader    *procgroup.Leader
	connected bool
	done      chan struct{}
	exitCode  int
}

func (p *ptySession) kill() {
	if p.leader != nil {
		p.leader.Signal(syscall.SIGKILL)
	}
}

func (p *ptySession) info() map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	envs := p.envs
	if envs == nil {
		envs = map[string]string{}
	}
	return map[string]any{
		"id": p.id, "active": p.cmd != nil, "cols": p.cols, "rows": p.rows, "cwd": p.cwd,
		"envs": envs, "createdAt": p.created.UTC().Format(time.RFC3339Nano), "lazyStart": false,
	}
}

func (s *Server) ptyRoute(w http.ResponseWriter, r *http.Request, sb *sandboxRec, rest []string) {
	if len(rest) == 0 && r.Method == http.MethodPost {
		var b struct {
			ID   string            `json:"id"`
			Cols int               `json:"cols"`
			Rows int               `json:"rows"`
			Cwd  string            `json:"cwd"`
			Envs map[string]string `json:"envs"`
		}
		if !decode(w, r, &b) {
			return
		}
		if b.ID == "" || b.Cols <= 0 || b.Rows <= 0 {
			daemonError(w, r, http.StatusBadRequest, "id, cols and rows are required")
			return
		}
		p := &ptySession{id: b.ID, cols: b.Cols, rows: b.Rows, cwd: b.Cwd, envs: b.Envs, created: time.Now(), done: make(chan struct{})}
		if p.cwd == "" {
			p.cwd = sb.cwd
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if sb.ptys[b.ID] != nil {
			daemonError(w, r, http.StatusConflict, "PTY session "+b.ID+" already exists")
			return
		}
		cmd := s.shell(sb, p.cwd, s.env(sb, b.Envs), "exec /bin/sh -i")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
		ptmx, err := pty.StartWithAttrs(cmd, &pty.Winsize{Rows: uint16(b.Rows), Cols: uint16(b.Cols)}, cmd.SysProcAttr)
		if err != nil {
			daemonError(w, r, http.StatusInternalServerError, "starting the shell: "+err.Error())
			return
		}
		p.ptmx, p.cmd, p.leader = ptmx, cmd, procgroup.Watch(cmd)
		go func() {
			// The session may outlive its leader; end it with the shell.
			<-p.leader.Exited()
			p.leader.Signal(syscall.SIGKILL)
			err := p.leader.Reap()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					code = 128 + int(ws.Signal())
				}
			}
			p.mu.Lock()
			p.exitCode = code
			p.mu.Unlock()
			close(p.done)
		}()
		sb.ptys[b.ID] = p
		writeJSON(w, http.StatusCreated, map[string]string{"sessionId": b.ID})
		return
	}
	if len(rest) == 0 {
		daemonError(w, r, http.StatusNotFound, "no route "+r.Method+" "+r.URL.Path)
		return
	}
	s.mu.Lock()
	p := sb.ptys[rest[0]]
	s.mu.Unlock()
	if p == nil {
		daemonError(w, r, http.StatusNotFound, "PTY session "+rest[0]+" not found")
		return
	}
	switch {
	case len(rest) == 1 && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, p.info())
	case len(rest) == 1 && r.Method == http.MethodDelete:
		p.kill()
		<-p.done
		s.mu.Lock()
		delete(sb.ptys, p.id)
		s.mu.Unlock()
		p.ptmx.Close()
		// gin.H in the spec is an object of objects; the adapter reads nothing.
		writeJSON(w, http.StatusOK, map[string]any{})
	case len(rest) == 2 && rest[1] == "resize" && r.Method == http.MethodPost:
		var b struct {
			Cols int `json:"cols"`
			Rows int `json:"rows"`
		}
		if !decode(w, r, &b) {
			return
		}
		if err := pty.Setsize(p.ptmx, &pty.Winsize{Rows: uint16(b.Rows), Cols: uint16(b.Cols)}); err != nil {
			daemonError(w, r, http.StatusInternalServerError, err.Error())
			return
		}
		p.mu.Lock()
		p.cols, p.rows = b.Cols, b.Rows
		p.mu.Unlock()
		writeJSON(w, http.StatusOK, p.info())
	case len(rest) == 2 && rest[1] == "connect" && r.Method == http.MethodGet:
		s.ptyConnect(w, r, p)
	default:
		daemonError(w, r, http.StatusNotFound, "no route "+r.Method+" "+r.URL.Path)
	}
}

// ptyConnect serves the PTY WebSocket: binary frames in and out, a JSON
// control frame once connected, and the exit in the close reason.
func (s *Server) ptyConnect(w http.ResponseWriter, r *http.Request, p *ptySession) {
	p.mu.Lock()
	busy := p.connected
	p.connected = true
	p.mu.Unlock()
	if busy {
		daemonError(w, r, http.StatusConflict, "PTY session "+p.id+" already has a client")
		return
	}
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer conn.CloseNow()
	ctx := r.Context()
	conn.Write(ctx, websocket.MessageText, []byte(`{"type":"control","status":"connected"}`))
	go func() {
		for {
			typ, data, err := conn.Read(ctx)
			if err != nil {
				return
			}
			if typ == websocket.MessageBinary {
				p.ptmx.Write(data)
			}
		}
	}()
	out := make(chan struct{})
	go func() {
		defer close(out)
		buf := make([]byte, 32<<10)
		for {
			n, err := p.ptmx.Read(buf)
			if n > 0 && conn.Write(ctx, websocket.MessageBinary, buf[:n]) != nil {
				return
			}
			if err != nil {
				return
			}
		}
	}()
	select {
	case <-p.done:
	case <-ctx.Done():
		return
	}
	<-out // the terminal reads EIO once every holder has gone
	p.mu.Lock()
	code := p.exitCode
	p.mu.Unlock()
	reason, _ := json.Marshal(map[string]any{"exitCode": code})
	conn.Close(websocket.StatusNormalClosure, string(reason))
}
