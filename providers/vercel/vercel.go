package vercel

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/perimeter-sdk/perimeter/internal/httpretry"
	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

func init() {
	sandbox.Register("vercel", open)
}

// Options configures a Provider. Nil means defaults and credentials from the
// environment.
type Options struct {
	// TeamID and ProjectID select where sandboxes live. Empty fields are
	// taken from VERCEL_TEAM_ID and VERCEL_PROJECT_ID (with VERCEL_TOKEN) or
	// from the claims of VERCEL_OIDC_TOKEN.
	TeamID, ProjectID string
	// Token supplies the bearer token; nil means VERCEL_TOKEN, or else
	// VERCEL_OIDC_TOKEN re-read on every request.
	Token TokenSource
	// BaseURL is the API's address; empty means DefaultBaseURL.
	BaseURL string
	// HTTPClient sends the requests; nil means a client without an overall
	// timeout (command streams last as long as their commands).
	HTTPClient *http.Client
	// MaxRetries is how many times a request failing with a network error,
	// a 5xx or a 429 is retried; zero means 2 (as Vercel's SDK), negative
	// means none.
	MaxRetries int
	// RetryBackoff is the first retry's delay, doubled for each further
	// one and randomised by up to half; zero means 400ms.
	RetryBackoff time.Duration
	// MaxRetryAfter is the longest Retry-After of a 429 that is waited for;
	// a longer one fails at once. Zero means 20s.
	MaxRetryAfter time.Duration
}

// Provider creates Vercel sandboxes. It is safe for concurrent use.
type Provider struct {
	c *Client
}

var _ driver.Provider = (*Provider)(nil)

// New returns a provider for host code. It does no I/O: bad credentials show
// up on the first call.
func New(opts *Options) (*sandbox.Provider, error) {
	d, err := NewDriver(opts)
	if err != nil {
		return nil, err
	}
	return sandbox.NewProvider(d, nil), nil
}

// NewDriver returns the provider's driver, for [sandbox.NewProvider] with
// [sandbox.ProviderOptions] (hooks, logging). Host code calls the portable
// type's methods, never the driver's: the portable layer validates arguments
// and applies defaults before the driver sees them.
func NewDriver(opts *Options) (*Provider, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if err := credentialsFromEnv(&o); err != nil {
		return nil, sandbox.NewError(providerName, "", "open", sandbox.ErrInvalidArgument, err)
	}
	if o.BaseURL == "" {
		o.BaseURL = DefaultBaseURL
	}
	base, err := url.Parse(o.BaseURL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, sandbox.Errorf(providerName, "", "open", sandbox.ErrInvalidArgument,
			"BaseURL %q is not an http(s) URL", o.BaseURL)
	}
	c := &Client{
		base: base, team: o.TeamID, project: o.ProjectID, tokens: o.Token, http: o.HTTPClient,
		retry: httpretry.Policy{Retries: o.MaxRetries, Backoff: o.RetryBackoff, MaxRetryAfter: o.MaxRetryAfter}.Fill(
			httpretry.Policy{Retries: 2, Backoff: 400 * time.Millisecond, MaxRetryAfter: 20 * time.Second}),
	}
	if c.http == nil {
		c.http = &http.Client{}
	}
	return &Provider{c: c}, nil
}

// open serves vercel://TEAM/PROJECT. Both parts may be left out
// ("vercel://") to take them from the environment. The query parameter
// "endpoint" sets Options.BaseURL (for a proxy or a fake).
func open(_ context.Context, u *url.URL) (driver.Provider, error) {
	o := &Options{TeamID: u.Host, ProjectID: strings.Trim(u.Path, "/")}
	if strings.Contains(o.ProjectID, "/") || u.User != nil {
		return nil, sandbox.Errorf(providerName, "", "open", sandbox.ErrInvalidArgument,
			"provider URL %q: want vercel://TEAM/PROJECT (credentials come from VERCEL_TOKEN or VERCEL_OIDC_TOKEN, never the URL)", u.Redacted())
	}
	for k := range u.Query() {
		if k != "endpoint" {
			return nil, sandbox.Errorf(providerName, "", "open", sandbox.ErrInvalidArgument,
				"provider URL %q: unknown parameter %q (known: endpoint)", u.Redacted(), k)
		}
	}
	o.BaseURL = u.Query().Get("endpoint")
	d, err := NewDriver(o)
	if err != nil {
		return nil, err
	}
	return d, nil
}

// Name returns "vercel".
func (p *Provider) Name() string { return providerName }

// As sets a **Provider target to the driver and a **Client target to its API
// client.
func (p *Provider) As(target any) bool {
	switch t := target.(type) {
	case **Provider:
		*t = p
	case **Client:
		*t = p.c
	default:
		return false
	}
	return true
}

// Client returns the provider's API client, for endpoints the adapter does
// not cover.
func (p *Provider) Client() *Client { return p.c }

// Close releases idle connections. It does not stop sandboxes.
func (p *Provider) Close() error {
	p.c.http.CloseIdleConnections()
	return nil
}

// ---- wire types -----------------------------------------------------------

type wireSandbox struct {
	Name             string            `json:"name"`
	Persistent       bool              `json:"persistent"`
	CurrentSessionID string            `json:"currentSessionId"`
	Status           string            `json:"status"`
	CreatedAt        int64             `json:"createdAt"`
	Tags             map[string]string `json:"tags"`
	Cwd              string            `json:"cwd"`
	Timeout          int64             `json:"timeout"`
	ExpiresAt        int64             `json:"expiresAt"`
	NetworkPolicy    json.RawMessage   `json:"networkPolicy"`
}

type wireSession struct {
	ID        string `json:"id"`
	Status    string `json:"status"`
	Cwd       string `json:"cwd"`
	Timeout   int64  `json:"timeout"`
	StartedAt int64  `json:"startedAt"`
	CreatedAt int64  `json:"createdAt"`
}

// Route is a port's public endpoint.
type Route struct {
	URL       string `json:"url"`
	Subdomain string `json:"subdomain"`
	Port      int    `json:"port"`
}

type sandboxResponse struct {
	Sandbox wireSandbox  `json:"sandbox"`
	Session *wireSession `json:"session"`
	Routes  []Route      `json:"routes"`
	Resumed bool         `json:"resumed"`
}

// Source is where a new sandbox's files come from, beside an image.
type Source struct {
	Type       string `json:"type"`                 // "git", "tarball" or "snapshot"
	URL        string `json:"url,omitempty"`        // git and tarball
	Depth      int    `json:"depth,omitempty"`      // git
	Revision   string `json:"revision,omitempty"`   // git
	Username   string `json:"username,omitempty"`   // git
	Password   string `json:"password,omitempty"`   // git
	SnapshotID string `json:"snapshotId,omitempty"` // snapshot
}

// CreateOptions are Vercel's own creation settings, beyond sandbox.Spec.
type CreateOptions struct {
	// Name is the sandbox's name (its ID); empty means a generated one.
	Name string
	// Source fills the sandbox from git, a tarball or a snapshot.
	Source *Source
	// Runtime selects a legacy runtime image ("node22", "node24",
	// "python3.13"); it excludes Spec.Image.
	Runtime string
	// Persistent, if set, overrides the default (persistent): whether the
	// filesystem survives a stop.
	Persistent *bool
	// Region and FailoverRegions place the sandbox.
	Region          string
	FailoverRegions []string
}

// legacyRuntimes are the runtime names of POST /v2/sandboxes; as Spec.Image
// they select it.
var legacyRuntimes = []string{"node22", "node24", "node26", "python3.13"}

// Create starts a sandbox: Spec.Image is an image name ("vercel/sandbox/
// universal" by default) or a legacy runtime name; Spec.Snapshot a snapshot
// id. Resources.CPU becomes whole vCPUs; memory follows vCPUs (2048 MB
// each), so Resources.Memory, Disk, GPU and PIDs, and RootFS, are
// ErrNotSupported.
func (p *Provider) Create(ctx context.Context, spec *sandbox.Spec) (driver.Sandbox, error) {
	opts, _ := ctx.Value(createOptionsKey{}).(*CreateOptions)
	sb, err := p.create(ctx, spec, opts)
	if err != nil {
		return nil, err
	}
	return sb, nil
}

type createOptionsKey struct{}

// CreateWith is [sandbox.Provider.Create] with Vercel's own settings; p must
// be a Vercel provider (ErrInvalidArgument otherwise). The portable layer
// checks spec as for Create.
func CreateWith(ctx context.Context, p *sandbox.Provider, spec *sandbox.Spec, opts *CreateOptions) (*sandbox.Sandbox, error) {
	var d *Provider
	if !p.As(&d) {
		return nil, sandbox.Errorf(providerName, "", "create", sandbox.ErrInvalidArgument, "CreateWith: %s is not a Vercel provider", p.Name())
	}
	if opts == nil {
		opts = &CreateOptions{}
	}
	return p.Create(context.WithValue(ctx, createOptionsKey{}, opts), spec)
}

func (p *Provider) create(ctx context.Context, spec *sandbox.Spec, opts *CreateOptions) (*Sandbox, error) {
	if opts == nil {
		opts = &CreateOptions{}
	}
	fail := func(kind error, msg string) (*Sandbox, error) {
		return nil, sandbox.Errorf(providerName, "", "create", kind, "%s", msg)
	}
	r := spec.Resources
	switch {
	case spec.RootFS != "":
		return fail(sandbox.ErrNotSupported, "Spec.RootFS: Vercel sandboxes start from an image, not a host root filesystem")
	case r.Memory != 0:
		return fail(sandbox.ErrNotSupported, "Resources.Memory: Vercel sets memory from vCPUs (2048 MB each); set Resources.CPU")
	case r.Disk != 0 || r.GPU != "" || r.PIDs != 0:
		return fail(sandbox.ErrNotSupported, "Resources.Disk, GPU and PIDs cannot be set on Vercel (vCPUs only)")
	case r.CPU != math.Trunc(r.CPU):
		return fail(sandbox.ErrInvalidArgument, fmt.Sprintf("Resources.CPU %v: Vercel takes a whole number of vCPUs", r.CPU))
	case spec.Snapshot != "" && opts.Source != nil:
		return fail(sandbox.ErrInvalidArgument, "Spec.Snapshot and CreateOptions.Source both set")
	case opts.Runtime != "" && spec.Image != "":
		return fail(sandbox.ErrInvalidArgument, "Spec.Image and CreateOptions.Runtime both set")
	}

	name := opts.Name
	if name == "" {
		var b [6]byte
		rand.Read(b[:])
		name = "perimeter-" + hex.EncodeToString(b[:])
	}
	persistent := true
	if opts.Persistent != nil {
		persistent = *opts.Persistent
	}
	req := map[string]any{"projectId": p.c.project, "name": name, "persistent": persistent}
	path := "/v2/sandboxes"
	switch {
	case opts.Runtime != "":
		req["runtime"] = opts.Runtime
	case slices.Contains(legacyRuntimes, spec.Image):
		req["runtime"] = spec.Image
	case spec.Image != "":
		req["image"] = spec.Image
		path = "/v3/sandboxes"
	}
	if r.CPU > 0 {
		req["resources"] = map[string]int{"vcpus": int(r.CPU)}
	}
	if spec.Timeout > 0 {
		req["timeout"] = spec.Timeout.Milliseconds()
	}
	if len(spec.Ports) > 0 {
		req["ports"] = spec.Ports
	}
	if len(spec.Env) > 0 {
		req["env"] = spec.Env
	}
	if len(spec.Labels) > 0 {
		req["tags"] = spec.Labels
	}
	np, err := policyToWire(spec.Network)
	if err != nil {
		return nil, sandbox.NewError(providerName, "", "create", sandbox.ErrInvalidArgument, err)
	}
	req["networkPolicy"] = np
	switch {
	case spec.Snapshot != "":
		req["source"] = Source{Type: "snapshot", SnapshotID: spec.Snapshot}
	case opts.Source != nil:
		req["source"] = opts.Source
	}
	if opts.Region != "" {
		req["region"] = opts.Region
	}
	if len(opts.FailoverRegions) > 0 {
		req["failoverRegions"] = opts.FailoverRegions
	}

	var out sandboxResponse
	if err := p.c.call(ctx, http.MethodPost, path, nil, req, &out); err != nil {
		return nil, wrap(name, "create", err)
	}
	sb := p.handle(&out)
	if err := sb.waitRunning(ctx); err != nil {
		sb.Terminate(context.WithoutCancel(ctx))
		return nil, err
	}
	if spec.Workdir != "" {
		// A relative Workdir is inside the session's own working directory.
		workdir := sb.abs(spec.Workdir)
		if err := sb.MkdirAll(ctx, workdir, 0o755); err != nil {
			sb.Terminate(context.WithoutCancel(ctx))
			return nil, err
		}
		sb.mu.Lock()
		sb.workdir = workdir
		sb.mu.Unlock()
	}
	return sb, nil
}

func (p *Provider) handle(r *sandboxResponse) *Sandbox {
	sb := &Sandbox{p: p, name: r.Sandbox.Name}
	sb.update(r)
	return sb
}

// Get returns the named sandbox. A stopped sandbox is resumed by the first
// call that needs it running, not by Get.
func (p *Provider) Get(ctx context.Context, id string) (driver.Sandbox, error) {
	if id == "" || strings.ContainsAny(id, "/?#") {
		return nil, sandbox.Errorf(providerName, id, "get", sandbox.ErrInvalidArgument, "%q is not a sandbox name", id)
	}
	var out sandboxResponse
	if err := p.c.call(ctx, http.MethodGet, "/v2/sandboxes/"+url.PathEscape(id),
		url.Values{"projectId": {p.c.project}}, nil, &out); err != nil {
		return nil, wrap(id, "get", err)
	}
	return p.handle(&out), nil
}

// List yields the project's sandboxes carrying every label in opts. The API
// filters on one tag; the others are filtered here.
func (p *Provider) List(ctx context.Context, opts *sandbox.ListOptions) iter.Seq2[sandbox.Info, error] {
	return func(yield func(sandbox.Info, error) bool) {
		var labels map[string]string
		if opts != nil {
			labels = opts.Labels
		}
		q := url.Values{"project": {p.c.project}, "limit": {"50"}}
		if len(labels) > 0 {
			keys := make([]string, 0, len(labels))
			for k := range labels {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			q.Set("tags", keys[0]+":"+labels[keys[0]])
		}
		seen := map[string]bool{}
		for {
			var out struct {
				Sandboxes  []wireSandbox `json:"sandboxes"`
				Pagination struct {
					Next json.RawMessage `json:"next"`
				} `json:"pagination"`
			}
			if err := p.c.call(ctx, http.MethodGet, "/v2/sandboxes", q, nil, &out); err != nil {
				yield(sandbox.Info{}, wrap("", "list", err))
				return
			}
			for _, w := range out.Sandboxes {
				if seen[w.Name] || !hasLabels(w.Tags, labels) {
					continue
				}
				seen[w.Name] = true
				if !yield(infoOf(&w, nil), nil) {
					return
				}
			}
			next := cursor(out.Pagination.Next)
			if next == "" || next == q.Get("cursor") {
				return
			}
			q.Set("cursor", next)
		}
	}
}

// cursor reads pagination.next, a string cursor (v2) or a number (v1).
func cursor(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return strings.TrimSpace(string(raw))
}

func hasLabels(tags, want map[string]string) bool {
	for k, v := range want {
		if got, ok := tags[k]; !ok || got != v {
			return false
		}
	}
	return true
}

const isolation = "Firecracker microVM per sandbox (Vercel Sandbox)"

// egressOf describes a wire network policy as Info.Isolation states it.
func egressOf(raw json.RawMessage) string {
	var p struct {
		Mode  string          `json:"mode"`
		Allow json.RawMessage `json:"allow"`
	}
	switch {
	case len(raw) == 0 || json.Unmarshal(raw, &p) != nil:
		return "network: not reported by Vercel"
	case p.Mode == "allow-all":
		return "network: open"
	case p.Mode == "deny-all":
		return "network: none"
	case len(p.Allow) > 0:
		return "network: allowlist"
	}
	return "network: " + p.Mode
}

func infoOf(w *wireSandbox, se *wireSession) sandbox.Info {
	status := w.Status
	if se != nil && se.Status != "" {
		status = se.Status
	}
	info := sandbox.Info{
		ID: w.Name, Provider: providerName, State: stateOf(status), Labels: w.Tags,
		Isolation: isolation + "; " + egressOf(w.NetworkPolicy),
	}
	if w.CreatedAt > 0 {
		info.Created = time.UnixMilli(w.CreatedAt)
	}
	switch {
	case se != nil && info.State == sandbox.StateRunning && se.StartedAt > 0 && se.Timeout > 0:
		info.Expires = time.UnixMilli(se.StartedAt + se.Timeout)
	case w.ExpiresAt > 0:
		info.Expires = time.UnixMilli(w.ExpiresAt)
	}
	return info
}

func stateOf(status string) sandbox.State {
	switch status {
	case "pending":
		return sandbox.StateStarting
	case "running":
		return sandbox.StateRunning
	case "stopping", "stopped", "snapshotting":
		return sandbox.StateStopped
	case "failed", "aborted":
		return sandbox.StateTerminated
	}
	return sandbox.StateUnknown
}

// ---- network policy -------------------------------------------------------

func policyToWire(p *sandbox.NetworkPolicy) (any, error) {
	switch p.Mode {
	case sandbox.NetworkOpen:
		return map[string]string{"mode": "allow-all"}, nil
	case sandbox.NetworkNone:
		return map[string]string{"mode": "deny-all"}, nil
	case sandbox.NetworkAllowlist:
		domains, cidrs := []string{}, []string{}
		for _, a := range p.Allow {
			switch {
			case a == "":
				return nil, errors.New("NetworkPolicy.Allow has an empty entry")
			case strings.Contains(a, "/"):
				cidrs = append(cidrs, a)
			default:
				domains = append(domains, a)
			}
		}
		m := map[string]any{"allow": domains}
		if len(cidrs) > 0 {
			m["subnets"] = map[string][]string{"allow": cidrs}
		}
		return m, nil
	}
	return nil, fmt.Errorf("unknown network mode %q (want none, allowlist or open)", p.Mode)
}

// ---- the sandbox handle ---------------------------------------------------

// Sandbox is a Vercel sandbox: a name that owns a series of sessions (VMs).
// Calls go to the current session; when it has stopped (410, or 422 while
// stopping or snapshotting), the sandbox is resumed with GET ?resume=true
// and the call is retried once on the new session, as Vercel's SDK does.
// Processes do not survive a stop, only files of a persistent sandbox.
type Sandbox struct {
	p    *Provider
	name string

	mu         sync.Mutex
	session    string
	cwd        string // the session's working directory
	workdir    string // Spec.Workdir, if any
	routes     []Route
	last       sandboxResponse
	terminated bool
}

var (
	_ driver.Sandbox         = (*Sandbox)(nil)
	_ driver.Snapshotter     = (*Sandbox)(nil)
	_ driver.NetworkUpdater  = (*Sandbox)(nil)
	_ driver.TimeoutExtender = (*Sandbox)(nil)
)

// As sets a **Sandbox target to the driver's sandbox (for SessionID, Routes
// and the like).
func (s *Sandbox) As(target any) bool {
	if t, ok := target.(**Sandbox); ok {
		*t = s
		return true
	}
	return false
}

func (s *Sandbox) update(r *sandboxResponse) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last = *r
	if r.Session != nil && r.Session.ID != "" {
		s.session = r.Session.ID
		if r.Session.Cwd != "" {
			s.cwd = r.Session.Cwd
		}
	} else if r.Sandbox.CurrentSessionID != "" {
		s.session = r.Sandbox.CurrentSessionID
	}
	if s.cwd == "" {
		s.cwd = r.Sandbox.Cwd
	}
	if s.cwd == "" {
		s.cwd = "/vercel/sandbox"
	}
	if r.Routes != nil {
		s.routes = r.Routes
	}
}

// ID returns the sandbox's name.
func (s *Sandbox) ID() string { return s.name }

// SessionID returns the id of the session calls currently go to.
func (s *Sandbox) SessionID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.session
}

// Routes returns the public endpoints of the sandbox's ports, as last seen.
func (s *Sandbox) Routes() []Route {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.routes)
}

// Capabilities: see the package documentation.
func (s *Sandbox) Capabilities() sandbox.Capabilities {
	return sandbox.Capabilities{
		Signal:        true,
		PTY:           true,
		Expose:        true,
		Snapshot:      true,
		ExtendTimeout: true,
		NetworkModes:  []sandbox.NetworkMode{sandbox.NetworkNone, sandbox.NetworkAllowlist, sandbox.NetworkOpen},
		UpdateNetwork: true,
		TextOutput:    true,
	}
}

func (s *Sandbox) dir() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.workdir != "" {
		return s.workdir
	}
	return s.cwd
}

func (s *Sandbox) checkLive(op string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.terminated {
		return sandbox.NewError(providerName, s.name, op, sandbox.ErrTerminated, nil)
	}
	return nil
}

func (s *Sandbox) sessionPath(sid, rest string) string {
	return "/v2/sandboxes/sessions/" + url.PathEscape(sid) + rest
}

// onSession runs call on the current session, resuming the sandbox and
// retrying once if the session has stopped.
func (s *Sandbox) onSession(ctx context.Context, op string, call func(sid string) error) error {
	if err := s.checkLive(op); err != nil {
		return err
	}
	sid := s.SessionID()
	err := call(sid)
	var ae *APIError
	if err == nil || !errors.As(err, &ae) || !ae.stopped() {
		return err
	}
	if rerr := s.resume(ctx, sid); rerr != nil {
		return rerr
	}
	return call(s.SessionID())
}

// resume starts a new session unless another call already did since the
// session from was seen.
func (s *Sandbox) resume(ctx context.Context, from string) error {
	if err := s.checkLive("resume"); err != nil {
		return err
	}
	if s.SessionID() != from {
		return nil
	}
	var out sandboxResponse
	err := s.p.c.call(ctx, http.MethodGet, "/v2/sandboxes/"+url.PathEscape(s.name),
		url.Values{"projectId": {s.p.c.project}, "resume": {"true"}}, nil, &out)
	if err != nil {
		var ae *APIError
		if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
			return sandbox.NewError(providerName, s.name, "resume", sandbox.ErrTerminated, err)
		}
		return err
	}
	s.update(&out)
	return nil
}

// waitRunning polls a pending session until it runs.
func (s *Sandbox) waitRunning(ctx context.Context) error {
	for delay := 100 * time.Millisecond; ; delay = min(delay*2, 2*time.Second) {
		s.mu.Lock()
		status := ""
		if s.last.Session != nil {
			status = s.last.Session.Status
		}
		s.mu.Unlock()
		switch status {
		case "", "running":
			return nil
		case "pending":
		default:
			return sandbox.Errorf(providerName, s.name, "create", sandbox.ErrUnavailable, "session is %s", status)
		}
		if err := httpretry.Sleep(ctx, delay); err != nil {
			return err
		}
		var out struct {
			Session wireSession `json:"session"`
			Routes  []Route     `json:"routes"`
		}
		if err := s.p.c.call(ctx, http.MethodGet, s.sessionPath(s.SessionID(), ""), nil, nil, &out); err != nil {
			return wrap(s.name, "create", err)
		}
		s.mu.Lock()
		s.last.Session = &out.Session
		if out.Routes != nil {
			s.routes = out.Routes
		}
		s.mu.Unlock()
	}
}

// Info describes the sandbox as the API reports it now.
func (s *Sandbox) Info(ctx context.Context) (sandbox.Info, error) {
	if err := s.checkLive("info"); err != nil {
		return sandbox.Info{}, err
	}
	var out sandboxResponse
	if err := s.p.c.call(ctx, http.MethodGet, "/v2/sandboxes/"+url.PathEscape(s.name),
		url.Values{"projectId": {s.p.c.project}}, nil, &out); err != nil {
		return sandbox.Info{}, wrap(s.name, "info", err)
	}
	s.update(&out)
	return infoOf(&out.Sandbox, out.Session), nil
}

// Terminate deletes the sandbox (and stops its session). Deleting a sandbox
// that is already gone is not an error.
func (s *Sandbox) Terminate(ctx context.Context) error {
	s.mu.Lock()
	if s.terminated {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	err := s.p.c.call(ctx, http.MethodDelete, "/v2/sandboxes/"+url.PathEscape(s.name),
		url.Values{"projectId": {s.p.c.project}}, nil, nil)
	var ae *APIError
	if err != nil && !(errors.As(err, &ae) && ae.Status == http.StatusNotFound) {
		return wrap(s.name, "terminate", err)
	}
	s.mu.Lock()
	s.terminated = true
	s.mu.Unlock()
	return nil
}

// Stop stops the current session, as a Vercel session's timeout would: every
// process ends, and a persistent sandbox keeps its files for the next
// session, which the next call that needs one starts.
func (s *Sandbox) Stop(ctx context.Context) error {
	if err := s.checkLive("stop"); err != nil {
		return err
	}
	err := s.p.c.call(ctx, http.MethodPost, s.sessionPath(s.SessionID(), "/stop"), nil, nil, nil)
	return wrap(s.name, "stop", err)
}

// Snapshot saves the sandbox's filesystem and returns the snapshot's id for
// Spec.Snapshot. As on Vercel, taking it stops the session: running
// processes end, and the next call resumes the sandbox.
func (s *Sandbox) Snapshot(ctx context.Context) (string, error) {
	var out struct {
		Snapshot struct {
			ID string `json:"id"`
		} `json:"snapshot"`
	}
	err := s.onSession(ctx, "snapshot", func(sid string) error {
		return s.p.c.call(ctx, http.MethodPost, s.sessionPath(sid, "/snapshot"), nil, map[string]any{}, &out)
	})
	if err != nil {
		return "", wrap(s.name, "snapshot", err)
	}
	if out.Snapshot.ID == "" {
		return "", sandbox.Errorf(providerName, s.name, "snapshot", sandbox.ErrUnavailable, "the API returned no snapshot id")
	}
	return out.Snapshot.ID, nil
}

// ExtendTimeout moves the session's expiry d later.
func (s *Sandbox) ExtendTimeout(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return sandbox.Errorf(providerName, s.name, "extend timeout", sandbox.ErrInvalidArgument, "duration must be positive")
	}
	err := s.onSession(ctx, "extend timeout", func(sid string) error {
		return s.p.c.call(ctx, http.MethodPost, s.sessionPath(sid, "/extend-timeout"), nil,
			map[string]int64{"duration": max(d.Milliseconds(), 1)}, nil)
	})
	return wrap(s.name, "extend timeout", err)
}

// UpdateNetwork replaces the running session's egress policy.
func (s *Sandbox) UpdateNetwork(ctx context.Context, policy *sandbox.NetworkPolicy) error {
	if policy == nil {
		return sandbox.Errorf(providerName, s.name, "update network", sandbox.ErrInvalidArgument, "nil policy")
	}
	np, err := policyToWire(policy)
	if err != nil {
		return sandbox.NewError(providerName, s.name, "update network", sandbox.ErrInvalidArgument, err)
	}
	err = s.onSession(ctx, "update network", func(sid string) error {
		return s.p.c.call(ctx, http.MethodPost, s.sessionPath(sid, "/network-policy"), nil, np, nil)
	})
	return wrap(s.name, "update network", err)
}

// Expose returns the public URL of port. A port not declared in Spec.Ports
// is added to the sandbox's ports first (PATCH). Only "http" is supported.
func (s *Sandbox) Expose(ctx context.Context, port int, opts *sandbox.ExposeOptions) (driver.Tunnel, error) {
	if err := s.checkLive("expose"); err != nil {
		return nil, err
	}
	if opts.Protocol != "http" {
		return nil, sandbox.Errorf(providerName, s.name, "expose", sandbox.ErrNotSupported,
			"protocol %q: Vercel routes serve HTTP(S) only", opts.Protocol)
	}
	if r, ok := s.route(port); ok {
		return &tunnel{s: s, port: port, url: r.URL}, nil
	}
	ports := []int{port}
	for _, r := range s.Routes() {
		ports = append(ports, r.Port)
	}
	if err := s.setPorts(ctx, "expose", ports); err != nil {
		return nil, err
	}
	if r, ok := s.route(port); ok {
		return &tunnel{s: s, port: port, url: r.URL}, nil
	}
	return nil, sandbox.Errorf(providerName, s.name, "expose", sandbox.ErrUnavailable,
		"the API returned no route for port %d", port)

}

func (s *Sandbox) route(port int) (Route, bool) {
	for _, r := range s.Routes() {
		if r.Port == port {
			return r, true
		}
	}
	return Route{}, false
}

// setPorts replaces the sandbox's ports (PATCH) and keeps the new routes.
func (s *Sandbox) setPorts(ctx context.Context, op string, ports []int) error {
	var out struct {
		Routes []Route `json:"routes"`
	}
	if err := s.p.c.call(ctx, http.MethodPatch, "/v2/sandboxes/"+url.PathEscape(s.name),
		url.Values{"projectId": {s.p.c.project}}, map[string]any{"ports": ports}, &out); err != nil {
		return wrap(s.name, op, err)
	}
	s.mu.Lock()
	if out.Routes != nil {
		s.routes = out.Routes
	}
	s.mu.Unlock()
	return nil
}

// tunnel is a port's route. Close withdraws it by removing the port from
// the sandbox's ports.
type tunnel struct {
	s    *Sandbox
	port int
	url  string
	once sync.Once
	err  error
}

func (t *tunnel) URL() string { return t.url }

// As reports false: a route has no native type beyond its URL.
func (t *tunnel) As(any) bool { return false }

// Close removes the port from the sandbox (PATCH ports), which withdraws
// its route. Closing again, or after the sandbox is gone, returns nil.
func (t *tunnel) Close() error {
	t.once.Do(func() {
		if t.s.checkLive("close tunnel") != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var ports []int
		for _, r := range t.s.Routes() {
			if r.Port != t.port {
				ports = append(ports, r.Port)
			}
		}
		if ports == nil {
			ports = []int{}
		}
		err := t.s.setPorts(ctx, "close tunnel", ports)
		if errors.Is(err, sandbox.ErrNotFound) {
			err = nil
		}
		t.err = err
	})
	return t.err
}
