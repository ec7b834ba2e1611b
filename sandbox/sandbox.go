// Package sandbox is Perimeter's contract: the interfaces every sandbox provider
// implements and every host application programs against.
//
// A [Provider] creates [Sandbox]es. A Sandbox runs commands ([Executor.Start]),
// holds files (ReadFile, WriteFile, Stat, ReadDir, MkdirAll, Remove, RemoveAll,
// Rename), can make a port reachable ([Sandbox.Expose]) and is ended with
// [Sandbox.Terminate]. Abilities that only some providers have are separate
// interfaces found by type assertion ([Pauser], [Snapshotter], [NetworkUpdater],
// [TimeoutExtender], [Dialer], [Resizer]); the package-level helpers of the same
// name ([Pause], [Snapshot], ...) return an error of kind [ErrNotSupported] when a
// sandbox lacks them. Every provider declares what it can do in [Capabilities], and
// the conformance suite checks each declaration both ways.
//
// Errors returned by providers carry one of a small set of kinds ([ErrNotFound],
// [ErrInvalidArgument], ...) for [errors.Is], wrap the provider's native error for
// [errors.As], and name the provider, the sandbox and the operation. Context errors
// and [io.EOF] are returned as they are.
//
// Providers register a URL scheme when their package is imported, so a
// configuration-driven host can write:
//
//	import _ "github.com/perimeter-sdk/perimeter/providers/local"
//
//	p, err := sandbox.Open(ctx, "local:///var/lib/perimeter")
//
// Names of files are slash-separated paths inside the sandbox. Relative names are
// resolved against the sandbox's working directory. A name with a ".." element is
// refused with [ErrInvalidArgument]: nothing in this API walks upwards.
package sandbox

import (
	"context"
	"io"
	"io/fs"
	"iter"
	"strconv"
	"time"
)

// Provider creates and finds sandboxes of one kind. A Provider is safe for
// concurrent use.
type Provider interface {
	// Create starts a new sandbox from spec (nil means the provider's defaults)
	// and returns once it is ready to run commands. A Spec field the provider
	// cannot honour is an error of kind ErrNotSupported, never silently ignored.
	Create(ctx context.Context, spec *Spec) (Sandbox, error)

	// Get returns a handle to an existing sandbox. An unknown or already
	// terminated id is an error of kind ErrNotFound.
	Get(ctx context.Context, id string) (Sandbox, error)

	// List yields the sandboxes that match opts (nil means all this provider's
	// credentials can see). An error ends the sequence.
	List(ctx context.Context, opts *ListOptions) iter.Seq2[Info, error]

	// Close releases the provider's own resources (connections, caches). It does
	// not terminate sandboxes.
	Close() error
}

// Executor starts commands. Both [Sandbox] and anything that only runs commands
// (a shell session, a test double) implement it.
type Executor interface {
	// Start runs cmd.Args as an argv (no implicit shell) and returns once the
	// process has started. ctx bounds the process's life, as with
	// exec.CommandContext: when ctx is done the whole process tree is killed.
	//
	// A program that cannot be found or executed is not an error: the returned
	// Process exits with code 127 (not found) or 126 (not executable), as a
	// shell reports it. A non-zero exit is a result, not an error.
	Start(ctx context.Context, cmd *Cmd) (Process, error)
}

// Process is a command started by [Executor.Start].
type Process interface {
	// Wait waits for the process to exit and for its output to be copied to
	// Cmd.Stdout and Cmd.Stderr. ctx bounds only the waiting: when ctx is done,
	// Wait returns ctx.Err() and the process keeps running. If the ctx given to
	// Start ends the process, Wait returns that ctx's error with the status.
	// Wait may be called more than once and returns the same result each time.
	Wait(ctx context.Context) (ExitStatus, error)

	// Signal sends sig to the process group of the command. Signalling a
	// process that has exited is not an error. A provider without the ability
	// returns an error of kind ErrNotSupported.
	Signal(ctx context.Context, sig Signal) error
}

// Sandbox is one isolated environment: a process space and a filesystem. All
// methods are safe for concurrent use. After Terminate, every method but ID,
// Capabilities and Terminate returns an error of kind ErrTerminated (or
// ErrNotFound, where the provider can no longer tell).
type Sandbox interface {
	Executor

	// ID returns the provider's identifier of the sandbox, usable with
	// Provider.Get.
	ID() string

	// Info returns the sandbox's current description.
	Info(ctx context.Context) (Info, error)

	// Capabilities returns what this sandbox can do. It does no I/O.
	Capabilities() Capabilities

	// ReadFile opens the named file for reading. A missing file is an error of
	// kind ErrNotFound; a directory, ErrInvalidArgument.
	ReadFile(ctx context.Context, name string) (io.ReadCloser, error)

	// WriteFile creates or replaces the named file with everything read from r,
	// with permissions perm. The file appears whole or not at all: if reading r
	// fails, or ctx ends, an existing file keeps its old content. The parent
	// directory must exist (ErrNotFound otherwise).
	WriteFile(ctx context.Context, name string, r io.Reader, perm fs.FileMode) error

	// Stat describes the named file without following a final symbolic link.
	Stat(ctx context.Context, name string) (FileInfo, error)

	// ReadDir lists the named directory, sorted by name.
	ReadDir(ctx context.Context, name string) ([]FileInfo, error)

	// MkdirAll creates the named directory and any missing parents. An
	// existing directory is not an error.
	MkdirAll(ctx context.Context, name string, perm fs.FileMode) error

	// Remove removes the named file or empty directory. A missing name is an
	// error of kind ErrNotFound.
	Remove(ctx context.Context, name string) error

	// RemoveAll removes the named file or directory tree. A missing name is
	// not an error.
	RemoveAll(ctx context.Context, name string) error

	// Rename moves oldname to newname, replacing a file at newname.
	Rename(ctx context.Context, oldname, newname string) error

	// Expose makes port, served inside the sandbox, reachable from outside and
	// returns the endpoint. A provider without the ability returns an error of
	// kind ErrNotSupported.
	Expose(ctx context.Context, port int, opts *ExposeOptions) (Tunnel, error)

	// Terminate stops the sandbox and releases everything it holds: processes,
	// files, network endpoints. It is idempotent: terminating a terminated
	// sandbox returns nil.
	Terminate(ctx context.Context) error
}

// Tunnel is a private endpoint made reachable: a sandbox port's URL, or a private
// MCP server reached through the tunnel package.
type Tunnel interface {
	// URL returns where the endpoint answers, such as "http://127.0.0.1:41234"
	// or "https://abc.example.dev".
	URL() string
	// Close withdraws the endpoint and is idempotent. A provider whose
	// endpoints live as long as the sandbox (Modal's tunnels) cannot
	// withdraw one early; its package doc says so, and Terminate ends it.
	Close() error
}

// ExposeOptions configures [Sandbox.Expose]. The zero value exposes plain HTTP.
type ExposeOptions struct {
	// Protocol is "http" (the default) or "tcp". A provider that cannot expose
	// the protocol returns an error of kind ErrNotSupported.
	Protocol string
}

// Cmd describes a command to run in a sandbox.
type Cmd struct {
	// Args is the argv; Args[0] is found on the sandbox's PATH. It must not be
	// empty.
	Args []string
	// Dir is the working directory; empty means the sandbox's working
	// directory, and a relative Dir is resolved against it.
	Dir string
	// Env is added to the sandbox's environment, replacing keys that exist.
	Env map[string]string
	// Stdin, if not nil, is copied to the process's standard input, which is
	// closed at EOF. A nil Stdin reads as empty.
	Stdin io.Reader
	// Stdout and Stderr receive the process's output as it is produced. Nil
	// discards it. With a TTY, everything arrives on Stdout.
	Stdout, Stderr io.Writer
	// TTY, if not nil, runs the command on a pseudo-terminal of that size.
	// Providers without Capabilities.PTY return ErrNotSupported.
	TTY *TTY
	// Timeout, if positive, bounds the command's run time; when it passes, the
	// process tree is killed and ExitStatus.TimedOut is set.
	Timeout time.Duration
}

// TTY is a pseudo-terminal's size and type.
type TTY struct {
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
// defaults.
type Spec struct {
	// Image names the image or template to start from, in the provider's own
	// terms. Empty means the provider's default.
	Image string `json:"image,omitempty"`
	// RootFS is a root filesystem on the host (a directory or tarball) for
	// providers that run on the host.
	RootFS string `json:"rootfs,omitempty"`
	// Env is the environment every command starts with.
	Env map[string]string `json:"env,omitempty"`
	// Workdir is the working directory of commands and of relative file
	// names. Empty means the provider's default.
	Workdir string `json:"workdir,omitempty"`
	// Resources bounds what the sandbox may use. Zero fields mean defaults.
	Resources Resources `json:"resources,omitzero"`
	// Timeout is the sandbox's time to live; when it passes, the provider
	// terminates it. Zero means the provider's default.
	Timeout time.Duration `json:"timeout,omitempty"`
	// Labels are key/value pairs the sandbox carries, for ListOptions.Labels.
	Labels map[string]string `json:"labels,omitempty"`
	// Network is the egress policy; nil means the provider's default, which
	// Info.Isolation describes.
	Network *NetworkPolicy `json:"network,omitempty"`
	// Ports are the ports to make exposable, for providers that must know
	// them at creation.
	Ports []int `json:"ports,omitempty"`
	// Snapshot, if set, starts the sandbox from a snapshot taken with
	// [Snapshot].
	Snapshot string `json:"snapshot,omitempty"`
}

// Resources bounds what a sandbox may use.
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
	Mode NetworkMode `json:"mode"`
	// Allow lists domain names ("example.com", "*.example.com") and CIDR
	// ranges ("10.0.0.0/8") reachable under NetworkAllowlist.
	Allow []string `json:"allow,omitempty"`
}

// ListOptions filters [Provider.List].
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
	// and from other sandboxes, such as "none: plain processes on the host".
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

// Capabilities declares what a provider's sandboxes can do. A true field is a
// promise the conformance suite checks works; a false field is a promise that
// the ability fails with ErrNotSupported rather than doing nothing.
type Capabilities struct {
	// Stdin: Cmd.Stdin reaches the process.
	Stdin bool `json:"stdin"`
	// Signal: Process.Signal delivers signals.
	Signal bool `json:"signal"`
	// PTY: Cmd.TTY runs a command on a terminal, and its Process implements
	// Resizer.
	PTY bool `json:"pty"`
	// Expose: Sandbox.Expose with the "http" protocol.
	Expose bool `json:"expose"`
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
