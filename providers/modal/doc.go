// Package modal is the Perimeter provider for Modal sandboxes
// (https://modal.com/docs/guide/sandbox), built on Modal's official Go SDK,
// github.com/modal-labs/libmodal/modal-go, pinned at v0.7.0. It is a Go module
// of its own so that the core module does not depend on gRPC.
//
// # URLs
//
// Importing the package registers the "modal" scheme:
//
//	import _ "github.com/perimeter-sdk/perimeter/providers/modal"
//
//	p, err := sandbox.Open(ctx, "modal://my-app")
//
// The host is the Modal App the sandboxes belong to (created if missing).
// Optional query parameters: environment (a Modal environment) and image (the
// default registry image, [DefaultImage] otherwise). Credentials in the URL
// are refused. [New] takes the same settings, and more, as [Options].
//
// # Credentials
//
// The SDK reads them: MODAL_TOKEN_ID and MODAL_TOKEN_SECRET, or the active
// profile of ~/.modal.toml (MODAL_CONFIG_PATH, MODAL_PROFILE);
// MODAL_ENVIRONMENT selects an environment and MODAL_SERVER_URL the API
// endpoint. Options.TokenID and Options.TokenSecret override them.
//
// # Capabilities
//
// What Modal offers maps onto the contract as follows.
//
//   - Create: Spec.Image is a registry image and Spec.Snapshot an image id
//     from Snapshot; Resources.CPU, Resources.Memory (rounded up to MiB) and
//     Resources.GPU ("A100", "T4:2") are reserved; Spec.Timeout (rounded up
//     to whole seconds, default 5 minutes) is the sandbox's lifetime;
//     Spec.Env reaches every command; Spec.Workdir is the working directory;
//     Spec.Labels are Modal tags (List filters on them); Spec.Ports are
//     encrypted ports. Spec.Network none (also what a nil Network means)
//     blocks all egress. Capabilities
//     claim the network modes none and open only: Modal's allowlist takes
//     CIDR ranges, the contract's takes domain names too. An allowlist of
//     CIDR ranges and addresses is still honoured (an empty one blocks
//     everything); a domain name in it is an error of kind ErrNotSupported.
//     Named Modal Secrets (Options.Secrets) and anything else the SDK offers
//     (volumes, regions, idle timeout, ...; Options.Configure) apply to every
//     sandbox. Create returns once Modal has scheduled the sandbox and a
//     first command ("sh -c pwd", which also learns the working directory)
//     has run.
//   - Start: commands run through Modal's exec with stdin, stdout and stderr
//     streamed separately. Cmd.Env reaches the command as an ephemeral Modal
//     Secret (one extra call per command that sets it).
//   - Signal, Cmd.Timeout and cancelling Start's ctx: Modal's exec API cannot
//     signal a command. Every command therefore starts under a small sh
//     wrapper that reports its PID (on a first stdout line that the adapter
//     strips) and execs the argv; signals are delivered by a second exec of
//     kill(1) to the command's process group (or the process alone where it
//     leads none). Cmd.Timeout is enforced that way, with Modal's own exec
//     timeout (whole seconds, 5 seconds later) as a backstop. Modal reports a
//     death by signal N as exit code 128+N; the adapter reports it as a
//     signal only when it delivered that signal itself.
//   - ReadFile and WriteFile use the SDK's file API (Sandbox.Open); WriteFile
//     writes a temporary file and renames it into place. Stat, ReadDir,
//     MkdirAll, Remove, RemoveAll and Rename, which the SDK lacks, run short
//     sh scripts (internal/shellfs: stat, mkdir -m for every new directory,
//     rm, mv) in the sandbox. So the
//     image needs a POSIX sh and coreutils or busybox, as almost every image
//     has.
//   - Expose returns the encrypted tunnel (https://...) of a port declared in
//     Spec.Ports; protocol "tcp" is not supported, and Tunnel.Close does
//     nothing (Modal closes tunnels when the sandbox ends).
//   - Snapshot saves the filesystem as a Modal image, for Spec.Snapshot.
//   - Get finds a running sandbox by id; List lists the App's running
//     sandboxes; Terminate ends a sandbox and waits for Modal to confirm.
//     Provider.Close releases the connections of every sandbox handle it gave
//     out (the sandboxes keep running; Get reaches them again); every call
//     on the provider or its handles then fails with ErrClosed.
//
// Modal lacks, and the adapter does not claim (Capabilities false, errors of
// kind ErrNotSupported): PTYs with a size and resize (Cmd.TTY), dialling a
// port (Dialer), pause and resume (Pauser), changing the egress policy of a
// running sandbox (NetworkUpdater), extending the lifetime (TimeoutExtender),
// disk size and process limits (Resources.Disk, Resources.PIDs), domain names
// in an allowlist, host root filesystems (Spec.RootFS) and plain TCP exposure.
//
// SDK v0.7.0 fails Exec and Open at once while a new sandbox waits to be
// scheduled; the adapter retries those calls with capped backoff for as long
// as ctx allows (Create waits at most Options.ScheduleTimeout). Creating the
// SDK client makes an RPC that cannot be cancelled; [New] runs it under ctx.
//
// # Escape hatches
//
// The adapter's values reach the SDK's own with As, in the manner of
// gocloud.dev:
//
//   - (*sandbox.Provider).As accepts **modal.Client (the SDK client) and
//     **Provider (this package's driver, for [Provider.App]);
//   - (*sandbox.Sandbox).As accepts **modal.Sandbox (detached after
//     Terminate);
//   - (*sandbox.Process).As accepts **modal.ContainerProcess;
//   - a Tunnel from Expose accepts **modal.Tunnel.
//
// Errors wrap the SDK's (modal.NotFoundError, modal.SandboxFilesystemError,
// ...) or its gRPC status, so errors.As reaches them; errors.Is reports the
// Perimeter kind.
//
// # Testing
//
// Package modalfake is a fake of Modal's two gRPC services built from the
// SDK's own generated stubs; the tests point the unmodified SDK at it with
// MODAL_SERVER_URL. The live tests run against Modal when MODAL_TOKEN_ID and
// MODAL_TOKEN_SECRET are set, and say so when they are skipped.
package modal
