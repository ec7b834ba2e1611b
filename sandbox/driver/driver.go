// Package driver defines the interfaces a sandbox provider implements, and the
// plain data types they exchange. Host code does not use this package: it uses
// the portable types of package sandbox (*sandbox.Provider, *sandbox.Sandbox,
// *sandbox.Process), which wrap a driver and, in one place, validate arguments,
// apply the contract's defaults, refuse calls on closed providers and
// terminated sandboxes, gate optional abilities by [Capabilities], decorate
// errors and report to observability hooks.
//
// The doc comment of each method states what the portable layer guarantees
// about the arguments ("opts is never nil") and what the driver must do in
// return ("must return an error matching sandbox.ErrNotFound"). Error kinds and
// the error type live in package sandbox; a driver imports both packages and
// builds its errors with sandbox.NewError. A driver error without a kind is
// reported by the layer as sandbox.ErrUnavailable, so drivers should always
// give one. Context errors and io.EOF must be returned as they are.
//
// Optional abilities are separate interfaces ([Pauser], [Snapshotter],
// [NetworkUpdater], [TimeoutExtender], [Dialer] on a [Sandbox]; [Resizer] on a
// [Process]). The layer calls one only when the sandbox's [Capabilities]
// declares the ability; a declared ability whose interface the driver does not
// implement is reported as a driver bug (sandbox.ErrNotSupported naming it).
//
// The conformance package holds a driver to all of this; "Writing a provider"
// (docs/writing-a-provider.md) walks through an implementation.
package driver

import (
	"context"
	"io"
	"io/fs"
	"iter"
	"net"
	"strconv"
	"time"
)

// Provider creates and finds sandboxes of one kind. It must be safe for
// concurrent use. After Close the layer calls no method of the Provider nor
// of the sandboxes and processes it returned, except As and Tunnel.Close
// (withdrawing an endpoint stays possible); a call already running when
// Close is called may still finish.
type Provider interface {
	// Name returns the provider's short name, such as "local" or "modal",
	// used in errors and telemetry. It must be constant.
	Name() string

	// Create starts a new sandbox from spec and returns once it runs
	// commands. spec is never nil and has been validated: Network is never
	// nil and its Mode is NetworkNone, NetworkAllowlist or NetworkOpen
	// (Allow is empty unless the mode is NetworkAllowlist); Resources,
	// Timeout and Ports are in range; Env keys are non-empty without '='
	// or NUL; Workdir, if set, has no NUL and no ".." element. A field the
	// driver cannot honour (a network mode, a GPU, an image) must be an
	// error matching sandbox.ErrNotSupported, never ignored. The sandbox's
	// Info.Isolation must state the egress it actually has.
	Create(ctx context.Context, spec *Spec) (Sandbox, error)

	// Get returns a handle to an existing sandbox. id is non-empty. An
	// unknown or terminated id must be an error matching
	// sandbox.ErrNotFound.
	Get(ctx context.Context, id string) (Sandbox, error)

	// List yields the sandboxes that match opts; opts is never nil. An error
	// ends the sequence.
	List(ctx context.Context, opts *ListOptions) iter.Seq2[Info, error]

	// Close releases the provider's own resources (connections, caches). It
	// must not terminate sandboxes: they keep running. The layer calls it
	// at most once.
	Close() error

	// As sets target to a driver-specific type (listed in the provider's
	// package doc) and reports whether it did. target is never nil.
	As(target any) bool
}

// Sandbox is one isolated environment: a process space and a filesystem. It
// must be safe for concurrent use.
//
// File names given to its methods are never empty, contain no NUL byte and no
// ".." element, and are clean (path.Clean); they are absolute or relative, and
// a relative name must be resolved against the sandbox's working directory.
//
// After Terminate has returned nil on this handle the layer calls no method
// but ID, Capabilities and As; a sandbox terminated elsewhere (another handle,
// its timeout) must answer with an error matching sandbox.ErrTerminated or
// sandbox.ErrNotFound.
type Sandbox interface {
	// ID returns the provider's identifier of the sandbox, usable with
	// Provider.Get. It does no I/O.
	ID() string

	// Info returns the sandbox's current description.
	Info(ctx context.Context) (Info, error)

	// Capabilities returns what this sandbox can do. It does no I/O and
	// returns the same value every time.
	Capabilities() Capabilities

	// Start runs cmd.Args as an argv (no implicit shell) and returns once
	// the process has started. cmd is never nil and has been validated:
	// Args is non-empty and no element contains NUL; Env keys are
	// non-empty without '=' or NUL; Dir, if set, is a clean name as above;
	// Timeout is not negative; TTY is nil, or has positive Rows and Cols
	// and a non-empty Term, and is passed only when Capabilities.PTY is
	// true; Stdin is passed without a TTY only when Capabilities.Stdin is
	// true.
	//
	// ctx bounds the process's life: when it is done, the whole process
	// tree must be killed. A program that cannot be found or executed is
	// not an error: the process must exit with code 127 or 126.
	Start(ctx context.Context, cmd *Cmd) (Process, error)

	// ReadFile opens the named file for reading. A missing file must be an
	// error matching sandbox.ErrNotFound; a directory,
	// sandbox.ErrInvalidArgument.
	ReadFile(ctx context.Context, name string) (io.ReadCloser, error)

	// WriteFile creates or replaces the named file with everything read
	// from r, atomically: if reading r fails or ctx ends, an existing file
	// keeps its old content. perm has only the bits fs.ModePerm,
	// fs.ModeSetuid, fs.ModeSetgid and fs.ModeSticky (chmod's 0o7777, in
	// fs.FileMode's spelling; [ChmodBits] converts) and is never 0 (the
	// layer applies the 0o644 default). A missing parent
	// directory must be an error matching sandbox.ErrNotFound.
	WriteFile(ctx context.Context, name string, r io.Reader, perm fs.FileMode) error

	// Stat describes the named file without following a final symbolic
	// link. A missing file must match sandbox.ErrNotFound.
	Stat(ctx context.Context, name string) (FileInfo, error)

	// ReadDir lists the named directory, sorted by name.
	ReadDir(ctx context.Context, name string) ([]FileInfo, error)

	// MkdirAll creates the named directory and any missing parents, each
	// with permissions perm (bits as for WriteFile; never 0: the layer
	// applies the 0o755 default). An existing directory is not an error
	// and keeps its permissions.
	MkdirAll(ctx context.Context, name string, perm fs.FileMode) error

	// Remove removes the named file or empty directory. A missing name must
	// match sandbox.ErrNotFound.
	Remove(ctx context.Context, name string) error

	// RemoveAll removes the named file or directory tree. A missing name is
	// not an error.
	RemoveAll(ctx context.Context, name string) error

	// Rename moves oldname to newname, replacing a file at newname.
	Rename(ctx context.Context, oldname, newname string) error

	// Expose makes port, served inside the sandbox, reachable from outside.
	// port is in 1–65535; opts is never nil and its Protocol is "http" or
	// "tcp". It is called only when Capabilities.Expose is true; a protocol
	// the driver cannot expose must match sandbox.ErrNotSupported.
	Expose(ctx context.Context, port int, opts *ExposeOptions) (Tunnel, error)

	// Terminate stops the sandbox and releases everything it holds. It must
	// be idempotent: terminating a terminated sandbox returns nil.
	Terminate(ctx context.Context) error

	// As sets target to a driver-specific type and reports whether it did.
	As(target any) bool
}

// Process is a command started by Sandbox.Start. It must be safe for
// concurrent use.
type Process interface {
	// Wait waits for the process to exit and for its output to be copied.
	// ctx bounds only the waiting: when it is done, Wait returns ctx.Err()
	// and the process keeps running. If the ctx given to Start ended the
	// process, Wait returns that ctx's error with the status. Wait may be
	// called more than once and must return the same result each time.
	Wait(ctx context.Context) (ExitStatus, error)

	// Signal sends sig to the process group of the command; sig is one of
	// the Signal constants. It is called only when Capabilities.Signal is
	// true. Signalling a process that has exited is not an error.
	Signal(ctx context.Context, sig Signal) error

	// As sets target to a driver-specific type and reports whether it did.
	As(target any) bool
}

// Tunnel is a sandbox port made reachable by Sandbox.Expose.
type Tunnel interface {
	// URL returns where the endpoint answers. It does no I/O.
	URL() string
	// Close withdraws the endpoint. The layer calls it at most once.
	Close() error
	// As sets target to a driver-specific type and reports whether it did.
	As(target any) bool
}

// Pauser is an optional interface that may be implemented by a Sandbox whose
// Capabilities.Pause is true. If the capability is false the layer returns
// sandbox.ErrNotSupported without calling it.
type Pauser interface {
	// Pause freezes every process of the sandbox, keeping its memory and
	// files.
	Pause(ctx context.Context) error
	// Resume continues a paused sandbox.
	Resume(ctx context.Context) error
}

// Snapshotter is an optional interface that may be implemented by a Sandbox
// whose Capabilities.Snapshot is true.
type Snapshotter interface {
	// Snapshot saves the sandbox's filesystem and returns an identifier
	// for Spec.Snapshot.
	Snapshot(ctx context.Context) (string, error)
}

// NetworkUpdater is an optional interface that may be implemented by a
// Sandbox whose Capabilities.UpdateNetwork is true.
type NetworkUpdater interface {
	// UpdateNetwork replaces the sandbox's egress policy while it runs.
	// policy is never nil and validated as Spec.Network is; a mode not in
	// Capabilities.NetworkModes is refused by the layer.
	UpdateNetwork(ctx context.Context, policy *NetworkPolicy) error
}

// TimeoutExtender is an optional interface that may be implemented by a
// Sandbox whose Capabilities.ExtendTimeout is true.
type TimeoutExtender interface {
	// ExtendTimeout moves the sandbox's expiry d later; d is positive.
	ExtendTimeout(ctx context.Context, d time.Duration) error
}

// Dialer is an optional interface that may be implemented by a Sandbox whose
// Capabilities.Dial is true.
type Dialer interface {
	// DialContext connects to a TCP port (1–65535) served inside the
	// sandbox.
	DialContext(ctx context.Context, port int) (net.Conn, error)
}

// Resizer is an optional interface that may be implemented by a Process
// started with Cmd.TTY on a sandbox whose Capabilities.PTY is true.
type Resizer interface {
	// Resize changes the terminal's size; rows and cols are positive.
	Resize(ctx context.Context, rows, cols int) error
}

// ExposeOptions configures an exposed port.
type ExposeOptions struct {
	// Protocol is "http" (the default, also spelled "") or "tcp".
	Protocol string
}

// Cmd describes a command to run in a sandbox.
type Cmd struct {
	// Args is the argv; Args[0] is found on the sandbox's PATH. It must not be
	// empty, and no element may contain a NUL byte.
	Args []string
	// Dir is the working directory; empty means the sandbox's working
	// directory, and a relative Dir is resolved against it.
	Dir string
	// Env is added to the sandbox's environment, replacing keys that exist.
	// Keys are non-empty and contain neither '=' nor NUL; values may contain
	// '=' but not NUL.
	Env map[string]string
	// Stdin, if not nil, is copied to the process's standard input, which is
	// closed at EOF. A nil Stdin reads as empty. Without a TTY, a sandbox
	// without Capabilities.Stdin refuses a non-nil Stdin with
	// ErrNotSupported.
	Stdin io.Reader
	// Stdout and Stderr receive the process's output as it is produced. Nil
	// discards it. With a TTY, everything arrives on Stdout.
	Stdout, Stderr io.Writer
	// TTY, if not nil, runs the command on a pseudo-terminal of that size.
	// Sandboxes without Capabilities.PTY return ErrNotSupported.
	TTY *TTY
	// Timeout, if positive, bounds the command's run time; when it passes, the
	// process tree is killed and ExitStatus.TimedOut is set. Zero means no
	// bound; negative is an invalid argument.
	Timeout time.Duration
}

// TTY is a pseudo-terminal's size and type.
type TTY struct {
	// Rows and Cols must be positive.
	Rows, Cols int
	// Term is the TERM variable; empty means "xterm-256color".
	Term string
}

// ExitStatus is how a process ended.
type ExitStatus struct {
	// Code is the exit code, or -1 when the process was killed by a signal.
	Code int `json:"code"`
	// Signal is the signal that killed the process, if any.
	Signal Signal `json:"signal,omitempty"`
	// OOMKilled reports that the kernel killed the process for memory.
	OOMKilled bool `json:"oom_killed,omitempty"`
	// TimedOut reports that Cmd.Timeout passed and the process was killed.
	TimedOut bool `json:"timed_out,omitempty"`
}

// Success reports whether the process exited with code 0.
func (s ExitStatus) Success() bool { return s.Code == 0 && s.Signal == "" && !s.TimedOut }

// String describes the status as a shell user would read it.
func (s ExitStatus) String() string {
	switch {
	case s.TimedOut:
		return "timed out"
	case s.OOMKilled:
		return "killed: out of memory"
	case s.Signal != "":
		return "killed by " + string(s.Signal)
	default:
		return "exit status " + strconv.Itoa(s.Code)
	}
}

// Signal is a POSIX signal name, such as "SIGTERM". Names travel unchanged to
// providers whose APIs take names, and are translated where they take numbers.
type Signal string

// The signals every provider with Capabilities.Signal delivers.
const (
	SIGHUP  Signal = "SIGHUP"
	SIGINT  Signal = "SIGINT"
	SIGQUIT Signal = "SIGQUIT"
	SIGKILL Signal = "SIGKILL"
	SIGUSR1 Signal = "SIGUSR1"
	SIGUSR2 Signal = "SIGUSR2"
	SIGTERM Signal = "SIGTERM"
)

// Spec describes a sandbox to create. The zero value asks for the provider's
// defaults, with no network egress.
type Spec struct {
	// Image names the image or template to start from, in the provider's own
	// terms. Empty means the provider's default.
	Image string `json:"image,omitempty"`
	// RootFS is a root filesystem on the host (a directory or tarball) for
	// providers that run on the host.
	RootFS string `json:"rootfs,omitempty"`
	// Env is the environment every command starts with. Keys are non-empty
	// and contain neither '=' nor NUL.
	Env map[string]string `json:"env,omitempty"`
	// Workdir is the working directory of commands and of relative file
	// names. Empty means the provider's default.
	Workdir string `json:"workdir,omitempty"`
	// Resources bounds what the sandbox may use. Zero fields mean defaults;
	// negative ones are invalid.
	Resources Resources `json:"resources,omitzero"`
	// Timeout is the sandbox's time to live; when it passes, the provider
	// terminates it. Zero means the provider's default; negative is invalid.
	Timeout time.Duration `json:"timeout,omitempty"`
	// Labels are key/value pairs the sandbox carries, for ListOptions.Labels.
	Labels map[string]string `json:"labels,omitempty"`
	// Network is the egress policy. Nil means NetworkNone on every
	// provider: a sandbox reaches nothing outside unless asked to.
	Network *NetworkPolicy `json:"network,omitempty"`
	// Ports are the ports (1–65535) to make exposable, for providers that
	// must know them at creation.
	Ports []int `json:"ports,omitempty"`
	// Snapshot, if set, starts the sandbox from a snapshot taken with
	// Snapshot.
	Snapshot string `json:"snapshot,omitempty"`
}

// Resources bounds what a sandbox may use. No field may be negative.
type Resources struct {
	// CPU is a number of cores; fractions are allowed.
	CPU float64 `json:"cpu,omitempty"`
	// Memory is in bytes.
	Memory int64 `json:"memory,omitempty"`
	// Disk is the writable storage in bytes.
	Disk int64 `json:"disk,omitempty"`
	// GPU is the provider's name for an accelerator, such as "A100" or "T4:2".
	GPU string `json:"gpu,omitempty"`
	// PIDs bounds the number of processes.
	PIDs int `json:"pids,omitempty"`
}

// NetworkMode selects an egress policy.
type NetworkMode string

// Egress policies.
const (
	// NetworkNone allows no traffic out of the sandbox (loopback only).
	NetworkNone NetworkMode = "none"
	// NetworkAllowlist allows traffic only to NetworkPolicy.Allow.
	NetworkAllowlist NetworkMode = "allowlist"
	// NetworkOpen allows all egress.
	NetworkOpen NetworkMode = "open"
)

// NetworkPolicy is a sandbox's egress policy.
type NetworkPolicy struct {
	// Mode is the policy. The empty mode means NetworkNone, like a nil
	// policy; to allow anything, say so.
	Mode NetworkMode `json:"mode"`
	// Allow lists domain names ("example.com", "*.example.com") and CIDR
	// ranges ("10.0.0.0/8") reachable under NetworkAllowlist. It must be
	// empty under any other mode, and its entries non-empty.
	Allow []string `json:"allow,omitempty"`
}

// ListOptions filters a listing of sandboxes.
type ListOptions struct {
	// Labels selects sandboxes carrying every one of these pairs.
	Labels map[string]string
}

// State is a sandbox's lifecycle state.
type State string

// Sandbox states.
const (
	StateStarting   State = "starting"
	StateRunning    State = "running"
	StatePaused     State = "paused"
	StateStopped    State = "stopped"
	StateTerminated State = "terminated"
	StateUnknown    State = "unknown"
)

// Info describes a sandbox.
type Info struct {
	ID       string            `json:"id"`
	Provider string            `json:"provider"`
	State    State             `json:"state"`
	Labels   map[string]string `json:"labels,omitempty"`
	Created  time.Time         `json:"created,omitzero"`
	// Expires is when the provider will terminate the sandbox; zero if never.
	Expires time.Time `json:"expires,omitzero"`
	// Isolation says in plain words what separates the sandbox from its host
	// and from other sandboxes, and which egress it has, such as
	// "L3 namespaces; network: none".
	Isolation string `json:"isolation"`
}

// FileInfo describes a file in a sandbox.
type FileInfo struct {
	Name    string      `json:"name"`
	Size    int64       `json:"size"`
	Mode    fs.FileMode `json:"mode"`
	ModTime time.Time   `json:"mod_time,omitzero"`
}

// IsDir reports whether the file is a directory.
func (fi FileInfo) IsDir() bool { return fi.Mode.IsDir() }

// Capabilities declares what a sandbox can do. A true field is a promise the
// conformance suite checks works; a false field means the portable layer
// refuses the ability with ErrNotSupported without calling the driver.
type Capabilities struct {
	// Stdin: Cmd.Stdin reaches a process started without a TTY. (A
	// process on a terminal, where PTY is true, always takes Stdin.)
	Stdin bool `json:"stdin"`
	// Signal: Process.Signal delivers signals.
	Signal bool `json:"signal"`
	// PTY: Cmd.TTY runs a command on a terminal, and its Process implements
	// Resizer.
	PTY bool `json:"pty"`
	// Expose: Sandbox.Expose with the "http" protocol.
	Expose bool `json:"expose"`
	// CloseTunnel: Tunnel.Close withdraws the endpoint at once. When false,
	// an exposed endpoint may keep answering until the sandbox ends (as
	// Modal's tunnels do).
	CloseTunnel bool `json:"close_tunnel,omitempty"`
	// Dial: the sandbox implements Dialer.
	Dial bool `json:"dial"`
	// Pause: the sandbox implements Pauser.
	Pause bool `json:"pause"`
	// Snapshot: the sandbox implements Snapshotter and Spec.Snapshot works.
	Snapshot bool `json:"snapshot"`
	// ExtendTimeout: the sandbox implements TimeoutExtender.
	ExtendTimeout bool `json:"extend_timeout"`
	// NetworkModes lists the Spec.Network modes Create honours.
	NetworkModes []NetworkMode `json:"network_modes,omitempty"`
	// UpdateNetwork: the sandbox implements NetworkUpdater.
	UpdateNetwork bool `json:"update_network"`
	// TextOutput declares a limitation rather than an ability: the provider
	// carries command output as UTF-8 text, so each byte of stdout or stderr
	// that is not valid UTF-8 arrives as U+FFFD. When false, output is
	// byte-exact. Files moved with ReadFile and WriteFile are byte-exact
	// either way.
	TextOutput bool `json:"text_output,omitempty"`
}

// SupportsNetwork reports whether mode is among c.NetworkModes.
func (c Capabilities) SupportsNetwork(mode NetworkMode) bool {
	for _, m := range c.NetworkModes {
		if m == mode {
			return true
		}
	}
	return false
}

// ChmodBits returns perm as the number chmod(2) takes (0o4755 for
// fs.ModeSetuid|0o755), for drivers that set permissions through a command
// or an API taking octal.
func ChmodBits(perm fs.FileMode) uint32 {
	b := uint32(perm.Perm())
	if perm&fs.ModeSetuid != 0 {
		b |= 0o4000
	}
	if perm&fs.ModeSetgid != 0 {
		b |= 0o2000
	}
	if perm&fs.ModeSticky != 0 {
		b |= 0o1000
	}
	return b
}
