// Package vercel is the Perimeter provider for Vercel Sandbox: Firecracker
// microVMs driven through Vercel's REST API (v2), with a plain net/http
// client and no SDK.
//
// # URLs
//
// Importing the package registers the scheme "vercel":
//
//	import _ "github.com/perimeter-sdk/perimeter/providers/vercel"
//
//	p, err := sandbox.Open(ctx, "vercel://TEAM_ID/PROJECT_ID")
//
// Both parts may be left out ("vercel://") to take them from the
// environment. The query parameter "endpoint" replaces the API's base URL
// (https://api.vercel.com), for a proxy or the fake in [vercelfake]. In code,
// use [New] with [Options].
//
// # Credentials
//
// Never in the URL. In order:
//
//   - [Options.Token], any [TokenSource] (asked before every request, so a
//     long-lived host can refresh it), with Options.TeamID and ProjectID;
//   - VERCEL_TOKEN, an access token, with VERCEL_TEAM_ID and
//     VERCEL_PROJECT_ID (or the team and project from the URL);
//   - VERCEL_OIDC_TOKEN, the OIDC token Vercel issues to deployments and
//     `vercel env pull`; its owner_id and project_id claims give the team
//     and project unless the URL does. The variable is read again on every
//     request, and an expired token is refused with ErrPermissionDenied
//     rather than sent.
//
// Every request carries "Authorization: Bearer …" and teamId; retries
// follow Vercel's SDK: network errors, 5xx and 429 are retried twice with a
// backoff from 400ms doubling (randomised), a 429's Retry-After is honoured
// up to 20s and a longer one fails at once, and no other 4xx is retried.
//
// # Sandboxes and sessions
//
// A Vercel sandbox is a name (the Perimeter ID) that owns a series of
// sessions (VMs). Sandboxes are created persistent: stopping a session
// (its timeout, [Sandbox.Stop], or a snapshot) keeps the files, and the next
// call that needs a running session resumes the sandbox (GET ?resume=true)
// and is retried once on the new session, as the SDK does for a 410 or a
// 422 "sandbox_stopping"/"sandbox_snapshotting". Processes never survive a
// stop.
//
// # Capabilities
//
//   - Start: POST …/cmd with wait and logs, whose NDJSON stream
//     (application/x-ndjson) carries stdout and stderr apart as they are
//     produced. A stream that drops is resumed from the logs route, skipping
//     what was delivered, and the exit code is fetched; if that fails too,
//     Wait returns an ErrUnavailable error saying output was lost — never a
//     silently short output. Output travels as JSON strings: valid UTF-8 is
//     exact, other bytes arrive as U+FFFD.
//   - Cmd.Timeout is sent to the sandbox, which kills the command with
//     SIGKILL. Cmd.TTY runs the command on Vercel's interactive PTY
//     WebSocket, which also carries Cmd.Stdin; without a TTY, Vercel has no
//     stdin, so Capabilities.Stdin is false. A missing program exits 127.
//   - Signal: POST …/cmd/{id}/kill with the signal's number. A command
//     killed by a signal this process sent reports Code -1 and the signal;
//     the sandbox itself reports 128+n.
//   - Files: ReadFile is POST …/fs/read (streamed, byte-exact); WriteFile is
//     POST …/fs/write with a gzip-compressed tar, built after r is read
//     whole into a temporary file on this host, so a failing r sends
//     nothing. These operations have no API and run as POSIX sh scripts in
//     the sandbox (internal/shellfs: stat, mkdir -m for every new directory,
//     rm, rmdir, mv), and WriteFile's check that the parent exists (test
//     -d).
//   - Expose: the route of a port ("https://…vercel.run"); a port not in
//     Spec.Ports is added with PATCH. HTTP only. Tunnel.Close removes the
//     port (PATCH), which withdraws its route.
//   - Snapshot (which stops the session, as on Vercel), Spec.Snapshot,
//     ExtendTimeout, UpdateNetwork and the network modes none (deny-all),
//     allowlist (domains, and CIDRs as subnets) and open (allow-all).
//   - Not supported: Stdin without a TTY, Dial, Pause (a Vercel stop ends every
//     process, so it is not the contract's pause; [Sandbox.Stop] is there
//     as Vercel's own operation), Resources other than whole vCPUs (memory
//     is 2048 MB per vCPU), Spec.RootFS.
//
// A nil Spec.Network is the network mode none (deny-all), as on every
// provider. The client retries only idempotent requests (network errors,
// 5xx, 429 with a bounded Retry-After): a command start, a creation, a
// snapshot or a timeout extension is sent once, so it never happens twice.
//
// Spec.Workdir is created with mkdir -p and used as the default directory of
// commands and relative file names; it is not stored with the sandbox, so a
// handle from [Provider.Get] uses the session's own cwd.
//
// # Escape hatches
//
// [CreateWith] takes Vercel's own settings ([CreateOptions]: name, git or
// tarball source, legacy runtime, persistence, regions). As on the portable
// types reaches this package's own:
//
//   - (*sandbox.Provider).As accepts **vercel.Provider (the driver) and
//     **vercel.Client (the authenticated, retrying client for any other
//     endpoint);
//   - (*sandbox.Sandbox).As accepts **vercel.Sandbox, which has
//     [Sandbox.Stop], [Sandbox.SessionID] and [Sandbox.Routes].
//
// Errors wrap *[APIError] (status, code, message) for errors.As.
package vercel
