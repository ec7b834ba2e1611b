// Package cloudflarefake is a test double of the Cloudflare Sandbox bridge
// Worker: an httptest server with the bridge's /v1 routes, status codes,
// error bodies, ID, Session-Id and path rules (403 outside /workspace), SSE
// exec framing and argv quoting, tar persist and hydrate, tunnels and the
// PTY WebSocket. Commands run for real, through bash, on the test host, in a
// temporary directory standing for /workspace.
//
// Where the host allows it (unshare(1), nsenter(1) and the right to mount),
// each sandbox has a mount namespace with a read-only view of the host, the
// sandbox's directory at /workspace and a private /tmp, and every command
// of the sandbox runs in it, so commands see the
// paths a bridge container shows and cannot reach the test host's files.
// Otherwise, or with Options.NoIsolation, commands run directly on the host
// in the sandbox's directory (absolute /workspace paths in commands then do
// not resolve).
//
// It is built from the bridge's documentation and its OpenAPI document
// (vendored as bridge-openapi.json and served at /v1/openapi.json), not from
// the adapter. What the fake does not reproduce: warm-pool behaviour (the pool
// routes answer with an empty pool), bucket mounts (502 mount_error), named
// tunnels' DNS, containers sleeping, and the PTY's replay of output on
// reconnect.
package cloudflarefake

import (
	"bytes"
	"crypto/rand"
	_ "embed"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/perimeter-sdk/perimeter/internal/hostview"
	"github.com/perimeter-sdk/perimeter/internal/procgroup"
)

// OpenAPI is the bridge's OpenAPI document (@cloudflare/sandbox 0.12.10), as
// the fake serves it.
//
//go:embed bridge-openapi.json
var OpenAPI []byte

// MaxBody is the bridge's limit for a file write or a hydrate: 32 MiB.
const MaxBody = 32 << 20

// Options configures a Server. Nil means defaults.
type Options struct {
	// APIKey is the SANDBOX_API_KEY the fake accepts; default "fake-key".
	// With NoAuth, authentication is skipped, as a bridge without the
	// secret does.
	APIKey string
	NoAuth bool
	// Version replaces info.version in the served OpenAPI document; empty
	// keeps the document's own ("1.0.0").
	Version string
	// Root holds the sandboxes' files; empty means a temporary directory
	// removed by Close.
	Root string
	// TunnelURL returns the URL of a tunnel to port; nil means
	// "https://<random>.trycloudflare.com" (named tunnels:
	// "https://<name>.example.com").
	TunnelURL func(id string, port int, name string) string
	// NoIsolation runs commands directly on the host.
	NoIsolation bool
}

// Server is a running fake bridge.
type Server struct {
	opts     Options
	srv      *httptest.Server
	ownRoot  bool
	isolated bool
	base     *hostview.Holder // the view every box's is derived from, if isolated
	baseDir  string
	doc      []byte

	mu    sync.Mutex
	boxes map[string]*box
	execs int
}

type box struct {
	id       string
	dir      string // holds workspace/, tmp/, mnt/
	sessions map[string]*session
	tunnels  map[int]tunnelRec
	view     *hostview.Holder // the isolated view, if isolated
	ready    chan struct{}    // closed when the container has started
	startErr error
}

type session struct {
	Cwd string
	Env map[string]string
}

type tunnelRec struct {
	ID        string `json:"id"`
	Port      int    `json:"port"`
	URL       string `json:"url"`
	Hostname  string `json:"hostname"`
	CreatedAt string `json:"createdAt"`
	Name      string `json:"name,omitempty"`
}

func (b *box) workspace() string { return filepath.Join(b.dir, "workspace") }

var (
	idRE      = regexp.MustCompile(`^[a-z2-7]{1,128}$`)
	sessionRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,128}$`)
)

// New starts a fake bridge.
func New(opts *Options) *Server {
	s := &Server{boxes: map[string]*box{}}
	if opts != nil {
		s.opts = *opts
	}
	if s.opts.APIKey == "" {
		s.opts.APIKey = "fake-key"
	}
	if s.opts.Root == "" {
		dir, err := os.MkdirTemp("", "cloudflarefake-")
		if err != nil {
			panic("cloudflarefake: " + err.Error())
		}
		s.opts.Root, s.ownRoot = dir, true
	}
	s.doc = OpenAPI
	if s.opts.Version != "" {
		var d map[string]any
		json.Unmarshal(OpenAPI, &d)
		d["info"].(map[string]any)["version"] = s.opts.Version
		s.doc, _ = json.Marshal(d)
	}
	if !s.opts.NoIsolation && probeIsolation(s.opts.Root) {
		s.baseDir, s.base = startBase(s.opts.Root)
		s.isolated = s.base != nil
	}
	s.srv = httptest.NewServer(s.routes())
	return s
}

// URL returns the bridge's base URL.
func (s *Server) URL() string { return s.srv.URL }

// APIKey returns the key the fake accepts.
func (s *Server) APIKey() string { return s.opts.APIKey }

// Isolated reports whether commands run in an isolated view of the host.
func (s *Server) Isolated() bool { return s.isolated }

// Sandboxes returns the IDs that currently have a container.
func (s *Server) Sandboxes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id := range s.boxes {
		ids = append(ids, id)
	}
	return ids
}

// Execs returns how many exec requests started a command.
func (s *Server) Execs() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.execs
}

// Close kills every command the fake started, stops the server and removes
// its files.
func (s *Server) Close() {
	s.mu.Lock()
	ids := make([]string, 0, len(s.boxes))
	boxes := make([]*box, 0, len(s.boxes))
	for id, b := range s.boxes {
		ids, boxes = append(ids, id), append(boxes, b)
	}
	s.mu.Unlock()
	for _, b := range boxes {
		<-b.ready // a box being started ends once it has started
		b.kill()
	}
	s.srv.CloseClientConnections()
	s.srv.Close()
	if s.base != nil {
		s.base.Close()
	}
	if s.baseDir != "" {
		os.RemoveAll(s.baseDir)
	}
	if s.ownRoot {
		os.RemoveAll(s.opts.Root)
	} else {
		for _, id := range ids {
			os.RemoveAll(filepath.Join(s.opts.Root, id))
		}
	}
}

// ---- HTTP plumbing --------------------------------------------------------

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]bool{"ok": true})
	})
	for _, p := range []string{"/v1/openapi.json", "/v1/openapi", "/v1/openapi.html"} {
		mux.HandleFunc("GET "+p, s.auth(false, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(s.doc)
		}))
	}
	mux.HandleFunc("GET /v1/pool/stats", s.auth(false, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"warm": 0, "assigned": len(s.Sandboxes()), "total": len(s.Sandboxes()),
			"config": map[string]int{"warmTarget": 0, "refreshInterval": 10000}, "maxInstances": nil})
	}))
	for _, p := range []string{"/v1/pool/prime", "/v1/pool/shutdown-prewarmed"} {
		mux.HandleFunc("POST "+p, s.auth(false, func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, map[string]bool{"ok": true})
		}))
	}
	mux.HandleFunc("POST /v1/sandbox", s.auth(true, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]string{"id": newID()})
	}))
	mux.HandleFunc("DELETE /v1/sandbox/{id}", s.sandbox(false, s.deleteSandbox))
	mux.HandleFunc("GET /v1/sandbox/{id}/running", s.sandbox(true, s.running))
	mux.HandleFunc("POST /v1/sandbox/{id}/exec", s.sandbox(true, s.exec))
	mux.HandleFunc("GET /v1/sandbox/{id}/file/{path...}", s.sandbox(true, s.readFile))
	mux.HandleFunc("PUT /v1/sandbox/{id}/file/{path...}", s.sandbox(true, s.writeFile))
	mux.HandleFunc("POST /v1/sandbox/{id}/persist", s.sandbox(true, s.persist))
	mux.HandleFunc("POST /v1/sandbox/{id}/hydrate", s.sandbox(true, s.hydrate))
	mux.HandleFunc("POST /v1/sandbox/{id}/tunnel/{port}", s.sandbox(true, s.createTunnel))
	mux.HandleFunc("DELETE /v1/sandbox/{id}/tunnel/{port}", s.sandbox(true, s.deleteTunnel))
	mux.HandleFunc("POST /v1/sandbox/{id}/session", s.sandbox(true, s.createSession))
	mux.HandleFunc("DELETE /v1/sandbox/{id}/session/{sid}", s.sandbox(true, s.deleteSession))
	mux.HandleFunc("GET /v1/sandbox/{id}/pty", s.sandbox(true, s.pty))
	mux.HandleFunc("POST /v1/sandbox/{id}/mount", s.sandbox(true, func(w http.ResponseWriter, r *http.Request, b *box) {
		apiError(w, 502, "mount_error", "mount failed: the fake bridge has no buckets")
	}))
	mux.HandleFunc("POST /v1/sandbox/{id}/unmount", s.sandbox(true, func(w http.ResponseWriter, r *http.Request, b *box) {
		apiError(w, 502, "unmount_error", "unmount failed: No active mount found")
	}))
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func apiError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]string{"error": msg, "code": code})
}

// auth checks "Authorization: Bearer KEY". Sandbox routes match the prefix
// case-insensitively; pool and openapi routes case-sensitively, and the
// openapi routes also take ?token=.
func (s *Server) auth(sandboxRoute bool, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.opts.NoAuth {
			h(w, r)
			return
		}
		got := r.Header.Get("Authorization")
		ok := false
		switch {
		case sandboxRoute && len(got) > 7 && strings.EqualFold(got[:7], "bearer "):
			ok = got[7:] == s.opts.APIKey
		case strings.HasPrefix(got, "Bearer "):
			ok = got[7:] == s.opts.APIKey
		case strings.HasPrefix(r.URL.Path, "/v1/openapi"):
			ok = r.URL.Query().Get("token") == s.opts.APIKey
		}
		if !ok {
			apiError(w, 401, "unauthorized", "Unauthorized")
			return
		}
		h(w, r)
	}
}

// sandbox checks the ID and the Session-Id header, and finds (alloc: or
// allocates) the sandbox's container.
func (s *Server) sandbox(alloc bool, h func(http.ResponseWriter, *http.Request, *box)) http.HandlerFunc {
	return s.auth(true, func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if !idRE.MatchString(id) {
			apiError(w, 400, "invalid_request", "Invalid sandbox ID: must match ^[a-z2-7]{1,128}$")
			return
		}
		if sid := r.Header.Get("Session-Id"); sid != "" && (!sessionRE.MatchString(sid) || strings.Contains(sid, "..")) {
			apiError(w, 400, "invalid_request", "Invalid Session-Id header")
			return
		}
		s.mu.Lock()
		b := s.boxes[id]
		start := false
		if b == nil && alloc {
			b = &box{id: id, dir: filepath.Join(s.opts.Root, id), sessions: map[string]*session{}, tunnels: map[int]tunnelRec{},
				ready: make(chan struct{})}
			s.boxes[id] = b
			start = true
		}
		s.mu.Unlock()
		if start {
			b.startErr = s.startBox(b)
			close(b.ready)
		}
		if b != nil {
			<-b.ready
			if b.startErr != nil {
				s.mu.Lock()
				if s.boxes[id] == b {
					delete(s.boxes, id)
				}
				s.mu.Unlock()
				apiError(w, 502, "pool_error", "container start failed: "+b.startErr.Error())
				return
			}
		}
		h(w, r, b)
	})
}

// startBox makes b's directories and, when isolated, its isolated view.
func (s *Server) startBox(b *box) error {
	err := errors.Join(os.MkdirAll(b.workspace(), 0o755), os.MkdirAll(filepath.Join(b.dir, "tmp"), 0o1777),
		os.MkdirAll(filepath.Join(b.dir, "mnt"), 0o755), os.Chmod(filepath.Join(b.dir, "tmp"), 0o1777))
	if err == nil && s.isolated {
		b.view, err = s.base.Derive(b.workspace(), filepath.Join(b.dir, "tmp"), []string{boxEnv + "=" + b.id})
	}
	if err != nil {
		os.RemoveAll(b.dir)
	}
	return err
}

// resolve normalises p (relative to /workspace) and checks it stays in
// /workspace; it returns the path relative to /workspace ("." for itself).
func resolve(p string) (string, bool) {
	if !path.IsAbs(p) {
		p = "/workspace/" + p
	}
	p = path.Clean(p)
	if p == "/workspace" {
		return ".", true
	}
	rel, ok := strings.CutPrefix(p, "/workspace/")
	return rel, ok
}

func (s *Server) sessionOf(w http.ResponseWriter, r *http.Request, b *box) (*session, bool) {
	sid := r.Header.Get("Session-Id")
	if sid == "" {
		return &session{Cwd: "/workspace"}, true
	}
	s.mu.Lock()
	se := b.sessions[sid]
	s.mu.Unlock()
	if se == nil {
		apiError(w, 502, "session_error", fmt.Sprintf("session %q not found", sid))
		return nil, false
	}
	return se, true
}

// ---- lifecycle ------------------------------------------------------------

func (s *Server) deleteSandbox(w http.ResponseWriter, r *http.Request, b *box) {
	if b != nil {
		s.mu.Lock()
		delete(s.boxes, b.id)
		s.mu.Unlock()
		b.kill()
		os.RemoveAll(b.dir)
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) running(w http.ResponseWriter, r *http.Request, b *box) {
	writeJSON(w, 200, map[string]bool{"running": true})
}

// ---- exec -----------------------------------------------------------------

// QuoteArg quotes one argv token as the bridge does: tokens made only of
// [A-Za-z0-9@%+=:,./-] pass as they are; others are wrapped in ANSI-C
// $'…' quoting with \, ', newline, carriage return and tab escaped.
func QuoteArg(a string) string {
	if a != "" && safeRE.MatchString(a) {
		return a
	}
	var b strings.Builder
	b.WriteString("$'")
	for _, c := range a {
		switch c {
		case '\\':
			b.WriteString(`\\`)
		case '\'':
			b.WriteString(`\'`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			b.WriteRune(c)
		}
	}
	b.WriteString("'")
	return b.String()
}

var safeRE = regexp.MustCompile(`^[A-Za-z0-9@%+=:,./-]+$`)

// JoinArgv is the shell command string the bridge makes of an argv.
func JoinArgv(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = QuoteArg(a)
	}
	return strings.Join(q, " ")
}

type sseWriter struct {
	mu sync.Mutex
	w  http.ResponseWriter
	f  http.Flusher
}

// event writes one SSE event, one data: line per line of payload.
func (e *sseWriter) event(name string, data []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var b bytes.Buffer
	b.WriteString("event: " + name + "\n")
	for _, line := range strings.Split(string(data), "\n") {
		b.WriteString("data: " + line + "\n")
	}
	b.WriteString("\n")
	e.w.Write(b.Bytes())
	e.f.Flush()
}

func (s *Server) exec(w http.ResponseWriter, r *http.Request, b *box) {
	var req struct {
		Argv      []string `json:"argv"`
		TimeoutMS *int64   `json:"timeout_ms"`
		Cwd       *string  `json:"cwd"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		apiError(w, 400, "invalid_request", "Invalid JSON body")
		return
	}
	if len(req.Argv) == 0 {
		apiError(w, 400, "invalid_request", "argv must be a non-empty array of strings")
		return
	}
	se, ok := s.sessionOf(w, r, b)
	if !ok {
		return
	}
	cwd := se.Cwd
	if req.Cwd != nil {
		cwd = *req.Cwd
	}
	rel, ok := resolve(cwd)
	if !ok {
		apiError(w, 403, "invalid_request", "cwd must resolve to a location within /workspace")
		return
	}
	cmd := s.command(b, rel, se.Env, "/bin/bash", "-c", JoinArgv(req.Argv))
	stdout, ow, err := os.Pipe()
	if err != nil {
		apiError(w, 502, "exec_transport_error", "exec failed: "+err.Error())
		return
	}
	stderr, ew, err := os.Pipe()
	if err != nil {
		stdout.Close()
		ow.Close()
		apiError(w, 502, "exec_transport_error", "exec failed: "+err.Error())
		return
	}
	cmd.Stdout, cmd.Stderr = ow, ew
	err = cmd.Start()
	ow.Close()
	ew.Close()
	if err != nil {
		stdout.Close()
		stderr.Close()
		apiError(w, 502, "exec_transport_error", "exec failed: "+err.Error())
		return
	}
	leader := procgroup.Watch(cmd)
	s.mu.Lock()
	s.execs++
	s.mu.Unlock()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(200)
	sw := &sseWriter{w: w, f: w.(http.Flusher)}
	sw.f.Flush()

	var timedOut sync.Once
	var didTime bool
	if req.TimeoutMS != nil && *req.TimeoutMS > 0 {
		t := time.AfterFunc(time.Duration(*req.TimeoutMS)*time.Millisecond, func() {
			timedOut.Do(func() { didTime = true })
			leader.Signal(syscall.SIGKILL)
		})
		defer t.Stop()
	}
	// The client going away does not stop the command (the adapter kills
	// what it started); writes to a closed stream are dropped.
	var wg sync.WaitGroup
	pump := func(f *os.File, name string) {
		defer wg.Done()
		defer f.Close()
		buf := make([]byte, 32<<10)
		var carry []byte
		for {
			n, err := f.Read(buf)
			if n > 0 {
				data := append(carry, buf[:n]...)
				cut := completeUTF8(data)
				if cut > 0 {
					sw.event(name, []byte(base64.StdEncoding.EncodeToString(textOf(data[:cut]))))
				}
				carry = append([]byte(nil), data[cut:]...)
			}
			if err != nil {
				if len(carry) > 0 {
					sw.event(name, []byte(base64.StdEncoding.EncodeToString(textOf(carry))))
				}
				return
			}
		}
	}
	wg.Add(2)
	go pump(stdout, "stdout")
	go pump(stderr, "stderr")
	wg.Wait()
	err = leader.Reap()
	timedOut.Do(func() {})
	if didTime {
		data, _ := json.Marshal(map[string]string{"error": fmt.Sprintf("Command timed out after %dms", *req.TimeoutMS), "code": "exec_error"})
		sw.event("error", data)
		return
	}
	code := 0
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
	default:
		data, _ := json.Marshal(map[string]string{"error": "exec failed: " + err.Error(), "code": "exec_transport_error"})
		sw.event("error", data)
		return
	}
	sw.event("exit", []byte(fmt.Sprintf(`{"exit_code":%d}`, code)))
}

// completeUTF8 returns how much of data ends on a whole UTF-8 character,
// so a character split across reads is not replaced.
func completeUTF8(data []byte) int {
	for i := 1; i <= 3 && i <= len(data); i++ {
		if b := data[len(data)-i]; utf8.RuneStart(b) {
			if !utf8.FullRune(data[len(data)-i:]) {
				return len(data) - i
			}
			break
		}
	}
	return len(data)
}

// textOf is what the SDK makes of output: it decodes bytes into a
// JavaScript string, so each byte that is not part of valid UTF-8 becomes
// U+FFFD.
func textOf(b []byte) []byte {
	if utf8.Valid(b) {
		return b
	}
	out := make([]byte, 0, len(b)+8)
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r == utf8.RuneError && n == 1 {
			out = utf8.AppendRune(out, utf8.RuneError)
		} else {
			out = append(out, b[:n]...)
		}
		b = b[n:]
	}
	return out
}

// boxEnv marks every process of a sandbox, so deleting the sandbox can kill
// them all wherever they moved (new sessions, process groups).
const boxEnv = "CLOUDFLAREFAKE_SANDBOX"

// command builds the command that runs argv in b, in directory rel of its
// workspace, with env added.
func (s *Server) command(b *box, rel string, env map[string]string, argv ...string) *exec.Cmd {
	e := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8", boxEnv + "=" + b.id}
	for k, v := range env {
		e = append(e, k+"="+v)
	}
	var cmd *exec.Cmd
	if s.isolated {
		cmd = isolatedCommand(b, path.Join("/workspace", rel), e, argv)
	} else {
		// Default signal dispositions, as a fresh container's processes
		// have, whatever the fake's own process ignores.
		cmd = exec.Command("/usr/bin/env", append([]string{"--default-signal", "--"}, argv...)...)
		cmd.Dir = filepath.Join(b.workspace(), filepath.FromSlash(rel))
	}
	cmd.Env = e
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// kill ends b's view, if any, and every process of b. b has started.
func (b *box) kill() {
	if b.view != nil {
		b.view.Close()
	}
	killBox(b.id)
}

// killBox kills every process carrying the sandbox's mark.
func killBox(id string) {
	mark := []byte(boxEnv + "=" + id + "\x00")
	for range 3 {
		ents, _ := os.ReadDir("/proc")
		found := false
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			if procgroup.KillIf(pid, func() bool {
				env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
				return err == nil && bytes.Contains(append([]byte{0}, env...), append([]byte{0}, mark...))
			}) {
				found = true
			}
		}
		if !found {
			return
		}
	}
}

// ---- files ----------------------------------------------------------------

func (s *Server) filePath(w http.ResponseWriter, r *http.Request) (string, bool) {
	rel, ok := resolve("/" + r.PathValue("path"))
	if !ok {
		apiError(w, 403, "invalid_request", "path must resolve to a location within /workspace")
	}
	return rel, ok
}

func (s *Server) readFile(w http.ResponseWriter, r *http.Request, b *box) {
	rel, ok := s.filePath(w, r)
	if !ok {
		return
	}
	if _, ok := s.sessionOf(w, r, b); !ok {
		return
	}
	root, err := os.OpenRoot(b.workspace())
	if err != nil {
		apiError(w, 502, "exec_transport_error", "read failed: "+err.Error())
		return
	}
	defer root.Close()
	f, err := root.Open(rel)
	if err != nil {
		// A link leading out of the workspace names a file of the
		// container, which the fake does not have.
		apiError(w, 404, "workspace_read_not_found", "File not found: /workspace/"+rel)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.IsDir() {
		apiError(w, 502, "exec_transport_error", "read failed: EISDIR: illegal operation on a directory, read")
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(fi.Size(), 10))
	io.Copy(w, f)
}

func (s *Server) writeFile(w http.ResponseWriter, r *http.Request, b *box) {
	rel, ok := s.filePath(w, r)
	if !ok {
		return
	}
	if _, ok := s.sessionOf(w, r, b); !ok {
		return
	}
	if r.ContentLength > MaxBody {
		apiError(w, 413, "payload_too_large", fmt.Sprintf("File too large: %d bytes exceeds the 32 MiB limit", r.ContentLength))
		return
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	if err != nil {
		apiError(w, 400, "invalid_request", "reading the body: "+err.Error())
		return
	}
	if len(data) > MaxBody {
		apiError(w, 413, "payload_too_large", "File too large: exceeds the 32 MiB limit")
		return
	}
	root, err := os.OpenRoot(b.workspace())
	if err == nil {
		defer root.Close()
		// Like the SDK's writeFile, missing parent directories are created.
		if dir := path.Dir(rel); dir != "." {
			err = root.MkdirAll(dir, 0o755)
		}
	}
	if err == nil {
		err = root.WriteFile(rel, data, 0o644)
	}
	if err != nil {
		apiError(w, 502, "workspace_archive_write_error", "write failed: "+err.Error())
		return
	}
	writeJSON(w, 200, map[string]bool{"ok": true})
}

func (s *Server) persist(w http.ResponseWriter, r *http.Request, b *box) {
	args := []string{"tar", "cf", "-", "-C", "/workspace"}
	if ex := r.URL.Query().Get("excludes"); ex != "" {
		for _, e := range strings.Split(ex, ",") {
			if strings.Contains(e, "..") {
				apiError(w, 400, "invalid_request", `exclude paths must not contain ".."`)
				return
			}
			args = append(args, "--exclude=./"+strings.TrimPrefix(strings.TrimPrefix(e, "/workspace/"), "./"))
		}
	}
	args = append(args, ".")
	if !s.isolated {
		args[4] = b.workspace()
	}
	cmd := s.command(b, ".", nil, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		apiError(w, 502, "workspace_archive_read_error", fmt.Sprintf("tar failed (exit %d): %s", cmd.ProcessState.ExitCode(), errb.String()))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(out.Bytes())
}

func (s *Server) hydrate(w http.ResponseWriter, r *http.Request, b *box) {
	data, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	switch {
	case err != nil:
		apiError(w, 400, "invalid_request", "reading the body: "+err.Error())
		return
	case len(data) == 0:
		apiError(w, 400, "invalid_request", "hydrate payload is empty")
		return
	case len(data) > MaxBody:
		apiError(w, 400, "invalid_request", "hydrate payload exceeds 32 MiB")
		return
	}
	dir := "/workspace"
	if !s.isolated {
		dir = b.workspace()
	}
	cmd := s.command(b, ".", nil, "tar", "xf", "-", "-C", dir)
	var errb bytes.Buffer
	cmd.Stdin, cmd.Stderr = bytes.NewReader(data), &errb
	if err := cmd.Run(); err != nil {
		apiError(w, 502, "workspace_archive_write_error", fmt.Sprintf("tar extract failed (exit %d): %s", cmd.ProcessState.ExitCode(), errb.String()))
		return
	}
	writeJSON(w, 200, map[string]bool{"ok": true})
}

// ---- sessions and tunnels ------------------------------------------------

func (s *Server) createSession(w http.ResponseWriter, r *http.Request, b *box) {
	var req struct {
		ID  string            `json:"id"`
		Cwd string            `json:"cwd"`
		Env map[string]string `json:"env"`
	}
	if r.ContentLength != 0 {
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil && err != io.EOF {
			apiError(w, 400, "invalid_request", "Invalid JSON body")
			return
		}
	}
	if req.ID == "" {
		req.ID = "session-" + newID()[:12]
	}
	if !sessionRE.MatchString(req.ID) || strings.Contains(req.ID, "..") {
		apiError(w, 400, "invalid_request", "Invalid session id")
		return
	}
	if req.Cwd == "" {
		req.Cwd = "/workspace"
	}
	if _, ok := resolve(req.Cwd); !ok {
		apiError(w, 403, "invalid_request", "cwd must resolve to a location within /workspace")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := b.sessions[req.ID]; dup {
		apiError(w, 502, "session_error", fmt.Sprintf("session creation failed: session %q already exists", req.ID))
		return
	}
	b.sessions[req.ID] = &session{Cwd: req.Cwd, Env: req.Env}
	writeJSON(w, 200, map[string]string{"id": req.ID})
}

func (s *Server) deleteSession(w http.ResponseWriter, r *http.Request, b *box) {
	sid := r.PathValue("sid")
	s.mu.Lock()
	_, ok := b.sessions[sid]
	delete(b.sessions, sid)
	s.mu.Unlock()
	if !ok {
		apiError(w, 502, "session_error", fmt.Sprintf("session %q not found", sid))
		return
	}
	writeJSON(w, 200, map[string]any{"success": true, "sessionId": sid})
}

func tunnelPort(w http.ResponseWriter, r *http.Request) (int, bool) {
	port, err := strconv.Atoi(r.PathValue("port"))
	if err != nil || port < 1024 || port > 65535 {
		apiError(w, 400, "invalid_request", "port must be an integer between 1024 and 65535")
		return 0, false
	}
	return port, true
}

var tunnelNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func (s *Server) createTunnel(w http.ResponseWriter, r *http.Request, b *box) {
	port, ok := tunnelPort(w, r)
	if !ok {
		return
	}
	var req struct {
		Name string `json:"name"`
	}
	if r.ContentLength != 0 {
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil && err != io.EOF {
			apiError(w, 400, "invalid_request", "Invalid JSON body")
			return
		}
	}
	if req.Name != "" && !tunnelNameRE.MatchString(req.Name) {
		apiError(w, 400, "invalid_request", "tunnel name must be a subdomain prefix such as \"app\", not a hostname")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := b.tunnels[port]; ok && t.Name == req.Name {
		writeJSON(w, 200, t)
		return
	}
	u := ""
	switch {
	case s.opts.TunnelURL != nil:
		u = s.opts.TunnelURL(b.id, port, req.Name)
	case req.Name != "":
		u = "https://" + req.Name + ".example.com"
	default:
		u = "https://" + newID()[:20] + ".trycloudflare.com"
	}
	host := strings.TrimPrefix(strings.TrimPrefix(u, "https://"), "http://")
	t := tunnelRec{ID: newID(), Port: port, URL: u, Hostname: host, CreatedAt: time.Now().UTC().Format(time.RFC3339Nano), Name: req.Name}
	b.tunnels[port] = t
	writeJSON(w, 200, t)
}

func (s *Server) deleteTunnel(w http.ResponseWriter, r *http.Request, b *box) {
	port, ok := tunnelPort(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	delete(b.tunnels, port)
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// Tunnels returns the ports with a tunnel in sandbox id.
func (s *Server) Tunnels(id string) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ports []int
	if b := s.boxes[id]; b != nil {
		for p := range b.tunnels {
			ports = append(ports, p)
		}
	}
	return ports
}

func newID() string {
	var b [16]byte
	if _, err := io.ReadFull(randReader, b[:]); err != nil {
		panic(err)
	}
	return strings.ToLower(base32NoPad.EncodeToString(b[:]))
}

var (
	randReader  = rand.Reader
	base32NoPad = base32.StdEncoding.WithPadding(base32.NoPadding)
)
