package vercelfake

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/coder/websocket"

	"github.com/perimeter-sdk/perimeter/internal/hostview"
	"github.com/perimeter-sdk/perimeter/internal/procgroup"
)

// The interactive session, as Vercel's CLI speaks it: POST …/interactive
// returns a WebSocket URL and a token; the client connects with ?token=,
// sends {"type":"start",command,args,env:["K=V"],cwd,cols,rows}, then
// stdin as binary frames and {"type":"resize",cols,rows} text frames; the
// server sends output as binary frames and {"type":"exit","code":N}.
// Closing the connection kills the command.

func (s *Server) openInteractive(w http.ResponseWriter, r *http.Request, se *sessionRec) {
	token := newID("tok")
	s.mu.Lock()
	s.ptyTokens[token] = se.ID
	s.mu.Unlock()
	writeJSON(w, map[string]any{"url": "ws://" + r.Host + "/_interactive/" + se.ID, "token": token})
}

type startFrame struct {
	Type    string   `json:"type"`
	Command string   `json:"command"`
	Args    []string `json:"args"`
	Env     []string `json:"env"`
	Cwd     string   `json:"cwd"`
	Cols    int      `json:"cols"`
	Rows    int      `json:"rows"`
}

func (s *Server) serveInteractive(w http.ResponseWriter, r *http.Request, sid string) {
	token := r.URL.Query().Get("token")
	s.mu.Lock()
	ok := token != "" && s.ptyTokens[token] == sid
	delete(s.ptyTokens, token) // single use
	se := s.sessions[sid]
	s.mu.Unlock()
	if !ok || se == nil {
		writeErr(w, http.StatusForbidden, "forbidden", "Invalid interactive token")
		return
	}
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer conn.CloseNow()
	ctx := r.Context()
	fail := func(msg string) { conn.Close(websocket.StatusPolicyViolation, msg) }

	typ, data, err := conn.Read(ctx)
	var st startFrame
	if err != nil || typ != websocket.MessageText || json.Unmarshal(data, &st) != nil || st.Type != "start" {
		fail("expected a start frame")
		return
	}
	if st.Command == "" { // the account's shell
		st.Command = "/bin/sh"
		for i, a := range st.Args {
			if a == "--login" {
				st.Args[i] = "-l"
			}
		}
	}
	cwd := se.Cwd
	if st.Cwd != "" {
		cwd = st.Cwd
		if !path.IsAbs(cwd) {
			cwd = path.Join(se.Cwd, cwd)
		}
		cwd = path.Clean(cwd)
	}

	var view *hostview.Holder
	if se.Cwd == sandboxCwd {
		if view, err = s.sessionView(se); errors.Is(err, errSessionStopped) {
			fail("sandbox_stopped")
			return
		} else if err != nil {
			fail("isolating the sandbox: " + err.Error())
			return
		}
	}
	s.mu.Lock()
	if se.Status != "running" {
		s.mu.Unlock()
		fail("sandbox_stopped")
		return
	}
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + se.Cwd, "LANG=C.UTF-8"}
	if sb := s.sandboxes[se.Sandbox]; sb != nil {
		env = appendEnv(env, sb.Env)
	}
	extra := map[string]string{}
	for _, kv := range st.Env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			extra[k] = v
		}
	}
	env = appendEnv(env, extra)
	var cmd *exec.Cmd
	if view != nil {
		cmd = isolatedCommand(view, se, s.user, false, cwd, env, st.Command, st.Args)
	} else {
		cmd = hostCommand(cwd, env, st.Command, st.Args)
	}
	ptmx, tty, err := openPTY(st.Rows, st.Cols)
	if err != nil {
		s.mu.Unlock()
		fail("pty: " + err.Error())
		return
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	c := &command{ID: newID("pty"), Name: st.Command, Args: st.Args, Cwd: cwd, SessionID: se.ID,
		Started: now(), changed: make(chan struct{}), done: make(chan struct{})}
	startErr := cmd.Start()
	tty.Close()
	if startErr == nil {
		c.leader = procgroup.Watch(cmd)
		se.cmds[c.ID] = c
	}
	s.mu.Unlock()
	if startErr != nil {
		ptmx.Close()
		code := 127
		if errors.Is(startErr, os.ErrPermission) {
			code = 126
		}
		conn.Write(ctx, websocket.MessageBinary, []byte(fmt.Sprintf("%s: %v\r\n", st.Command, startErr)))
		conn.Write(ctx, websocket.MessageText, []byte(`{"type":"exit","code":`+strconv.Itoa(code)+`}`))
		conn.Close(websocket.StatusNormalClosure, "")
		return
	}

	// Output: the terminal to binary frames, until every holder of the
	// terminal has gone (EIO).
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := ptmx.Read(buf)
			if n > 0 && conn.Write(ctx, websocket.MessageBinary, buf[:n]) != nil {
				return
			}
			if err != nil {
				return
			}
		}
	}()
	// Input: binary frames to the terminal, resize frames to its size. A
	// closed connection kills the command.
	inputDone := make(chan struct{})
	go func() {
		defer close(inputDone)
		for {
			typ, data, err := conn.Read(ctx)
			if err != nil {
				c.signal(syscall.SIGKILL)
				return
			}
			if typ == websocket.MessageBinary {
				ptmx.Write(data)
				continue
			}
			var msg struct {
				Type       string `json:"type"`
				Cols, Rows int
			}
			if json.Unmarshal(data, &msg) == nil && msg.Type == "resize" && msg.Cols > 0 && msg.Rows > 0 {
				setSize(ptmx, msg.Rows, msg.Cols)
			}
		}
	}()

	// The session may outlive its leader; end it with the command.
	<-c.leader.Exited()
	c.leader.Signal(syscall.SIGKILL)
	err = c.leader.Reap()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
	}
	drained := make(chan struct{})
	go func() { wg.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(2 * time.Second):
	}
	ptmx.Close()
	<-drained
	c.mu.Lock()
	c.exitCode = &code
	c.mu.Unlock()
	close(c.done)
	conn.Write(ctx, websocket.MessageText, []byte(`{"type":"exit","code":`+strconv.Itoa(code)+`}`))
	conn.Close(websocket.StatusNormalClosure, "")
	<-inputDone
}

// openPTY opens a pseudo-terminal pair of the given size.
func openPTY(rows, cols int) (ptmx, tty *os.File, err error) {
	ptmx, err = os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	var n uint32
	var unlock int32
	if err = ioctl(ptmx, syscall.TIOCSPTLCK, unsafe.Pointer(&unlock)); err == nil {
		err = ioctl(ptmx, syscall.TIOCGPTN, unsafe.Pointer(&n))
	}
	if err == nil {
		tty, err = os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|syscall.O_NOCTTY, 0)
	}
	if err == nil && rows > 0 && cols > 0 {
		err = setSize(ptmx, rows, cols)
	}
	if err != nil {
		ptmx.Close()
		if tty != nil {
			tty.Close()
		}
		return nil, nil, err
	}
	return ptmx, tty, nil
}

func setSize(f *os.File, rows, cols int) error {
	ws := struct{ Row, Col, X, Y uint16 }{uint16(rows), uint16(cols), 0, 0}
	return ioctl(f, syscall.TIOCSWINSZ, unsafe.Pointer(&ws))
}

func ioctl(f *os.File, req uintptr, arg unsafe.Pointer) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, req, uintptr(arg))
	}); err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}
