// Package daytona is the Perimeter provider for Daytona: stateful sandboxes
// on Daytona's runners, driven through Daytona's control API and each
// sandbox's toolbox API (v0.190.0) with a plain net/http client. Daytona's
// Go SDK is not used (see docs/daytona.md).
//
// # URLs
//
// Importing the package registers the scheme "daytona":
//
//	import _ "github.com/perimeter-sdk/perimeter/providers/daytona"
//
//	p, err := sandbox.Open(ctx, "daytona://")    // Daytona's default region
//	p, err := sandbox.Open(ctx, "daytona://eu")  // sandboxes in target "eu"
//
// The query parameter "endpoint" replaces the API's base URL (for a
// self-hosted Daytona or the fake in [daytonafake]); any other parameter,
// a path or credentials in the URL are refused. In code, use [New] with
// [Options]: it returns the portable *sandbox.Provider, which checks
// arguments, applies the contract's defaults and refuses calls after Close
// or Terminate before this driver sees them; [NewDriver] returns the driver
// itself, for sandbox.NewProvider with hooks.
//
// # Credentials
//
// As Daytona's own tools read them, never from the URL: DAYTONA_API_KEY,
// or DAYTONA_JWT_TOKEN with DAYTONA_ORGANIZATION_ID (sent as
// X-Daytona-Organization-ID, with a JWT only); the API's address from
// DAYTONA_API_URL, else DAYTONA_SERVER_URL, else https://app.daytona.io/api;
// the region from DAYTONA_TARGET unless the URL names one. Every request
// carries "Authorization: Bearer …" and X-Daytona-SDK-Version (the daemon
// picks its output formats from it). Network errors, 5xx and 429 are
// retried three times with a backoff from 250ms doubling (randomised); a
// POST that may have reached Daytona (create, exec, upload) is retried only
// when it cannot have run (a refused connection, a 429); a 429's
// Retry-After is honoured up to 30s and a longer one fails at once. The
// http.Client has no overall timeout: each call is bounded by its ctx.
//
// # Lifecycle
//
// Create posts the sandbox and polls it until it is started (at most
// Options.StartTimeout); a sandbox that ends in error is deleted and its
// errorReason reported. Spec.Image is built as "FROM image" (a Daytona
// build), Spec.Snapshot starts from a Daytona snapshot, Resources map to
// whole cores, memory and disk in GiB (rounded up) and GPUs ("H100",
// "H100:2" or a count). Daytona has no absolute deadline, so Spec.Timeout
// is an idle bound: the sandbox auto-stops after that long (rounded up to
// minutes) without activity, and auto-deletes when it stops. Get finds a
// sandbox by ID or name; List follows Daytona's cursor pagination and
// filters by labels. Terminate deletes the sandbox.
//
// Pause stops the sandbox: Daytona keeps its filesystem and ends every
// process (it is not a memory freeze), and Info then reports StatePaused;
// Resume starts it again. A stopped or archived sandbox, whether paused
// here, found with Get, or stopped by Daytona's auto-stop while a handle is
// held, is started again by the first call that needs it; Info reports its
// state without starting it, and [Sandbox.State] gives Daytona's own name.
//
// # Capabilities
//
//   - Start runs the argv in a toolbox session: an asynchronous session
//     command whose output is followed over the logs WebSocket, with stdout
//     and stderr apart (the daemon's stream markers) and byte-exact, and
//     whose exit code is read from the command's record. Commands are not
//     bound by the API's synchronous limit. The argv runs in its own
//     session (setsid), so signals, Cmd.Timeout and cancelling Start's ctx
//     reach the whole process tree: the adapter sends kill to the process
//     group through /process/execute (Daytona has no signal endpoint). An
//     image without setsid runs commands, but Signal is refused.
//   - Cmd.Stdin is sent with the session's input endpoint, framed and
//     base64-encoded and decoded in the sandbox (POSIX sh, head -c and
//     base64 from coreutils), so binary stdin and its end reach the
//     command.
//   - Cmd.TTY runs the command on a PTY session over the toolbox
//     WebSocket; Resize goes through the REST resize endpoint. The adapter
//     types one line into the session's shell to start the argv and drops
//     what the terminal shows before the command starts.
//   - Files go through the toolbox file endpoints: ReadFile streams
//     /files/download; WriteFile uploads (streamed multipart) to a temporary
//     name, sets the permissions and moves it over the name, so the file
//     appears whole or not at all; Stat, ReadDir, MkdirAll, Remove,
//     RemoveAll and Rename map to /files/info, /files, /files/folder,
//     DELETE /files and /files/move.
//   - Expose returns a signed preview URL (valid Options.PreviewExpiry,
//     answered without headers) as the Tunnel's URL; [Tunnel.PreviewURL]
//     and [Tunnel.Header] give the plain preview URL and the
//     x-daytona-preview-token it needs. Tunnel.Close expires the signed
//     URL. HTTP only.
//   - Snapshot saves the filesystem as a Daytona snapshot named
//     "perimeter-ID-…" and waits for it to be active; Spec.Snapshot starts
//     from it.
//   - Network modes none (networkBlockAll), allowlist (CIDRs to
//     networkAllowList, domain names to domainAllowList) and open, and
//     UpdateNetwork (POST …/network-settings). A nil Spec.Network is none,
//     as on every provider; Info.Isolation ends with the effective egress
//     ("network: none", "allowlist" or "open").
//   - Not supported: Dial, ExtendTimeout (Daytona's bounds are idle
//     intervals, not a deadline), Resources.PIDs, fractional CPUs,
//     Spec.RootFS, protocols other than HTTP for Expose, and the setuid,
//     setgid and sticky bits in WriteFile and MkdirAll (the daemon applies
//     only the 0777 bits of a mode).
//
// Output containing the daemon's marker byte sequences \x01\x01\x01 or
// \x02\x02\x02 is split at them as the daemon frames it.
//
// # Escape hatches
//
// [CreateWith] takes Daytona's own settings ([CreateOptions]: name, user,
// public previews, target, Dockerfile, auto-stop, auto-archive and
// auto-delete intervals). As on the portable types reaches this package's
// own:
//
//   - (*sandbox.Provider).As accepts **daytona.Provider (the driver) and
//     **daytona.Client (the authenticated, retrying [Client] for any other
//     endpoint of the control or toolbox API);
//   - (*sandbox.Sandbox).As accepts **daytona.Sandbox, which has
//     [Sandbox.State] and [Sandbox.Name];
//   - the sandbox.Tunnel from Expose: As accepts **daytona.Tunnel, which has
//     [Tunnel.PreviewURL], [Tunnel.Header] and [Tunnel.Expires].
//
// Processes have no driver-specific type. Errors wrap *[APIError] (status, code, message, and whether
// the daemon or the API answered) for errors.As.
package daytona
