package daytona

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/perimeter-sdk/perimeter/internal/httpretry"
	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

func init() {
	sandbox.Register("daytona", open)
}

// Options configures a Provider. Nil means defaults and credentials from
// the environment.
type Options struct {
	// APIKey is a Daytona API key; empty means DAYTONA_API_KEY.
	APIKey string
	// JWTToken and OrganizationID are the alternative to an API key; empty
	// means DAYTONA_JWT_TOKEN and DAYTONA_ORGANIZATION_ID. The organization
	// is sent as X-Daytona-Organization-ID, with a JWT only.
	JWTToken, OrganizationID string
	// APIURL is the control API's base URL; empty means DAYTONA_API_URL,
	// else DAYTONA_SERVER_URL, else DefaultAPIURL.
	APIURL string
	// Target is the region sandboxes are created in; empty means
	// DAYTONA_TARGET, else Daytona's default.
	Target string
	// HTTPClient sends the requests; nil means a client without an overall
	// timeout (commands last as long as they run; calls are bounded by
	// their contexts).
	HTTPClient *http.Client
	// MaxRetries is how many times a transient failure is retried; zero
	// means 3, negative means none.
	MaxRetries int
	// RetryBackoff is the first retry's delay, doubled for each further
	// one and randomised by up to half; zero means 250ms.
	RetryBackoff time.Duration
	// MaxRetryAfter is the longest Retry-After of a 429 that is waited
	// for; a longer one fails at once. Zero means 30s.
	MaxRetryAfter time.Duration
	// StartTimeout bounds how long Create, Resume and the resumption of a
	// stopped sandbox wait for it to be started (within the call's ctx);
	// zero means 3 minutes.
	StartTimeout time.Duration
	// PreviewExpiry is how long the signed URL of an Expose stays valid;
	// zero means one hour. Daytona allows at most 24 hours.
	PreviewExpiry time.Duration
}

// Provider creates Daytona sandboxes. It is safe for concurrent use.
type Provider struct {
	c        *Client
	opts     Options
	pageSize int // sandboxes per List page
}

var _ driver.Provider = (*Provider)(nil)

// New returns the portable provider host code uses. It does no I/O: bad
// credentials show up on the first call.
func New(opts *Options) (*sandbox.Provider, error) {
	d, err := NewDriver(opts)
	if err != nil {
		return nil, err
	}
	return sandbox.NewProvider(d, nil), nil
}

// NewDriver is [New] returning the provider's driver, for
// [sandbox.NewProvider] with [sandbox.ProviderOptions] (hooks, logging).
// Host code calls the portable type's methods, never the driver's: the
// portable layer validates arguments and applies defaults before the
// driver sees them.
func NewDriver(opts *Options) (*Provider, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	fromEnv(&o)
	bad := func(msg string) error {
		return sandbox.Errorf(providerName, "", "open", sandbox.ErrInvalidArgument, "%s", msg)
	}
	token := o.APIKey
	switch {
	case o.APIKey != "" && o.JWTToken != "":
		return nil, bad("both an API key and a JWT are set; give one (DAYTONA_API_KEY, or DAYTONA_JWT_TOKEN with DAYTONA_ORGANIZATION_ID)")
	case o.APIKey == "" && o.JWTToken == "":
		return nil, bad("no credentials: set DAYTONA_API_KEY, or DAYTONA_JWT_TOKEN with DAYTONA_ORGANIZATION_ID")
	case o.JWTToken != "" && o.OrganizationID == "":
		return nil, bad("a JWT needs an organization: set DAYTONA_ORGANIZATION_ID")
	case o.JWTToken != "":
		token = o.JWTToken
	}
	base, err := url.Parse(o.APIURL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, bad(fmt.Sprintf("API URL %q is not an http(s) URL", o.APIURL))
	}
	switch {
	case o.PreviewExpiry < 0 || o.PreviewExpiry > 24*time.Hour:
		return nil, bad(fmt.Sprintf("PreviewExpiry %v is outside 1s..24h", o.PreviewExpiry))
	case o.PreviewExpiry == 0:
		o.PreviewExpiry = time.Hour
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 3 * time.Minute
	}
	c := &Client{base: base, token: token, http: o.HTTPClient,
		retry: httpretry.Policy{Retries: o.MaxRetries, Backoff: o.RetryBackoff, MaxRetryAfter: o.MaxRetryAfter}.Fill(
			httpretry.Policy{Retries: 3, Backoff: 250 * time.Millisecond, MaxRetryAfter: 30 * time.Second})}
	if o.JWTToken != "" {
		c.org = o.OrganizationID
	}
	if c.http == nil {
		c.http = &http.Client{}
	}
	return &Provider{c: c, opts: o, pageSize: 100}, nil
}

// fromEnv fills empty options from Daytona's environment variables.
func fromEnv(o *Options) {
	if o.APIKey == "" && o.JWTToken == "" {
		o.APIKey = os.Getenv("DAYTONA_API_KEY")
		if o.APIKey == "" {
			o.JWTToken = os.Getenv("DAYTONA_JWT_TOKEN")
		}
	}
	if o.OrganizationID == "" {
		o.OrganizationID = os.Getenv("DAYTONA_ORGANIZATION_ID")
	}
	for _, v := range []string{o.APIURL, os.Getenv("DAYTONA_API_URL"), os.Getenv("DAYTONA_SERVER_URL"), DefaultAPIURL} {
		if v != "" {
			o.APIURL = v
			break
		}
	}
	if o.Target == "" {
		o.Target = os.Getenv("DAYTONA_TARGET")
	}
}

// urlParams are the query parameters a daytona:// URL may carry.
var urlParams = []string{"endpoint"}

// open serves "daytona://" and "daytona://TARGET[?endpoint=URL]".
func open(_ context.Context, u *url.URL) (driver.Provider, error) {
	bad := func(msg string) (driver.Provider, error) {
		return nil, sandbox.Errorf(providerName, "", "open", sandbox.ErrInvalidArgument, "%s", msg)
	}
	if u.User != nil {
		return bad("credentials do not belong in the URL: set DAYTONA_API_KEY (or DAYTONA_JWT_TOKEN and DAYTONA_ORGANIZATION_ID)")
	}
	if u.Path != "" && u.Path != "/" || u.Opaque != "" {
		return bad(fmt.Sprintf("URL %q has a path; want daytona:// or daytona://TARGET", u.Redacted()))
	}
	var o Options
	o.Target = u.Host
	for k, v := range u.Query() {
		switch k {
		case "endpoint":
			o.APIURL = v[len(v)-1]
		default:
			return bad(fmt.Sprintf("unknown URL query parameter %q (known: %s)", k, strings.Join(urlParams, ", ")))
		}
	}
	d, err := NewDriver(&o)
	if err != nil {
		return nil, err
	}
	return d, nil
}

// Name returns "daytona".
func (p *Provider) Name() string { return providerName }

// As sets a **Provider target to the driver and a **Client target to its
// API client, and reports whether it did.
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

// Client returns the authenticated, retrying client, for endpoints the
// adapter does not use.
func (p *Provider) Client() *Client { return p.c }

// Close releases idle connections. It does not terminate sandboxes.
func (p *Provider) Close() error {
	p.c.http.CloseIdleConnections()
	return nil
}

// CreateOptions are Daytona settings beyond sandbox.Spec, for
// [CreateWith].
type CreateOptions struct {
	// Name is the sandbox's name (unique in the organization); empty
	// means its ID.
	Name string
	// User is the OS user commands run as; empty means the image's
	// default ("daytona").
	User string
	// Public makes preview URLs answer without a token.
	Public bool
	// Target overrides the provider's region.
	Target string
	// Dockerfile, if set, builds the sandbox's image from this Dockerfile
	// content (Spec.Image and Spec.Snapshot must then be empty).
	Dockerfile string
	// AutoStop, AutoArchive and AutoDelete are Daytona's intervals, in
	// whole minutes (rounded up): idle time before the sandbox stops, time
	// stopped before it is archived, and time stopped before it is deleted.
	// Nil means Daytona's defaults (15 minutes, 7 days, never); AutoStop 0
	// disables auto-stop, AutoDelete 0 deletes at once on stop and a
	// negative AutoDelete disables it. Spec.Timeout, if set, fills AutoStop
	// and AutoDelete (see the package documentation) unless they are set.
	AutoStop, AutoArchive, AutoDelete *time.Duration
}

// gpuTypes are the GPU types Daytona's API accepts (CreateSandbox.gpuType).
var gpuTypes = []string{"H100", "RTX-PRO-6000"}

// Create starts a sandbox from spec and waits for it to be started.
func (p *Provider) Create(ctx context.Context, spec *sandbox.Spec) (driver.Sandbox, error) {
	opts, _ := ctx.Value(createOptionsKey{}).(*CreateOptions)
	sb, err := p.create(ctx, spec, opts)
	if err != nil {
		return nil, err
	}
	return sb, nil
}

type createOptionsKey struct{}

// CreateWith is [sandbox.Provider.Create] with Daytona's own settings; p
// must be a Daytona provider (ErrInvalidArgument otherwise). The portable
// layer checks spec and applies its defaults as for Create.
func CreateWith(ctx context.Context, p *sandbox.Provider, spec *sandbox.Spec, opts *CreateOptions) (*sandbox.Sandbox, error) {
	var d *Provider
	if !p.As(&d) {
		return nil, sandbox.Errorf(providerName, "", "create", sandbox.ErrInvalidArgument, "CreateWith: %s is not a Daytona provider", p.Name())
	}
	if opts == nil {
		opts = &CreateOptions{}
	}
	return p.Create(context.WithValue(ctx, createOptionsKey{}, opts), spec)
}

func (p *Provider) create(ctx context.Context, spec *sandbox.Spec, opts *CreateOptions) (*Sandbox, error) {
	const op = "create"
	if opts == nil {
		opts = &CreateOptions{}
	}
	req, err := p.createRequest(spec, opts)
	if err != nil {
		return nil, err
	}
	var w wireSandbox
	if err := p.c.api(ctx, http.MethodPost, "/sandbox", nil, req, &w); err != nil {
		return nil, wrap("", op, err)
	}
	s := p.handle(&w)
	s.autoDelete = req.AutoDeleteInterval
	if err := s.waitStarted(ctx, op); err != nil {
		// Do not leave a sandbox nobody holds.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		s.Terminate(dctx)
		cancel()
		return nil, err
	}
	if spec.Workdir != "" {
		// A relative Workdir is taken in the daemon's working directory.
		dir, err := s.name(ctx, op, spec.Workdir)
		if err == nil {
			err = s.MkdirAll(ctx, dir, 0o755)
		}
		if err != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			s.Terminate(dctx)
			cancel()
			return nil, sandbox.NewError(providerName, s.id, op, nil, err)
		}
		s.mu.Lock()
		s.workdir = dir
		s.mu.Unlock()
	}
	return s, nil
}

func minutes(d time.Duration) int {
	if d <= 0 {
		return int(d / time.Minute)
	}
	return int((d + time.Minute - 1) / time.Minute)
}

func ptr[T any](v T) *T { return &v }

// gib rounds bytes up to whole GiB, Daytona's unit for memory and disk.
func gib(bytes int64) int { return int((bytes + (1<<30 - 1)) >> 30) }

func (p *Provider) createRequest(spec *sandbox.Spec, opts *CreateOptions) (*wireCreate, error) {
	const op = "create"
	fail := func(kind error, format string, args ...any) (*wireCreate, error) {
		return nil, sandbox.Errorf(providerName, "", op, kind, format, args...)
	}
	r := &wireCreate{
		Name: opts.Name, User: opts.User, Public: opts.Public, Target: p.opts.Target,
		Env: spec.Env, Labels: spec.Labels, Snapshot: spec.Snapshot,
	}
	if opts.Target != "" {
		r.Target = opts.Target
	}
	switch {
	case spec.RootFS != "":
		return fail(sandbox.ErrNotSupported, "Spec.RootFS: Daytona sandboxes start from an image or a snapshot, not a host directory")
	case spec.Resources.PIDs != 0:
		return fail(sandbox.ErrNotSupported, "Resources.PIDs: Daytona has no process limit setting")
	case spec.Resources.CPU != math.Trunc(spec.Resources.CPU):
		return fail(sandbox.ErrNotSupported, "Resources.CPU %v: Daytona allocates whole cores", spec.Resources.CPU)
	case spec.Image != "" && spec.Snapshot != "", opts.Dockerfile != "" && (spec.Image != "" || spec.Snapshot != ""):
		return fail(sandbox.ErrInvalidArgument, "give one of Spec.Image, Spec.Snapshot and CreateOptions.Dockerfile")
	}
	for k := range spec.Env {
		if !validEnvName(k) {
			return fail(sandbox.ErrInvalidArgument, "Spec.Env name %q is not a shell variable name", k)
		}
	}
	r.CPU = int(spec.Resources.CPU)
	r.Memory = gib(spec.Resources.Memory)
	r.Disk = gib(spec.Resources.Disk)
	if g := spec.Resources.GPU; g != "" {
		name, count, _ := strings.Cut(g, ":")
		n := 1
		if count != "" {
			var err error
			if n, err = strconv.Atoi(count); err != nil || n < 1 {
				return fail(sandbox.ErrInvalidArgument, "Resources.GPU %q: want NAME, NAME:COUNT or COUNT", g)
			}
		}
		if k, err := strconv.Atoi(name); err == nil && count == "" {
			n, name = k, ""
		}
		r.GPU = n
		if name != "" {
			if !slices.Contains(gpuTypes, name) {
				return fail(sandbox.ErrNotSupported, "Resources.GPU %q: Daytona offers the GPU types %s", g, strings.Join(gpuTypes, ", "))
			}
			r.GPUType = []string{name}
		}
	}
	switch {
	case opts.Dockerfile != "":
		r.BuildInfo = &wireBuildInfo{DockerfileContent: opts.Dockerfile}
	case spec.Image != "":
		if strings.ContainsAny(spec.Image, " \n\t") {
			return fail(sandbox.ErrInvalidArgument, "Spec.Image %q is not an image reference", spec.Image)
		}
		r.BuildInfo = &wireBuildInfo{DockerfileContent: "FROM " + spec.Image + "\n"}
	}
	if err := networkToWire(spec.Network, r); err != nil {
		return nil, sandbox.NewError(providerName, "", op, sandbox.ErrInvalidArgument, err)
	}
	if spec.Timeout > 0 {
		// Daytona has no absolute deadline: the sandbox stops after
		// Timeout without activity and is deleted when it stops.
		r.AutoStopInterval = ptr(minutes(spec.Timeout))
		r.AutoDeleteInterval = ptr(0)
	}
	if opts.AutoStop != nil {
		r.AutoStopInterval = ptr(minutes(*opts.AutoStop))
	}
	if opts.AutoArchive != nil {
		r.AutoArchiveInterval = ptr(minutes(*opts.AutoArchive))
	}
	if opts.AutoDelete != nil {
		r.AutoDeleteInterval = ptr(minutes(*opts.AutoDelete))
	}
	return r, nil
}

func validEnvName(k string) bool {
	if k == "" {
		return false
	}
	for i, c := range k {
		if c != '_' && !(c >= 'A' && c <= 'Z') && !(c >= 'a' && c <= 'z') && !(i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// networkToWire sets Daytona's egress fields for policy: none (also a nil
// policy or an empty mode, as the contract has it) blocks all, an
// allow-list splits into CIDRs and domain names, open is Daytona's default.
func networkToWire(policy *sandbox.NetworkPolicy, r *wireCreate) error {
	if policy == nil {
		policy = &sandbox.NetworkPolicy{Mode: sandbox.NetworkNone}
	}
	block, cidrs, domains, err := networkFields(policy)
	if err != nil {
		return err
	}
	r.NetworkBlockAll, r.NetworkAllowList, r.DomainAllowList = block, cidrs, domains
	return nil
}

func networkFields(policy *sandbox.NetworkPolicy) (block bool, cidrs, domains string, err error) {
	switch policy.Mode {
	case sandbox.NetworkOpen:
		return false, "", "", nil
	case sandbox.NetworkNone, "":
		return true, "", "", nil
	case sandbox.NetworkAllowlist:
	default:
		return false, "", "", fmt.Errorf("unknown network mode %q", policy.Mode)
	}
	var cs, ds []string
	for _, a := range policy.Allow {
		switch {
		case strings.Contains(a, "/"):
			if _, _, err := net.ParseCIDR(a); err != nil {
				return false, "", "", fmt.Errorf("network allow entry %q: %v", a, err)
			}
			cs = append(cs, a)
		case net.ParseIP(a) != nil:
			if strings.Contains(a, ":") {
				cs = append(cs, a+"/128")
			} else {
				cs = append(cs, a+"/32")
			}
		case validDomain(a):
			ds = append(ds, a)
		default:
			return false, "", "", fmt.Errorf("network allow entry %q is neither a CIDR range nor a domain name", a)
		}
	}
	if len(cs) == 0 && len(ds) == 0 {
		return true, "", "", nil // an empty allow-list allows nothing
	}
	return false, strings.Join(cs, ","), strings.Join(ds, ","), nil
}

func validDomain(d string) bool {
	d = strings.TrimPrefix(d, "*.")
	if d == "" || len(d) > 253 || strings.HasPrefix(d, ".") || strings.HasSuffix(d, ".") {
		return false
	}
	for _, l := range strings.Split(d, ".") {
		if l == "" || len(l) > 63 || strings.HasPrefix(l, "-") || strings.HasSuffix(l, "-") {
			return false
		}
		for _, c := range l {
			if c != '-' && !(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') && !(c >= '0' && c <= '9') {
				return false
			}
		}
	}
	return true
}

func (p *Provider) handle(w *wireSandbox) *Sandbox {
	s := &Sandbox{p: p, id: w.ID}
	s.setWire(w)
	return s
}

// Get returns a handle to the sandbox with this ID or name. A stopped or
// archived sandbox is found as it is (Info says StatePaused) and is
// started again by the first call that needs it.
func (p *Provider) Get(ctx context.Context, id string) (driver.Sandbox, error) {
	const op = "get"
	if strings.ContainsAny(id, "/?#") {
		return nil, sandbox.Errorf(providerName, id, op, sandbox.ErrInvalidArgument, "sandbox ID %q", id)
	}
	var w wireSandbox
	if err := p.c.api(ctx, http.MethodGet, "/sandbox/"+url.PathEscape(id), nil, nil, &w); err != nil {
		return nil, wrap(id, op, err)
	}
	if gone(w.State) {
		return nil, sandbox.Errorf(providerName, id, op, sandbox.ErrNotFound, "%s", "the sandbox is "+w.State)
	}
	return p.handle(&w), nil
}

func gone(state string) bool { return state == "destroyed" || state == "destroying" }

// List yields the sandboxes carrying every label in opts.Labels, following
// Daytona's cursor pagination.
func (p *Provider) List(ctx context.Context, opts *sandbox.ListOptions) iter.Seq2[sandbox.Info, error] {
	return func(yield func(sandbox.Info, error) bool) {
		q := url.Values{"limit": {strconv.Itoa(p.pageSize)}}
		var want map[string]string
		if len(opts.Labels) > 0 {
			want = opts.Labels
			raw, _ := json.Marshal(want)
			q.Set("labels", string(raw))
		}
		seen := map[string]bool{}
		for {
			resp, err := p.c.API(ctx, http.MethodGet, "/sandbox", q, nil)
			var page wireList
			if err == nil {
				err = decodeList(resp, &page)
			}
			if err != nil {
				yield(sandbox.Info{}, wrap("", "list", err))
				return
			}
			for i := range page.Items {
				w := &page.Items[i]
				if seen[w.ID] || gone(w.State) || !hasLabels(w.Labels, want) {
					continue
				}
				seen[w.ID] = true
				if !yield(infoOf(w), nil) {
					return
				}
			}
			if page.NextCursor == nil || *page.NextCursor == "" || len(page.Items) == 0 {
				return
			}
			q.Set("cursor", *page.NextCursor)
		}
	}
}

// decodeList reads a v0.190 page, or the plain array v0.170 answered.
func decodeList(resp *http.Response, page *wireList) error {
	var raw json.RawMessage
	if err := decodeJSON(resp, &raw); err != nil {
		return err
	}
	if t := strings.TrimSpace(string(raw)); strings.HasPrefix(t, "[") {
		return json.Unmarshal(raw, &page.Items)
	}
	return json.Unmarshal(raw, page)
}

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// stateOf maps Daytona's states to the contract's. A stopped, archived or
// paused sandbox keeps its files and starts again: StatePaused.
func stateOf(s string) sandbox.State {
	switch s {
	case "started", "resizing", "snapshotting", "forking":
		return sandbox.StateRunning
	case "creating", "starting", "restoring", "resuming", "pending_build", "building_snapshot", "pulling_snapshot":
		return sandbox.StateStarting
	case "stopped", "stopping", "archived", "archiving", "paused", "pausing":
		return sandbox.StatePaused
	case "destroyed", "destroying":
		return sandbox.StateTerminated
	}
	return sandbox.StateUnknown
}

func parseTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

func infoOf(w *wireSandbox) sandbox.Info {
	egress := "open"
	switch {
	case w.NetworkBlockAll:
		egress = "none"
	case w.NetworkAllowList != "" || w.DomainAllowList != "":
		egress = "allowlist"
	}
	class := w.SandboxClass
	if class == "" {
		class = "container"
	}
	return sandbox.Info{
		ID: w.ID, Provider: providerName, State: stateOf(w.State), Labels: w.Labels,
		Created: parseTime(w.CreatedAt),
		Isolation: fmt.Sprintf("remote: a Daytona sandbox (%s, target %s) on Daytona's runners, not on this host; network: %s",
			class, w.Target, egress),
	}
}

// Sandbox is a Daytona sandbox. Its methods are safe for concurrent use.
type Sandbox struct {
	p  *Provider
	id string

	mu         sync.Mutex
	w          wireSandbox
	workdir    string // default directory; "" until asked
	terminated bool
	idle       bool // may need a start before the next toolbox call
	autoDelete *int // the interval set at creation, if any
	sessions   []string
}

var (
	_ driver.Sandbox        = (*Sandbox)(nil)
	_ driver.Pauser         = (*Sandbox)(nil)
	_ driver.Snapshotter    = (*Sandbox)(nil)
	_ driver.NetworkUpdater = (*Sandbox)(nil)
)

// As sets a **Sandbox target to the driver's sandbox (for State, Name and
// the like) and reports whether it did.
func (s *Sandbox) As(target any) bool {
	if t, ok := target.(**Sandbox); ok {
		*t = s
		return true
	}
	return false
}

func (s *Sandbox) setWire(w *wireSandbox) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.w = *w
	s.idle = w.State != "started"
}

// ID returns the sandbox's ID.
func (s *Sandbox) ID() string { return s.id }

// Name returns the sandbox's name as last seen.
func (s *Sandbox) Name() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Name
}

// Capabilities reports what Daytona sandboxes can do through this adapter.
func (s *Sandbox) Capabilities() sandbox.Capabilities {
	return sandbox.Capabilities{
		Stdin: true, Signal: true, PTY: true, Expose: true, Pause: true, Snapshot: true,
		NetworkModes:  []sandbox.NetworkMode{sandbox.NetworkNone, sandbox.NetworkAllowlist, sandbox.NetworkOpen},
		UpdateNetwork: true,
	}
}

func (s *Sandbox) toolboxBase() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.TrimSuffix(s.w.ToolboxProxyURL, "/") + "/" + url.PathEscape(s.id)
}

func (s *Sandbox) checkLive(op string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.terminated {
		return sandbox.Errorf(providerName, s.id, op, sandbox.ErrTerminated, "the sandbox was terminated")
	}
	return nil
}

// refresh reads the sandbox's current record.
func (s *Sandbox) refresh(ctx context.Context) (*wireSandbox, error) {
	var w wireSandbox
	if err := s.p.c.api(ctx, http.MethodGet, "/sandbox/"+url.PathEscape(s.id), nil, nil, &w); err != nil {
		return nil, err
	}
	s.setWire(&w)
	return &w, nil
}

// State returns Daytona's own name of the sandbox's state, such as
// "started", "stopped" or "archived".
func (s *Sandbox) State(ctx context.Context) (string, error) {
	if err := s.checkLive("state"); err != nil {
		return "", err
	}
	w, err := s.refresh(ctx)
	if err != nil {
		return "", wrap(s.id, "state", err)
	}
	return w.State, nil
}

// waitStarted polls the sandbox until it is started, for at most
// Options.StartTimeout. A sandbox in error reports Daytona's reason.
func (s *Sandbox) waitStarted(ctx context.Context, op string) error {
	ctx, cancel := context.WithTimeout(ctx, s.p.opts.StartTimeout)
	defer cancel()
	delay := 50 * time.Millisecond
	for {
		w, err := s.refresh(ctx)
		if err != nil {
			if ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded) {
				return sandbox.Errorf(providerName, s.id, op, sandbox.ErrTimeout,
					"the sandbox was not started within %v", s.p.opts.StartTimeout)
			}
			return wrap(s.id, op, err)
		}
		switch w.State {
		case "started":
			return nil
		case "error", "build_failed":
			msg := "the sandbox is in state " + w.State
			if w.ErrorReason != "" {
				msg += ": " + w.ErrorReason
			}
			if w.Recoverable {
				msg += " (recoverable: POST /sandbox/{id}/recover)"
			}
			return sandbox.Errorf(providerName, s.id, op, sandbox.ErrUnavailable, "%s", msg)
		case "destroyed", "destroying":
			return sandbox.Errorf(providerName, s.id, op, sandbox.ErrNotFound, "%s", "the sandbox is "+w.State)
		}
		if err := httpretry.Sleep(ctx, delay); err != nil {
			return sandbox.Errorf(providerName, s.id, op, sandbox.ErrTimeout,
				"the sandbox was still %s after waiting: %v", w.State, err)
		}
		delay = min(delay*2, time.Second)
	}
}

// start starts a stopped, archived or paused sandbox and waits for it.
func (s *Sandbox) start(ctx context.Context, op string) error {
	var w wireSandbox
	if err := s.p.c.api(ctx, http.MethodPost, "/sandbox/"+url.PathEscape(s.id)+"/start", nil, nil, &w); err != nil {
		return wrap(s.id, op, err)
	}
	s.setWire(&w)
	if err := s.waitStarted(ctx, op); err != nil {
		return err
	}
	if s.autoDelete != nil && *s.autoDelete >= 0 {
		// Pause lifted auto-delete for the stop; put it back.
		path := fmt.Sprintf("/sandbox/%s/autodelete/%d", url.PathEscape(s.id), *s.autoDelete)
		if err := s.p.c.api(ctx, http.MethodPost, path, nil, nil, nil); err != nil {
			return wrap(s.id, op, err)
		}
	}
	return nil
}

// resumable reports whether a state is one start leaves.
func resumable(state string) bool {
	switch state {
	case "stopped", "archived", "paused", "stopping", "archiving", "pausing":
		return true
	}
	return false
}

// ensure starts the sandbox if a handle from Get, a Pause or an earlier
// refusal left it possibly idle.
func (s *Sandbox) ensure(ctx context.Context, op string) error {
	s.mu.Lock()
	idle, state := s.idle, s.w.State
	s.mu.Unlock()
	if !idle {
		return nil
	}
	if !resumable(state) {
		w, err := s.refresh(ctx)
		if err != nil {
			return wrap(s.id, op, err)
		}
		state = w.State
	}
	switch {
	case state == "started":
		return nil
	case resumable(state):
		return s.start(ctx, op)
	case gone(state):
		return sandbox.Errorf(providerName, s.id, op, sandbox.ErrNotFound, "%s", "the sandbox is "+state)
	}
	return s.waitStarted(ctx, op)
}

// call runs a toolbox operation. When the proxy (not the daemon) refuses
// it and the sandbox turns out to be stopped or archived (auto-stop), the
// sandbox is started and the operation tried once more.
func (s *Sandbox) call(ctx context.Context, op string, fn func(base string) error) error {
	if err := s.ensure(ctx, op); err != nil {
		return err
	}
	err := fn(s.toolboxBase())
	var ae *APIError
	if err == nil || !errors.As(err, &ae) || ae.Daemon || ae.Status == http.StatusTooManyRequests {
		return wrap(s.id, op, err)
	}
	w, rerr := s.refresh(ctx)
	switch {
	case rerr != nil:
		var re *APIError
		if errors.As(rerr, &re) && re.Status == http.StatusNotFound {
			return sandbox.NewError(providerName, s.id, op, sandbox.ErrNotFound, err)
		}
		return wrap(s.id, op, err)
	case gone(w.State):
		return sandbox.NewError(providerName, s.id, op, sandbox.ErrNotFound, err)
	case !resumable(w.State) && w.State != "starting":
		return wrap(s.id, op, err)
	}
	if err := s.ensure(ctx, op); err != nil {
		return err
	}
	return wrap(s.id, op, fn(s.toolboxBase()))
}

// Info returns the sandbox's current description. The state of a stopped
// or archived sandbox is StatePaused; Daytona's own name is in State.
func (s *Sandbox) Info(ctx context.Context) (sandbox.Info, error) {
	w, err := s.refresh(ctx)
	if err != nil {
		return sandbox.Info{}, wrap(s.id, "info", err)
	}
	return infoOf(w), nil
}

// Terminate deletes the sandbox. Deleting a sandbox that is already gone
// is not an error.
func (s *Sandbox) Terminate(ctx context.Context) error {
	s.mu.Lock()
	if s.terminated {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	err := s.p.c.api(ctx, http.MethodDelete, "/sandbox/"+url.PathEscape(s.id), nil, nil, nil)
	var ae *APIError
	if err != nil && !(errors.As(err, &ae) && ae.Status == http.StatusNotFound) {
		return wrap(s.id, "terminate", err)
	}
	s.mu.Lock()
	s.terminated = true
	s.mu.Unlock()
	return nil
}

// Pause stops the sandbox (POST …/stop): Daytona keeps its filesystem,
// ends every process, and bills no compute while it is stopped. An
// auto-delete interval of 0 (Spec.Timeout) is lifted for the pause, so the
// stop does not delete the sandbox, and restored by Resume.
func (s *Sandbox) Pause(ctx context.Context) error {
	const op = "pause"
	if s.autoDelete != nil && *s.autoDelete == 0 {
		if err := s.p.c.api(ctx, http.MethodPost, "/sandbox/"+url.PathEscape(s.id)+"/autodelete/-1", nil, nil, nil); err != nil {
			return wrap(s.id, op, err)
		}
	}
	var w wireSandbox
	if err := s.p.c.api(ctx, http.MethodPost, "/sandbox/"+url.PathEscape(s.id)+"/stop", nil, nil, &w); err != nil {
		return wrap(s.id, op, err)
	}
	s.setWire(&w)
	// Wait for the stop to finish, so Info says paused.
	delay := 50 * time.Millisecond
	for w.State == "stopping" {
		if err := httpretry.Sleep(ctx, delay); err != nil {
			return err
		}
		delay = min(delay*2, time.Second)
		nw, err := s.refresh(ctx)
		if err != nil {
			return wrap(s.id, op, err)
		}
		w = *nw
	}
	return nil
}

// Resume starts a paused (stopped or archived) sandbox and waits until it
// is started. Its files are as they were; no process survived the pause.
func (s *Sandbox) Resume(ctx context.Context) error {
	const op = "resume"
	w, err := s.refresh(ctx)
	if err != nil {
		return wrap(s.id, op, err)
	}
	if w.State == "started" {
		return nil
	}
	return s.start(ctx, op)
}

// Snapshot saves the sandbox's filesystem as a Daytona snapshot and
// returns its name, for Spec.Snapshot.
func (s *Sandbox) Snapshot(ctx context.Context) (string, error) {
	const op = "snapshot"
	var b [6]byte
	rand.Read(b[:])
	name := "perimeter-" + s.id + "-" + hex.EncodeToString(b[:])
	err := s.call(ctx, op, func(string) error {
		var w wireSandbox
		err := s.p.c.api(ctx, http.MethodPost, "/sandbox/"+url.PathEscape(s.id)+"/snapshot", nil, wireSnapshotReq{Name: name}, &w)
		if err == nil {
			s.setWire(&w)
		}
		return err
	})
	if err != nil {
		return "", err
	}
	// The snapshot is taken asynchronously: wait for the snapshot to be
	// active and the sandbox to leave "snapshotting".
	delay := 50 * time.Millisecond
	for {
		var sn wireSnapshot
		err := s.p.c.api(ctx, http.MethodGet, "/snapshots/"+url.PathEscape(name), nil, nil, &sn)
		var ae *APIError
		switch {
		case err == nil && sn.State == "active":
			w, err := s.refresh(ctx)
			if err != nil {
				return "", wrap(s.id, op, err)
			}
			if w.State != "snapshotting" {
				return name, nil
			}
		case err == nil && (sn.State == "error" || sn.State == "build_failed"):
			return "", sandbox.Errorf(providerName, s.id, op, sandbox.ErrUnavailable,
				"snapshot %s failed: %s", name, sn.ErrorReason)
		case err != nil && !(errors.As(err, &ae) && ae.Status == http.StatusNotFound):
			return "", wrap(s.id, op, err)
		}
		if err := httpretry.Sleep(ctx, delay); err != nil {
			return "", err
		}
		delay = min(delay*2, 2*time.Second)
	}
}

// UpdateNetwork replaces the sandbox's egress policy
// (POST …/network-settings).
func (s *Sandbox) UpdateNetwork(ctx context.Context, policy *sandbox.NetworkPolicy) error {
	const op = "update network"
	block, cidrs, domains, err := networkFields(policy)
	if err != nil {
		return sandbox.NewError(providerName, s.id, op, sandbox.ErrInvalidArgument, err)
	}
	var w wireSandbox
	body := wireNetworkSettings{NetworkBlockAll: &block, NetworkAllowList: &cidrs, DomainAllowList: &domains}
	if err := s.p.c.api(ctx, http.MethodPost, "/sandbox/"+url.PathEscape(s.id)+"/network-settings", nil, body, &w); err != nil {
		return wrap(s.id, op, err)
	}
	s.setWire(&w)
	return nil
}

// Tunnel is an exposed port: a signed preview URL that answers without
// headers until it expires or is closed, and the sandbox's plain preview
// URL with the token a client sends as x-daytona-preview-token.
type Tunnel struct {
	p           *Provider
	sandboxID   string
	port        int
	url         string
	signedToken string
	previewURL  string
	token       string
	expires     time.Time

	once sync.Once
	err  error
}

var _ driver.Tunnel = (*Tunnel)(nil)

// URL returns the signed preview URL.
func (t *Tunnel) URL() string { return t.url }

// As sets a **Tunnel target to the tunnel (for PreviewURL, Header and
// Expires) and reports whether it did.
func (t *Tunnel) As(target any) bool {
	if p, ok := target.(**Tunnel); ok {
		*p = t
		return true
	}
	return false
}

// Expires returns when the signed URL stops answering.
func (t *Tunnel) Expires() time.Time { return t.expires }

// PreviewURL returns the port's plain preview URL, which answers requests
// carrying Header (unless the sandbox is public) for as long as the
// sandbox lives.
func (t *Tunnel) PreviewURL() string { return t.previewURL }

// Header returns the header a request to PreviewURL carries.
func (t *Tunnel) Header() http.Header {
	return http.Header{"X-Daytona-Preview-Token": {t.token}}
}

// Close expires the signed URL. The plain preview URL lives as long as the
// sandbox.
func (t *Tunnel) Close() error {
	t.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		path := fmt.Sprintf("/sandbox/%s/ports/%d/signed-preview-url/%s/expire", url.PathEscape(t.sandboxID), t.port, url.PathEscape(t.signedToken))
		err := t.p.c.api(ctx, http.MethodPost, path, nil, nil, nil)
		var ae *APIError
		if err != nil && !(errors.As(err, &ae) && ae.Status == http.StatusNotFound) {
			t.err = wrap(t.sandboxID, "close tunnel", err)
		}
	})
	return t.err
}

// Expose returns the port's preview URLs: a signed one as the Tunnel's
// URL, valid for Options.PreviewExpiry, and the plain one with its token.
// HTTP only.
func (s *Sandbox) Expose(ctx context.Context, port int, opts *sandbox.ExposeOptions) (driver.Tunnel, error) {
	const op = "expose"
	if opts.Protocol != "" && opts.Protocol != "http" {
		return nil, sandbox.Errorf(providerName, s.id, op, sandbox.ErrNotSupported,
			"protocol %q: Daytona previews serve HTTP only", opts.Protocol)
	}
	base := fmt.Sprintf("/sandbox/%s/ports/%d/", url.PathEscape(s.id), port)
	var plain, signed wirePreview
	if err := s.p.c.api(ctx, http.MethodGet, base+"preview-url", nil, nil, &plain); err != nil {
		return nil, wrap(s.id, op, err)
	}
	secs := int(s.p.opts.PreviewExpiry / time.Second)
	q := url.Values{"expiresInSeconds": {strconv.Itoa(secs)}}
	issued := time.Now()
	if err := s.p.c.api(ctx, http.MethodGet, base+"signed-preview-url", q, nil, &signed); err != nil {
		return nil, wrap(s.id, op, err)
	}
	return &Tunnel{
		p: s.p, sandboxID: s.id, port: port, url: signed.URL, signedToken: signed.Token,
		previewURL: plain.URL, token: plain.Token, expires: issued.Add(time.Duration(secs) * time.Second),
	}, nil
}

// workDir returns the default directory of commands and relative names:
// Spec.Workdir, or the daemon's working directory.
func (s *Sandbox) workDir(ctx context.Context, op string) (string, error) {
	s.mu.Lock()
	wd := s.workdir
	s.mu.Unlock()
	if wd != "" {
		return wd, nil
	}
	var r struct {
		Dir string `json:"dir"`
	}
	if err := s.call(ctx, op, func(base string) error {
		return s.p.c.toolbox(ctx, base, http.MethodGet, "/work-dir", nil, nil, &r)
	}); err != nil {
		return "", err
	}
	if r.Dir == "" || !strings.HasPrefix(r.Dir, "/") {
		return "", sandbox.Errorf(providerName, s.id, op, sandbox.ErrUnavailable, "the daemon's work-dir %q is not absolute", r.Dir)
	}
	s.mu.Lock()
	if s.workdir == "" {
		s.workdir = r.Dir
	}
	wd = s.workdir
	s.mu.Unlock()
	return wd, nil
}

// name resolves a file name, which the portable layer passes clean and
// without "..", against the working directory.
func (s *Sandbox) name(ctx context.Context, op, name string) (string, error) {
	if path.IsAbs(name) {
		return name, nil
	}
	wd, err := s.workDir(ctx, op)
	if err != nil {
		return "", err
	}
	return path.Join(wd, name), nil
}
