// Package vercelfake is an in-process fake of the Vercel Sandbox REST API (v2),
// for tests that must run without a Vercel account.
//
// It speaks the wire protocol the real service speaks, as documented in
// Vercel's SDK (@vercel/sandbox) and modelled on Vercel's own mock server
// (vercel/sandbox: packages/vercel-sandbox-mock); the official client
// (@vercel/sandbox 3.5.0) runs against it in this package's jsclient test.
// The same routes under an optional "/api" prefix, a Bearer token and a
// teamId query on every request, error bodies of the form
// {"error":{"code":"…","message":"…"}}, command output as NDJSON with the
// content type "application/x-ndjson" exactly, file uploads as a
// gzip-compressed tar relative to the "x-cwd" header, empty-body 404s for
// missing files on fs/read, and named sandboxes whose sessions stop (410
// "sandbox_stopped" afterwards) and resume with GET ?resume=true. Listings
// of sandboxes, sessions and snapshots page with cursors and honour
// sortOrder (and, for sandboxes, sortBy, namePrefix and one tag filter).
// Network policies come back as the API reports them: {mode} or the
// "custom" shape, lists the policy lacks omitted, per-domain rules as
// injectionRules (header names only) and forwardRules. Stopping a
// persistent sandbox (the default) snapshots it and returns the snapshot;
// a snapshot's expiration gives it an expiresAt, after which it is gone.
// Sandboxes default to the node24 runtime.
//
// Unlike Vercel's mock, it runs commands for real, each in its own process
// group with default signal dispositions (whatever the process running the
// fake ignores), streaming output as it is produced; kill, command timeouts
// and stop signal the whole group, and the group is killed when the command
// exits (a background child does not outlive its command, which may be
// stricter than Vercel). Where it can (root, or unprivileged user
// namespaces, and util-linux's unshare and nsenter), each session has a
// mount namespace, built at its first command, holding a read-only view of
// the host with the sandbox's own directory at /vercel/sandbox (the
// session's cwd, as on Vercel) and its own /tmp, and each command runs in
// it, chrooted; while the sandbox's network policy is not "allow-all", its
// commands start in the session's network namespace, which has only
// loopback, so they reach nothing. Stopping the session ends every process
// in its namespace. Run as root, it runs
// commands as the user [SandboxUser] (named in the view's /etc/passwd, with
// a uid the host does not use), and as root when a command asks for sudo;
// files written through the API belong to that user. Elsewhere
// ([Options.NoIsolation], or [Server.Isolated] false), commands run
// directly on the host, as the fake's own user, in a temporary directory
// that is then the session's cwd and the only directory the file routes
// serve. Isolated, the file routes serve the sandbox's directory and its
// /tmp, through os.Root, so a symbolic link cannot lead them out, and what
// a command writes elsewhere lands on a tmpfs of the session's namespace,
// never on the host.
//
// The interactive session (the WebSocket PTY protocol of Vercel's CLI) is
// served on the same address, with real pseudo-terminals.
//
// What it does not implement: forks (POST /v2/sandboxes/{name}/fork),
// drives (/v2/sandboxes/drives…) and the snapshot tree
// (/v2/sandboxes/snapshots/tree), which answer 404 "not_found" as the API
// answers an unknown route; git and tarball sources (400); updating
// networkId, snapshotExpiration, keepLastSnapshots or mounts at creation,
// nor those, currentSnapshotId, region or failoverRegions with PATCH (400); an egress proxy (an
// allow-list reaches nothing, and header-injection, forwarding and
// fixed-response rules are stored and reported, never applied; the last
// kind is not reported either, the API's response shape having no place
// for it); a sudo program inside the sandbox (so the official client's
// user helpers, which run "sudo -u", fail); regions (always iad1), memory
// and vCPU limits; and any isolation beyond the namespaces above (it is a
// test fixture, not a sandbox). Faults for tests are injected with
// [Server.Fail] and [Server.CutStreams].
package vercelfake

import (
	"archive/tar"
	"bytes"
	"cmp"
	"compress/gzip"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/perimeter-sdk/perimeter/internal/hostview"
	"github.com/perimeter-sdk/perimeter/internal/procgroup"
)

// NDJSONContentType is the exact content type of command streams; the SDK
// refuses any other ("Expected a stream of command data").
const NDJSONContentType = "application/x-ndjson"

// Options configures a fake. Nil means defaults.
type Options struct {
	// Token, TeamID and ProjectID are the credentials the fake accepts.
	// Defaults: "fake-token", "team_fake", "prj_fake".
	Token, TeamID, ProjectID string
	// Root is the host directory holding the sandboxes' files; empty means
	// a new temporary directory removed by Close.
	Root string
	// RouteURL returns a port's public URL; nil means
	// "https://{name}-{port}.vercel.run", like Vercel's mock.
	RouteURL func(name string, port int) string
	// PageSize is the most sandboxes a list page holds when the request
	// gives no limit; zero means 50.
	PageSize int
	// NoIsolation runs commands directly on the host, in the sandbox's
	// host directory, even where the fake could isolate them (see the
	// package documentation).
	NoIsolation bool
}

// Fault is a response the fake gives instead of serving a request, for
// tests of retries and error handling.
type Fault struct {
	// Method and Path select requests: Method "" matches any, and Path is
	// matched against the request path (without "/api") as a suffix.
	Method, Path string
	// Status and Code make the error body; RetryAfter, if set, is sent as
	// the Retry-After header.
	Status     int
	Code       string
	RetryAfter string
	// Times is how many matching requests fail; zero means one.
	Times int
	// Drop closes the connection without any response instead.
	Drop bool
}

// Server is a running fake. Its methods are safe for concurrent use.
type Server struct {
	opts     Options
	srv      *httptest.Server
	ownRoot  bool
	isolated bool
	user     *sandboxUser // whom commands run as; the zero value is root

	baseMu  sync.Mutex
	base    *hostview.Holder // the view sessions' views are derived from, built at the first
	baseDir string

	mu        sync.Mutex
	lastStamp int64 // the last creation time given out (createdLocked)
	sandboxes map[string]*sandboxRec
	sessions  map[string]*sessionRec
	snapshots map[string]*snapshotRec
	faults    []*Fault
	cutAfter  int // log lines before a command stream is cut; 0: never
	cutTimes  int
	hits      map[string]int
	ptyTokens map[string]string // interactive token → session
}

type sandboxRec struct {
	Name       string
	Persistent bool
	Status     string
	Image      string
	Runtime    string
	VCPUs      int
	Timeout    int64
	Tags       map[string]string
	Env        map[string]string
	Ports      []int
	Network    json.RawMessage
	Cwd        string // the working directory as commands see it
	Disk, Tmp  string // host directories behind Cwd and /tmp
	Mount      string // an empty host directory the isolated view is built on
	Created    int64
	Updated    int64
	SessionID  string
	SnapshotID string
}

type sessionRec struct {
	ID       string
	Sandbox  string
	Status   string
	Timeout  int64
	Created  int64
	Started  int64
	Stopped  int64
	Network  json.RawMessage
	SourceID string
	Cwd      string
	disk     string
	tmp      string
	mount    string
	cmds     map[string]*command
	timer    *time.Timer

	viewMu     sync.Mutex
	view       *hostview.Holder // built at the first isolated command
	viewClosed bool             // the session stopped: no view any more
}

// sessionView returns the isolated view of se, building it at the first
// call. It does not need s.mu (building takes a while).
func (s *Server) sessionView(se *sessionRec) (*hostview.Holder, error) {
	se.viewMu.Lock()
	defer se.viewMu.Unlock()
	if se.viewClosed {
		return nil, errSessionStopped
	}
	if se.view == nil {
		base, err := s.baseView()
		if err != nil {
			return nil, err
		}
		h, err := base.Derive(se.disk, se.tmp, nil)
		if err != nil {
			return nil, err
		}
		se.view = h
	}
	return se.view, nil
}

var errSessionStopped = errors.New("sandbox is stopped")

// baseView returns the fake's base view, building it at the first call:
// each session's view is derived from it (hostview.Holder.Derive), a copy of
// its mount namespace with the session's disk and /tmp bound in, which costs
// a few process starts rather than the few dozen a view of its own takes.
func (s *Server) baseView() (*hostview.Holder, error) {
	s.baseMu.Lock()
	defer s.baseMu.Unlock()
	if s.base != nil {
		return s.base, nil
	}
	if s.baseDir == "" {
		dir, err := os.MkdirTemp(s.opts.Root, ".base-")
		if err != nil {
			return nil, err
		}
		s.baseDir = dir
	}
	se := &sessionRec{disk: filepath.Join(s.baseDir, "disk"), tmp: filepath.Join(s.baseDir, "tmp"), mount: filepath.Join(s.baseDir, "mnt")}
	for _, d := range []string{se.disk, se.tmp, se.mount} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	h, err := startView(se, s.user)
	if err != nil {
		return nil, err
	}
	s.base = h
	return h, nil
}

// closeView ends the session's view and every process in it.
func (se *sessionRec) closeView() {
	se.viewMu.Lock()
	defer se.viewMu.Unlock()
	se.viewClosed = true
	if se.view != nil {
		se.view.Close()
		se.view = nil
	}
}

type snapshotRec struct {
	ID, SourceSession, Status string
	Sandbox                   string // the name of the sandbox it was taken of
	Size                      int64
	Created, Updated, Expires int64 // Expires: 0 for never
	Dir                       string
}

// live reports whether the snapshot can be used: created and not expired.
func (sn *snapshotRec) live() bool {
	return sn.Status == "created" && (sn.Expires == 0 || now() < sn.Expires)
}

// New starts a fake on a loopback address. Close it when done.
func New(opts *Options) *Server {
	s := &Server{
		sandboxes: map[string]*sandboxRec{},
		sessions:  map[string]*sessionRec{},
		snapshots: map[string]*snapshotRec{},
		hits:      map[string]int{},
		ptyTokens: map[string]string{},
	}
	if opts != nil {
		s.opts = *opts
	}
	if s.opts.Token == "" {
		s.opts.Token = "fake-token"
	}
	if s.opts.TeamID == "" {
		s.opts.TeamID = "team_fake"
	}
	if s.opts.ProjectID == "" {
		s.opts.ProjectID = "prj_fake"
	}
	if s.opts.PageSize == 0 {
		s.opts.PageSize = 50
	}
	if s.opts.Root == "" {
		dir, err := os.MkdirTemp("", "vercelfake-")
		if err != nil {
			panic("vercelfake: " + err.Error())
		}
		s.opts.Root, s.ownRoot = dir, true
	}
	if s.opts.RouteURL == nil {
		s.opts.RouteURL = func(name string, port int) string {
			return fmt.Sprintf("https://%s-%d.vercel.run", name, port)
		}
	}
	s.isolated = !s.opts.NoIsolation && probeIsolation(s.opts.Root)
	s.user = &sandboxUser{}
	if s.isolated && os.Geteuid() == 0 {
		u, err := newSandboxUser(filepath.Join(s.opts.Root, ".etc"))
		if err != nil {
			panic("vercelfake: " + err.Error())
		}
		s.user = u
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// URL is the base URL to give a client, such as "http://127.0.0.1:41234".
func (s *Server) URL() string { return s.srv.URL }

// Token, TeamID and ProjectID are the credentials the fake accepts.
func (s *Server) Token() string     { return s.opts.Token }
func (s *Server) TeamID() string    { return s.opts.TeamID }
func (s *Server) ProjectID() string { return s.opts.ProjectID }

// Close stops every session's processes, shuts the server down and removes
// the files of the sandboxes if the fake made their root directory.
func (s *Server) Close() {
	s.mu.Lock()
	for _, se := range s.sessions {
		s.stopLocked(se)
	}
	s.mu.Unlock()
	s.srv.CloseClientConnections()
	s.srv.Close()
	s.mu.Lock()
	for _, se := range s.sessions {
		for _, c := range se.cmds {
			s.mu.Unlock()
			<-c.done
			s.mu.Lock()
		}
	}
	s.mu.Unlock()
	s.baseMu.Lock()
	if s.base != nil {
		s.base.Close()
	}
	if s.baseDir != "" {
		os.RemoveAll(s.baseDir)
	}
	s.baseMu.Unlock()
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

// CutStreams makes the next times command streams (POST cmd with wait, and
// GET logs) break after lines NDJSON lines: the connection is closed without
// the stream's end, as a dropped network connection would.
func (s *Server) CutStreams(lines, times int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cutAfter, s.cutTimes = lines, times
}

// Hits returns how many requests reached method and path (a suffix, as in
// Fault), including those answered with a fault.
func (s *Server) Hits(method, pathSuffix string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, v := range s.hits {
		m, p, _ := strings.Cut(k, " ")
		if (method == "" || m == method) && strings.HasSuffix(p, pathSuffix) {
			n += v
		}
	}
	return n
}

// StopSession stops the current session of the named sandbox as its timeout
// would, for tests of resumption. It reports whether there was one running.
func (s *Server) StopSession(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb := s.sandboxes[name]
	if sb == nil {
		return false
	}
	se := s.sessions[sb.SessionID]
	if se == nil || se.Status != "running" {
		return false
	}
	s.stopLocked(se)
	return true
}

// ---- HTTP plumbing --------------------------------------------------------

type apiErr struct {
	status        int
	code, message string
}

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func now() int64 { return time.Now().UnixMilli() }

// createdLocked returns a creation time for a new sandbox or session: the
// time in milliseconds, made later than any given before, so that what is
// created one after the other lists in that order by createdAt even within
// one millisecond (a real sandbox takes far longer than that to create).
// s.mu is held.
func (s *Server) createdLocked() int64 {
	t := max(now(), s.lastStamp+1)
	s.lastStamp = t
	return t
}

func newID(prefix string) string {
	var b [12]byte
	rand.Read(b[:])
	return prefix + "_" + hex.EncodeToString(b[:])
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimPrefix(r.URL.Path, "/api")
	s.mu.Lock()
	s.hits[r.Method+" "+p]++
	var fault *Fault
	for i, f := range s.faults {
		if (f.Method == "" || f.Method == r.Method) && strings.HasSuffix(p, f.Path) {
			fault = f
			f.Times--
			if f.Times == 0 {
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
		writeErr(w, fault.Status, fault.Code, "injected fault")
		return
	}

	if sid, ok := strings.CutPrefix(p, "/_interactive/"); ok {
		s.serveInteractive(w, r, sid) // authenticated by its token
		return
	}
	auth := r.Header.Get("Authorization")
	if auth != "Bearer "+s.opts.Token {
		writeErr(w, http.StatusForbidden, "forbidden", "Not authorized")
		return
	}
	switch team := r.URL.Query().Get("teamId"); {
	case team == "":
		writeErr(w, http.StatusBadRequest, "bad_request", "Missing teamId query parameter")
		return
	case team != s.opts.TeamID:
		writeErr(w, http.StatusForbidden, "forbidden", "You don't have permission to access this team")
		return
	}

	parts := strings.Split(strings.Trim(p, "/"), "/")
	if len(parts) < 2 || parts[1] != "sandboxes" || (parts[0] != "v2" && parts[0] != "v3") {
		noRoute(w, r)
		return
	}
	version, rest := parts[0], parts[2:]
	switch {
	case len(rest) == 0 && r.Method == http.MethodPost:
		s.create(w, r, version == "v3")
		return
	case version == "v3":
	case len(rest) == 0 && r.Method == http.MethodGet:
		s.list(w, r)
		return
	case rest[0] == "sessions" && len(rest) == 1 && r.Method == http.MethodGet:
		s.listSessions(w, r)
		return
	case rest[0] == "sessions" && len(rest) >= 2:
		s.sessionRoute(w, r, rest[1], rest[2:])
		return
	case rest[0] == "snapshots" && len(rest) == 1 && r.Method == http.MethodGet:
		s.listSnapshots(w, r)
		return
	case rest[0] == "snapshots" && len(rest) == 2 && rest[1] != "tree":
		s.snapshotRoute(w, r, rest[1])
		return
	case unservedCollections[rest[0]]:
		// Drives, the snapshot tree, and the methods the routes above do
		// not serve: not a sandbox of that name.
	case len(rest) == 1:
		switch r.Method {
		case http.MethodGet:
			s.get(w, r, rest[0])
			return
		case http.MethodPatch:
			s.update(w, r, rest[0])
			return
		case http.MethodDelete:
			s.delete(w, r, rest[0])
			return
		}
	}
	noRoute(w, r)
}

// unservedCollections are the path elements under /v2/sandboxes that name
// collections rather than sandboxes, for the routes the fake does not serve.
var unservedCollections = map[string]bool{"sessions": true, "snapshots": true, "drives": true}

// noRoute answers a route the fake does not serve as the API answers an
// unknown route: 404 with the error code "not_found".
func noRoute(w http.ResponseWriter, r *http.Request) {
	writeErr(w, http.StatusNotFound, "not_found", "No route for "+r.Method+" "+r.URL.Path)
}

func decode(r *http.Request, v any) *apiErr {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, _ := mime.ParseMediaType(ct); mt != "application/json" {
			return &apiErr{http.StatusBadRequest, "bad_request", "Expected a JSON body, got " + ct}
		}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 10<<20))
	if err != nil {
		return &apiErr{http.StatusBadRequest, "bad_request", err.Error()}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		return &apiErr{http.StatusBadRequest, "bad_request", "Invalid JSON body: " + err.Error()}
	}
	return nil
}

// ---- payloads -------------------------------------------------------------

func (s *Server) sandboxPayload(sb *sandboxRec) map[string]any {
	se := s.sessions[sb.SessionID]
	m := map[string]any{
		"name": sb.Name, "persistent": sb.Persistent, "currentSessionId": sb.SessionID,
		"status": se.Status, "createdAt": sb.Created, "updatedAt": sb.Updated,
		"region": "iad1", "vcpus": sb.VCPUs, "memory": 2048 * sb.VCPUs, "timeout": sb.Timeout,
		"cwd": sb.Cwd, "statusUpdatedAt": sb.Updated,
	}
	if sb.Image != "" {
		m["image"] = sb.Image
	}
	if sb.Runtime != "" {
		m["runtime"] = sb.Runtime
	}
	if len(sb.Tags) > 0 {
		m["tags"] = sb.Tags
	}
	if sb.Network != nil {
		m["networkPolicy"] = policyPayload(sb.Network)
	}
	if sb.SnapshotID != "" {
		m["currentSnapshotId"] = sb.SnapshotID
	}
	return m
}

func (s *Server) sessionPayload(se *sessionRec) map[string]any {
	sb := s.sandboxes[se.Sandbox]
	m := map[string]any{
		"id": se.ID, "status": se.Status, "memory": 2048, "vcpus": 1, "region": "iad1",
		"timeout": se.Timeout, "cwd": se.Cwd, "requestedAt": se.Created, "startedAt": se.Started,
		"createdAt": se.Created, "updatedAt": se.Created,
	}
	if sb != nil {
		m["memory"], m["vcpus"] = 2048*sb.VCPUs, sb.VCPUs
		if sb.Runtime != "" {
			m["runtime"] = sb.Runtime
		}
	}
	if se.Stopped != 0 {
		m["stoppedAt"] = se.Stopped
		m["duration"] = se.Stopped - se.Started
	}
	if se.SourceID != "" {
		m["sourceSnapshotId"] = se.SourceID
	}
	if se.Network != nil {
		m["networkPolicy"] = policyPayload(se.Network)
	}
	return m
}

// policyPayload echoes a policy as responses report it: {mode} for the two
// modes, the legacy "custom" shape otherwise. As on the real API, a list the
// policy does not have is omitted (never null); per-domain rules come back
// as injectionRules (header names only: the values are secrets and are
// never echoed) and forwardRules. Rules that answer with a fixed response
// have no place in that shape and are not reported.
func policyPayload(raw json.RawMessage) any {
	var p struct {
		Mode    string          `json:"mode"`
		Allow   json.RawMessage `json:"allow"`
		Subnets struct {
			Allow []string `json:"allow"`
			Deny  []string `json:"deny"`
		} `json:"subnets"`
	}
	json.Unmarshal(raw, &p)
	if p.Mode != "" {
		return map[string]string{"mode": p.Mode}
	}
	type rule struct {
		Match     json.RawMessage `json:"match"`
		Transform []struct {
			Headers map[string]string `json:"headers"`
		} `json:"transform"`
		ForwardURL string `json:"forwardURL"`
	}
	var domains []string
	var injection, forward []map[string]any
	if json.Unmarshal(p.Allow, &domains) != nil {
		var rules map[string][]rule
		json.Unmarshal(p.Allow, &rules)
		for d := range rules {
			domains = append(domains, d)
		}
		slices.Sort(domains)
		for _, d := range domains {
			for _, r := range rules[d] {
				m := map[string]any{"domain": d}
				if len(r.Match) > 0 && string(r.Match) != "null" {
					m["match"] = r.Match
				}
				switch {
				case len(r.Transform) > 0:
					names := []string{}
					for _, t := range r.Transform {
						for h := range t.Headers {
							names = append(names, h)
						}
					}
					slices.Sort(names)
					m["headerNames"] = names
					injection = append(injection, m)
				case r.ForwardURL != "":
					m["forwardURL"] = r.ForwardURL
					forward = append(forward, m)
				}
			}
		}
	}
	out := map[string]any{"mode": "custom"}
	if domains != nil {
		out["allowedDomains"] = domains
	}
	if p.Subnets.Allow != nil {
		out["allowedCIDRs"] = p.Subnets.Allow
	}
	if p.Subnets.Deny != nil {
		out["deniedCIDRs"] = p.Subnets.Deny
	}
	if injection != nil {
		out["injectionRules"] = injection
	}
	if forward != nil {
		out["forwardRules"] = forward
	}
	return out
}

func (s *Server) routesPayload(sb *sandboxRec) []map[string]any {
	routes := []map[string]any{}
	for _, port := range sb.Ports {
		routes = append(routes, map[string]any{
			"url": s.opts.RouteURL(sb.Name, port), "subdomain": fmt.Sprintf("%s-%d", sb.Name, port), "port": port,
		})
	}
	return routes
}

// ---- sandboxes ------------------------------------------------------------

type createBody struct {
	ProjectID  string               `json:"projectId"`
	Name       string               `json:"name"`
	Image      string               `json:"image"`
	Runtime    string               `json:"runtime"`
	Ports      []int                `json:"ports"`
	Timeout    *int64               `json:"timeout"`
	Resources  *struct{ VCPUs int } `json:"resources"`
	Env        map[string]string    `json:"env"`
	Tags       map[string]string    `json:"tags"`
	Persistent *bool                `json:"persistent"`
	Network    json.RawMessage      `json:"networkPolicy"`
	Region     string               `json:"region"`
	Failover   []string             `json:"failoverRegions"`
	Source     *struct {
		Type       string `json:"type"`
		URL        string `json:"url"`
		SnapshotID string `json:"snapshotId"`
	} `json:"source"`
	// Fields the fake does not implement; present, they are refused.
	NetworkID         json.RawMessage `json:"networkId"`
	SnapshotExp       json.RawMessage `json:"snapshotExpiration"`
	KeepLastSnapshots json.RawMessage `json:"keepLastSnapshots"`
	Mounts            json.RawMessage `json:"mounts"`
}

func validName(n string) bool {
	if n == "" || len(n) > 64 {
		return false
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

func (s *Server) create(w http.ResponseWriter, r *http.Request, v3 bool) {
	var b createBody
	if e := decode(r, &b); e != nil {
		writeErr(w, e.status, e.code, e.message)
		return
	}
	switch {
	case b.ProjectID != s.opts.ProjectID:
		writeErr(w, http.StatusNotFound, "not_found", "Project not found: "+b.ProjectID)
		return
	case b.Image != "" && !v3:
		writeErr(w, http.StatusBadRequest, "bad_request", "image is only accepted by POST /v3/sandboxes")
		return
	case b.Image != "" && b.Runtime != "":
		writeErr(w, http.StatusBadRequest, "bad_request", "image and runtime are mutually exclusive")
		return
	case b.Name != "" && !validName(b.Name):
		writeErr(w, http.StatusBadRequest, "bad_request", "Invalid sandbox name: "+b.Name)
		return
	case b.Region != "" && slices.Contains(b.Failover, b.Region):
		writeErr(w, http.StatusBadRequest, "bad_request", "failoverRegions must not contain region")
		return
	case len(b.Tags) > 5:
		writeErr(w, http.StatusBadRequest, "bad_request", "At most 5 tags are allowed")
		return
	case len(b.Ports) > 15:
		writeErr(w, http.StatusBadRequest, "bad_request", "At most 15 ports are allowed")
		return
	case b.Resources != nil && (b.Resources.VCPUs < 1 || b.Resources.VCPUs > 8):
		writeErr(w, http.StatusBadRequest, "bad_request", "resources.vcpus must be between 1 and 8")
		return
	case b.NetworkID != nil || b.SnapshotExp != nil || b.KeepLastSnapshots != nil || b.Mounts != nil:
		writeErr(w, http.StatusBadRequest, "bad_request", "vercelfake does not implement networkId, snapshotExpiration, keepLastSnapshots or mounts")
		return
	case b.Source != nil && b.Source.Type != "snapshot":
		writeErr(w, http.StatusBadRequest, "bad_request", "the fake supports only snapshot sources, not "+b.Source.Type)
		return
	}
	if b.Name == "" {
		b.Name = "sandbox-" + newID("x")[2:14]
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.sandboxes[b.Name]; dup {
		writeErr(w, http.StatusConflict, "conflict", "Sandbox already exists: "+b.Name)
		return
	}
	sb := &sandboxRec{
		Name: b.Name, Persistent: true, Image: b.Image, Runtime: b.Runtime, VCPUs: 2,
		Timeout: 300000, Tags: b.Tags, Env: b.Env, Ports: b.Ports, Network: b.Network,
		Created: s.createdLocked(),
	}
	base := filepath.Join(s.opts.Root, b.Name)
	sb.Disk, sb.Tmp, sb.Mount = filepath.Join(base, "disk"), filepath.Join(base, "tmp"), filepath.Join(base, "mnt")
	sb.Cwd = sb.Disk
	if s.isolated {
		sb.Cwd = sandboxCwd
	}
	if b.Image == "" && b.Runtime == "" {
		sb.Runtime = "node24"
	}
	sb.Updated = sb.Created
	if b.Persistent != nil {
		sb.Persistent = *b.Persistent
	}
	if b.Resources != nil {
		sb.VCPUs = b.Resources.VCPUs
	}
	if b.Timeout != nil {
		sb.Timeout = *b.Timeout
	}
	err := errors.Join(os.MkdirAll(sb.Disk, 0o755), os.MkdirAll(sb.Tmp, 0o1777), os.MkdirAll(sb.Mount, 0o755))
	if err == nil {
		err = os.Chmod(sb.Tmp, 0o1777) // not filtered by the umask
	}
	if err == nil && s.user.passwd != "" {
		err = os.Chown(sb.Disk, s.user.uid, s.user.gid)
	}
	if err != nil {
		os.RemoveAll(base)
		writeErr(w, http.StatusInternalServerError, "internal_server_error", err.Error())
		return
	}
	source := ""
	if b.Source != nil {
		snap := s.snapshots[b.Source.SnapshotID]
		if snap == nil || !snap.live() {
			os.RemoveAll(base)
			writeErr(w, http.StatusGone, "snapshot_not_found", "Snapshot not found: "+b.Source.SnapshotID)
			return
		}
		if err := copyDir(sb.Disk, snap.Dir); err != nil {
			os.RemoveAll(base)
			writeErr(w, http.StatusInternalServerError, "internal_server_error", err.Error())
			return
		}
		source = snap.ID
	}
	s.sandboxes[sb.Name] = sb
	se := s.startSessionLocked(sb, source)
	writeJSON(w, map[string]any{
		"sandbox": s.sandboxPayload(sb), "session": s.sessionPayload(se),
		"routes": s.routesPayload(sb), "resumed": false,
	})
}

func (s *Server) startSessionLocked(sb *sandboxRec, sourceSnapshot string) *sessionRec {
	t := s.createdLocked()
	se := &sessionRec{
		ID: newID("se"), Sandbox: sb.Name, Status: "running", Timeout: sb.Timeout,
		Created: t, Started: t, Network: sb.Network, SourceID: sourceSnapshot,
		Cwd: sb.Cwd, disk: sb.Disk, tmp: sb.Tmp, mount: sb.Mount,
		cmds: map[string]*command{},
	}
	s.sessions[se.ID] = se
	sb.SessionID = se.ID
	sb.Updated = t
	s.armTimerLocked(se)
	return se
}

func (s *Server) armTimerLocked(se *sessionRec) {
	if se.timer != nil {
		se.timer.Stop()
	}
	left := time.Duration(se.Started+se.Timeout-now()) * time.Millisecond
	se.timer = time.AfterFunc(left, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.stopLocked(se)
	})
}

// stopLocked ends a running session: its processes are killed and, for a
// sandbox that is not persistent, its files are discarded.
func (s *Server) stopLocked(se *sessionRec) {
	if se.Status != "running" {
		return
	}
	se.Status = "stopped"
	se.Stopped = now()
	if se.timer != nil {
		se.timer.Stop()
	}
	for _, c := range se.cmds {
		c.stop()
	}
	se.closeView()
}

func (s *Server) checkProject(w http.ResponseWriter, r *http.Request, param string) bool {
	if p := r.URL.Query().Get(param); p != s.opts.ProjectID {
		writeErr(w, http.StatusNotFound, "not_found", "Project not found: "+p)
		return false
	}
	return true
}

func (s *Server) get(w http.ResponseWriter, r *http.Request, name string) {
	if !s.checkProject(w, r, "projectId") {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sb := s.sandboxes[name]
	if sb == nil {
		writeErr(w, http.StatusNotFound, "not_found", "Sandbox not found: "+name)
		return
	}
	se := s.sessions[sb.SessionID]
	resumed := false
	if r.URL.Query().Get("resume") == "true" && se.Status != "running" {
		if !sb.Persistent {
			// A non-persistent sandbox starts each session with a clean
			// filesystem.
			os.RemoveAll(sb.Disk)
			os.MkdirAll(sb.Disk, 0o755)
			if s.user.passwd != "" {
				os.Chown(sb.Disk, s.user.uid, s.user.gid)
			}
		}
		os.RemoveAll(sb.Tmp)
		os.MkdirAll(sb.Tmp, 0o1777)
		os.Chmod(sb.Tmp, 0o1777)
		se = s.startSessionLocked(sb, "")
		resumed = true
	}
	writeJSON(w, map[string]any{
		"sandbox": s.sandboxPayload(sb), "session": s.sessionPayload(se),
		"routes": s.routesPayload(sb), "resumed": resumed,
	})
}

// pageQuery reads limit, cursor and sortOrder, answering 400 for bad
// values. ok is false when it has answered.
func (s *Server) pageQuery(w http.ResponseWriter, r *http.Request) (limit int, cursor string, desc, ok bool) {
	q := r.URL.Query()
	limit = s.opts.PageSize
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 100 {
			writeErr(w, http.StatusBadRequest, "bad_request", "limit must be between 1 and 100")
			return 0, "", false, false
		}
		limit = n
	}
	switch q.Get("sortOrder") {
	case "", "desc":
		desc = true
	case "asc":
	default:
		writeErr(w, http.StatusBadRequest, "bad_request", "sortOrder must be asc or desc")
		return 0, "", false, false
	}
	return limit, q.Get("cursor"), desc, true
}

// page answers one page of items (sorted already), starting at the item
// whose key is cursor; pagination.next is the key of the first item of the
// next page, or null.
func page[T any](w http.ResponseWriter, field string, items []T, key func(T) string, payload func(T) any, limit int, cursor string) {
	start := 0
	if cursor != "" {
		start = slices.IndexFunc(items, func(it T) bool { return key(it) == cursor })
		if start < 0 {
			writeErr(w, http.StatusBadRequest, "bad_request", "Invalid cursor")
			return
		}
	}
	end := min(start+limit, len(items))
	out := []any{}
	for _, it := range items[start:end] {
		out = append(out, payload(it))
	}
	var next any
	if end < len(items) {
		next = key(items[end])
	}
	writeJSON(w, map[string]any{field: out, "pagination": map[string]any{"count": len(out), "next": next}})
}

// byTime orders by a timestamp, then by a name so that cursors are stable.
func byTime(desc bool, ta, tb int64, na, nb string) int {
	c := cmp.Compare(ta, tb)
	if c == 0 {
		c = strings.Compare(na, nb)
	}
	if desc {
		c = -c
	}
	return c
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	if !s.checkProject(w, r, "project") {
		return
	}
	q := r.URL.Query()
	limit, cursor, desc, ok := s.pageQuery(w, r)
	if !ok {
		return
	}
	sortBy := q.Get("sortBy")
	switch sortBy {
	case "":
		sortBy = "createdAt"
	case "createdAt", "name", "statusUpdatedAt":
	default:
		writeErr(w, http.StatusBadRequest, "bad_request", "sortBy must be createdAt, name or statusUpdatedAt")
		return
	}
	var tagK, tagV string
	if tags := q["tags"]; len(tags) > 1 {
		writeErr(w, http.StatusBadRequest, "bad_request", "Only one tag filter is supported")
		return
	} else if len(tags) == 1 {
		var ok bool
		if tagK, tagV, ok = strings.Cut(tags[0], ":"); !ok {
			writeErr(w, http.StatusBadRequest, "bad_request", "tags must be key:value")
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var recs []*sandboxRec
	for _, sb := range s.sandboxes {
		if p := q.Get("namePrefix"); p != "" && !strings.HasPrefix(sb.Name, p) {
			continue
		}
		if tagK != "" && (sb.Tags == nil || sb.Tags[tagK] != tagV) {
			continue
		}
		recs = append(recs, sb)
	}
	slices.SortFunc(recs, func(a, b *sandboxRec) int {
		switch sortBy {
		case "name":
			return byTime(desc, 0, 0, a.Name, b.Name)
		case "statusUpdatedAt":
			return byTime(desc, a.Updated, b.Updated, a.Name, b.Name)
		}
		return byTime(desc, a.Created, b.Created, a.Name, b.Name)
	})
	page(w, "sandboxes", recs, func(sb *sandboxRec) string { return sb.Name },
		func(sb *sandboxRec) any { return s.sandboxPayload(sb) }, limit, cursor)
}

// listSessions serves GET /v2/sandboxes/sessions?project=&name=: the
// sessions of the project's sandboxes (or of one), newest first by default.
func (s *Server) listSessions(w http.ResponseWriter, r *http.Request) {
	if !s.checkProject(w, r, "project") {
		return
	}
	limit, cursor, desc, ok := s.pageQuery(w, r)
	if !ok {
		return
	}
	name := r.URL.Query().Get("name")
	s.mu.Lock()
	defer s.mu.Unlock()
	var recs []*sessionRec
	for _, se := range s.sessions {
		if s.sandboxes[se.Sandbox] == nil || (name != "" && se.Sandbox != name) {
			continue
		}
		recs = append(recs, se)
	}
	slices.SortFunc(recs, func(a, b *sessionRec) int { return byTime(desc, a.Created, b.Created, a.ID, b.ID) })
	page(w, "sessions", recs, func(se *sessionRec) string { return se.ID },
		func(se *sessionRec) any { return s.sessionPayload(se) }, limit, cursor)
}

// listSnapshots serves GET /v2/sandboxes/snapshots?project=&name=: the
// project's live snapshots (or one sandbox's), newest first by default.
func (s *Server) listSnapshots(w http.ResponseWriter, r *http.Request) {
	if !s.checkProject(w, r, "project") {
		return
	}
	limit, cursor, desc, ok := s.pageQuery(w, r)
	if !ok {
		return
	}
	name := r.URL.Query().Get("name")
	s.mu.Lock()
	defer s.mu.Unlock()
	var recs []*snapshotRec
	for _, snap := range s.snapshots {
		if !snap.live() || (name != "" && snap.Sandbox != name) {
			continue
		}
		recs = append(recs, snap)
	}
	slices.SortFunc(recs, func(a, b *snapshotRec) int { return byTime(desc, a.Created, b.Created, a.ID, b.ID) })
	page(w, "snapshots", recs, func(sn *snapshotRec) string { return sn.ID },
		func(sn *snapshotRec) any { return snapshotPayload(sn) }, limit, cursor)
}

func (s *Server) update(w http.ResponseWriter, r *http.Request, name string) {
	if !s.checkProject(w, r, "projectId") {
		return
	}
	var b struct {
		Timeout    *int64               `json:"timeout"`
		Ports      *[]int               `json:"ports"`
		Network    json.RawMessage      `json:"networkPolicy"`
		Persistent *bool                `json:"persistent"`
		Tags       map[string]string    `json:"tags"`
		Resources  *struct{ VCPUs int } `json:"resources"`
		// Fields the fake does not implement; present, they are refused
		// rather than ignored.
		NetworkID         json.RawMessage `json:"networkId"`
		SnapshotExp       json.RawMessage `json:"snapshotExpiration"`
		KeepLastSnapshots json.RawMessage `json:"keepLastSnapshots"`
		CurrentSnapshotID json.RawMessage `json:"currentSnapshotId"`
		Region            json.RawMessage `json:"region"`
		FailoverRegions   json.RawMessage `json:"failoverRegions"`
		Mounts            json.RawMessage `json:"mounts"`
	}
	if e := decode(r, &b); e != nil {
		writeErr(w, e.status, e.code, e.message)
		return
	}
	for field, v := range map[string]json.RawMessage{
		"networkId": b.NetworkID, "snapshotExpiration": b.SnapshotExp, "keepLastSnapshots": b.KeepLastSnapshots,
		"currentSnapshotId": b.CurrentSnapshotID, "region": b.Region, "failoverRegions": b.FailoverRegions, "mounts": b.Mounts,
	} {
		if v != nil {
			writeErr(w, http.StatusBadRequest, "bad_request", "vercelfake does not implement updating "+field)
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sb := s.sandboxes[name]
	if sb == nil {
		writeErr(w, http.StatusNotFound, "not_found", "Sandbox not found: "+name)
		return
	}
	if b.Ports != nil && len(*b.Ports) > 15 {
		writeErr(w, http.StatusBadRequest, "bad_request", "At most 15 ports are allowed")
		return
	}
	if b.Resources != nil && (b.Resources.VCPUs < 1 || b.Resources.VCPUs > 8) {
		writeErr(w, http.StatusBadRequest, "bad_request", "resources.vcpus must be between 1 and 8")
		return
	}
	if b.Resources != nil {
		sb.VCPUs = b.Resources.VCPUs
	}
	if b.Timeout != nil {
		// A longer timeout also extends the running session's deadline.
		if se := s.sessions[sb.SessionID]; se != nil && se.Status == "running" && *b.Timeout > sb.Timeout {
			se.Timeout += *b.Timeout - sb.Timeout
			s.armTimerLocked(se)
		}
		sb.Timeout = *b.Timeout
	}
	if b.Persistent != nil {
		sb.Persistent = *b.Persistent
	}
	if b.Tags != nil {
		sb.Tags = b.Tags
	}
	if b.Network != nil {
		sb.Network = b.Network
		s.sessions[sb.SessionID].Network = b.Network
	}
	resp := map[string]any{}
	if b.Ports != nil {
		sb.Ports = *b.Ports
		resp["routes"] = s.routesPayload(sb)
	}
	sb.Updated = now()
	resp["sandbox"] = s.sandboxPayload(sb)
	writeJSON(w, resp)
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request, name string) {
	if !s.checkProject(w, r, "projectId") {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sb := s.sandboxes[name]
	if sb == nil {
		writeErr(w, http.StatusNotFound, "not_found", "Sandbox not found: "+name)
		return
	}
	se := s.sessions[sb.SessionID]
	s.stopLocked(se)
	payload := s.sandboxPayload(sb)
	delete(s.sandboxes, name)
	os.RemoveAll(filepath.Dir(sb.Disk))
	writeJSON(w, map[string]any{"sandbox": payload})
}

// ---- sessions -------------------------------------------------------------

func (s *Server) sessionRoute(w http.ResponseWriter, r *http.Request, sid string, sub []string) {
	s.mu.Lock()
	se := s.sessions[sid]
	var status string
	if se != nil {
		status = se.Status
	}
	s.mu.Unlock()
	if se == nil {
		writeErr(w, http.StatusNotFound, "not_found", "Session not found: "+sid)
		return
	}
	if len(sub) == 0 && r.Method == http.MethodGet {
		s.mu.Lock()
		defer s.mu.Unlock()
		sb := s.sandboxes[se.Sandbox]
		routes := []map[string]any{}
		if sb != nil {
			routes = s.routesPayload(sb)
		}
		writeJSON(w, map[string]any{"session": s.sessionPayload(se), "routes": routes})
		return
	}
	if len(sub) == 0 {
		noRoute(w, r)
		return
	}
	// Reading a finished command's record and logs works on a stopped
	// session; everything else needs it running.
	readOnly := r.Method == http.MethodGet && sub[0] == "cmd"
	if status != "running" && !readOnly && sub[0] != "stop" {
		writeErr(w, http.StatusGone, "sandbox_stopped", "Sandbox is stopped")
		return
	}
	switch {
	case sub[0] == "cmd":
		s.cmdRoute(w, r, se, sub[1:])
	case sub[0] == "fs" && len(sub) == 2 && r.Method == http.MethodPost:
		switch sub[1] {
		case "write":
			s.fsWrite(w, r, se)
		case "read":
			s.fsRead(w, r, se)
		case "mkdir":
			s.fsMkdir(w, r, se)
		default:
			noRoute(w, r)
		}
	case len(sub) == 1 && r.Method == http.MethodPost:
		switch sub[0] {
		case "stop":
			s.mu.Lock()
			wasRunning := se.Status == "running"
			s.stopLocked(se)
			resp := map[string]any{"session": s.sessionPayload(se)}
			sb := s.sandboxes[se.Sandbox]
			if sb != nil && sb.Persistent && wasRunning {
				// A persistent sandbox is snapshotted when it stops;
				// its next session starts from that snapshot.
				snap, err := s.takeSnapshotLocked(se, 0)
				if err != nil {
					s.mu.Unlock()
					writeErr(w, http.StatusInternalServerError, "internal_server_error", err.Error())
					return
				}
				resp["snapshot"] = snapshotPayload(snap)
			}
			if sb != nil {
				resp["sandbox"] = s.sandboxPayload(sb)
			}
			s.mu.Unlock()
			writeJSON(w, resp)
		case "extend-timeout":
			var b struct {
				Duration *int64 `json:"duration"`
			}
			if e := decode(r, &b); e != nil {
				writeErr(w, e.status, e.code, e.message)
				return
			}
			if b.Duration == nil || *b.Duration <= 0 {
				writeErr(w, http.StatusBadRequest, "bad_request", "duration must be a positive number of milliseconds")
				return
			}
			s.mu.Lock()
			se.Timeout += *b.Duration
			s.armTimerLocked(se)
			writeJSON(w, map[string]any{"session": s.sessionPayload(se)})
			s.mu.Unlock()
		case "network-policy":
			var raw json.RawMessage
			if e := decode(r, &raw); e != nil || raw == nil {
				writeErr(w, http.StatusBadRequest, "bad_request", "Expected a network policy")
				return
			}
			s.mu.Lock()
			se.Network = raw
			if sb := s.sandboxes[se.Sandbox]; sb != nil {
				sb.Network = raw
			}
			writeJSON(w, map[string]any{"session": s.sessionPayload(se)})
			s.mu.Unlock()
		case "snapshot":
			s.snapshot(w, r, se)
		case "interactive":
			s.openInteractive(w, r, se)
		default:
			noRoute(w, r)
		}
	default:
		noRoute(w, r)
	}
}

// resolve turns a path given to a session (absolute, or relative to cwd)
// into a directory root on the host and a name inside it. Only the
// sandbox's working directory and, when isolated, its /tmp are served: the
// fake's files live on the test's host, and os.Root keeps symbolic links
// from leading out of them, as a separate machine's links would.
func resolve(se *sessionRec, cwd, name string) (*os.Root, string, *apiErr) {
	if cwd == "" {
		cwd = se.Cwd
	}
	p := name
	if !path.IsAbs(p) {
		p = path.Join(cwd, p)
	}
	p = path.Clean(p)
	maps := [][2]string{{se.Cwd, se.disk}}
	if se.Cwd == sandboxCwd {
		maps = append(maps, [2]string{"/tmp", se.tmp})
	}
	for _, m := range maps {
		if p == m[0] || strings.HasPrefix(p, m[0]+"/") {
			rel := strings.TrimPrefix(strings.TrimPrefix(p, m[0]), "/")
			if rel == "" {
				rel = "."
			}
			root, err := os.OpenRoot(m[1])
			if err != nil {
				return nil, "", &apiErr{http.StatusInternalServerError, "internal_server_error", err.Error()}
			}
			return root, rel, nil
		}
	}
	served := se.Cwd
	if len(maps) > 1 {
		served += " and /tmp"
	}
	return nil, "", &apiErr{http.StatusBadRequest, "bad_request",
		"path " + strconv.Quote(name) + " is outside what this fake serves (" + served + ")"}
}

// missing reports whether a file error means "not there" as seen from
// inside the sandbox (a link leading out of it leads nowhere).
func missing(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || strings.Contains(err.Error(), "escapes from parent")
}

func (s *Server) fsRead(w http.ResponseWriter, r *http.Request, se *sessionRec) {
	var b struct{ Path, Cwd string }
	if e := decode(r, &b); e != nil {
		writeErr(w, e.status, e.code, e.message)
		return
	}
	root, rel, e := resolve(se, b.Cwd, b.Path)
	if e != nil {
		writeErr(w, e.status, e.code, e.message)
		return
	}
	defer root.Close()
	f, err := root.Open(rel)
	if err != nil && missing(err) {
		w.WriteHeader(http.StatusNotFound) // empty body, as the real API
		return
	}
	if err != nil {
		writeErr(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		writeErr(w, http.StatusBadRequest, "bad_request", "EISDIR: illegal operation on a directory, read "+b.Path)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	io.Copy(w, f)
}

func (s *Server) fsMkdir(w http.ResponseWriter, r *http.Request, se *sessionRec) {
	var b struct{ Path, Cwd string }
	if e := decode(r, &b); e != nil {
		writeErr(w, e.status, e.code, e.message)
		return
	}
	root, rel, e := resolve(se, b.Cwd, b.Path)
	if e != nil {
		writeErr(w, e.status, e.code, e.message)
		return
	}
	defer root.Close()
	err := root.Mkdir(rel, 0o755)
	if err == nil {
		err = s.user.chown(root, rel)
	}
	if err != nil {
		writeErr(w, http.StatusBadRequest, "bad_request", "mkdir failed: "+err.Error())
		return
	}
	writeJSON(w, map[string]any{})
}

// fsWrite extracts a gzip-compressed tar relative to x-cwd, creating
// parents. Each file is written to a temporary name and renamed, so a
// broken upload leaves an existing file as it was.
func (s *Server) fsWrite(w http.ResponseWriter, r *http.Request, se *sessionRec) {
	if ct := r.Header.Get("Content-Type"); ct != "application/gzip" {
		writeErr(w, http.StatusBadRequest, "bad_request", "Expected content-type application/gzip, got "+strconv.Quote(ct))
		return
	}
	base := r.Header.Get("x-cwd")
	if base == "" {
		base = "/"
	}
	if !path.IsAbs(base) {
		writeErr(w, http.StatusBadRequest, "bad_request", "x-cwd must be absolute")
		return
	}
	zr, err := gzip.NewReader(r.Body)
	if err != nil {
		writeErr(w, http.StatusBadRequest, "bad_request", "Invalid gzip body: "+err.Error())
		return
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			writeErr(w, http.StatusBadRequest, "bad_request", "Invalid tar body: "+err.Error())
			return
		}
		if e := s.writeEntry(se, base, h, tr); e != nil {
			writeErr(w, e.status, e.code, e.message)
			return
		}
	}
	writeJSON(w, map[string]any{})
}

// mkdirAll makes rel and its missing parents in root, owned by the
// sandbox user as the sandbox's own mkdir -p would make them.
func (s *Server) mkdirAll(root *os.Root, rel string) error {
	p := ""
	for _, el := range strings.Split(path.Clean(rel), "/") {
		p = path.Join(p, el)
		if _, err := root.Lstat(p); err == nil {
			continue
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := root.Mkdir(p, 0o755); err != nil {
			return err
		}
		if err := s.user.chown(root, p); err != nil {
			return err
		}
	}
	return nil
}

// writeEntry writes one tar entry, owned by the sandbox user.
func (s *Server) writeEntry(se *sessionRec, base string, h *tar.Header, content io.Reader) *apiErr {
	root, rel, e := resolve(se, base, h.Name)
	if e != nil {
		return e
	}
	defer root.Close()
	bad := func(err error) *apiErr {
		return &apiErr{http.StatusBadRequest, "bad_request", "write of " + h.Name + " failed: " + err.Error()}
	}
	switch h.Typeflag {
	case tar.TypeDir:
		if err := s.mkdirAll(root, rel); err != nil {
			return bad(err)
		}
		return nil
	case tar.TypeReg:
	default:
		return &apiErr{http.StatusBadRequest, "bad_request", "Unsupported tar entry type for " + h.Name}
	}
	if err := s.mkdirAll(root, path.Dir(rel)); err != nil {
		return bad(err)
	}
	tmp := path.Join(path.Dir(rel), ".fs-write-"+newID("t"))
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return bad(err)
	}
	_, err = io.Copy(f, content)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	mode := fs.FileMode(h.Mode).Perm()
	if mode == 0 {
		mode = 0o644
	}
	if err == nil {
		err = root.Chmod(tmp, mode)
	}
	if err == nil {
		err = s.user.chown(root, tmp)
	}
	if err == nil {
		err = root.Rename(tmp, rel)
	}
	if err != nil {
		root.Remove(tmp)
		return bad(err)
	}
	return nil
}

func (s *Server) snapshot(w http.ResponseWriter, r *http.Request, se *sessionRec) {
	var b struct {
		Expiration *int64 `json:"expiration"`
	}
	if e := decode(r, &b); e != nil {
		writeErr(w, e.status, e.code, e.message)
		return
	}
	if b.Expiration != nil && *b.Expiration < 0 {
		writeErr(w, http.StatusBadRequest, "bad_request", "expiration must be a number of milliseconds, or 0 for none")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if se.Status != "running" {
		writeErr(w, http.StatusGone, "sandbox_stopped", "Sandbox is stopped")
		return
	}
	// The real service stops the session to take the snapshot.
	s.stopLocked(se)
	var expiration int64
	if b.Expiration != nil {
		expiration = *b.Expiration
	}
	snap, err := s.takeSnapshotLocked(se, expiration)
	if err != nil {
		writeErr(w, http.StatusInternalServerError, "internal_server_error", err.Error())
		return
	}
	writeJSON(w, map[string]any{"snapshot": snapshotPayload(snap), "session": s.sessionPayload(se)})
}

// takeSnapshotLocked copies a stopped session's files into a new snapshot,
// which becomes its sandbox's current one. expiration is in milliseconds,
// 0 for none.
func (s *Server) takeSnapshotLocked(se *sessionRec, expiration int64) (*snapshotRec, error) {
	snap := &snapshotRec{ID: newID("snap"), SourceSession: se.ID, Sandbox: se.Sandbox, Status: "created", Created: s.createdLocked()}
	snap.Updated = snap.Created
	if expiration > 0 {
		snap.Expires = snap.Created + expiration
	}
	snap.Dir = filepath.Join(s.opts.Root, ".snapshots", snap.ID)
	if err := copyDir(snap.Dir, se.disk); err != nil {
		os.RemoveAll(snap.Dir)
		return nil, err
	}
	filepath.WalkDir(snap.Dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				snap.Size += fi.Size()
			}
		}
		return nil
	})
	s.snapshots[snap.ID] = snap
	if sb := s.sandboxes[se.Sandbox]; sb != nil {
		sb.SnapshotID = snap.ID
	}
	return snap, nil
}

func snapshotPayload(s *snapshotRec) map[string]any {
	m := map[string]any{
		"id": s.ID, "sourceSessionId": s.SourceSession, "region": "iad1", "status": s.Status,
		"sizeBytes": s.Size, "createdAt": s.Created, "updatedAt": s.Updated,
	}
	if s.Expires != 0 {
		m["expiresAt"] = s.Expires
	}
	return m
}

func (s *Server) snapshotRoute(w http.ResponseWriter, r *http.Request, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := s.snapshots[id]
	if snap == nil || (snap.Status == "created" && !snap.live()) {
		writeErr(w, http.StatusNotFound, "not_found", "Snapshot not found: "+id)
		return
	}
	switch r.Method {
	case http.MethodGet:
	case http.MethodDelete:
		snap.Status = "deleted"
		snap.Updated = now()
		os.RemoveAll(snap.Dir)
	default:
		noRoute(w, r)
		return
	}
	writeJSON(w, map[string]any{"snapshot": snapshotPayload(snap)})
}

// ---- commands -------------------------------------------------------------

type logLine struct {
	Stream string `json:"stream"`
	Data   string `json:"data"`
}

// command is a process the fake runs. Its output is kept whole so that the
// logs route can replay it from the start.
type command struct {
	ID, Name, Cwd, SessionID string
	Args                     []string
	Started                  int64

	mu       sync.Mutex
	lines    []logLine
	changed  chan struct{} // closed and replaced on every change
	exitCode *int
	duration int64
	stopped  bool              // the session stopped while it ran
	leader   *procgroup.Leader // the running command's process group
	done     chan struct{}
}

func (c *command) payload(final bool) map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[string]any{
		"id": c.ID, "name": c.Name, "args": c.Args, "cwd": c.Cwd, "sessionId": c.SessionID,
		"startedAt": c.Started, "exitCode": nil,
	}
	if c.exitCode != nil && final {
		m["exitCode"] = *c.exitCode
		m["durationMs"] = c.duration
	}
	return m
}

func (c *command) append(stream string, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lines = append(c.lines, logLine{stream, string(data)})
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *command) signal(sig syscall.Signal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.leader != nil {
		c.leader.Signal(sig)
	}
}

func (c *command) stop() {
	c.mu.Lock()
	c.stopped = true
	c.mu.Unlock()
	c.signal(syscall.SIGKILL)
}

func (s *Server) cmdRoute(w http.ResponseWriter, r *http.Request, se *sessionRec, sub []string) {
	if len(sub) == 0 {
		if r.Method == http.MethodPost {
			s.runCommand(w, r, se)
			return
		}
		noRoute(w, r)
		return
	}
	s.mu.Lock()
	c := se.cmds[sub[0]]
	s.mu.Unlock()
	if c == nil {
		writeErr(w, http.StatusNotFound, "not_found", "Command not found: "+sub[0])
		return
	}
	switch {
	case len(sub) == 1 && r.Method == http.MethodGet:
		if r.URL.Query().Get("wait") == "true" {
			select {
			case <-c.done:
			case <-r.Context().Done():
				return
			}
		}
		writeJSON(w, map[string]any{"command": c.payload(true)})
	case len(sub) == 2 && sub[1] == "logs" && r.Method == http.MethodGet:
		w.Header().Set("Content-Type", NDJSONContentType)
		w.WriteHeader(http.StatusOK)
		s.follow(w, r, c, s.takeCut())
	case len(sub) == 2 && sub[1] == "kill" && r.Method == http.MethodPost:
		var b struct {
			Signal *int `json:"signal"`
		}
		if e := decode(r, &b); e != nil {
			writeErr(w, e.status, e.code, e.message)
			return
		}
		sig := 15
		if b.Signal != nil {
			sig = *b.Signal
		}
		if sig < 1 || sig > 64 {
			writeErr(w, http.StatusBadRequest, "bad_request", "Invalid signal: "+strconv.Itoa(sig))
			return
		}
		c.signal(syscall.Signal(sig))
		writeJSON(w, map[string]any{"command": c.payload(true)})
	default:
		noRoute(w, r)
	}
}

func (s *Server) takeCut() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cutTimes == 0 {
		return 0
	}
	s.cutTimes--
	return s.cutAfter
}

// follow writes the command's log lines from the start, flushing each, and
// returns when the command has ended and everything was written. With
// cut > 0 it aborts the connection after cut lines.
func (s *Server) follow(w http.ResponseWriter, r *http.Request, c *command, cut int) bool {
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	written := 0
	for {
		c.mu.Lock()
		lines := c.lines[written:]
		changed := c.changed
		ended := c.exitCode != nil && len(lines) == 0
		stopped := c.stopped
		c.mu.Unlock()
		for _, l := range lines {
			if cut > 0 && written >= cut {
				panic(http.ErrAbortHandler)
			}
			if enc.Encode(l) != nil {
				return false
			}
			written++
			if flusher != nil {
				flusher.Flush()
			}
		}
		if ended {
			if stopped {
				enc.Encode(map[string]any{"stream": "error", "data": map[string]string{
					"code": "sandbox_stopped", "message": "Sandbox stopped while the command was running"}})
				return false
			}
			return true
		}
		if len(lines) > 0 {
			continue
		}
		select {
		case <-changed:
		case <-r.Context().Done():
			return false
		}
	}
}

func (s *Server) runCommand(w http.ResponseWriter, r *http.Request, se *sessionRec) {
	var b struct {
		Command string            `json:"command"`
		Args    []string          `json:"args"`
		Cwd     string            `json:"cwd"`
		Env     map[string]string `json:"env"`
		Sudo    bool              `json:"sudo"`
		Timeout *int64            `json:"timeout"`
		Wait    bool              `json:"wait"`
		Logs    bool              `json:"logs"`
	}
	if e := decode(r, &b); e != nil {
		writeErr(w, e.status, e.code, e.message)
		return
	}
	if b.Command == "" {
		writeErr(w, http.StatusBadRequest, "bad_request", "command is required")
		return
	}
	cwd := se.Cwd
	if b.Cwd != "" {
		cwd = b.Cwd
		if !path.IsAbs(cwd) {
			cwd = path.Join(se.Cwd, cwd)
		}
		cwd = path.Clean(cwd)
	}
	if root, rel, e := resolve(se, "", cwd); e == nil {
		fi, err := root.Stat(rel)
		root.Close()
		if err != nil || !fi.IsDir() {
			writeErr(w, http.StatusBadRequest, "bad_request", "cwd is not a directory: "+cwd)
			return
		}
	} else if se.Cwd != sandboxCwd {
		writeErr(w, e.status, e.code, e.message)
		return
	}
	var view *hostview.Holder
	if se.Cwd == sandboxCwd {
		var err error
		if view, err = s.sessionView(se); errors.Is(err, errSessionStopped) {
			writeErr(w, http.StatusGone, "sandbox_stopped", "Sandbox is stopped")
			return
		} else if err != nil {
			writeErr(w, http.StatusInternalServerError, "internal_server_error", err.Error())
			return
		}
	}
	s.mu.Lock()
	sb := s.sandboxes[se.Sandbox]
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + se.Cwd, "LANG=C.UTF-8"}
	if sb != nil {
		env = appendEnv(env, sb.Env)
	}
	env = appendEnv(env, b.Env)
	c := &command{
		ID: newID("cmd"), Name: b.Command, Args: b.Args, Cwd: cwd, SessionID: se.ID,
		Started: now(), changed: make(chan struct{}), done: make(chan struct{}),
	}
	if c.Args == nil {
		c.Args = []string{}
	}
	if se.Status != "running" {
		s.mu.Unlock()
		writeErr(w, http.StatusGone, "sandbox_stopped", "Sandbox is stopped")
		return
	}
	se.cmds[c.ID] = c
	s.start(c, se, view, env, b.Timeout, b.Sudo)
	s.mu.Unlock()

	if !b.Wait {
		writeJSON(w, map[string]any{"command": c.payload(false)})
		return
	}
	w.Header().Set("Content-Type", NDJSONContentType)
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	enc.Encode(map[string]any{"command": c.payload(false)})
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	cut := s.takeCut()
	if b.Logs {
		if !s.follow(w, r, c, cut) {
			return
		}
	}
	select {
	case <-c.done:
	case <-r.Context().Done():
		return
	}
	enc.Encode(map[string]any{"command": c.payload(true)})
}

func appendEnv(env []string, add map[string]string) []string {
	keys := make([]string, 0, len(add))
	for k := range add {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		env = slices.DeleteFunc(env, func(e string) bool { return strings.HasPrefix(e, k+"=") })
		env = append(env, k+"="+add[k])
	}
	return env
}

// start runs c in its own process group. A program that cannot be found or
// run exits 127 or 126 with a message on stderr, as a shell would report it.
func (s *Server) start(c *command, se *sessionRec, view *hostview.Holder, env []string, timeoutMs *int64, sudo bool) {
	var cmd *exec.Cmd
	if view != nil {
		cmd = isolatedCommand(view, se, s.user, sudo, c.Cwd, env, c.Name, c.Args)
	} else {
		cmd = hostCommand(c.Cwd, env, c.Name, c.Args)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	finish := func(code int) {
		c.mu.Lock()
		c.exitCode = &code
		c.duration = now() - c.Started
		close(c.changed)
		c.changed = make(chan struct{})
		c.mu.Unlock()
		close(c.done)
	}
	if err := cmd.Start(); err != nil {
		code := 127
		if errors.Is(err, fs.ErrPermission) {
			code = 126
		}
		c.append("stderr", []byte(fmt.Sprintf("%s: %v\n", c.Name, err)))
		go finish(code)
		return
	}
	leader := procgroup.Watch(cmd)
	c.mu.Lock()
	c.leader = leader
	c.mu.Unlock()
	var timer *time.Timer
	if timeoutMs != nil && *timeoutMs > 0 {
		timer = time.AfterFunc(time.Duration(*timeoutMs)*time.Millisecond, func() { c.signal(syscall.SIGKILL) })
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go s.pump(&wg, c, "stdout", stdout)
	go s.pump(&wg, c, "stderr", stderr)
	go func() {
		wg.Wait()
		// The group may outlive its leader; end it with the command.
		<-leader.Exited()
		leader.Signal(syscall.SIGKILL)
		err := leader.Reap()
		if timer != nil {
			timer.Stop()
		}
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
		finish(code)
	}()
}

// pump copies one pipe into the command's log, never splitting a UTF-8
// character across lines (data travels as JSON strings).
func (s *Server) pump(wg *sync.WaitGroup, c *command, stream string, r io.Reader) {
	defer wg.Done()
	buf := make([]byte, 32<<10)
	var carry []byte
	for {
		n, err := r.Read(buf)
		if n > 0 {
			data := append(carry, buf[:n]...)
			cut := len(data)
			for i := 1; i <= 3 && i <= len(data); i++ {
				b := data[len(data)-i]
				if utf8.RuneStart(b) {
					if !utf8.FullRune(data[len(data)-i:]) {
						cut = len(data) - i
					}
					break
				}
			}
			if cut > 0 {
				c.append(stream, data[:cut])
			}
			carry = append([]byte(nil), data[cut:]...)
		}
		if err != nil {
			if len(carry) > 0 {
				c.append(stream, carry)
			}
			return
		}
	}
}
