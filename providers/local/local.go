// Package local is Perimeter's reference provider: sandboxes on the Linux host
// that runs it, with no daemon, no cgo and no external binary.
//
// # Isolation
//
// By default each sandbox is isolated (levels L2 and L3, see [Level]):
//
//   - Namespaces: user, mount, pid, network, uts and ipc. As root, the
//     sandbox's ids 0-65535 map to a range of unnamed host ids from 2^30 up,
//     one range per sandbox host-wide (held with an flock in
//     /run/perimeter/uids, a root-owned 0700 directory),
//     so root inside is nobody outside; as another user, root inside is that
//     user.
//   - Root filesystem, built with pivot_root on a tmpfs: the host's /usr,
//     /bin, /sbin, /lib*, /etc read-only, with /etc/shadow, /etc/gshadow,
//     /etc/sudoers and /etc/ssh masked; or, with Spec.RootFS (a directory or
//     a .tar/.tar.gz), that tree as the read-only lower layer of an overlay
//     with a per-sandbox writable tmpfs layer. A private /tmp, a minimal
//     /dev (null, zero, full, random, urandom, tty, a private devpts, shm),
//     a fresh /proc whose host details (kernel command line and symbols,
//     keyrings, timers, devices, load, boot id) are masked, a cgroup
//     namespace, and a read-write /workspace: the host directory, or with
//     Resources.Disk a tmpfs of that size.
//   - No host descriptor reaches a sandbox: the init closes what it
//     inherited beyond the provider's own, and the agent marks everything
//     close-on-exec before each command.
//   - A PID-1 agent in each sandbox: it reaps orphans and runs commands sent
//     over a Unix socket (stdout and stderr streamed separately, stdin,
//     signals to the process group, a PTY with resize, timeouts), so an exec
//     costs one fork, not a new Go runtime.
//   - Hardening of every command: no capabilities (bounding set emptied,
//     securebits locked), no_new_privs, Landlock (read and execute
//     everywhere, write only in /workspace, /tmp and /dev; signals and
//     abstract sockets scoped, ABI 6+), a seccomp filter (a system call
//     through a foreign ABI, such as int 0x80 or x32, kills the process;
//     refused: the mount family, namespaces (clone with a namespace flag,
//     unshare, setns; clone3 answers ENOSYS), ptrace, process_vm_*, bpf,
//     perf, keyrings, modules, kexec, userfaultfd, io_uring, clock and host
//     settings; sockets only of the families AF_UNIX, AF_INET and AF_INET6
//     (stream and datagram, protocols TCP, UDP and ICMP: no Multipath TCP or
//     SCTP) and AF_NETLINK with NETLINK_ROUTE), nested user namespaces
//     limited to 0 as well, and a non-dumpable agent so /proc/1 cannot be
//     followed.
//   - Resource limits from Spec.Resources, or for fields it leaves zero
//     Options.Limits and [DefaultLimits] (2 GiB of memory, 1024 processes,
//     a 512 MiB /tmp), through cgroups (v2, or v1 and hybrid hierarchies,
//     nested under the caller's own cgroup); rlimits where no cgroup is
//     writable (L2). Commands get oom_score_adj 1000, so an OOM kill takes
//     the command, not the agent, and is reported in ExitStatus.OOMKilled.
//     Resources.Disk sizes /tmp, the overlay's writable layer and a tmpfs
//     /workspace.
//   - Network from Spec.Network: none (the default: an empty network
//     namespace with loopback up), allowlist (the same, plus an HTTP/CONNECT
//     proxy on the host that refuses everything not on the list and logs
//     each decision with log/slog; the agent relays it at 127.0.0.1:3128 and
//     HTTP_PROXY, HTTPS_PROXY and ALL_PROXY point there), or open (the
//     host's network: reported as not isolated). The proxy resolves names
//     itself and refuses an allowed name that resolves to an internal
//     address (loopback, private, link-local, or an IPv6 form embedding
//     one) no IP or CIDR entry allows, and bounds its connections per
//     sandbox and in total.
//
// The levels a host supports are probed once per process ([Probe]; as root,
// a successful namespace probe is remembered host-wide in
// /run/perimeter/probe, keyed by boot, kernel, program and the caller's
// credentials and namespaces, so a short-lived program skips it); every
// sandbox reports its layers in [Sandbox.Isolation] and Info.Isolation.
// Options.RequireLevel fails closed, naming the missing layer. Where
// namespaces are unavailable (inside Docker's default seccomp profile, under
// Ubuntu's AppArmor user-namespace restriction), sandboxes run at L1
// ([LevelLandlock]: Landlock, seccomp and cgroups or rlimits on plain host
// processes of the sandbox's own uid, without Expose or Spec.RootFS); where
// Landlock is missing too, New fails with the reason unless
// Options.AllowUnisolated is set. Options.Level picks a lower level on
// purpose.
//
// The sandbox's init is this very binary, started again: the package takes
// over in its init function when started that way, so any program that
// imports it works; [Init] makes the hand-over explicit at the top of main.
// A sandbox lives with the process that created it (its init has
// Pdeathsig; closing the Provider that created it leaves it running). Any
// process using the same root reaches it with Get while it runs: commands,
// files and Terminate go to its init and agent as from its creator, which
// keeps what the sandbox holds on the host and releases it all once the
// sandbox ends, however it ends ([Sandbox.Done]).
//
// L0, the unisolated mode (Options.Unisolated, or local:///path?isolation=none),
// is the baseline: each sandbox is a workspace directory; commands run as
// plain host processes of the calling user in their own process group. Only
// the file methods are confined to the workspace. Before each command
// starts, the host process's descriptors are marked close-on-exec. Its
// commands share the host's network, so it cannot honour the network mode
// none, which a nil Spec.Network means on every provider: Create refuses it
// with ErrNotSupported unless the spec asks for NetworkOpen.
//
// # URLs
//
//	local://                   isolated sandboxes under $TMPDIR/perimeter-local-UID
//	local:///var/lib/p         isolated sandboxes under /var/lib/p
//	local:///p?require=L3      fail unless cgroup limits are available
//	local:///p?isolation=none  L0: plain host processes
//
// # Capabilities
//
// Isolated: Stdin, Signal, PTY (its Process implements sandbox.Resizer),
// Expose and Dial (through the agent into the sandbox's network
// namespace), ExtendTimeout, network modes none, allowlist and open. L0: the
// same without PTY, and only the open network mode. L1: the isolated set
// without Expose and Dial. None: Pause,
// Snapshot, UpdateNetwork, Spec.Image, GPUs.
//
// # Names
//
// With namespaces (L2, L3), file names and Cmd.Dir are paths inside the
// sandbox, relative names start at the working directory (/workspace by
// default), and the file methods see exactly what commands see, with their
// permissions: they go through the init's /proc/PID/root on a thread that
// has taken the sandbox root user's uid and gid (and so no capability), so
// they can read the read-only host directories but not /etc/shadow or the
// agent's /proc entries, write only where commands can (/workspace, /tmp),
// and refuse to remove, rename or replace the sandbox's mount points. At L1 and L0, "/" is the workspace directory, which
// commands see at its host path.
//
// # Escape hatches
//
// [New] returns the portable *sandbox.Provider host code uses; [NewDriver]
// returns this package's driver, for sandbox.NewProvider with hooks or a
// logger. As on the portable types reaches the driver's own: a
// (*sandbox.Provider).As accepts **local.Provider ([Provider.Level],
// [Provider.Root]) and a (*sandbox.Sandbox).As accepts **local.Sandbox
// ([Sandbox.Isolation], [Sandbox.Workspace]). Host code calls the portable
// types' methods, not the driver's: only the portable layer validates
// arguments.
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
	"log/slog"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

// Name is the provider's name in errors and Info.
const Name = "local"

func init() {
	sandbox.Register("local", func(ctx context.Context, u *url.URL) (driver.Provider, error) {
		if u.Host != "" {
			return nil, sandbox.Errorf(Name, "", "open", sandbox.ErrInvalidArgument,
				"URL %q names a host; want local:///ABSOLUTE/PATH or local://", u.String())
		}
		opts := &Options{Root: u.Path}
		q := u.Query()
		for k := range q {
			if k != "isolation" && k != "require" {
				return nil, sandbox.Errorf(Name, "", "open", sandbox.ErrInvalidArgument,
					"URL %q: unknown parameter %q (known: isolation, require)", u.String(), k)
			}
		}
		switch v := q.Get("isolation"); v {
		case "", "auto":
		case "none":
			opts.Unisolated, opts.AllowUnisolated = true, true
		default:
			return nil, sandbox.Errorf(Name, "", "open", sandbox.ErrInvalidArgument,
				"isolation=%q; want auto or none", v)
		}
		if v := q.Get("require"); v != "" {
			n, err := strconv.Atoi(strings.TrimPrefix(strings.ToUpper(v), "L"))
			if err != nil || n < 0 || n > int(LevelFull) {
				return nil, sandbox.Errorf(Name, "", "open", sandbox.ErrInvalidArgument,
					"require=%q; want a level 0-3", v)
			}
			opts.RequireLevel = Level(n)
		}
		d, err := NewDriver(opts)
		if err != nil {
			return nil, err
		}
		return d, nil
	})
}

// Options configures a [Provider]. Nil means defaults.
type Options struct {
	// Root is the directory that holds the sandboxes' workspaces. Empty means
	// $TMPDIR/perimeter-local-UID. It is created if missing.
	Root string
	// AllowUnisolated lets the provider fall back to L0 (plain host
	// processes) when this host cannot create namespaces. Without it, New
	// fails and names the missing layer.
	AllowUnisolated bool
	// Unisolated always runs sandboxes at L0, the baseline mode. It is
	// what local://...?isolation=none asks for.
	Unisolated bool
	// RequireLevel is the lowest isolation level to accept: New and Create
	// fail closed, naming the missing layer, below it.
	RequireLevel Level
	// Level, if not zero, is the level to run at, below the highest the
	// host supports (LevelLandlock, say, to run without namespaces on a
	// host that has them). Zero means the highest. A level the host cannot
	// reach is an error.
	Level Level
	// Logger receives the egress proxy's decisions; nil means slog.Default.
	Logger *slog.Logger
	// Limits are the resource limits of isolated sandboxes for each field
	// Spec.Resources leaves zero. Nil, or a zero field, means
	// [DefaultLimits]; [Unlimited] leaves a resource unbounded.
	Limits *Limits
}

// Provider creates sandboxes on the local host.
type Provider struct {
	root       string
	unisolated bool
	level      Level // the level sandboxes are made at
	require    Level
	log        *slog.Logger
	limits     Limits
}

// live holds the handles this process has made, by sandbox directory, shared
// by every Provider: an isolated sandbox is reachable from the process that
// created it, through any Provider on its root (Provider.Close leaves it
// running, and another Provider opened on the root finds it).
var live = struct {
	mu        sync.Mutex
	sandboxes map[string]*Sandbox
}{sandboxes: map[string]*Sandbox{}}

var _ driver.Provider = (*Provider)(nil)

// New returns a provider that keeps its sandboxes under opts.Root, ready for
// host code.
func New(opts *Options) (*sandbox.Provider, error) {
	d, err := NewDriver(opts)
	if err != nil {
		return nil, err
	}
	return sandbox.NewProvider(d, nil), nil
}

// NewDriver returns the provider's driver, for [sandbox.NewProvider] with
// [sandbox.ProviderOptions] (hooks, logging) or for wrapping it. Host code
// calls the portable type's methods, never the driver's: the portable layer
// validates arguments and applies defaults before the driver sees them.
func NewDriver(opts *Options) (*Provider, error) {
	if opts == nil {
		opts = &Options{}
	}
	root := opts.Root
	if root == "" {
		root = filepath.Join(os.TempDir(), "perimeter-local-"+strconv.Itoa(os.Getuid()))
	}
	if !filepath.IsAbs(root) {
		return nil, sandbox.Errorf(Name, "", "open", sandbox.ErrInvalidArgument,
			"root %q is not an absolute path", root)
	}
	limits, err := resolveLimits(opts.Limits)
	if err != nil {
		return nil, sandbox.NewError(Name, "", "open", sandbox.ErrInvalidArgument, err)
	}
	p := &Provider{root: filepath.Clean(root), require: opts.RequireLevel, log: opts.Logger, limits: limits}
	if opts.Unisolated {
		if opts.RequireLevel > LevelNone {
			return nil, sandbox.Errorf(Name, "", "open", sandbox.ErrInvalidArgument,
				"Unisolated contradicts RequireLevel %v", opts.RequireLevel)
		}
		p.unisolated = true
	} else {
		h := Probe()
		level := h.MaxLevel()
		if opts.Level != LevelNone {
			if opts.Level > level {
				return nil, sandbox.Errorf(Name, "", "open", sandbox.ErrNotSupported,
					"Options.Level %v: this host reaches %v; missing %s", opts.Level, level, h.missing(opts.Level))
			}
			level = opts.Level
		}
		if level < opts.RequireLevel {
			return nil, sandbox.Errorf(Name, "", "open", sandbox.ErrNotSupported,
				"this host isolates sandboxes at %v, below the required %v: missing %s", level, opts.RequireLevel, h.missing(opts.RequireLevel))
		}
		if level == LevelNone && !opts.AllowUnisolated {
			return nil, sandbox.Errorf(Name, "", "open", sandbox.ErrNotSupported,
				"this host cannot isolate sandboxes: missing %s; set Options.AllowUnisolated (URL local://?isolation=none) to run commands as plain host processes instead", h.missing(LevelLandlock))
		}
		p.level = level
		p.unisolated = level == LevelNone
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, sandbox.NewError(Name, "", "open", kindOf(err), err)
	}
	if !p.unisolated {
		p.sweep()
	}
	return p, nil
}

// Isolated reports whether the provider's sandboxes are isolated (L1 or
// higher) rather than plain host processes (L0).
func (p *Provider) Isolated() bool { return !p.unisolated }

// Level returns the highest level the provider makes sandboxes at; a
// sandbox's own level ([Sandbox.Isolation]) may be lower (L2 without a
// writable cgroup).
func (p *Provider) Level() Level { return p.level }

// nsNames reports whether sandboxes of this provider use namespaced names
// (/workspace) rather than the workspace as "/".
func (p *Provider) nsNames() bool { return p.level >= LevelNamespaces }

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
	// Isolated sandboxes live with the process that created them.
	Isolated bool `json:"isolated,omitempty"`
	// NSNames: file names are paths inside the sandbox (/workspace/...).
	NSNames bool `json:"ns_names,omitempty"`
	// InitPID and InitStart (its start time in clock ticks) identify an
	// isolated sandbox's init, so that one whose process died is known.
	InitPID   int    `json:"init_pid,omitempty"`
	InitStart uint64 `json:"init_start,omitempty"`
	// Isolation describes an isolated sandbox's layers, once it runs.
	Isolation string `json:"isolation,omitempty"`
	// CreatorPID and CreatorStart identify the process that created the
	// sandbox, so that one whose creator died before its init ran is known.
	CreatorPID   int    `json:"creator_pid,omitempty"`
	CreatorStart uint64 `json:"creator_start,omitempty"`
	// Cgroups are the sandbox's cgroup directories, removed with it.
	Cgroups []string `json:"cgroups,omitempty"`
	// Attach is what another process needs to use an isolated sandbox
	// (Get), once it runs.
	Attach *attachState `json:"attach,omitempty"`
}

const metaFile = "sandbox.json"

// Create makes a workspace and returns its sandbox. Spec fields this provider
// cannot honour (Image, RootFS, Resources, Snapshot, a network mode other than
// open) are errors of kind ErrNotSupported.
func (p *Provider) Create(ctx context.Context, spec *sandbox.Spec) (driver.Sandbox, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := p.checkSpec(spec); err != nil {
		return nil, err
	}
	workdir := "/"
	if p.nsNames() {
		workdir = workspaceDir
	}
	if spec.Workdir != "" {
		w, err := sandbox.CleanName(workdir, spec.Workdir)
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
		ID:       id,
		Labels:   maps.Clone(spec.Labels),
		Env:      maps.Clone(spec.Env),
		Workdir:  workdir,
		Created:  time.Now().UTC(),
		Isolated: !p.unisolated,
		NSNames:  p.nsNames(),
	}
	if m.Isolated {
		m.CreatorPID = os.Getpid()
		m.CreatorStart = procStart(m.CreatorPID)
	}
	if spec.Timeout > 0 {
		m.Expires = m.Created.Add(spec.Timeout)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, sandbox.NewError(Name, id, "create", kindOf(err), err)
	}
	// The owner lock is held from here until the sandbox is released (by
	// Terminate, or right below if Create fails).
	var owner *os.File
	if m.Isolated {
		if owner, err = lockOwner(dir); err != nil {
			os.RemoveAll(dir)
			return nil, sandbox.NewError(Name, id, "create", kindOf(err), err)
		}
		defer func() {
			if owner != nil {
				owner.Close()
			}
		}()
	}
	ws := filepath.Join(dir, "workspace")
	// The working directory is made here when it is in the workspace, and
	// through the sandbox's own root once it runs otherwise.
	hostWorkdir := !m.NSNames || (underWorkspace(workdir) && spec.Resources.Disk == 0)
	wd := ws
	if hostWorkdir {
		wd = filepath.Join(ws, filepath.FromSlash(wsRel(m.NSNames, workdir)))
	}
	if err := os.MkdirAll(wd, 0o700); err != nil {
		os.RemoveAll(dir)
		return nil, sandbox.NewError(Name, id, "create", kindOf(err), err)
	}
	if err := writeMeta(dir, &m); err != nil {
		os.RemoveAll(dir)
		return nil, sandbox.NewError(Name, id, "create", kindOf(err), err)
	}
	var st *isoState
	if m.Isolated {
		st, err = p.startIsolated(ctx, spec, id, dir)
		if err == nil && st.iso.Level < p.require {
			err = sandbox.Errorf(Name, id, "create", sandbox.ErrNotSupported,
				"sandbox isolated at %v, below the required %v: missing %s", st.iso.Level, p.require, Probe().missing(p.require))
		}
		if err != nil {
			if st != nil {
				st.destroy()
			}
			removeAll(dir)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			// A kind the cause carries (a missing Spec.RootFS is
			// ErrNotFound) is kept; anything else is the host failing.
			kind := sandbox.KindOf(err)
			if kind == nil {
				kind = sandbox.ErrUnavailable
			}
			return nil, sandbox.NewError(Name, id, "create", kind, fmt.Errorf("isolated sandbox: %w", err))
		}
	}
	if st != nil {
		m.Isolation = st.iso.String()
		m.InitPID = st.init.Process.Pid
		m.InitStart = procStart(m.InitPID)
		if st.cg != nil {
			for _, d := range st.cg.dirs {
				m.Cgroups = append(m.Cgroups, d)
			}
		}
		m.Attach = st.attachState()
		if err := writeMeta(dir, &m); err != nil {
			st.destroy()
			removeAll(dir)
			return nil, sandbox.NewError(Name, id, "create", kindOf(err), err)
		}
		st.owner, owner = owner, nil // released by the handle from now on
	}
	sb, err := p.open(dir, &m, st)
	if err == nil {
		if st != nil {
			sb.memLimit = st.limits.Memory
		}
		if !hostWorkdir {
			err = sb.MkdirAll(ctx, workdir, 0o755)
			if err != nil {
				sb.Terminate(context.Background())
				return nil, err
			}
		}
	}
	if err != nil {
		if st != nil {
			st.destroy()
		}
		removeAll(dir)
		if st != nil {
			st.releaseOwner()
		}
		return nil, err
	}
	return sb, nil
}

// workspaceDir is where an isolated sandbox's workspace is mounted.
const workspaceDir = "/workspace"

func underWorkspace(abs string) bool {
	return abs == workspaceDir || strings.HasPrefix(abs, workspaceDir+"/")
}

// wsRel turns a clean absolute sandbox path into a path relative to the
// workspace directory ("." for its root), or, with isolated false, relative
// to "/". With isolated set the path must be under /workspace.
func wsRel(isolated bool, abs string) string {
	if isolated {
		abs = strings.TrimPrefix(abs, workspaceDir)
	}
	abs = strings.TrimPrefix(abs, "/")
	if abs == "" {
		return "."
	}
	return abs
}

func (p *Provider) checkSpec(spec *sandbox.Spec) error {
	if !p.unisolated {
		if err := checkIsolatedSpec(spec); err != nil {
			return err
		}
		if p.level == LevelLandlock {
			if spec.RootFS != "" {
				return sandbox.Errorf(Name, "", "create", sandbox.ErrNotSupported, "Spec.RootFS needs a mount namespace, which this provider runs without (L1)")
			}
			if spec.Resources.Disk > 0 {
				return sandbox.Errorf(Name, "", "create", sandbox.ErrNotSupported, "Spec.Resources.Disk needs a mount namespace (tmpfs /tmp and /workspace of that size), which this provider runs without (L1)")
			}
			if n := spec.Network; n != nil && n.Mode == sandbox.NetworkAllowlist && Probe().LandlockABI < 4 {
				return sandbox.Errorf(Name, "", "create", sandbox.ErrNotSupported, "Network allowlist without namespaces needs Landlock ABI 4 (TCP rules)")
			}
		}
		return nil
	}
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
	case spec.Network.Mode != sandbox.NetworkOpen:
		field = "Network mode " + strconv.Quote(string(spec.Network.Mode)) + " (it runs plain host processes, which share the host's network: ask for NetworkOpen)"
	}
	if field != "" {
		return sandbox.Errorf(Name, "", "create", sandbox.ErrNotSupported, "%s",
			"the baseline local provider cannot honour Spec."+field)
	}
	return nil
}

func checkIsolatedSpec(spec *sandbox.Spec) error {
	var field string
	switch {
	case spec.Image != "":
		field = "Image (use Spec.RootFS for a root filesystem on the host)"
	case spec.Snapshot != "":
		field = "Snapshot"
	case spec.Resources.GPU != "":
		field = "Resources.GPU"
	}
	if field != "" {
		return sandbox.Errorf(Name, "", "create", sandbox.ErrNotSupported, "the local provider cannot honour Spec.%s", field)
	}
	r := spec.Resources
	if r.Memory > 0 && r.Memory < minMemory {
		return sandbox.Errorf(Name, "", "create", sandbox.ErrInvalidArgument,
			"Spec.Resources.Memory %d is below the %d MiB the sandbox's init needs", r.Memory, minMemory>>20)
	}
	if n := spec.Network; n.Mode == sandbox.NetworkAllowlist {
		if _, err := parseAllowlist(n.Allow); err != nil {
			return sandbox.NewError(Name, "", "create", sandbox.ErrInvalidArgument, err)
		}
	}
	return nil
}

// open returns the live handle for the sandbox in dir, making one if this
// process has none.
func (p *Provider) open(dir string, m *meta, st *isoState) (*Sandbox, error) {
	live.mu.Lock()
	defer live.mu.Unlock()
	if sb, ok := live.sandboxes[dir]; ok {
		return sb, nil
	}
	if m.Isolated && st == nil {
		// Made by another process: attach to it.
		var err error
		if st, err = attachIso(dir, m); err != nil {
			return nil, err
		}
		sb, err := newSandbox(p, dir, m, st)
		if err == nil {
			if err = st.attachedCheck(m.ID); err != nil {
				sb.root.Close()
			}
		}
		if err != nil {
			st.closeAttached()
			return nil, err
		}
		sb.memLimit = st.limits.Memory
		go sb.watchInit()
		live.sandboxes[dir] = sb
		return sb, nil
	}
	sb, err := newSandbox(p, dir, m, st)
	if err != nil {
		return nil, err
	}
	if st != nil {
		go sb.watchInit()
	}
	live.sandboxes[dir] = sb
	return sb, nil
}

func (p *Provider) forget(id string) {
	live.mu.Lock()
	delete(live.sandboxes, filepath.Join(p.root, id))
	live.mu.Unlock()
}

// Get returns the sandbox with id, made by this or another process using the
// same root.
func (p *Provider) Get(ctx context.Context, id string) (driver.Sandbox, error) {
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
	sb, err := p.open(dir, m, nil)
	if err != nil {
		return nil, err
	}
	return sb, nil
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
				// Terminated or being created meanwhile; if terminated
				// through this process, what is left goes first.
				p.waitReleased(e.Name())
				continue
			}
			switch p.liveness(m) {
			case ending:
				continue
			case dead:
				// Its init died with the process that made it, which could
				// not clean up: remove what it left.
				p.removeStale(m)
				continue
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
		Isolation: infoIsolation(root, m),
	}
}

// Close releases nothing: the provider holds no connections. Sandboxes it
// created keep running until terminated; the portable layer refuses every
// call after Close.
func (p *Provider) Close() error { return nil }

// Name returns "local".
func (p *Provider) Name() string { return Name }

// As sets a **Provider target to p.
func (p *Provider) As(target any) bool {
	if t, ok := target.(**Provider); ok {
		*t = p
		return true
	}
	return false
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

func infoIsolation(root string, m *meta) string {
	if m.Isolated {
		if m.Isolation != "" {
			return m.Isolation
		}
		return "isolated (starting)"
	}
	return Isolation{}.String() + " " + filepath.Join(root, m.ID, "workspace")
}

// removeStale removes what a dead sandbox left: its cgroups (the kernel
// refuses to remove one that still holds a process) and its directory.
func (p *Provider) removeStale(m *meta) {
	p.forget(m.ID)
	for _, d := range m.Cgroups {
		if filepath.IsAbs(d) && strings.HasPrefix(d, cgroupRoot+"/") && filepath.Base(d) == m.ID {
			os.Remove(d)
		}
	}
	removeAll(filepath.Join(p.root, m.ID))
}

// orphanAge is how old a sandbox directory without metadata must be to be
// swept: Create writes the metadata right after making the directory, so
// only a process that died in between leaves one.
const orphanAge = 10 * time.Minute

// sweep removes, at provider start, what sandboxes of dead processes left
// under the root (after a host crash, or a crash during Create). Live
// sandboxes of other processes sharing the root are left alone.
func (p *Provider) sweep() {
	entries, err := os.ReadDir(p.root)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() || !validID(e.Name()) {
			continue
		}
		dir := filepath.Join(p.root, e.Name())
		m, err := readMeta(dir)
		if errors.Is(err, fs.ErrNotExist) {
			if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > orphanAge {
				if _, err := os.Stat(filepath.Join(dir, metaFile)); errors.Is(err, fs.ErrNotExist) {
					removeAll(dir)
				}
			}
			continue
		}
		if err == nil && m.ID == e.Name() && p.liveness(m) == dead {
			p.removeStale(m)
		}
	}
}

// procStart returns the start time of process pid (field 22 of its stat
// file), or 0 if it does not exist.
func procStart(pid int) uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0
	}
	n, _ := strconv.ParseUint(f[19], 10, 64)
	return n
}
