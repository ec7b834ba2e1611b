// Package cloudflare is the Perimeter provider for Cloudflare Sandboxes,
// reached through the Sandbox bridge: the official Worker
// (@cloudflare/sandbox's bridge template) you deploy in your own account,
// which forwards an HTTP API to a container per sandbox ID. The package is a
// plain net/http client of the bridge's /v1 routes; every route string and
// wire structure is in one file (wire.go), since the bridge's 0.x line is
// replaced by an incompatible 1.0.
//
// # URLs and credentials
//
// Importing the package registers the scheme "cloudflare":
//
//	import _ "github.com/perimeter-sdk/perimeter/providers/cloudflare"
//
//	p, err := sandbox.Open(ctx, "cloudflare://sandbox-bridge.example.workers.dev")
//
// The URL is cloudflare://BRIDGE_HOST[/PATH]; the only query parameter is
// scheme=http (a bridge on plain HTTP, such as a local wrangler dev or the
// fake in [cloudflarefake]), and any other is an error naming the known ones.
// "cloudflare://" takes the bridge from CLOUDFLARE_SANDBOX_BRIDGE_URL. The
// API key (the Worker's SANDBOX_API_KEY secret) is never in the URL: it is
// Options.APIKey or CLOUDFLARE_SANDBOX_API_KEY, sent as "Authorization:
// Bearer". In code, use [New] with [Options]; it returns the portable
// *sandbox.Provider, which validates arguments and applies defaults before
// this package's driver ([NewDriver], for [sandbox.NewProvider] with hooks)
// sees them.
//
// [New] fetches the bridge's GET /v1/openapi.json and refuses a bridge whose
// document is not version [TargetVersion] or lacks a route the adapter
// calls (ErrNotSupported wrapping a [*VersionError] that names what it
// found). [CheckDeployment] verifies through the Cloudflare API
// (cloudflare-go) that the Worker is deployed with its Durable Object
// bindings, container and secret, and names what is missing.
//
// # Sandboxes
//
// A sandbox is an ID in the bridge's format (26 characters of lowercase
// base32), minted locally by Create; the bridge starts a container for an
// ID on first use and Terminate destroys it (DELETE). Any ID in that format
// names a sandbox, so Get returns a handle for it (an ID this Provider
// terminated is ErrNotFound); only IDs in another format are ErrNotFound.
// The bridge cannot list sandboxes: List yields those this Provider value
// created or found and has not terminated. A container that sleeps (the
// Worker's sleepAfter, 10 minutes idle by default) loses its disk and its
// sessions; [Persist] and [Hydrate] keep /workspace as a tar.
//
// # Egress
//
// The bridge has no per-sandbox egress policy: the Worker's code sets it
// for every sandbox (enableInternet, allowedHosts), and the bridge template
// allows everything. The adapter cannot enforce NetworkNone, the contract's
// default, so Create refuses a Spec without Network, NetworkNone and
// NetworkAllowlist with ErrNotSupported; ask for NetworkOpen
// (Capabilities.NetworkModes is [open]). Info.Isolation says the egress is
// open as far as the Worker allows.
//
// # Capabilities
//
//   - Start: POST …/exec, whose SSE stream is decoded as it arrives (base64
//     stdout and stderr chunks kept apart; an "exit" or "error" event ends
//     it; a stream that ends without one is an ErrUnavailable error wrapping
//     io.ErrUnexpectedEOF, never a success). The bridge joins argv into a
//     shell command line, so each command runs as
//     setsid -w sh -c WRAPPER -- env -- [K=V...] ARGV: a new process group
//     whose pid the wrapper reports first (the adapter removes that line),
//     env(1) applying Cmd.Env and giving "not found" 127 and "not
//     executable" 126, empty stdin. The container needs sh, env and setsid
//     (util-linux), which the template's image has. Args[0] may not contain
//     "=" (env would read it as a variable).
//   - Spec.Env and Spec.Workdir become a bridge session (POST …/session,
//     named "perimeter") whose Session-Id every command carries; a session
//     lost to a sleeping container is recreated once. Cmd.Dir is the exec
//     request's cwd. Working directories must be under /workspace.
//   - Cmd.Timeout, cancelling Start's ctx and Process.Signal run
//     kill -s SIG -- -PGID through exec; a timed-out command reports
//     TimedOut, a command killed by a signal this process sent reports Code
//     -1 and the signal.
//   - Command output is UTF-8 text: the bridge decodes it into a JavaScript
//     string before encoding it, so invalid bytes arrive as U+FFFD
//     (Capabilities.TextOutput). Write binary output to a file and read it.
//   - PTY: GET …/pty, a WebSocket. The bridge starts a shell, not a
//     command, so the adapter types one line into /bin/sh (echo off, a
//     marker with a random token and the pid, cd, exec env … ARGV) and drops
//     the terminal's output up to the marker; Cmd.Stdin is sent as
//     keystrokes afterwards (EOF as ^D); Resize sends the bridge's resize
//     frame. Closing the WebSocket does not end the program on the bridge,
//     so cancellation kills it as above.
//   - Files under /workspace only (others are ErrNotSupported): ReadFile is
//     GET …/file/…, streamed and byte-exact. WriteFile reads r whole into a
//     temporary file on this host first (a failing r sends nothing), checks
//     the parent directory with a command, uploads with PUT …/file/… under a
//     temporary name beside the target, in parts of at most 32 MiB (the
//     bridge's limit; [Client.WriteFile] refuses a larger body before
//     sending anything), and renames the result over the target after
//     chmod. These run as commands in the sandbox (GNU coreutils and sh):
//     Stat, Remove, RemoveAll and Rename (the shared shell scripts of the
//     portable layer's providers), ReadDir (find and stat, which keeps
//     names that are not UTF-8, as U+FFFD), MkdirAll (mkdir -m) and
//     WriteFile's parent check, join and rename. RemoveAll("/workspace")
//     empties it; /workspace cannot be renamed. The bridge's path check is lexical: a symbolic
//     link made by a command can lead a file route outside /workspace
//     inside the container.
//   - Expose: POST …/tunnel/PORT, an ephemeral https://….trycloudflare.com
//     quick tunnel (HTTP, ports 1024–65535); [ExposeNamed] asks for a
//     named tunnel. Tunnel.Close deletes it; its As fills a *[TunnelInfo].
//   - Not supported, each returning ErrNotSupported with the reason: Stdin
//     without a TTY, Dial, Pause, Snapshot (see Persist and Hydrate, which
//     keep only /workspace, in this host's hands), ExtendTimeout,
//     UpdateNetwork, Spec.Network other than NetworkOpen (see Egress),
//     Spec.Image, RootFS and Resources (set when the Worker is deployed),
//     files outside /workspace.
//
// Spec.Timeout is enforced by the Provider that created the sandbox, while
// it is open: the bridge has no time to live.
//
// # Escape hatches
//
// The portable types' As reach this package's types: a *sandbox.Provider
// fills a **[Provider] or a **[Client]; a *sandbox.Sandbox fills a
// **[Sandbox] (for [Sandbox.Session]) or a **[Client]; a tunnel fills a
// *[TunnelInfo]. [Provider.Client] and [Sandbox.Client] return the bridge
// [Client] for the routes the adapter does not use (pool management, bucket
// mounts, sessions). Errors wrap *[APIError] (status, the bridge's code and
// message) for errors.As.
package cloudflare
