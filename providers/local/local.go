// Package local is Perimeter's reference provider: sandboxes on the host that
// runs it, with no daemon and no cloud account.
//
// # Isolation
//
// This is the baseline provider. Each sandbox is a private workspace directory
// under the provider's root; commands run as plain host processes, as the
// calling user, in their own process group, with the workspace as their working
// directory and a clean environment (nothing of the host's environment is
// passed on but what Spec.Env and Cmd.Env name, plus PATH, HOME and LANG). It
// isolates nothing else: commands see the host's filesystem, processes and
// network, and Info.Isolation says so. What the baseline does guarantee:
//
//   - the file methods are confined to the workspace: names with ".." elements
//     are refused, and symbolic links that lead out of the workspace are not
//     followed (the methods go through [os.Root]);
//   - a cancelled context, a Cmd.Timeout and Terminate kill the command's whole
//     process group;
//   - Terminate removes the workspace.
//
// A process that leaves its process group (setsid) escapes the kill; that and
// everything else a security boundary needs is the isolated mode's job.
//
// # URLs
//
//	local://            sandboxes under $TMPDIR/perimeter-local-UID
//	local:///var/lib/p  sandboxes under /var/lib/p
//
// # Capabilities
//
// Stdin, Signal, Expose and Dial (a forwarder on host loopback), and
// ExtendTimeout. Not: PTY, Pause, Snapshot, network policy (the network is the
// host's; only NetworkOpen is accepted), resource limits, images.
//
// # Names
//
// File names and Cmd.Dir are sandbox paths: "/" is the workspace directory.
package local

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"iter"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// Name is the provider's name in errors and Info.
const Name = "local"

func init() {
	sandbox.Register("local", func(ctx context.Context, u *url.URL) (sandbox.Provider, error) {
		if u.Host != "" {
			return nil, sandbox.Errorf(Name, "", "open", sandbox.ErrInvalidArgument,
				fmt.Sprintf("URL %q names a host; want local:///ABSOLUTE/PATH or local://", u.String()))
		}
		return New(&Options{Root: u.Path})
	})
}

// Options configures a [Provider]. Nil means defaults.
type Options struct {
	// Root is the directory that holds the sandboxes' workspaces. Empty means
	// $TMPDIR/perimeter-local-UID. It is created if missing.
	Root string
}

// Provider creates sandboxes on the local host.
type Provider struct {
	root string

	mu        sync.Mutex
	sandboxes map[string]*Sandbox // live handles made by this process
	closed    bool
}

var _ sandbox.Provider = (*Provider)(nil)

// New returns a provider that keeps its sandboxes under opts.Root.
func New(opts *Options) (*Provider, error) {
	if opts == nil {
		opts = &Options{}
	}
	root := opts.Root
	if root == "" {
		root = filepath.Join(os.TempDir(), "perimeter-local-"+strconv.Itoa(os.Getuid()))
	}
	if !filepath.IsAbs(root) {
		return nil, sandbox.Errorf(Name, "", "open", sandbox.ErrInvalidArgument,
			fmt.Sprintf("root %q is not an absolute path", root))
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, sandbox.NewError(Name, "", "open", kindOf(err), err)
	}
	return &Provider{root: filepath.Clean(root), sandboxes: map[string]*Sandbox{}}, nil
}

// Root returns the directory that holds the sandboxes.
func (p *Provider) Root() string { return p.root }

// meta is what a sandbox's directory records about it, so that List and Get
// work from any process.
type meta struct {
	ID      string            `json:"id"`
	Labels  map[string]string `json:"labels,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	Workdir string            `json:"workdir"`
	Created time.Time         `json:"created"`
	Expires time.Time         `json:"expires,omitzero"`
}

const metaFile = "sandbox.json"

// Create makes a workspace and returns its sandbox. Spec fields this provider
// cannot honour (Image, RootFS, Resources, Snapshot, a network mode other than
// open) are errors of kind ErrNotSupported.
func (p *Provider) Create(ctx context.Context, spec *sandbox.Spec) (sandbox.Sandbox, error) {
	if spec == nil {
		spec = &sandbox.Spec{}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkSpec(spec); err != nil {
		return nil, err
	}
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return nil, sandbox.Errorf(Name, "", "create", sandbox.ErrInvalidArgument, "provider is closed")
	}
	workdir := "/"
	if spec.Workdir != "" {
		w, err := sandbox.CleanName("/", spec.Workdir)
		if err != nil {
			return nil, sandbox.NewError(Name, "", "create", nil, err)
		}
		workdir = w
	}
	id, err := newID()
	if err != nil {
		return nil, sandbox.NewError(Name, "", "create", sandbox.ErrUnavailable, err)
	}
	dir := filepath.Join(p.root, id)
	m := meta{
		ID:      id,
		Labels:  maps.Clone(spec.Labels),
		Env:     maps.Clone(spec.Env),
		Workdir: workdir,
		Created: time.Now().UTC(),
	}
	if spec.Timeout > 0 {
		m.Expires = m.Created.Add(spec.Timeout)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, sandbox.NewError(Name, id, "create", kindOf(err), err)
	}
	ws := filepath.Join(dir, "workspace")
	if err := os.MkdirAll(filepath.Join(ws, filepath.FromSlash(workdir)), 0o700); err != nil {
		os.RemoveAll(dir)
		return nil, sandbox.NewError(Name, id, "create", kindOf(err), err)
	}
	if err := writeMeta(dir, &m); err != nil {
		os.RemoveAll(dir)
		return nil, sandbox.NewError(Name, id, "create", kindOf(err), err)
	}
	sb, err := p.open(dir, &m)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return sb, nil
}

func checkSpec(spec *sandbox.Spec) error {
	var field string
	switch {
	case spec.Image != "":
		field = "Image"
	case spec.RootFS != "":
		field = "RootFS"
	case spec.Snapshot != "":
		field = "Snapshot"
	case spec.Resources != (sandbox.Resources{}):
		field = "Resources"
	case spec.Network != nil && spec.Network.Mode != sandbox.NetworkOpen:
		field = "Network mode " + strconv.Quote(string(spec.Network.Mode))
	}
	if field != "" {
		return sandbox.Errorf(Name, "", "create", sandbox.ErrNotSupported,
			"the baseline local provider cannot honour Spec."+field)
	}
	for _, port := range spec.Ports {
		if port < 1 || port > 65535 {
			return sandbox.Errorf(Name, "", "create", sandbox.ErrInvalidArgument,
				fmt.Sprintf("port %d out of range 1-65535", port))
		}
	}
	return nil
}

// open returns the live handle for the sandbox in dir, making one if this
// process has none.
func (p *Provider) open(dir string, m *meta) (*Sandbox, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if sb, ok := p.sandboxes[m.ID]; ok {
		return sb, nil
	}
	sb, err := newSandbox(p, dir, m)
	if err != nil {
		return nil, err
	}
	p.sandboxes[m.ID] = sb
	return sb, nil
}

func (p *Provider) forget(id string) {
	p.mu.Lock()
	delete(p.sandboxes, id)
	p.mu.Unlock()
}

// Get returns the sandbox with id, made by this or another process using the
// same root.
func (p *Provider) Get(ctx context.Context, id string) (sandbox.Sandbox, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !validID(id) {
		return nil, sandbox.Errorf(Name, id, "get", sandbox.ErrNotFound, "no sandbox with this id")
	}
	dir := filepath.Join(p.root, id)
	m, err := readMeta(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, sandbox.NewError(Name, id, "get", sandbox.ErrNotFound, err)
		}
		return nil, sandbox.NewError(Name, id, "get", kindOf(err), err)
	}
	return p.open(dir, m)
}

// List yields the sandboxes under the provider's root that carry every label
// in opts.Labels, in no particular order.
func (p *Provider) List(ctx context.Context, opts *sandbox.ListOptions) iter.Seq2[sandbox.Info, error] {
	return func(yield func(sandbox.Info, error) bool) {
		if err := ctx.Err(); err != nil {
			yield(sandbox.Info{}, err)
			return
		}
		entries, err := os.ReadDir(p.root)
		if err != nil {
			yield(sandbox.Info{}, sandbox.NewError(Name, "", "list", kindOf(err), err))
			return
		}
		for _, e := range entries {
			if !e.IsDir() || !validID(e.Name()) {
				continue
			}
			m, err := readMeta(filepath.Join(p.root, e.Name()))
			if err != nil {
				continue // terminated or being created meanwhile
			}
			if opts != nil && !hasLabels(m.Labels, opts.Labels) {
				continue
			}
			if !yield(infoOf(p.root, m), nil) {
				return
			}
		}
	}
}

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

func infoOf(root string, m *meta) sandbox.Info {
	return sandbox.Info{
		ID:        m.ID,
		Provider:  Name,
		State:     sandbox.StateRunning,
		Labels:    maps.Clone(m.Labels),
		Created:   m.Created,
		Expires:   m.Expires,
		Isolation: "none: commands run as plain host processes of the calling user in their own process group; only the file methods are confined, to the workspace " + filepath.Join(root, m.ID, "workspace"),
	}
}

// Close marks the provider closed: Create fails afterwards. Sandboxes it
// created keep running until terminated.
func (p *Provider) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	return nil
}

func newID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return "sb-" + hex.EncodeToString(b[:]), nil
}

func validID(id string) bool {
	if len(id) != 19 || !strings.HasPrefix(id, "sb-") {
		return false
	}
	_, err := hex.DecodeString(id[3:])
	return err == nil
}

func writeMeta(dir string, m *meta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, metaFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, metaFile))
}

func readMeta(dir string) (*meta, error) {
	b, err := os.ReadFile(filepath.Join(dir, metaFile))
	if err != nil {
		return nil, err
	}
	var m meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, metaFile), err)
	}
	return &m, nil
}
