package cloudflarefake

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"github.com/coder/websocket"
)

// pty serves GET …/pty as the bridge does: a WebSocket on which the server
// sends {"type":"ready"}, the terminal's output as binary frames and
// {"type":"exit","code":N} (or {"type":"error","message":…}); the client
// sends keystrokes as binary frames and {"type":"resize","cols":N,"rows":N}
// text frames. The shell is the "shell" query parameter (default
// /bin/bash), started in the session's working directory with its
// environment. As on the bridge, a client that disconnects leaves the
// terminal's program running; it ends with the sandbox. The bridge's replay
// of buffered output on reconnect is not reproduced.
func (s *Server) pty(w http.ResponseWriter, r *http.Request, b *box) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		apiError(w, 400, "invalid_request", "WebSocket upgrade required")
		return
	}
	q := r.URL.Query()
	cols, rows := 80, 24
	for _, p := range []struct {
		name string
		dst  *int
	}{{"cols", &cols}, {"rows", &rows}} {
		if v := q.Get(p.name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 65535 {
				apiError(w, 400, "invalid_request", p.name+" must be a positive integer")
				return
			}
			*p.dst = n
		}
	}
	if sid := q.Get("session"); sid != "" && r.Header.Get("Session-Id") == "" {
		if !sessionRE.MatchString(sid) || strings.Contains(sid, "..") {
			apiError(w, 400, "invalid_request", "Invalid session")
			return
		}
		r.Header.Set("Session-Id", sid)
	}
	se, ok := s.sessionOf(w, r, b)
	if !ok {
		return
	}
	shell := q.Get("shell")
	if shell == "" {
		shell = "/bin/bash"
	}
	rel, _ := resolve(se.Cwd)
	env := map[string]string{"TERM": "xterm-256color"}
	for k, v := range se.Env {
		env[k] = v
	}
	cmd := s.command(b, rel, env, shell)
	ptmx, tty, err := openPTY(rows, cols)
	if err != nil {
		apiError(w, 502, "exec_transport_error", "terminal failed: "+err.Error())
		return
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		ptmx.Close()
		tty.Close()
		return
	}
	defer conn.CloseNow()
	ctx := r.Context()
	err = cmd.Start()
	tty.Close()
	if err != nil {
		ptmx.Close()
		conn.Write(ctx, websocket.MessageText, []byte(`{"type":"error","message":"terminal failed: `+jsonText(err.Error())+`"}`))
		conn.Close(websocket.StatusInternalError, "terminal failed")
		return
	}
	conn.Write(ctx, websocket.MessageText, []byte(`{"type":"ready"}`))

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := ptmx.Read(buf)
			if n > 0 {
				conn.Write(ctx, websocket.MessageBinary, buf[:n])
			}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		for {
			typ, data, err := conn.Read(ctx)
			if err != nil {
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
	err = cmd.Wait()
	code := 0
	signal := ""
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
			signal = sigName(ws.Signal())
		}
	}
	// The terminal's output is read until every holder of the terminal has
	// gone (EIO).
	wg.Wait()
	ptmx.Close()
	msg := map[string]any{"type": "exit", "code": code}
	if signal != "" {
		msg["signal"] = signal
	}
	data, _ := json.Marshal(msg)
	conn.Write(ctx, websocket.MessageText, data)
	conn.Close(websocket.StatusNormalClosure, "")
}

func jsonText(s string) string {
	b, _ := json.Marshal(s)
	return string(b[1 : len(b)-1])
}

func sigName(s syscall.Signal) string {
	switch s {
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGKILL:
		return "SIGKILL"
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGHUP:
		return "SIGHUP"
	}
	return "SIG" + strings.ToUpper(s.String())
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
	if err == nil {
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
