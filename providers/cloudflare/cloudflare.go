package cloudflare

import (
	"context"
	"fmt"
	"iter"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

func init() {
	sandbox.Register("cloudflare", open)
}

// Environment variables read when Options leave the bridge unset.
const (
	EnvBridgeURL = "CLOUDFLARE_SANDBOX_BRIDGE_URL"
	EnvAPIKey    = "CLOUDFLARE_SANDBOX_API_KEY"
)

// Options configures a Provider. Nil means everything from the environment.
type Options struct {
	// BridgeURL is the bridge Worker's base URL, such as
	// "https://sandbox-bridge.example.workers.dev"; empty means
	// $CLOUDFLARE_SANDBOX_BRIDGE_URL.
	BridgeURL string
	// APIKey is the bridge's SANDBOX_API_KEY, sent as "Authorization:
	// Bearer"; empty means $CLOUDFLARE_SANDBOX_API_KEY. A bridge without
	// the secret takes requests without it.
	APIKey string
	// HTTPClient sends the requests; nil means a client without an overall
	// timeout (exec streams last as long as their commands).
	HTTPClient *http.Client
}

// Provider is the driver of sandboxes on a Cloudflare Sandbox bridge, for
// [sandbox.NewProvider]; host code uses the *sandbox.Provider that [New]
// returns. It is safe for concurrent use.
type Provider struct {
	c *Client

	mu    sync.Mutex
	boxes map[string]*Sandbox // created or found by this Provider, not terminated
	gone  map[string]bool     // terminated through this Provider
}

var _ driver.Provider = (*Provider)(nil)

// New returns a provider for host code, for the bridge in opts (or the
// environment). It fetches the bridge's GET /v1/openapi.json and fails, with an error of kind
// ErrNotSupported wrapping a *VersionError, when the bridge is not the
// version this package targets ([TargetVersion]) or lacks a route the
// adapter calls; a wrong key is ErrPermissionDenied.
func New(ctx context.Context, opts *Options) (*sandbox.Provider, error) {
	d, err := NewDriver(ctx, opts)
	if err != nil {
		return nil, err
	}
	return sandbox.NewProvider(d, nil), nil
}

// NewDriver returns the provider's driver, for [sandbox.NewProvider] with
// [sandbox.ProviderOptions] (hooks, logging). It checks the bridge as [New]
// does. Host code calls the portable type's methods, never the driver's: the
// portable layer validates arguments and applies defaults before the driver
// sees them.
func NewDriver(ctx context.Context, opts *Options) (*Provider, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.BridgeURL == "" {
		o.BridgeURL = os.Getenv(EnvBridgeURL)
	}
	if o.APIKey == "" {
		o.APIKey = os.Getenv(EnvAPIKey)
	}
	if o.BridgeURL == "" {
		return nil, sandbox.Errorf(providerName, "", "open", sandbox.ErrInvalidArgument,
			"no bridge URL: set Options.BridgeURL, use cloudflare://BRIDGE_HOST, or set "+EnvBridgeURL)
	}
	c, err := NewClient(o.BridgeURL, o.APIKey, o.HTTPClient)
	if err != nil {
		return nil, sandbox.NewError(providerName, "", "open", sandbox.ErrInvalidArgument, err)
	}
	if err := c.CheckVersion(ctx); err != nil {
		return nil, wrap("", "open: checking the bridge's /v1/openapi.json", err)
	}
	return &Provider{c: c, boxes: map[string]*Sandbox{}, gone: map[string]bool{}}, nil
}

// urlParams are the query parameters cloudflare:// URLs take.
var urlParams = []string{"scheme"}

// open serves cloudflare://BRIDGE_HOST[/PATH][?scheme=http]. The host may be
// left out ("cloudflare://") to take the bridge from the environment;
// "scheme=http" reaches a bridge over plain HTTP (a local one, or a fake).
// The API key comes from the environment, never the URL.
func open(ctx context.Context, u *url.URL) (driver.Provider, error) {
	bad := func(msg string) (driver.Provider, error) {
		return nil, sandbox.Errorf(providerName, "", "open", sandbox.ErrInvalidArgument,
			"provider URL %q: %s", u.Redacted(), msg)
	}
	if u.User != nil {
		return bad("credentials come from " + EnvAPIKey + ", never the URL")
	}
	q := u.Query()
	for k := range q {
		if !slices.Contains(urlParams, k) {
			return bad(fmt.Sprintf("unknown query parameter %q (known: %s)", k, strings.Join(urlParams, ", ")))
		}
	}
	scheme := q.Get("scheme")
	switch scheme {
	case "":
		scheme = "https"
	case "http", "https":
	default:
		return bad(fmt.Sprintf("scheme=%q: want http or https", scheme))
	}
	o := &Options{}
	if u.Host != "" {
		o.BridgeURL = scheme + "://" + u.Host + strings.TrimSuffix(u.EscapedPath(), "/")
	} else if u.Path != "" && u.Path != "/" {
		return bad("a path without a host; want cloudflare://BRIDGE_HOST[/PATH]")
	}
	d, err := NewDriver(ctx, o)
	if err != nil {
		return nil, err
	}
	return d, nil
}

// Name returns "cloudflare".
func (p *Provider) Name() string { return providerName }

// As sets a **Provider target to the driver and a **Client target to its
// bridge client.
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

// Client returns the provider's bridge client, for routes the adapter does
// not cover (pool management, bucket mounts).
func (p *Provider) Client() *Client { return p.c }

// Close releases idle connections and stops the Spec.Timeout timers of the
// sandboxes this Provider created. It does not terminate sandboxes.
func (p *Provider) Close() error {
	p.mu.Lock()
	boxes := slices.Collect(maps.Values(p.boxes))
	p.mu.Unlock()
	for _, sb := range boxes {
		sb.stopTimer()
	}
	p.c.http.CloseIdleConnections()
	return nil
}

// sessionName is the bridge session holding Spec.Env and Spec.Workdir. Every
// sandbox has its own sessions, so one fixed name lets a handle from Get
// find it again.
const sessionName = "perimeter"

const isolation = "Cloudflare Container (its own VM) per sandbox ID, reached through the Sandbox bridge Worker; " +
	"egress: open as far as the Worker's code allows (the bridge template allows all; it is not set per sandbox)"

// Create mints a sandbox ID locally, in the bridge's format, and starts its
// container. Spec.Env and Spec.Workdir (under /workspace; a relative one is
// relative to /workspace) become a bridge session used by every command.
// Spec.Timeout is enforced by this Provider while it is open (the bridge
// has no time to live).
//
// The bridge cannot restrict a sandbox's egress (the Worker's code decides
// it for all sandboxes, and the bridge template allows everything), so
// Spec.Network must ask for NetworkOpen: the default (nil, NetworkNone) and
// NetworkAllowlist are ErrNotSupported. Spec.Image, RootFS, Resources and
// Snapshot are ErrNotSupported too: the image and instance type are fixed
// when the bridge Worker is deployed, and the bridge has no snapshots.
func (p *Provider) Create(ctx context.Context, spec *sandbox.Spec) (driver.Sandbox, error) {
	fail := func(kind error, msg string) (driver.Sandbox, error) {
		return nil, sandbox.Errorf(providerName, "", "create", kind, "%s", msg)
	}
	switch {
	case spec.Network.Mode != sandbox.NetworkOpen:
		return fail(sandbox.ErrNotSupported, fmt.Sprintf("Spec.Network mode %q: the bridge cannot restrict a sandbox's egress "+
			"(the Worker's code sets it for every sandbox: enableInternet, allowedHosts); ask for NetworkOpen", spec.Network.Mode))
	case spec.Image != "":
		return fail(sandbox.ErrNotSupported, "Spec.Image: the container image is fixed when the bridge Worker is deployed (its Dockerfile)")
	case spec.RootFS != "":
		return fail(sandbox.ErrNotSupported, "Spec.RootFS: bridge sandboxes start from the Worker's image, not a host root filesystem")
	case spec.Resources != (sandbox.Resources{}):
		return fail(sandbox.ErrNotSupported, "Spec.Resources: the instance type is chosen in the Worker's wrangler configuration, not per sandbox")
	case spec.Snapshot != "":
		return fail(sandbox.ErrNotSupported, "Spec.Snapshot: the bridge has no snapshots (see the package's Persist and Hydrate)")
	}
	workdir := Workspace
	if spec.Workdir != "" {
		w, err := sandbox.CleanName(Workspace, spec.Workdir)
		if err != nil {
			return nil, sandbox.NewError(providerName, "", "create", sandbox.ErrInvalidArgument, err)
		}
		if !inWorkspace(w) {
			return fail(sandbox.ErrNotSupported, fmt.Sprintf("Spec.Workdir %q: the bridge runs commands under /workspace only", spec.Workdir))
		}
		workdir = w
	}

	sb := &Sandbox{p: p, id: NewID(), labels: maps.Clone(spec.Labels), created: time.Now(), workdir: workdir}
	if len(spec.Env) > 0 || workdir != Workspace {
		sb.sessionEnv = maps.Clone(spec.Env)
		if workdir != Workspace {
			if err := sb.shell(ctx, "create", `mkdir -p -- "$1"`, rel(workdir)); err != nil {
				sb.destroy(ctx)
				return nil, err
			}
		}
		if _, err := p.c.CreateSession(ctx, sb.id, sessionName, workdir, sb.sessionEnv); err != nil {
			sb.destroy(ctx)
			return nil, wrap(sb.id, "create: creating the bridge session for Spec.Env and Spec.Workdir", err)
		}
		sb.session = sessionName
	} else if _, err := p.c.Running(ctx, sb.id); err != nil {
		sb.destroy(ctx)
		return nil, wrap(sb.id, "create", err)
	}
	if spec.Timeout > 0 {
		sb.expires = sb.created.Add(spec.Timeout)
		sb.timer = time.AfterFunc(spec.Timeout, func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			sb.Terminate(ctx)
		})
	}
	p.track(sb)
	return sb, nil
}

// Get returns a handle to the sandbox with this ID. Every ID in the bridge's
// format names a sandbox (the bridge starts a container for it on first
// use), so only an ID that is not in that format is ErrNotFound. The handle
// uses the sandbox's bridge session if it has one (Spec.Env, Spec.Workdir);
// its labels are known only if this Provider created it.
func (p *Provider) Get(ctx context.Context, id string) (driver.Sandbox, error) {
	if !ValidID(id) {
		return nil, sandbox.Errorf(providerName, id, "get", sandbox.ErrNotFound,
			"%q is not a bridge sandbox ID (1 to 128 characters of lowercase base32: a-z, 2-7)", id)
	}
	p.mu.Lock()
	known, gone := p.boxes[id], p.gone[id]
	p.mu.Unlock()
	if gone {
		return nil, sandbox.Errorf(providerName, id, "get", sandbox.ErrNotFound,
			"this provider terminated the sandbox (the bridge would give its ID a fresh, empty container)")
	}
	if known != nil {
		if err := known.checkLive("get"); err == nil {
			return known, nil
		}
	}
	sb := &Sandbox{p: p, id: id, workdir: Workspace}
	// Probe the session: it answers with the session's cwd.
	var out strings.Builder
	code, err := p.c.Exec(ctx, id, []string{"pwd"}, &ExecOptions{Session: sessionName}, &out, nil)
	switch {
	case err == nil && code == 0:
		sb.session = sessionName
		if d := strings.TrimSpace(out.String()); inWorkspace(d) {
			sb.workdir = d
		}
	case err != nil && isCode(err, CodeSessionError):
		if _, err := p.c.Running(ctx, id); err != nil {
			return nil, wrap(id, "get", err)
		}
	case err != nil:
		return nil, wrap(id, "get", err)
	}
	p.track(sb)
	return sb, nil
}

// List yields the sandboxes this Provider created or found with Get and
// has not terminated, filtered by opts.Labels: the bridge cannot list
// sandboxes, so sandboxes of other processes are not seen.
func (p *Provider) List(ctx context.Context, opts *sandbox.ListOptions) iter.Seq2[sandbox.Info, error] {
	return func(yield func(sandbox.Info, error) bool) {
		p.mu.Lock()
		boxes := slices.Collect(maps.Values(p.boxes))
		p.mu.Unlock()
		sort.Slice(boxes, func(i, j int) bool { return boxes[i].id < boxes[j].id })
		for _, sb := range boxes {
			if !hasLabels(sb.labels, opts.Labels) {
				continue
			}
			if sb.checkLive("list") != nil {
				continue
			}
			if !yield(sb.info(sandbox.StateRunning), nil) {
				return
			}
		}
	}
}

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func (p *Provider) track(sb *Sandbox) {
	p.mu.Lock()
	p.boxes[sb.id] = sb
	p.mu.Unlock()
}

func (p *Provider) forget(sb *Sandbox) {
	p.mu.Lock()
	if p.boxes[sb.id] == sb {
		delete(p.boxes, sb.id)
	}
	p.gone[sb.id] = true
	p.mu.Unlock()
}

// inWorkspace reports whether the clean absolute path abs is /workspace or
// below.
func inWorkspace(abs string) bool {
	return abs == Workspace || strings.HasPrefix(abs, Workspace+"/")
}

// rel returns abs (in /workspace) relative to /workspace, as "." or "./…",
// for commands run with cwd /workspace.
func rel(abs string) string {
	if abs == Workspace {
		return "."
	}
	return "./" + strings.TrimPrefix(abs, Workspace+"/")
}
