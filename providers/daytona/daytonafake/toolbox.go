package daytonafake

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"

	"github.com/perimeter-sdk/perimeter/internal/procgroup"
)

// Stream markers of the daemon's split log stream: the bytes after one
// belong to stdout (\x01\x01\x01) or stderr (\x02\x02\x02) until the next.
var (
	stdoutMark = []byte{1, 1, 1}
	stderrMark = []byte{2, 2, 2}
)

// session is a named group of commands (the daemon's persistent shell;
// here each command is its own shell).
type session struct {
	id   string
	cmds map[string]*command
}

// command is a process started through a session (or /process/execute).
type command struct {
	id, text string
	leader   *procgroup.Leader // signals the command's group until it is reaped
	stdin    io.WriteCloser
	log      *os.File // marker-framed output, as the follow stream sends it

	mu       sync.Mutex
	size     int64
	changed  chan struct{}
	exitCode *int
	done     chan struct{}
}

func (c *command) kill() {
	c.leader.Signal(syscall.SIGKILL)
}

func (c *command) append(mark, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.log.Write(mark)
	c.log.Write(data)
	c.size += int64(len(mark) + len(data))
	close(c.changed)
	c.changed = make(chan struct{})
}

// state returns how much log there is, whether the command has ended, and
// a channel closed at the next change.
func (c *command) state() (int64, bool, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size, c.exitCode != nil, c.changed
}

// split returns the command's output so far: combined, stdout, stderr.
func (c *command) split() (string, string, string, error) {
	c.mu.Lock()
	n := c.size
	c.mu.Unlock()
	raw := make([]byte, n)
	if _, err := c.log.ReadAt(raw, 0); err != nil && !errors.Is(err, io.EOF) {
		return "", "", "", err
	}
	var all, out, errb strings.Builder
	cur := &out
	for len(raw) > 0 {
		if len(raw) >= 3 && (raw[0] == 1 || raw[0] == 2) && raw[1] == raw[0] && raw[2] == raw[0] {
			if raw[0] == 1 {
				cur = &out
			} else {
				cur = &errb
			}
			raw = raw[3:]
			continue
		}
		cur.WriteByte(raw[0])
		all.WriteByte(raw[0])
		raw = raw[1:]
	}
	return all.String(), out.String(), errb.String(), nil
}

func (s *Server) env(sb *sandboxRec, extra map[string]string) []string {
	m := map[string]string{
		"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME": sb.cwd, "LANG": "C.UTF-8", "USER": sb.w.User,
		tagVar: sb.w.ID, // how stop finds processes that left their group
	}
	for k, v := range sb.w.Env {
		m[k] = v
	}
	for k, v := range extra {
		m[k] = v
	}
	env := make([]string, 0, len(m))
	for k, v := range m {
		env = append(env, k+"="+v)
	}
	return env
}

// shell returns sh -c script run in sb, in cwd, in its own process group.
func (s *Server) shell(sb *sandboxRec, cwd string, env []string, script string) *exec.Cmd {
	var cmd *exec.Cmd
	if sb.view != nil {
		nonet := sb.w.NetworkBlockAll || sb.w.NetworkAllowList != "" || sb.w.DomainAllowList != ""
		cmd = isolatedCommand(sb.view, nonet, cwd, env, "/bin/sh", "-c", script)
	} else {
		// Default signal dispositions, as a fresh sandbox's processes have,
		// whatever the fake's own process ignores.
		cmd = exec.Command("/usr/bin/env", "--default-signal", "/bin/sh", "-c", script)
		cmd.Dir, cmd.Env = cwd, env
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// start runs text as a session command of sb; the caller holds s.mu.
func (s *Server) startLocked(sb *sandboxRec, text string) (*command, error) {
	log, err := os.CreateTemp(sb.tmp, ".daytonafake-log-")
	if err != nil {
		return nil, err
	}
	os.Remove(log.Name()) // open until the command is forgotten
	c := &command{id: newID(), text: text, log: log, changed: make(chan struct{}), done: make(chan struct{})}
	cmd := s.shell(sb, sb.cwd, s.env(sb, nil), text)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, err
	}
	c.leader, c.stdin = procgroup.Watch(cmd), stdin
	sb.cmds[c.id] = c
	var wg sync.WaitGroup
	wg.Add(2)
	pump := func(mark []byte, r io.Reader) {
		defer wg.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				c.append(mark, buf[:n])
			}
			if err != nil {
				return
			}
		}
	}
	go pump(stdoutMark, stdout)
	go pump(stderrMark, stderr)
	go func() {
		wg.Wait()
		// The group may outlive its leader; end it with the command.
		<-c.leader.Exited()
		c.leader.Signal(syscall.SIGKILL)
		err := c.leader.Reap()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				code = 128 + int(ws.Signal())
			}
		} else if err != nil {
			code = 1
		}
		c.mu.Lock()
		c.exitCode = &code
		close(c.changed)
		c.changed = make(chan struct{})
		c.mu.Unlock()
		close(c.done)
	}()
	return c, nil
}

// toolbox serves one toolbox request for sb (which was started when the
// request arrived).
func (s *Server) toolbox(w http.ResponseWriter, r *http.Request, sb *sandboxRec, p string) {
	parts := strings.Split(strings.Trim(p, "/"), "/")
	switch {
	case p == "/work-dir" || p == "/user-home-dir":
		writeJSON(w, http.StatusOK, map[string]string{"dir": sb.cwd})
	case p == "/version":
		writeJSON(w, http.StatusOK, map[string]string{"version": "0.190.0-fake"})
	case p == "/process/execute" && r.Method == http.MethodPost:
		s.execute(w, r, sb)
	case p == "/process/session" && r.Method == http.MethodPost:
		var b struct {
			SessionID string `json:"sessionId"`
		}
		if !decode(w, r, &b) {
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, dup := sb.sessions[b.SessionID]; dup || b.SessionID == "" {
			daemonError(w, r, http.StatusConflict, "session "+b.SessionID+" already exists")
			return
		}
		sb.sessions[b.SessionID] = &session{id: b.SessionID, cmds: map[string]*command{}}
		w.WriteHeader(http.StatusCreated)
	case len(parts) >= 3 && parts[0] == "process" && parts[1] == "session":
		s.sessionRoute(w, r, sb, parts[2], parts[3:])
	case len(parts) >= 2 && parts[0] == "process" && parts[1] == "pty":
		s.ptyRoute(w, r, sb, parts[2:])
	case parts[0] == "files":
		s.files(w, r, sb, p)
	default:
		daemonError(w, r, http.StatusNotFound, "no route "+r.Method+" "+p+" in this fake")
	}
}

func (s *Server) sessionRoute(w http.ResponseWriter, r *http.Request, sb *sandboxRec, sid string, rest []string) {
	s.mu.Lock()
	se := sb.sessions[sid]
	s.mu.Unlock()
	if se == nil {
		daemonError(w, r, http.StatusNotFound, "session "+sid+" not found")
		return
	}
	switch {
	case len(rest) == 0 && r.Method == http.MethodDelete:
		s.mu.Lock()
		var wait []*command
		for _, c := range se.cmds {
			c.kill()
			wait = append(wait, c)
			delete(sb.cmds, c.id)
		}
		delete(sb.sessions, sid)
		s.mu.Unlock()
		for _, c := range wait {
			<-c.done
			c.log.Close()
		}
		w.WriteHeader(http.StatusNoContent)
	case len(rest) == 0 && r.Method == http.MethodGet:
		s.mu.Lock()
		cmds := []map[string]any{}
		for _, c := range se.cmds {
			cmds = append(cmds, c.payload())
		}
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{"sessionId": sid, "commands": cmds})
	case len(rest) == 1 && rest[0] == "exec" && r.Method == http.MethodPost:
		var b struct {
			Command  string `json:"command"`
			RunAsync bool   `json:"runAsync"`
			Async    bool   `json:"async"`
		}
		if !decode(w, r, &b) {
			return
		}
		if strings.TrimSpace(b.Command) == "" {
			daemonError(w, r, http.StatusBadRequest, "command is required")
			return
		}
		s.mu.Lock()
		c, err := s.startLocked(sb, b.Command)
		if err == nil {
			se.cmds[c.id] = c
		}
		s.mu.Unlock()
		if err != nil {
			daemonError(w, r, http.StatusInternalServerError, err.Error())
			return
		}
		// The SDK sends runAsync; the spec also lists async (notes §6).
		if b.RunAsync || b.Async {
			writeJSON(w, http.StatusAccepted, map[string]any{"cmdId": c.id})
			return
		}
		select {
		case <-c.done:
		case <-r.Context().Done():
			return
		}
		all, out, errs, _ := c.split()
		writeJSON(w, http.StatusOK, map[string]any{"cmdId": c.id, "exitCode": *c.exitCode, "output": all, "stdout": out, "stderr": errs})
	case len(rest) >= 2 && rest[0] == "command":
		s.mu.Lock()
		c := se.cmds[rest[1]]
		s.mu.Unlock()
		if c == nil {
			daemonError(w, r, http.StatusNotFound, "command "+rest[1]+" not found")
			return
		}
		switch {
		case len(rest) == 2 && r.Method == http.MethodGet:
			writeJSON(w, http.StatusOK, c.payload())
		case len(rest) == 3 && rest[2] == "input" && r.Method == http.MethodPost:
			var b struct {
				Data string `json:"data"`
			}
			if !decode(w, r, &b) {
				return
			}
			if _, done, _ := c.state(); done {
				daemonError(w, r, http.StatusBadRequest, "command has exited")
				return
			}
			if _, err := io.WriteString(c.stdin, b.Data); err != nil {
				daemonError(w, r, http.StatusBadRequest, "writing to the command's input: "+err.Error())
				return
			}
			w.WriteHeader(http.StatusNoContent)
		case len(rest) == 3 && rest[2] == "logs" && r.Method == http.MethodGet:
			if r.URL.Query().Get("follow") == "true" {
				s.follow(w, r, c)
				return
			}
			all, out, errs, err := c.split()
			if err != nil {
				daemonError(w, r, http.StatusInternalServerError, err.Error())
				return
			}
			// The format follows X-Daytona-SDK-Version (notes §2): JSON
			// from 0.167.0 on, the combined text before.
			if versionAtLeast(r.Header.Get("X-Daytona-SDK-Version"), 0, 167, 0) {
				writeJSON(w, http.StatusOK, map[string]string{"output": all, "stdout": out, "stderr": errs})
				return
			}
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, all)
		default:
			daemonError(w, r, http.StatusNotFound, "no route "+r.Method+" "+r.URL.Path)
		}
	default:
		daemonError(w, r, http.StatusNotFound, "no route "+r.Method+" "+r.URL.Path)
	}
}

func (c *command) payload() map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[string]any{"id": c.id, "command": c.text}
	if c.exitCode != nil {
		m["exitCode"] = *c.exitCode
	}
	return m
}

func versionAtLeast(v string, major, minor, patch int) bool {
	v = strings.TrimPrefix(v, "v")
	if v == "" {
		return false
	}
	var got [3]int
	for i, f := range strings.SplitN(strings.SplitN(v, "-", 2)[0], ".", 3) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return false
		}
		got[i] = n
	}
	want := [3]int{major, minor, patch}
	for i := range 3 {
		if got[i] != want[i] {
			return got[i] > want[i]
		}
	}
	return true
}

// follow streams a command's marker-framed output over a WebSocket as it
// is produced, and closes normally when the command has ended and all of
// it is sent.
func (s *Server) follow(w http.ResponseWriter, r *http.Request, c *command) {
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept has answered
	}
	defer conn.CloseNow()
	ctx := conn.CloseRead(r.Context())
	var off int64
	buf := make([]byte, 64<<10)
	for {
		size, done, changed := c.state()
		for off < size {
			n, err := c.log.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
			if n > 0 {
				if werr := conn.Write(ctx, websocket.MessageBinary, buf[:n]); werr != nil {
					return
				}
				off += int64(n)
			}
			if err != nil && !errors.Is(err, io.EOF) {
				conn.Close(websocket.StatusInternalError, err.Error())
				return
			}
		}
		if done {
			conn.Close(websocket.StatusNormalClosure, "")
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

// execute runs a command synchronously with merged output. The command is
// given to the shell on stdin, as the daemon does. The daemon applies a
// timeout only when a positive one is sent, whatever the spec says about
// a default of 10 seconds (notes §6).
func (s *Server) execute(w http.ResponseWriter, r *http.Request, sb *sandboxRec) {
	var b struct {
		Command string            `json:"command"`
		Cwd     string            `json:"cwd"`
		Envs    map[string]string `json:"envs"`
		Timeout int               `json:"timeout"`
	}
	if !decode(w, r, &b) {
		return
	}
	if strings.TrimSpace(b.Command) == "" {
		daemonError(w, r, http.StatusBadRequest, "command is required")
		return
	}
	for k := range b.Envs {
		if k == "" || strings.ContainsAny(k, "= \t\n\x00") {
			daemonError(w, r, http.StatusBadRequest, "invalid environment variable name "+strconv.Quote(k))
			return
		}
	}
	cwd := sb.cwd
	if b.Cwd != "" {
		cwd = b.Cwd
	}
	s.mu.Lock()
	cmd := s.shell(sb, cwd, s.env(sb, b.Envs), "exec /bin/sh")
	s.mu.Unlock()
	cmd.Stdin = strings.NewReader(b.Command)
	outR, outW, err := os.Pipe()
	if err != nil {
		daemonError(w, r, http.StatusInternalServerError, err.Error())
		return
	}
	cmd.Stdout, cmd.Stderr = outW, outW
	err = cmd.Start()
	outW.Close()
	if err != nil {
		outR.Close()
		daemonError(w, r, http.StatusInternalServerError, err.Error())
		return
	}
	leader := procgroup.Watch(cmd)
	// The result is the output until every writer has closed it (as
	// exec.Cmd.Wait would copy it) and the command has exited.
	var out strings.Builder
	ended := make(chan struct{})
	go func() {
		io.Copy(&out, outR)
		outR.Close()
		<-leader.Exited()
		close(ended)
	}()
	var timeout <-chan time.Time
	if b.Timeout > 0 {
		t := time.NewTimer(time.Duration(b.Timeout) * time.Second)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-ended:
	case <-timeout:
		leader.Signal(syscall.SIGKILL)
		leader.Reap()
		daemonError(w, r, http.StatusRequestTimeout, "command execution timeout")
		return
	case <-r.Context().Done():
		leader.Signal(syscall.SIGKILL)
		leader.Reap()
		return
	}
	leader.Signal(syscall.SIGKILL)
	err = leader.Reap()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		daemonError(w, r, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"exitCode": code, "result": out.String()})
}

// ---- files ----------------------------------------------------------------

// resolve maps a sandbox path to an os.Root and a name inside it. Only the
// working directory and /tmp are served.
func resolve(sb *sandboxRec, name string) (*os.Root, string, error) {
	p := name
	if !path.IsAbs(p) {
		p = path.Join(sb.cwd, p)
	}
	p = path.Clean(p)
	maps := [][2]string{{sb.cwd, sb.disk}}
	if sb.cwd == homeDir {
		maps = append(maps, [2]string{"/tmp", sb.tmp})
	}
	for _, m := range maps {
		if p == m[0] || strings.HasPrefix(p, m[0]+"/") {
			rel := strings.TrimPrefix(strings.TrimPrefix(p, m[0]), "/")
			if rel == "" {
				rel = "."
			}
			root, err := os.OpenRoot(m[1])
			if err != nil {
				return nil, "", err
			}
			return root, rel, nil
		}
	}
	return nil, "", fmt.Errorf("path %q is outside what this fake serves (%s and /tmp): %w", name, sb.cwd, fs.ErrPermission)
}

// fileStatus maps a file error to the daemon's status. A link leading out
// of the sandbox leads nowhere, as it would inside a real one.
func fileStatus(err error) int {
	switch {
	case errors.Is(err, fs.ErrNotExist) || strings.Contains(err.Error(), "escapes from parent"):
		return http.StatusNotFound
	case errors.Is(err, fs.ErrPermission):
		return http.StatusForbidden
	case errors.Is(err, fs.ErrExist):
		return http.StatusConflict
	}
	return http.StatusBadRequest
}

func fileInfo(name string, fi fs.FileInfo) map[string]any {
	return map[string]any{
		"name": name, "size": fi.Size(), "mode": fi.Mode().String(),
		"permissions": fmt.Sprintf("%#o", fi.Mode().Perm()), "isDir": fi.IsDir(),
		"modifiedAt": fi.ModTime().UTC().Format(time.RFC3339Nano), "modTime": fi.ModTime().String(),
		"owner": "daytona", "group": "daytona",
	}
}

func (s *Server) files(w http.ResponseWriter, r *http.Request, sb *sandboxRec, p string) {
	q := r.URL.Query()
	name := q.Get("path")
	if p == "/files/move" {
		name = q.Get("source")
	}
	if name == "" && p == "/files" && r.Method == http.MethodGet {
		name = sb.cwd
	}
	root, rel, err := resolve(sb, name)
	if err != nil {
		daemonError(w, r, fileStatus(err), err.Error())
		return
	}
	defer root.Close()
	fail := func(err error) { daemonError(w, r, fileStatus(err), err.Error()) }
	switch p + " " + r.Method {
	case "/files GET":
		f, err := root.Open(rel)
		if err != nil {
			fail(err)
			return
		}
		defer f.Close()
		ents, err := f.ReadDir(-1)
		if err != nil {
			fail(err)
			return
		}
		out := make([]map[string]any, 0, len(ents))
		for _, e := range ents {
			if fi, err := e.Info(); err == nil {
				out = append(out, fileInfo(e.Name(), fi))
			}
		}
		writeJSON(w, http.StatusOK, out)
	case "/files/info GET":
		fi, err := root.Lstat(rel)
		if err != nil {
			fail(err)
			return
		}
		writeJSON(w, http.StatusOK, fileInfo(path.Base(path.Clean("/"+rel)), fi))
	case "/files/download GET":
		f, err := root.Open(rel)
		if err != nil {
			fail(err)
			return
		}
		defer f.Close()
		if fi, err := f.Stat(); err != nil || fi.IsDir() {
			daemonError(w, r, http.StatusBadRequest, "path is a directory")
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusOK)
		io.Copy(w, f)
	case "/files/upload POST":
		s.upload(w, r, root, rel)
	case "/files/folder POST":
		mode, err := strconv.ParseUint(q.Get("mode"), 8, 32)
		if err != nil {
			daemonError(w, r, http.StatusBadRequest, "mode must be an octal string such as 0755")
			return
		}
		if err := root.MkdirAll(rel, fs.FileMode(mode)); err != nil {
			fail(err)
			return
		}
		w.WriteHeader(http.StatusCreated)
	case "/files DELETE":
		if _, err := root.Lstat(rel); err != nil {
			fail(err)
			return
		}
		if q.Get("recursive") == "true" {
			err = root.RemoveAll(rel)
		} else {
			err = root.Remove(rel)
		}
		if err != nil {
			fail(err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case "/files/move POST":
		droot, drel, err := resolve(sb, q.Get("destination"))
		if err != nil {
			fail(err)
			return
		}
		defer droot.Close()
		if droot.Name() != root.Name() {
			daemonError(w, r, http.StatusBadRequest, "this fake moves files within one directory tree only")
			return
		}
		if err := root.Rename(rel, drel); err != nil {
			fail(err)
			return
		}
		w.WriteHeader(http.StatusOK)
	case "/files/permissions POST":
		if m := q.Get("mode"); m != "" {
			mode, err := strconv.ParseUint(m, 8, 32)
			if err != nil {
				daemonError(w, r, http.StatusBadRequest, "mode must be an octal string")
				return
			}
			if err := root.Chmod(rel, fs.FileMode(mode)); err != nil {
				fail(err)
				return
			}
		}
		w.WriteHeader(http.StatusOK)
	default:
		daemonError(w, r, http.StatusNotFound, "no route "+r.Method+" "+p+" in this fake")
	}
}

// upload streams the multipart field "file" to the named file, creating
// its parent directories. Like the daemon it writes in place, so a broken
// upload leaves what arrived; it answers 200 with an empty body.
func (s *Server) upload(w http.ResponseWriter, r *http.Request, root *os.Root, rel string) {
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" {
		daemonError(w, r, http.StatusBadRequest, "expected multipart/form-data")
		return
	}
	mr := multipart.NewReader(r.Body, params["boundary"])
	for {
		part, err := mr.NextPart()
		if err != nil {
			daemonError(w, r, http.StatusBadRequest, "no multipart field \"file\"")
			return
		}
		if part.FormName() != "file" {
			continue
		}
		if dir := path.Dir(rel); dir != "." {
			if err := root.MkdirAll(dir, 0o755); err != nil {
				daemonError(w, r, fileStatus(err), err.Error())
				return
			}
		}
		f, err := root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			daemonError(w, r, fileStatus(err), err.Error())
			return
		}
		_, err = io.Copy(f, part)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			daemonError(w, r, http.StatusBadRequest, "upload interrupted: "+err.Error())
			return
		}
		w.WriteHeader(http.StatusOK)
		return
	}
}

// ---- preview --------------------------------------------------------------

// preview proxies /preview/{port}-{id or token}/rest to 127.0.0.1:{port}.
func (s *Server) preview(w http.ResponseWriter, r *http.Request, rest string) {
	key, tail, _ := strings.Cut(rest, "/")
	portStr, who, ok := strings.Cut(key, "-")
	port, err := strconv.Atoi(portStr)
	if !ok || err != nil {
		http.Error(w, "bad preview address", http.StatusNotFound)
		return
	}
	s.mu.Lock()
	allowed := false
	if su := s.signed[who]; su != nil && su.port == port && time.Now().Before(su.expires) {
		allowed = s.sandboxes[su.sandbox] != nil
	} else if sb := s.sandboxes[who]; sb != nil {
		allowed = sb.w.Public || r.Header.Get("X-Daytona-Preview-Token") == sb.previewTk
	}
	s.mu.Unlock()
	if !allowed {
		http.Error(w, "preview: not authorized or expired", http.StatusUnauthorized)
		return
	}
	target := &url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(port)}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.URL.Path = "/" + tail
			pr.Out.URL.RawPath = ""
			pr.Out.Header.Del("X-Daytona-Preview-Token")
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			http.Error(w, "preview: nothing answers on port "+portStr+": "+err.Error(), http.StatusBadGateway)
		},
	}
	rp.ServeHTTP(w, r)
}
