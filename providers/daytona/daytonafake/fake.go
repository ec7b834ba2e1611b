// Package daytonafake is an in-process fake of Daytona's control API and
// of a sandbox's toolbox API (v0.190.0), for tests that must run without a
// Daytona account.
//
// Every request it handles, and every response it gives to a request the
// spec describes, is validated against the OpenAPI specs Daytona
// publishes (vendored byte-identical under testdata/) with kin-openapi. A
// request that does not match is answered 400 with the validation error;
// a response that does not match is replaced by a 500; both are reported
// to [Options.Report] (tests pass t.Error) and kept for
// [Server.Mismatches]. Where the daemon is known to differ from its spec
// the fake follows the daemon, and the code says so, citing the notes on
// Daytona's wire behaviour: an upload answers 200 with an empty body, the
// execute timeout applies only when positive, command logs are JSON for
// X-Daytona-SDK-Version 0.167.0 or newer and plain text otherwise. Bodies
// the specs do not describe (error bodies, streams, WebSocket upgrades)
// have their status and headers validated where the spec has them, and
// their content checked by the fake's own code.
//
// One loopback server serves three things:
//
//   - the control API under /api ([Server.APIURL]), with a Bearer token;
//   - the toolbox proxy under /toolbox/{sandboxId} (the sandboxes'
//     toolboxProxyUrl), with the same token;
//   - preview URLs under /preview/{port}-{sandboxId or signed token}/,
//     reverse-proxied to 127.0.0.1:{port} (Daytona's proxy routes by host
//     name, which a loopback fake cannot; the path carries the same parts).
//     The plain form needs the header x-daytona-preview-token unless the
//     sandbox is public; the signed form needs nothing until it expires.
//
// Commands run for real, each in its own process group. Where it can
// (root, or unprivileged user namespaces, and util-linux's unshare and
// nsenter), each sandbox has a mount namespace holding a read-only view of
// the host with the sandbox's own directory at /home/daytona (the working
// directory, as on Daytona) and its own /tmp, and each of its commands runs
// in it, chrooted. A sandbox with networkBlockAll or an allow-list runs its
// commands in its network namespace, which has only loopback (an allow-list
// allows nothing: the fake has no egress proxy).
// Elsewhere ([Options.NoIsolation], or [Server.Isolated] false), commands
// run on the host in a temporary directory, which is then the working
// directory. File endpoints serve the working directory and /tmp only,
// through os.Root, so a symbolic link cannot lead them out.
//
// Lifecycle: create answers "starting" and the next GET finds the sandbox
// "started" (so clients must poll as they must on Daytona); stop kills
// every process and keeps the files (every process of a sandbox starts with
// DAYTONAFAKE_SANDBOX=ID in its environment, so one that left its process
// group is found too); start resumes a stopped or archived
// sandbox the same way; toolbox calls to a sandbox that is not started are
// refused by the proxy (HTTP 400 without the daemon's path and method).
// Snapshots copy the sandbox's files; a sandbox created from one starts
// with them. Sessions do not keep shell state between commands (each
// command is its own shell), auto-stop/archive/delete intervals are stored
// but not acted on, and resources are recorded, not enforced.
package daytonafake

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/perimeter-sdk/perimeter/internal/hostview"
	"github.com/perimeter-sdk/perimeter/internal/procgroup"
)

// Options configures a fake. Nil means defaults.
type Options struct {
	// Token is the API key the fake accepts; default "fake-daytona-key".
	Token string
	// Root is the host directory holding the sandboxes' files; empty means
	// a new temporary directory removed by Close.
	Root string
	// NoIsolation runs commands directly on the host even where the fake
	// could isolate them.
	NoIsolation bool
	// Report receives each request or response that does not match the
	// specs (tests pass t.Error); nil only keeps them for Mismatches.
	Report func(error)
}

// Fault is a response the fake gives instead of serving a request, for
// tests of retries and error handling.
type Fault struct {
	// Method and Path select requests: Method "" matches any; Path is
	// matched as a suffix of the request path.
	Method, Path string
	// Status of the error answer; RetryAfter, if set, is sent as the
	// Retry-After header.
	Status     int
	RetryAfter string
	// Times is how many matching requests fail; zero means one.
	Times int
	// Drop closes the connection without an answer instead.
	Drop bool
}

// Server is a running fake. Its methods are safe for concurrent use.
type Server struct {
	opts     Options
	srv      *httptest.Server
	ownRoot  bool
	isolated bool
	base     *hostview.Holder // the view sandboxes' views derive from; nil on the host
	api, tb  *validator

	mu         sync.Mutex
	sandboxes  map[string]*sandboxRec
	snapshots  map[string]*snapshotRec
	signed     map[string]*signedURL
	faults     []*Fault
	hits       map[string]int
	mismatches []error
	seq        int
}

type sandboxRec struct {
	w         sandboxJSON
	disk, tmp string           // host directories behind the working directory and /tmp
	view      *hostview.Holder // the sandbox's isolated view; nil on the host
	cwd       string           // the working directory as commands see it
	previewTk string
	pending   bool // a GET moves "starting" to "started"
	cmds      map[string]*command
	sessions  map[string]*session
	ptys      map[string]*ptySession
	created   time.Time
	seq       int
}

// sandboxJSON is the spec's Sandbox.
type sandboxJSON struct {
	ID                  string            `json:"id"`
	OrganizationID      string            `json:"organizationId"`
	Name                string            `json:"name"`
	Snapshot            string            `json:"snapshot,omitempty"`
	User                string            `json:"user"`
	Env                 map[string]string `json:"env"`
	Labels              map[string]string `json:"labels"`
	Public              bool              `json:"public"`
	NetworkBlockAll     bool              `json:"networkBlockAll"`
	NetworkAllowList    string            `json:"networkAllowList,omitempty"`
	DomainAllowList     string            `json:"domainAllowList,omitempty"`
	Target              string            `json:"target"`
	CPU                 int               `json:"cpu"`
	GPU                 int               `json:"gpu"`
	Memory              int               `json:"memory"`
	Disk                int               `json:"disk"`
	State               string            `json:"state"`
	DesiredState        string            `json:"desiredState,omitempty"`
	AutoStopInterval    int               `json:"autoStopInterval"`
	AutoArchiveInterval int               `json:"autoArchiveInterval"`
	AutoDeleteInterval  int               `json:"autoDeleteInterval"`
	CreatedAt           string            `json:"createdAt"`
	UpdatedAt           string            `json:"updatedAt"`
	LastActivityAt      string            `json:"lastActivityAt"`
	SandboxClass        string            `json:"sandboxClass"`
	ToolboxProxyURL     string            `json:"toolboxProxyUrl"`
}

type snapshotRec struct {
	id, name, dir string
	created       time.Time
}

type signedURL struct {
	sandbox string
	port    int
	expires time.Time
}

// New starts a fake on a loopback address. Close it when done. It panics
// if the vendored specs do not load, which is a bug in the fake.
func New(opts *Options) *Server {
	s := &Server{
		sandboxes: map[string]*sandboxRec{},
		snapshots: map[string]*snapshotRec{},
		signed:    map[string]*signedURL{},
		hits:      map[string]int{},
	}
	if opts != nil {
		s.opts = *opts
	}
	if s.opts.Token == "" {
		s.opts.Token = "fake-daytona-key"
	}
	var err error
	if s.api, err = loadValidator("control API", "testdata/api-v0.190.0.yaml"); err != nil {
		panic("daytonafake: " + err.Error())
	}
	if s.tb, err = loadValidator("toolbox API", "testdata/toolbox-v0.190.0.yaml"); err != nil {
		panic("daytonafake: " + err.Error())
	}
	if s.opts.Root == "" {
		dir, err := os.MkdirTemp("", "daytonafake-")
		if err != nil {
			panic("daytonafake: " + err.Error())
		}
		s.opts.Root, s.ownRoot = dir, true
	}
	if !s.opts.NoIsolation {
		s.base = probeIsolation(s.opts.Root)
		s.isolated = s.base != nil
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// APIURL is the control API's base URL, for DAYTONA_API_URL.
func (s *Server) APIURL() string { return s.srv.URL + "/api" }

// Token is the API key the fake accepts, for DAYTONA_API_KEY.
func (s *Server) Token() string { return s.opts.Token }

// Isolated reports whether commands run in an isolated view of the host
// with their files at /home/daytona, or directly on the host.
func (s *Server) Isolated() bool { return s.isolated }

// Mismatches returns every request or response so far that did not match
// the specs.
func (s *Server) Mismatches() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.mismatches)
}

// Close stops every sandbox's processes, shuts the server down and removes
// the files if the fake made their root directory.
func (s *Server) Close() {
	s.mu.Lock()
	var all []*command
	for _, sb := range s.sandboxes {
		all = append(all, s.stopLocked(sb)...)
	}
	s.mu.Unlock()
	s.srv.CloseClientConnections()
	s.srv.Close()
	for _, c := range all {
		<-c.done
	}
	s.mu.Lock()
	for _, sb := range s.sandboxes {
		if sb.view != nil {
			sb.view.Close()
		}
	}
	s.mu.Unlock()
	if s.base != nil {
		s.base.Close()
	}
	if s.ownRoot {
		os.RemoveAll(s.opts.Root)
	}
}

// Fail makes the next matching requests fail as f says.
func (s *Server) Fail(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Times == 0 {
		f.Times = 1
	}
	s.faults = append(s.faults, &f)
}

// Hits returns how many requests reached method and a path ending in
// suffix, including those answered with a fault.
func (s *Server) Hits(method, suffix string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, v := range s.hits {
		m, p, _ := strings.Cut(k, " ")
		if (method == "" || m == method) && strings.HasSuffix(p, suffix) {
			n += v
		}
	}
	return n
}

// Stop stops a sandbox as Daytona's auto-stop would: its processes end and
// its files stay. It reports whether the sandbox was started.
func (s *Server) Stop(id string) bool { return s.setIdle(id, "stopped") }

// Archive stops a sandbox and marks it archived, as auto-archive would.
func (s *Server) Archive(id string) bool { return s.setIdle(id, "archived") }

func (s *Server) setIdle(id, state string) bool {
	s.mu.Lock()
	sb := s.sandboxes[id]
	if sb == nil || sb.w.State != "started" {
		s.mu.Unlock()
		return false
	}
	cmds := s.stopLocked(sb)
	sb.w.State, sb.w.DesiredState = state, state
	s.mu.Unlock()
	for _, c := range cmds {
		<-c.done
	}
	return true
}

// State returns a sandbox's state, or "" if there is no such sandbox.
func (s *Server) State(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sb := s.sandboxes[id]; sb != nil {
		return sb.w.State
	}
	return ""
}

// stopLocked kills every process of sb and forgets its sessions; it
// returns the commands to wait for.
func (s *Server) stopLocked(sb *sandboxRec) []*command {
	var out []*command
	for _, c := range sb.cmds {
		c.kill()
		out = append(out, c)
	}
	for _, p := range sb.ptys {
		p.kill()
	}
	killTagged(sb.w.ID)
	sb.cmds = map[string]*command{}
	sb.sessions = map[string]*session{}
	sb.ptys = map[string]*ptySession{}
	return out
}

// tagVar is the environment variable every process of a sandbox starts
// with, holding the sandbox's ID: a stop ends processes that moved to a
// process group or session of their own (setsid), as stopping a real
// sandbox's container does.
const tagVar = "DAYTONAFAKE_SANDBOX"

// killTagged kills every process whose initial environment carries the
// sandbox's tag, until none is left (a process may fork meanwhile).
func killTagged(id string) {
	tag := []byte("\x00" + tagVar + "=" + id + "\x00")
	for round := 0; round < 10; round++ {
		ents, err := os.ReadDir("/proc")
		if err != nil {
			return
		}
		found := false
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			if procgroup.KillIf(pid, func() bool {
				env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
				return err == nil && bytes.Contains(append([]byte{0}, env...), tag)
			}) {
				found = true
			}
		}
		if !found {
			return
		}
	}
}

// ---- HTTP plumbing --------------------------------------------------------

func stamp() string { return time.Now().UTC().Format(time.RFC3339Nano) }

func newID() string {
	var b [16]byte
	rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func newToken() string {
	var b [18]byte
	rand.Read(b[:])
	return strings.ToLower(strings.TrimRight(base64.RawURLEncoding.EncodeToString(b[:]), "="))
}

// apiError writes the control API's error body.
func apiError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"statusCode": status, "message": msg, "error": http.StatusText(status)})
}

// daemonError writes the daemon's error body, which names the request.
func daemonError(w http.ResponseWriter, r *http.Request, status int, msg string) {
	code := strings.ToUpper(strings.ReplaceAll(http.StatusText(status), " ", "_"))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{
		"statusCode": status, "message": msg, "code": code, "timestamp": stamp(),
		"path": r.URL.Path, "method": r.Method,
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (s *Server) report(err error) {
	s.mu.Lock()
	s.mismatches = append(s.mismatches, err)
	s.mu.Unlock()
	if s.opts.Report != nil {
		s.opts.Report(err)
	}
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.hits[r.Method+" "+r.URL.Path]++
	var fault *Fault
	for i, f := range s.faults {
		if (f.Method == "" || f.Method == r.Method) && strings.HasSuffix(r.URL.Path, f.Path) {
			fault = f
			if f.Times--; f.Times == 0 {
				s.faults = slices.Delete(s.faults, i, i+1)
			}
			break
		}
	}
	s.mu.Unlock()
	if fault != nil {
		if fault.Drop {
			panic(http.ErrAbortHandler)
		}
		if fault.RetryAfter != "" {
			w.Header().Set("Retry-After", fault.RetryAfter)
		}
		apiError(w, fault.Status, "injected fault")
		return
	}
	if rest, ok := strings.CutPrefix(r.URL.Path, "/preview/"); ok {
		s.preview(w, r, rest)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+s.opts.Token {
		apiError(w, http.StatusUnauthorized, "Unauthorized")
		return
	}
	if p, ok := strings.CutPrefix(r.URL.Path, "/api"); ok {
		s.validated(w, r, s.api, p, false, s.control)
		return
	}
	if rest, ok := strings.CutPrefix(r.URL.Path, "/toolbox/"); ok {
		id, p, _ := strings.Cut(rest, "/")
		p = "/" + p
		s.mu.Lock()
		sb := s.sandboxes[id]
		state := ""
		if sb != nil {
			state = sb.w.State
		}
		s.mu.Unlock()
		switch {
		case sb == nil:
			apiError(w, http.StatusNotFound, "Sandbox with ID or name "+id+" not found")
			return
		case state != "started":
			// The proxy, not the daemon, answers: no path or method in the body.
			apiError(w, http.StatusBadRequest, "Sandbox "+id+" is not started (state "+state+")")
			return
		}
		streaming := (r.Method == http.MethodGet && p == "/files/download") ||
			strings.HasSuffix(p, "/connect") || (strings.HasSuffix(p, "/logs") && r.URL.Query().Get("follow") == "true")
		s.validated(w, r, s.tb, p, streaming, func(w http.ResponseWriter, r *http.Request, p string) {
			s.toolbox(w, r, sb, p)
		})
		return
	}
	apiError(w, http.StatusNotFound, "Cannot "+r.Method+" "+r.URL.Path)
}

// validated checks r against v, runs h, and checks its answer: buffered
// and whole, or for a stream its status and headers only.
func (s *Server) validated(w http.ResponseWriter, r *http.Request, v *validator, p string, stream bool,
	h func(http.ResponseWriter, *http.Request, string)) {
	x, err := v.checkRequest(r, p)
	if err != nil {
		s.report(err)
		apiError(w, http.StatusBadRequest, err.Error())
		return
	}
	if stream {
		h(&passthrough{ResponseWriter: w, x: x, report: s.report}, r, p)
		return
	}
	rec := newRecorder()
	h(rec, r, p)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	var body []byte
	switch {
	case rec.status >= 300:
		// Error bodies are not in the specs; the fake writes the shapes
		// the notes describe.
		rec.flush(w)
		return
	case r.Method == http.MethodPost && p == "/files/upload":
		// The daemon answers an upload with 200 and an empty body, where
		// the spec promises a JSON object (notes §6): status and headers only.
	case strings.HasPrefix(rec.header.Get("Content-Type"), "text/plain") && strings.HasSuffix(p, "/logs"):
		// Without X-Daytona-SDK-Version 0.167.0 or newer the daemon sends
		// the combined log as plain text, where the spec gives the JSON
		// object's schema for text/plain too (notes §6).
	default:
		body = rec.body.Bytes()
		if body == nil {
			body = []byte{}
		}
	}
	if err := x.checkResponse(rec.status, rec.header, body); err != nil {
		s.report(err)
		apiError(w, http.StatusInternalServerError, err.Error())
		return
	}
	rec.flush(w)
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(io.LimitReader(r.Body, 10<<20)).Decode(v); err != nil {
		apiError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
		return false
	}
	return true
}

// ---- control API ----------------------------------------------------------

func (s *Server) control(w http.ResponseWriter, r *http.Request, p string) {
	parts := strings.Split(strings.Trim(p, "/"), "/")
	switch {
	case p == "/sandbox" && r.Method == http.MethodPost:
		s.create(w, r)
	case p == "/sandbox" && r.Method == http.MethodGet:
		s.list(w, r)
	case len(parts) >= 2 && parts[0] == "sandbox":
		s.sandboxRoute(w, r, parts[1], parts[2:])
	case len(parts) == 2 && parts[0] == "snapshots" && r.Method == http.MethodGet:
		s.getSnapshot(w, parts[1])
	default:
		apiError(w, http.StatusNotFound, "Cannot "+r.Method+" "+r.URL.Path+" (not served by this fake)")
	}
}

type createReq struct {
	Name                string            `json:"name"`
	Snapshot            string            `json:"snapshot"`
	User                string            `json:"user"`
	Env                 map[string]string `json:"env"`
	Labels              map[string]string `json:"labels"`
	Public              bool              `json:"public"`
	NetworkBlockAll     bool              `json:"networkBlockAll"`
	NetworkAllowList    string            `json:"networkAllowList"`
	DomainAllowList     string            `json:"domainAllowList"`
	Target              string            `json:"target"`
	CPU                 int               `json:"cpu"`
	GPU                 int               `json:"gpu"`
	Memory              int               `json:"memory"`
	Disk                int               `json:"disk"`
	AutoStopInterval    *int              `json:"autoStopInterval"`
	AutoArchiveInterval *int              `json:"autoArchiveInterval"`
	AutoDeleteInterval  *int              `json:"autoDeleteInterval"`
	BuildInfo           *struct {
		DockerfileContent string `json:"dockerfileContent"`
	} `json:"buildInfo"`
}

func orDefault(p *int, d int) int {
	if p == nil {
		return d
	}
	return *p
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	var b createReq
	if !decode(w, r, &b) {
		return
	}
	if b.BuildInfo != nil && b.Snapshot != "" {
		apiError(w, http.StatusBadRequest, "Cannot specify both snapshot and buildInfo")
		return
	}
	id := newID()
	name := b.Name
	if name == "" {
		name = id
	}
	dir := filepath.Join(s.opts.Root, id)
	sb := &sandboxRec{
		disk: filepath.Join(dir, "disk"), tmp: filepath.Join(dir, "tmp"),
		previewTk: newToken(), pending: true, created: time.Now(),
		cmds: map[string]*command{}, sessions: map[string]*session{}, ptys: map[string]*ptySession{},
	}
	for _, d := range []string{dir, sb.disk, sb.tmp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			apiError(w, http.StatusInternalServerError, err.Error())
			return
		}
	}
	os.Chmod(sb.tmp, 0o1777)
	if s.isolated {
		var err error
		if sb.view, err = startView(s.base, sb.disk, sb.tmp); err != nil {
			os.RemoveAll(dir)
			apiError(w, http.StatusInternalServerError, err.Error())
			return
		}
	}
	created := false
	defer func() {
		if !created {
			if sb.view != nil {
				sb.view.Close()
			}
			os.RemoveAll(dir)
		}
	}()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range s.sandboxes {
		if o.w.Name == name {
			apiError(w, http.StatusConflict, "Sandbox with name "+name+" already exists")
			return
		}
	}
	var snap *snapshotRec
	if b.Snapshot != "" {
		if snap = s.findSnapshotLocked(b.Snapshot); snap == nil {
			apiError(w, http.StatusNotFound, "Snapshot "+b.Snapshot+" not found")
			return
		}
	}
	if snap != nil {
		// The disk exists (the view binds it): copy into it.
		if err := os.CopyFS(sb.disk, os.DirFS(snap.dir)); err != nil {
			apiError(w, http.StatusInternalServerError, err.Error())
			return
		}
	}
	sb.cwd = sb.disk
	if s.isolated {
		sb.cwd = homeDir
	}
	user := b.User
	if user == "" {
		user = "daytona"
	}
	target := b.Target
	if target == "" {
		target = "us"
	}
	snapName := b.Snapshot
	if snapName == "" && b.BuildInfo == nil {
		snapName = "daytonaio/sandbox:0.5.0"
	}
	env, labels := b.Env, b.Labels
	if env == nil {
		env = map[string]string{}
	}
	if labels == nil {
		labels = map[string]string{}
	}
	now := stamp()
	s.seq++
	sb.seq = s.seq
	sb.w = sandboxJSON{
		ID: id, OrganizationID: "fake-organization", Name: name, Snapshot: snapName, User: user,
		Env: env, Labels: labels, Public: b.Public,
		NetworkBlockAll: b.NetworkBlockAll, NetworkAllowList: b.NetworkAllowList, DomainAllowList: b.DomainAllowList,
		Target: target, CPU: max(b.CPU, 1), GPU: b.GPU, Memory: max(b.Memory, 1), Disk: max(b.Disk, 3),
		State: "starting", DesiredState: "started",
		AutoStopInterval:    orDefault(b.AutoStopInterval, 15),
		AutoArchiveInterval: orDefault(b.AutoArchiveInterval, 10080),
		AutoDeleteInterval:  orDefault(b.AutoDeleteInterval, -1),
		CreatedAt:           now, UpdatedAt: now, LastActivityAt: now,
		SandboxClass: "container", ToolboxProxyURL: s.srv.URL + "/toolbox",
	}
	if b.BuildInfo != nil {
		sb.w.State = "pending_build"
	}
	s.sandboxes[id] = sb
	created = true
	writeJSON(w, http.StatusOK, sb.w)
}

// find looks a sandbox up by id or name.
func (s *Server) findLocked(idOrName string) *sandboxRec {
	if sb := s.sandboxes[idOrName]; sb != nil {
		return sb
	}
	for _, sb := range s.sandboxes {
		if sb.w.Name == idOrName {
			return sb
		}
	}
	return nil
}

func (s *Server) findSnapshotLocked(idOrName string) *snapshotRec {
	if sn := s.snapshots[idOrName]; sn != nil {
		return sn
	}
	for _, sn := range s.snapshots {
		if sn.name == idOrName {
			return sn
		}
	}
	return nil
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var want map[string]string
	if l := q.Get("labels"); l != "" {
		if err := json.Unmarshal([]byte(l), &want); err != nil {
			apiError(w, http.StatusBadRequest, "labels must be a JSON object of strings: "+err.Error())
			return
		}
	}
	limit := 100
	if l := q.Get("limit"); l != "" {
		f, err := strconv.ParseFloat(l, 64)
		if err != nil || f < 1 || f > 200 {
			apiError(w, http.StatusBadRequest, "limit must be between 1 and 200")
			return
		}
		limit = int(f)
	}
	after := 0
	if c := q.Get("cursor"); c != "" {
		raw, err := base64.RawURLEncoding.DecodeString(c)
		n, err2 := strconv.Atoi(string(raw))
		if err != nil || err2 != nil {
			apiError(w, http.StatusBadRequest, "invalid cursor")
			return
		}
		after = n
	}
	s.mu.Lock()
	var all []*sandboxRec
	for _, sb := range s.sandboxes {
		if sb.seq <= after {
			continue
		}
		match := true
		for k, v := range want {
			if sb.w.Labels[k] != v {
				match = false
			}
		}
		if match {
			all = append(all, sb)
		}
	}
	slices.SortFunc(all, func(a, b *sandboxRec) int { return a.seq - b.seq })
	var next *string
	if len(all) > limit {
		all = all[:limit]
		c := base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(all[limit-1].seq)))
		next = &c
	}
	items := make([]map[string]any, 0, len(all))
	for _, sb := range all {
		items = append(items, listItem(sb.w))
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"items": items, "nextCursor": next})
}

// listItem is the spec's SandboxListItem: a Sandbox without env and the
// network lists.
func listItem(w sandboxJSON) map[string]any {
	raw, _ := json.Marshal(w)
	var m map[string]any
	json.Unmarshal(raw, &m)
	for _, k := range []string{"env", "networkBlockAll", "networkAllowList", "domainAllowList"} {
		delete(m, k)
	}
	return m
}

func (s *Server) sandboxRoute(w http.ResponseWriter, r *http.Request, idOrName string, rest []string) {
	s.mu.Lock()
	sb := s.findLocked(idOrName)
	if sb == nil {
		s.mu.Unlock()
		apiError(w, http.StatusNotFound, "Sandbox with ID or name "+idOrName+" not found")
		return
	}
	op := r.Method + " " + strings.Join(rest, "/")
	if len(rest) == 3 && rest[0] == "ports" {
		op = r.Method + " ports/" + rest[2]
	}
	if len(rest) == 5 && rest[0] == "ports" && rest[4] == "expire" {
		op = "POST ports/expire"
	}
	if len(rest) == 2 && (rest[0] == "autostop" || rest[0] == "autoarchive" || rest[0] == "autodelete") {
		op = r.Method + " " + rest[0]
	}
	var wait []*command
	defer func() {
		for _, c := range wait {
			<-c.done
		}
	}()
	defer s.mu.Unlock()
	switch op {
	case "GET ":
		if sb.pending && (sb.w.State == "starting" || sb.w.State == "pending_build") {
			sb.pending = false
			sb.w.State = "started"
		}
		writeJSON(w, http.StatusOK, sb.w)
	case "DELETE ":
		wait = s.stopLocked(sb)
		delete(s.sandboxes, sb.w.ID)
		if sb.view != nil {
			sb.view.Close()
		}
		os.RemoveAll(filepath.Dir(sb.disk))
		sb.w.State, sb.w.DesiredState = "destroying", "destroyed"
		writeJSON(w, http.StatusOK, sb.w)
	case "POST start":
		switch sb.w.State {
		case "started", "starting":
		case "stopped", "archived", "paused":
			sb.w.State, sb.w.DesiredState, sb.pending = "starting", "started", true
		default:
			apiError(w, http.StatusBadRequest, "Sandbox is "+sb.w.State+" and cannot be started")
			return
		}
		writeJSON(w, http.StatusOK, sb.w)
	case "POST stop":
		if sb.w.State != "started" && sb.w.State != "stopped" {
			apiError(w, http.StatusBadRequest, "Sandbox is "+sb.w.State+" and cannot be stopped")
			return
		}
		wait = s.stopLocked(sb)
		sb.w.State, sb.w.DesiredState = "stopped", "stopped"
		writeJSON(w, http.StatusOK, sb.w)
	case "PUT labels":
		var b struct {
			Labels map[string]string `json:"labels"`
		}
		if !decode(w, r, &b) {
			return
		}
		sb.w.Labels = b.Labels
		writeJSON(w, http.StatusOK, map[string]any{"labels": b.Labels})
	case "POST autostop", "POST autoarchive", "POST autodelete":
		n, err := strconv.Atoi(rest[1])
		if err != nil {
			apiError(w, http.StatusBadRequest, "interval must be an integer")
			return
		}
		switch rest[0] {
		case "autostop":
			sb.w.AutoStopInterval = n
		case "autoarchive":
			sb.w.AutoArchiveInterval = n
		default:
			sb.w.AutoDeleteInterval = n
		}
		writeJSON(w, http.StatusOK, sb.w)
	case "POST network-settings":
		var b struct {
			NetworkBlockAll  *bool   `json:"networkBlockAll"`
			NetworkAllowList *string `json:"networkAllowList"`
			DomainAllowList  *string `json:"domainAllowList"`
		}
		if !decode(w, r, &b) {
			return
		}
		if b.NetworkBlockAll != nil {
			sb.w.NetworkBlockAll = *b.NetworkBlockAll
		}
		if b.NetworkAllowList != nil {
			sb.w.NetworkAllowList = *b.NetworkAllowList
		}
		if b.DomainAllowList != nil {
			sb.w.DomainAllowList = *b.DomainAllowList
		}
		writeJSON(w, http.StatusOK, sb.w)
	case "GET ports/preview-url", "GET ports/signed-preview-url":
		port, err := strconv.Atoi(rest[1])
		if err != nil || port < 1 || port > 65535 {
			apiError(w, http.StatusBadRequest, "invalid port "+rest[1])
			return
		}
		if rest[2] == "preview-url" {
			writeJSON(w, http.StatusOK, map[string]any{
				"sandboxId": sb.w.ID, "token": sb.previewTk,
				"url": fmt.Sprintf("%s/preview/%d-%s", s.srv.URL, port, sb.w.ID),
			})
			return
		}
		secs := 60
		if e := r.URL.Query().Get("expiresInSeconds"); e != "" {
			if secs, err = strconv.Atoi(e); err != nil || secs < 1 || secs > 86400 {
				apiError(w, http.StatusBadRequest, "expiresInSeconds must be between 1 and 86400")
				return
			}
		}
		tk := newToken()
		s.signed[tk] = &signedURL{sandbox: sb.w.ID, port: port, expires: time.Now().Add(time.Duration(secs) * time.Second)}
		writeJSON(w, http.StatusOK, map[string]any{
			"sandboxId": sb.w.ID, "port": port, "token": tk,
			"url": fmt.Sprintf("%s/preview/%d-%s", s.srv.URL, port, tk),
		})
	case "POST ports/expire":
		delete(s.signed, rest[3])
		w.WriteHeader(http.StatusOK)
	case "POST snapshot":
		var b struct {
			Name string `json:"name"`
		}
		if !decode(w, r, &b) {
			return
		}
		if b.Name == "" || s.findSnapshotLocked(b.Name) != nil {
			apiError(w, http.StatusConflict, "Snapshot "+b.Name+" already exists")
			return
		}
		sn := &snapshotRec{id: newID(), name: b.Name, dir: filepath.Join(s.opts.Root, "snapshots", newID()), created: time.Now()}
		if err := os.MkdirAll(filepath.Dir(sn.dir), 0o755); err == nil {
			err = os.CopyFS(sn.dir, os.DirFS(sb.disk))
			if err != nil {
				apiError(w, http.StatusInternalServerError, err.Error())
				return
			}
		}
		s.snapshots[sn.id] = sn
		writeJSON(w, http.StatusOK, sb.w)
	default:
		apiError(w, http.StatusNotFound, "Cannot "+r.Method+" "+r.URL.Path+" (not served by this fake)")
	}
}

func (s *Server) getSnapshot(w http.ResponseWriter, idOrName string) {
	s.mu.Lock()
	sn := s.findSnapshotLocked(idOrName)
	s.mu.Unlock()
	if sn == nil {
		apiError(w, http.StatusNotFound, "Snapshot "+idOrName+" not found")
		return
	}
	t := sn.created.UTC().Format(time.RFC3339Nano)
	writeJSON(w, http.StatusOK, map[string]any{
		"id": sn.id, "organizationId": "fake-organization", "general": false, "name": sn.name,
		"state": "active", "size": nil, "entrypoint": nil, "cpu": 1, "gpu": 0, "mem": 1, "disk": 3,
		"errorReason": nil, "createdAt": t, "updatedAt": t, "lastUsedAt": nil,
	})
}
