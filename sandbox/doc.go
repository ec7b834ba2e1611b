// Package sandbox is Perimeter's contract: the portable types every host
// application programs against, over drivers that sandbox providers implement
// (package [driver]).
//
// A [Provider] creates [Sandbox]es. A Sandbox runs commands ([Sandbox.Start],
// [Run]), holds files (ReadFile, WriteFile, Stat, ReadDir, MkdirAll, Remove,
// RemoveAll, Rename), can make a port reachable ([Sandbox.Expose]) and is ended
// with [Sandbox.Terminate]. Abilities that only some sandboxes have ([Sandbox.Pause],
// [Sandbox.Snapshot], [Sandbox.UpdateNetwork], [Sandbox.ExtendTimeout],
// [Sandbox.Dial], [Process.Resize], a TTY, stdin, signals) are declared in the
// sandbox's [Capabilities]; an ability declared false returns an error of kind
// [ErrNotSupported] without reaching the provider. The conformance suite checks
// each declaration both ways.
//
// The portable types do, in one place for every provider: argument validation
// (file names, argv, environment, permissions, ports, sizes, specs), the
// contract's defaults (a nil Spec.Network is [NetworkNone]; permission 0 is
// 0o644 for files and 0o755 for directories; an empty TTY.Term is
// "xterm-256color"), refusing calls after [Provider.Close] ([ErrClosed]) and
// after [Sandbox.Terminate] ([ErrTerminated]), error decoration, and
// observability through [Hooks].
//
// Errors carry one of a small set of kinds ([ErrNotFound], [ErrInvalidArgument],
// ...) for [errors.Is], wrap the provider's native error for [errors.As], and
// name the provider, the sandbox and the operation ([*Error]). Context errors
// and [io.EOF] are returned as they are.
//
// Providers register a URL scheme when their package is imported, so a
// configuration-driven host can write:
//
//	import _ "github.com/perimeter-sdk/perimeter/providers/local"
//
//	p, err := sandbox.Open(ctx, "local:///var/lib/perimeter")
//
// [NewProvider] builds a Provider from a driver in code, as sql.OpenDB does.
//
// Names of files are slash-separated paths inside the sandbox. Relative names are
// resolved against the sandbox's working directory. A name with a ".." element is
// refused with [ErrInvalidArgument]: nothing in this API walks upwards.
package sandbox
