package sandbox

import "github.com/perimeter-sdk/perimeter/sandbox/driver"

// The plain data types of the contract are defined in package driver, which
// provider authors implement without importing this package's portable types;
// they are the same types here, so host code writes sandbox.Spec.

// Spec describes a sandbox to create. The zero value (or a nil *Spec) asks for
// the provider's defaults with no network egress: a nil Spec.Network means
// [NetworkNone] on every provider.
type Spec = driver.Spec

// Resources bounds what a sandbox may use. Zero fields mean the provider's
// defaults; negative fields are refused with ErrInvalidArgument.
type Resources = driver.Resources

// NetworkMode selects an egress policy.
type NetworkMode = driver.NetworkMode

// NetworkPolicy is a sandbox's egress policy. An empty Mode means [NetworkNone].
type NetworkPolicy = driver.NetworkPolicy

// Egress policies.
const (
	// NetworkNone allows no traffic out of the sandbox (loopback only). It
	// is what a nil Spec.Network and an empty NetworkPolicy.Mode mean.
	NetworkNone = driver.NetworkNone
	// NetworkAllowlist allows traffic only to NetworkPolicy.Allow.
	NetworkAllowlist = driver.NetworkAllowlist
	// NetworkOpen allows all egress.
	NetworkOpen = driver.NetworkOpen
)

// Cmd describes a command to run in a sandbox.
type Cmd = driver.Cmd

// TTY is a pseudo-terminal's size and type. Rows and Cols must be positive;
// an empty Term means "xterm-256color".
type TTY = driver.TTY

// ExitStatus is how a process ended. A non-zero exit, a timeout and a signal
// are results, not errors.
type ExitStatus = driver.ExitStatus

// Signal is a POSIX signal name, such as "SIGTERM".
type Signal = driver.Signal

// The signals every provider with Capabilities.Signal delivers.
const (
	SIGHUP  = driver.SIGHUP
	SIGINT  = driver.SIGINT
	SIGQUIT = driver.SIGQUIT
	SIGKILL = driver.SIGKILL
	SIGUSR1 = driver.SIGUSR1
	SIGUSR2 = driver.SIGUSR2
	SIGTERM = driver.SIGTERM
)

// Info describes a sandbox. Its Isolation field states, in plain words, what
// separates the sandbox from its host and which egress it actually has.
type Info = driver.Info

// State is a sandbox's lifecycle state.
type State = driver.State

// Sandbox states.
const (
	StateStarting   = driver.StateStarting
	StateRunning    = driver.StateRunning
	StatePaused     = driver.StatePaused
	StateStopped    = driver.StateStopped
	StateTerminated = driver.StateTerminated
	StateUnknown    = driver.StateUnknown
)

// FileInfo describes a file in a sandbox.
type FileInfo = driver.FileInfo

// Capabilities declares what a sandbox can do. A true field is a promise the
// conformance suite checks works; for a false field the sandbox's methods
// return ErrNotSupported without reaching the provider.
type Capabilities = driver.Capabilities

// ListOptions filters [Provider.List].
type ListOptions = driver.ListOptions

// ExposeOptions configures [Sandbox.Expose]. Nil, like an empty Protocol,
// exposes plain HTTP; "tcp" exposes a raw TCP port.
type ExposeOptions = driver.ExposeOptions
