package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// allChecks is the battery, in running order. IDs are stable API: add checks,
// never rename them.
var allChecks = []check{
	{CheckInfo{"lifecycle/create", MUST, "Create returns a running sandbox whose Info carries its ID and labels"}, checkCreate},
	{CheckInfo{"lifecycle/get", MUST, "Get finds a sandbox by ID and the handle runs commands"}, checkGet},
	{CheckInfo{"lifecycle/list-labels", MUST, "List selects exactly the sandboxes carrying the given labels"}, checkListLabels},
	{CheckInfo{"lifecycle/terminate-idempotent", MUST, "Terminate twice returns nil both times"}, checkTerminateTwice},
	{CheckInfo{"lifecycle/after-terminate", MUST, "every operation on a terminated sandbox fails with ErrTerminated or ErrNotFound"}, checkAfterTerminate},
	{CheckInfo{"lifecycle/terminate-stops-processes", MUST, "Terminate kills the commands running in the sandbox"}, checkTerminateStops},
	{CheckInfo{"lifecycle/gone-after-terminate", MUST, "Get of a terminated sandbox is ErrNotFound and List no longer yields it as live"}, checkGoneAfterTerminate},
	{CheckInfo{"lifecycle/close-keeps-sandboxes", MUST, "Provider.Close leaves its sandboxes running (n/a without Harness.Open)"}, checkCloseKeeps},
	{CheckInfo{"lifecycle/timeout", MUST, "Spec.Timeout terminates the sandbox at its reported Expires (n/a when refused)"}, checkTTL},
	{CheckInfo{"lifecycle/spec-unsupported", MUST, "Spec fields the provider cannot honour are refused, never ignored"}, checkSpecUnsupported},
	{CheckInfo{"lifecycle/workdir", MUST, "Spec.Workdir is the working directory of commands and relative file names"}, checkWorkdir},

	{CheckInfo{"exec/exit-codes", MUST, "exit codes 0, 1, 42 and 127 (command not found) are results, not errors"}, checkExitCodes},
	{CheckInfo{"exec/stdout-stderr", MUST, "stdout and stderr are kept apart and byte-exact (UTF-8 text where TextOutput is declared)"}, checkStdoutStderr},
	{CheckInfo{"exec/stdin", MUST, "1 MiB of random stdin is echoed back byte-exact (or ErrNotSupported when unclaimed)"}, checkStdin},
	{CheckInfo{"exec/env", MUST, "Spec.Env and Cmd.Env reach the command, Cmd.Env winning, values holding '=' intact"}, checkEnv},
	{CheckInfo{"exec/env-host", MUST, "the environment of the process running the suite does not reach commands"}, checkEnvHost},
	{CheckInfo{"exec/env-override", MUST, "PATH and HOME from Spec.Env and Cmd.Env win over the provider's defaults"}, checkEnvOverride},
	{CheckInfo{"exec/stdin-nil", MUST, "a nil Cmd.Stdin reads as empty"}, checkStdinNil},
	{CheckInfo{"exec/wait-twice", MUST, "Wait, called concurrently or again, returns the same status"}, checkWaitTwice},
	{CheckInfo{"exec/wait-ctx", MUST, "Wait's ctx bounds only the waiting: the process keeps running"}, checkWaitCtx},
	{CheckInfo{"exec/dir", MUST, "Cmd.Dir and the default working directory agree with relative file names"}, checkDir},
	{CheckInfo{"exec/invalid", MUST, "an empty argv is ErrInvalidArgument"}, checkInvalidCmd},
	{CheckInfo{"exec/concurrent", MUST, "16 concurrent commands in one sandbox each get their own output"}, checkConcurrent},
	{CheckInfo{"exec/cancel-kills-tree", MUST, "cancelling Start's context kills the whole process tree, promptly"}, checkCancel},
	{CheckInfo{"exec/timeout", MUST, "Cmd.Timeout kills the process tree and sets ExitStatus.TimedOut"}, checkTimeout},
	{CheckInfo{"exec/large-output", MUST, "50 MiB of output is streamed while the command runs, byte-exact in count"}, checkLargeOutput},
	{CheckInfo{"exec/signal", MUST, "Process.Signal delivers SIGTERM (or ErrNotSupported when unclaimed)"}, checkSignal},
	{CheckInfo{"exec/signal-group", MUST, "SIGUSR1, SIGHUP and SIGUSR2 arrive as themselves at the command and the children in its process group"}, checkSignalGroup},

	{CheckInfo{"files/binary-roundtrip", MUST, "binary data with NUL bytes survives WriteFile, ReadFile and cat"}, checkBinaryRoundtrip},
	{CheckInfo{"files/large", MUST, "a 64 MiB file streams in and out byte-exact"}, checkLargeFile},
	{CheckInfo{"files/overwrite", MUST, "WriteFile replaces a longer file's whole content"}, checkOverwrite},
	{CheckInfo{"files/not-found", MUST, "missing files are ErrNotFound for every operation"}, checkNotFound},
	{CheckInfo{"files/fresh-read", MUST, "ReadFile and Stat see a change a command made, not a cached copy"}, checkFreshRead},
	{CheckInfo{"files/empty-write", MUST, "WriteFile with no data creates or empties the file"}, checkEmptyWrite},
	{CheckInfo{"files/modtime", MUST, "Stat and ReadDir report modification times"}, checkModTime},
	{CheckInfo{"files/stat-no-follow", MUST, "Stat describes a final symbolic link itself"}, checkStatNoFollow},
	{CheckInfo{"files/readdir", MUST, "ReadDir lists every entry, dotfiles included, sorted by name"}, checkReadDir},
	{CheckInfo{"files/mkdir-perm", MUST, "MkdirAll applies perm to each directory it creates and leaves existing ones alone"}, checkMkdirPerm},
	{CheckInfo{"files/ops", MUST, "MkdirAll, ReadDir, Stat, Rename, Remove and RemoveAll behave as documented"}, checkFileOps},
	{CheckInfo{"files/perm", MUST, "WriteFile applies perm"}, checkPerm},
	{CheckInfo{"files/atomic-write", MUST, "a WriteFile whose reader fails leaves the old content"}, checkAtomicWrite},
	{CheckInfo{"files/dotdot", MUST, "names with a \"..\" element or empty are ErrInvalidArgument"}, checkDotDot},
	{CheckInfo{"files/symlink-escape", MUST, "symbolic links do not let the file methods reach files outside the sandbox"}, checkSymlinkEscape},

	{CheckInfo{"errors/unknown-id", MUST, "Get of an unknown ID is ErrNotFound"}, checkUnknownID},
	{CheckInfo{"errors/message", MUST, "errors are *sandbox.Error naming provider, sandbox and operation"}, checkErrorMessage},
	{CheckInfo{"errors/native", MUST, "the provider's native error is reachable with errors.As"}, checkNativeError},

	{CheckInfo{"ports/expose", MUST, "Expose's URL reaches the port asked for, Tunnel.Close withdraws it, unknown protocols are refused (or ErrNotSupported when unclaimed)"}, checkExpose},
	{CheckInfo{"ports/dial", MUST, "Dial reaches the port asked for inside the sandbox (or ErrNotSupported when unclaimed)"}, checkDial},
	{CheckInfo{"pty/run", MUST, "Cmd.TTY runs the command on a terminal of the given size (or ErrNotSupported when unclaimed)"}, checkPTY},
	{CheckInfo{"pty/term", MUST, "TTY.Term (default xterm-256color) is the command's TERM"}, checkPTYTerm},
	{CheckInfo{"pty/resize", MUST, "Resize changes a running terminal's size (or ErrNotSupported when unclaimed)"}, checkPTYResize},
	{CheckInfo{"network/none", MUST, "NetworkNone blocks a connection to a listener outside the sandbox (or ErrNotSupported when unclaimed)"}, checkNetworkNone},
	{CheckInfo{"network/allowlist", MUST, "NetworkAllowlist blocks a destination not on the list (or ErrNotSupported when unclaimed)"}, checkNetworkAllowlist},
	{CheckInfo{"network/open", MUST, "NetworkOpen is accepted when claimed (or ErrNotSupported when unclaimed)"}, checkNetworkOpen},
	{CheckInfo{"network/update", MUST, "UpdateNetwork works when claimed (or ErrNotSupported when unclaimed)"}, checkUpdateNetwork},
	{CheckInfo{"caps/pause", MUST, "Pause and Resume keep the sandbox working (or ErrNotSupported when unclaimed)"}, checkPause},
	{CheckInfo{"caps/snapshot", MUST, "a snapshot restores the files into a new sandbox (or ErrNotSupported when unclaimed)"}, checkSnapshot},
	{CheckInfo{"caps/extend-timeout", MUST, "ExtendTimeout moves the real deadline later, not only Info.Expires (or ErrNotSupported when unclaimed)"}, checkExtendTimeout},
}

// ---- lifecycle

func checkCreate(c *C) {
	sb := c.NewSandbox(func(s *sandbox.Spec) { s.Labels["conformance.extra"] = "yes" })
	if sb.ID() == "" {
		c.Fatalf("ID() is empty")
	}
	info, err := sb.Info(c.ctx)
	if err != nil {
		c.Fatalf("Info: %v", err)
	}
	if info.ID != sb.ID() {
		c.Errorf("Info.ID = %q, want %q", info.ID, sb.ID())
	}
	if info.Provider == "" {
		c.Errorf("Info.Provider is empty")
	}
	if info.State != sandbox.StateRunning {
		c.Errorf("Info.State = %q, want %q", info.State, sandbox.StateRunning)
	}
	if info.Labels["conformance.extra"] != "yes" || info.Labels[LabelRun] != c.r.runID {
		c.Errorf("Info.Labels = %v, want the labels given to Create", info.Labels)
	}
	if info.Isolation == "" {
		c.Errorf("Info.Isolation is empty: a provider must say what isolates its sandboxes")
	}
}

func checkGet(c *C) {
	sb := c.NewSandbox(nil)
	c.writeFile(sb, "get-marker", []byte("written through the first handle"))
	got, err := c.r.h.Provider.Get(c.ctx, sb.ID())
	if err != nil {
		c.Fatalf("Get(%q): %v", sb.ID(), err)
	}
	if got.ID() != sb.ID() {
		c.Errorf("Get(%q).ID() = %q", sb.ID(), got.ID())
	}
	out := c.sh(got, "cat get-marker")
	if out != "written through the first handle" {
		c.Errorf("through the handle from Get, cat get-marker = %q", out)
	}
}

func checkListLabels(c *C) {
	a := c.NewSandbox(func(s *sandbox.Spec) { s.Labels["conformance.pick"] = "a" })
	b := c.NewSandbox(func(s *sandbox.Spec) { s.Labels["conformance.pick"] = "b" })
	ab := c.NewSandbox(func(s *sandbox.Spec) { s.Labels["conformance.pick"] = "ab" })
	seen := map[string]bool{}
	for info, err := range c.r.h.Provider.List(c.ctx, &sandbox.ListOptions{
		Labels: map[string]string{LabelRun: c.r.runID, "conformance.pick": "a"},
	}) {
		if err != nil {
			c.Fatalf("List: %v", err)
		}
		seen[info.ID] = true
		if info.Labels["conformance.pick"] != "a" {
			c.Errorf("List by label yielded %s with labels %v", info.ID, info.Labels)
		}
	}
	if !seen[a.ID()] {
		c.Errorf("List by label did not yield %s, which carries the label", a.ID())
	}
	if seen[b.ID()] {
		c.Errorf("List by label yielded %s, which carries another value", b.ID())
	}
	if seen[ab.ID()] {
		c.Errorf("List by label conformance.pick=a yielded %s, which carries conformance.pick=ab: match label values exactly, not by prefix", ab.ID())
	}
}

func checkTerminateTwice(c *C) {
	sb := c.NewSandbox(nil)
	// A second handle reaches the provider when the sandbox is already
	// gone (the first handle's own second call is answered by the
	// portable layer).
	other, err := c.r.h.Provider.Get(c.ctx, sb.ID())
	if err != nil {
		c.Fatalf("Get: %v", err)
	}
	if err := sb.Terminate(c.ctx); err != nil {
		c.Fatalf("first Terminate: %v", err)
	}
	if err := sb.Terminate(c.ctx); err != nil {
		c.Errorf("second Terminate: %v, want nil (Terminate is idempotent)", err)
	}
	if err := other.Terminate(c.ctx); err != nil {
		c.Errorf("Terminate through a second handle: %v, want nil (Terminate is idempotent)", err)
	}
}

func checkAfterTerminate(c *C) {
	sb := c.NewSandbox(nil)
	c.writeFile(sb, "before", []byte("x"))
	if err := sb.Terminate(c.ctx); err != nil {
		c.Fatalf("Terminate: %v", err)
	}
	gone := []error{sandbox.ErrTerminated, sandbox.ErrNotFound}
	_, err := sb.Start(c.ctx, &sandbox.Cmd{Args: []string{"true"}})
	c.wantKind("Start after Terminate", err, gone...)
	_, err = sb.ReadFile(c.ctx, "before")
	c.wantKind("ReadFile after Terminate", err, gone...)
	err = sb.WriteFile(c.ctx, "after", strings.NewReader("x"), 0o644)
	c.wantKind("WriteFile after Terminate", err, gone...)
	_, err = sb.Stat(c.ctx, "before")
	c.wantKind("Stat after Terminate", err, gone...)
	_, err = sb.ReadDir(c.ctx, ".")
	c.wantKind("ReadDir after Terminate", err, gone...)
	c.wantKind("MkdirAll after Terminate", sb.MkdirAll(c.ctx, "d", 0o755), gone...)
	c.wantKind("Remove after Terminate", sb.Remove(c.ctx, "before"), gone...)
	c.wantKind("Rename after Terminate", sb.Rename(c.ctx, "before", "b2"), gone...)
	_, err = sb.Expose(c.ctx, 8080, nil)
	c.wantKind("Expose after Terminate", err, append(gone, sandbox.ErrNotSupported)...)
	if info, err := sb.Info(c.ctx); err == nil {
		if info.State != sandbox.StateTerminated && info.State != sandbox.StateStopped {
			c.Errorf("Info after Terminate: State = %q, want an error or state terminated", info.State)
		}
	} else {
		c.wantKind("Info after Terminate", err, gone...)
	}
	if got, err := c.r.h.Provider.Get(c.ctx, sb.ID()); err == nil {
		_, err := got.Start(c.ctx, &sandbox.Cmd{Args: []string{"true"}})
		c.wantKind("Start through Get after Terminate", err, gone...)
	} else {
		c.wantKind("Get after Terminate", err, gone...)
	}
}

// ---- exec

func checkExitCodes(c *C) {
	sb := c.NewSandbox(nil)
	for _, code := range []int{0, 1, 42} {
		res, err := sandbox.Run(c.ctx, sb, &sandbox.Cmd{Args: []string{"sh", "-c", fmt.Sprintf("exit %d", code)}}, nil)
		if err != nil {
			c.Errorf("sh -c 'exit %d': error %v, want a result", code, err)
			continue
		}
		if res.Status.Code != code {
			c.Errorf("sh -c 'exit %d': status %+v", code, res.Status)
		}
	}
	res, err := sandbox.Run(c.ctx, sb, &sandbox.Cmd{Args: []string{"perimeter-conformance-no-such-command"}}, nil)
	if err != nil {
		c.Errorf("a command that does not exist: error %v; report it as a shell does, as exit code 127, not an error", err)
	} else if res.Status.Code != 127 {
		c.Errorf("a command that does not exist: status %+v, want exit code 127", res.Status)
	}
	if err := sb.WriteFile(c.ctx, "not-executable", strings.NewReader("#!/bin/sh\necho ran\n"), 0o644); err != nil {
		c.Fatalf("WriteFile: %v", err)
	}
	res, err = sandbox.Run(c.ctx, sb, &sandbox.Cmd{Args: []string{"./not-executable"}}, nil)
	if err != nil {
		c.Errorf("a file without execute permission: error %v; report it as a shell does, as exit code 126, not an error", err)
	} else if res.Status.Code != 126 {
		c.Errorf("a file without execute permission: status %+v (stdout %q), want exit code 126", res.Status, res.Stdout)
	}
}

func checkStdoutStderr(c *C) {
	sb := c.NewSandbox(nil)
	res := c.run(sb, &sandbox.Cmd{Args: []string{"sh", "-c",
		`printf 'out\000\001\377line\n'; printf 'err\376\000\n' >&2; printf 'more-out'`}})
	if !res.Status.Success() {
		c.Fatalf("status %v, stderr %q", res.Status, res.Stderr)
	}
	if want := c.output(sb, "out\x00\x01\xffline\nmore-out"); string(res.Stdout) != want {
		c.Errorf("stdout = %q, want %q", res.Stdout, want)
	}
	if want := c.output(sb, "err\xfe\x00\n"); string(res.Stderr) != want {
		c.Errorf("stderr = %q, want %q", res.Stderr, want)
	}
}

func checkStdin(c *C) {
	sb := c.NewSandbox(nil)
	data := randomBytes(1, 1<<20)
	cmd := &sandbox.Cmd{Args: []string{"cat"}, Stdin: bytes.NewReader(data)}
	if !sb.Capabilities().Stdin {
		_, err := sb.Start(c.ctx, cmd)
		c.wantKind("Start with Stdin, Stdin unclaimed", err, sandbox.ErrNotSupported)
		c.unclaimed("Stdin")
	}
	res := c.run(sb, cmd)
	if !res.Status.Success() {
		c.Fatalf("cat: %v, stderr %q", res.Status, res.Stderr)
	}
	if !bytes.Equal(res.Stdout, data) {
		c.Errorf("cat echoed %d bytes, want the %d bytes given, byte-exact (first difference at %d)",
			len(res.Stdout), len(data), firstDiff(res.Stdout, data))
	}
}

// output returns what a command printing want delivers: want itself, or,
// for a provider declaring Capabilities.TextOutput, want with each invalid
// UTF-8 byte replaced by U+FFFD.
func (c *C) output(sb *sandbox.Sandbox, want string) string {
	if !sb.Capabilities().TextOutput {
		return want
	}
	var b strings.Builder
	for i := 0; i < len(want); {
		r, n := utf8.DecodeRuneInString(want[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(want[i : i+n])
		}
		i += n
	}
	return b.String()
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func checkEnv(c *C) {
	sb := c.NewSandbox(func(s *sandbox.Spec) {
		s.Env = map[string]string{"PERIMETER_A": "from spec", "PERIMETER_B": "from spec", "PERIMETER_D": "k=v==spec"}
	})
	odd := "spaces, 'quotes', \"double\", $dollar, a=b=c and\nnewline"
	res := c.run(sb, &sandbox.Cmd{
		Args: []string{"sh", "-c", `printf '%s|%s|%s|%s' "$PERIMETER_A" "$PERIMETER_B" "$PERIMETER_C" "$PERIMETER_D"`},
		Env:  map[string]string{"PERIMETER_B": "from cmd", "PERIMETER_C": odd},
	})
	if want := "from spec|from cmd|" + odd + "|k=v==spec"; string(res.Stdout) != want {
		c.Errorf("environment seen by the command = %q, want %q (Spec.Env, then Cmd.Env winning, values byte-exact)", res.Stdout, want)
	}
}

func checkDir(c *C) {
	sb := c.NewSandbox(nil)
	if err := sb.MkdirAll(c.ctx, "dir-check/sub", 0o755); err != nil {
		c.Fatalf("MkdirAll: %v", err)
	}
	c.run(sb, &sandbox.Cmd{Args: []string{"sh", "-c", "echo in-sub > marker"}, Dir: "dir-check/sub"})
	if got := c.mustRead(sb, "dir-check/sub/marker"); string(got) != "in-sub\n" {
		c.Errorf("a file written in Cmd.Dir dir-check/sub reads back as %q", got)
	}
	c.run(sb, &sandbox.Cmd{Args: []string{"sh", "-c", "echo in-default > default-marker"}})
	if got := c.mustRead(sb, "default-marker"); string(got) != "in-default\n" {
		c.Errorf("a file written in the default directory reads back as %q", got)
	}
	_, err := sb.Start(c.ctx, &sandbox.Cmd{Args: []string{"true"}, Dir: "no-such-dir"})
	if err == nil {
		c.Errorf("Start with a missing Cmd.Dir: no error")
	}
}

func checkInvalidCmd(c *C) {
	sb := c.NewSandbox(nil)
	_, err := sb.Start(c.ctx, &sandbox.Cmd{})
	c.wantKind("Start with empty Args", err, sandbox.ErrInvalidArgument)
}

func checkConcurrent(c *C) {
	sb := c.NewSandbox(nil)
	const n = 16
	var wg sync.WaitGroup
	errs := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := fmt.Sprintf("job-%d", i)
			res, err := sandbox.Run(c.ctx, sb, &sandbox.Cmd{
				Args: []string{"sh", "-c", `sleep 0.2; printf '%s' "$JOB"; printf '%s' "$JOB" >&2`},
				Env:  map[string]string{"JOB": want},
			}, nil)
			switch {
			case err != nil:
				errs[i] = err.Error()
			case !res.Status.Success():
				errs[i] = res.Status.String()
			case string(res.Stdout) != want || string(res.Stderr) != want:
				errs[i] = fmt.Sprintf("got stdout %q stderr %q, want %q", res.Stdout, res.Stderr, want)
			}
		}()
	}
	wg.Wait()
	for i, e := range errs {
		if e != "" {
			c.Errorf("command %d of %d: %s", i, n, e)
		}
	}
	// Two commands that each wait for the other: they finish only if they
	// run at the same time.
	var pair [2]*sandbox.Result
	var pairErr [2]error
	for i, me := range []string{"a", "b"} {
		other := map[string]string{"a": "b", "b": "a"}[me]
		wg.Add(1)
		go func() {
			defer wg.Done()
			pair[i], pairErr[i] = sandbox.Run(c.ctx, sb, &sandbox.Cmd{
				Args:    []string{"sh", "-c", "touch rendezvous-" + me + "; while [ ! -e rendezvous-" + other + " ]; do sleep 0.05; done"},
				Timeout: 30 * time.Second,
			}, nil)
		}()
	}
	wg.Wait()
	for i := range pair {
		switch {
		case pairErr[i] != nil:
			c.Errorf("rendezvous command %d: %v", i, pairErr[i])
		case pair[i].Status.TimedOut:
			c.Errorf("two commands that wait for each other did not run at the same time (one waited 30s for the other): commands in a sandbox must not be serialised")
			return
		case !pair[i].Status.Success():
			c.Errorf("rendezvous command %d: %v, stderr %q", i, pair[i].Status, pair[i].Stderr)
		}
	}
}

// heartbeat is a process tree (a shell and a background subshell) whose
// subshell appends to file every 100ms until killed.
func heartbeat(file string) []string {
	return []string{"sh", "-c", `(while :; do echo . >> ` + file + `; sleep 0.1; done) & while :; do sleep 1; done`}
}

// checkStopped fails the check if file is still growing.
func (c *C) checkStopped(sb *sandbox.Sandbox, file, what string) {
	fi1, err := sb.Stat(c.ctx, file)
	if err != nil {
		c.Fatalf("Stat %s: %v", file, err)
	}
	time.Sleep(1500 * time.Millisecond)
	fi2, err := sb.Stat(c.ctx, file)
	if err != nil {
		c.Fatalf("Stat %s: %v", file, err)
	}
	if fi2.Size != fi1.Size {
		c.Errorf("%s: a background child of the command is still running (%s grew from %d to %d bytes)",
			what, file, fi1.Size, fi2.Size)
	}
}

func (c *C) waitHeartbeat(sb *sandbox.Sandbox, file string) {
	if !c.eventually(2*time.Minute, func() bool {
		fi, err := sb.Stat(c.ctx, file)
		return err == nil && fi.Size > 2
	}) {
		c.Fatalf("the test command never wrote %s within 2m (a shell loop appending to it every 100ms)", file)
	}
}

func checkCancel(c *C) {
	sb := c.NewSandbox(nil)
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	p, err := sb.Start(ctx, &sandbox.Cmd{Args: heartbeat("cancel-beat")})
	if err != nil {
		c.Fatalf("Start: %v", err)
	}
	c.waitHeartbeat(sb, "cancel-beat")
	cancel()
	wctx, wcancel := context.WithTimeout(c.ctx, time.Minute)
	defer wcancel()
	_, err = p.Wait(wctx)
	if wctx.Err() != nil {
		c.Fatalf("Wait did not return within 1m of cancelling Start's context: cancelling it must kill the command")
	}
	if !errors.Is(err, context.Canceled) {
		c.Errorf("Wait after cancel: %v, want context.Canceled", err)
	}
	c.checkStopped(sb, "cancel-beat", "after cancel")
}

func checkTimeout(c *C) {
	sb := c.NewSandbox(nil)
	// The heartbeat's background child must have started before the timeout
	// for the check to prove the whole tree is killed. On a loaded machine it
	// may not have within 2s, so the timeout doubles until it has.
	for timeout := 2 * time.Second; ; timeout *= 2 {
		file := fmt.Sprintf("timeout-beat-%d", timeout/time.Second)
		start := time.Now()
		p, err := sb.Start(c.ctx, &sandbox.Cmd{Args: heartbeat(file), Timeout: timeout})
		if err != nil {
			c.Fatalf("Start: %v", err)
		}
		wctx, wcancel := context.WithTimeout(c.ctx, timeout+30*time.Second)
		st, err := p.Wait(wctx)
		waitErr := wctx.Err()
		wcancel()
		if waitErr != nil {
			c.Fatalf("Wait did not return within 30s of a %v Cmd.Timeout", timeout)
		}
		if err != nil {
			c.Errorf("Wait: %v, want a result with TimedOut", err)
		}
		if !st.TimedOut {
			c.Errorf("status %+v after %v, want TimedOut", st, time.Since(start).Round(time.Millisecond))
		}
		if time.Since(start) < timeout {
			c.Errorf("command ended after %v, before its %v timeout", time.Since(start), timeout)
		}
		if _, err := sb.Stat(c.ctx, file); err != nil && errors.Is(err, sandbox.ErrNotFound) && timeout < 32*time.Second {
			continue // the command was killed before it wrote anything
		}
		c.checkStopped(sb, file, "after the timeout")
		return
	}
}

// countingZeros counts bytes and checks they are all zero, releasing the
// command once it has seen want bytes.
type countingZeros struct {
	n, want int64
	nonzero bool
	release func()
	once    sync.Once
}

func (w *countingZeros) Write(p []byte) (int, error) {
	for _, b := range p {
		if b != 0 {
			w.nonzero = true
			break
		}
	}
	w.n += int64(len(p))
	if w.n >= w.want {
		w.once.Do(func() { go w.release() })
	}
	return len(p), nil
}

func checkLargeOutput(c *C) {
	sb := c.NewSandbox(nil)
	const size = 50 << 20
	// The command prints 50 MiB and then waits for a file that the check
	// writes only once all of it has arrived: a provider that buffers output
	// until the command exits never delivers it, and the command times out.
	released := make(chan struct{})
	w := &countingZeros{want: size, release: func() {
		defer close(released)
		if err := sb.WriteFile(c.ctx, "release", strings.NewReader("go"), 0o644); err != nil {
			c.Errorf("WriteFile release: %v", err)
		}
	}}
	res, err := sandbox.Run(c.ctx, sb, &sandbox.Cmd{
		Args: []string{"sh", "-c", fmt.Sprintf(
			`head -c %d /dev/zero; n=0; while [ ! -e release ]; do sleep 0.1; n=$((n+1)); [ $n -gt 1200 ] && exit 9; done; exit 0`, size)},
		Stdout:  w,
		Timeout: 10 * time.Minute,
	}, &sandbox.RunOptions{OutputLimit: 1024})
	// The command ends as soon as the file appears, which may be before
	// WriteFile has returned (a provider may still be removing its
	// temporary parts): wait for it, or the sandbox's Terminate at the end
	// of the check cuts it short and the check blames the provider. A
	// WriteFile not begun by now never begins: the once is spent here.
	begun := true
	w.once.Do(func() { begun = false })
	if begun {
		<-released
	}
	if err != nil {
		c.Fatalf("Run: %v", err)
	}
	switch {
	case res.Status.TimedOut || res.Status.Code == 9:
		c.Errorf("output was not streamed while the command ran: the command waited 2m for the check to receive its %d bytes and gave up (%v): copy output to Cmd.Stdout as it is produced, not at exit", size, res.Status)
	case !res.Status.Success():
		c.Errorf("status %v, stderr %q", res.Status, res.Stderr)
	}
	if w.n != size {
		c.Errorf("received %d bytes of stdout, want %d", w.n, size)
	}
	if w.nonzero {
		c.Errorf("stdout of head -c /dev/zero had non-zero bytes")
	}
}

func checkSignal(c *C) {
	sb := c.NewSandbox(nil)
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	p, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"sleep", "60"}})
	if err != nil {
		c.Fatalf("Start: %v", err)
	}
	err = p.Signal(c.ctx, sandbox.SIGTERM)
	if !sb.Capabilities().Signal {
		c.wantKind("Signal, Signal unclaimed", err, sandbox.ErrNotSupported)
		c.unclaimed("Signal")
	}
	if err != nil {
		c.Fatalf("Signal(SIGTERM): %v", err)
	}
	wctx, wcancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer wcancel()
	st, err := p.Wait(wctx)
	if err != nil {
		c.Fatalf("Wait after SIGTERM: %v", err)
	}
	if st.Signal != sandbox.SIGTERM && st.Code != 128+15 {
		c.Errorf("status after SIGTERM = %+v, want Signal SIGTERM (or code 143)", st)
	}
	if err := p.Signal(c.ctx, sandbox.SIGTERM); err != nil {
		c.Errorf("Signal after exit: %v, want nil", err)
	}
}

// ---- files

func checkBinaryRoundtrip(c *C) {
	sb := c.NewSandbox(nil)
	var data []byte
	for range 4 {
		for b := range 256 {
			data = append(data, byte(b), 0)
		}
	}
	c.writeFile(sb, "binary.bin", data)
	if got := c.mustRead(sb, "binary.bin"); !bytes.Equal(got, data) {
		c.Errorf("ReadFile returned %d bytes, want the %d written (first difference at %d)", len(got), len(data), firstDiff(got, data))
	}
	res := c.run(sb, &sandbox.Cmd{Args: []string{"cat", "binary.bin"}})
	if want := c.output(sb, string(data)); string(res.Stdout) != want {
		c.Errorf("cat of the written file printed %d bytes, want %d (first difference at %d)",
			len(res.Stdout), len(want), firstDiff(res.Stdout, []byte(want)))
	}
	c.run(sb, &sandbox.Cmd{Args: []string{"sh", "-c", `printf 'a\000b\377' > from-exec.bin`}})
	if got := c.mustRead(sb, "from-exec.bin"); string(got) != "a\x00b\xff" {
		c.Errorf("ReadFile of a file written by a command = %q", got)
	}
}

func checkLargeFile(c *C) {
	sb := c.NewSandbox(nil)
	const size = 64 << 20
	if err := sb.WriteFile(c.ctx, "large.bin", newPRNG(7, size), 0o644); err != nil {
		c.Fatalf("WriteFile 64 MiB: %v", err)
	}
	fi, err := sb.Stat(c.ctx, "large.bin")
	if err != nil {
		c.Fatalf("Stat: %v", err)
	}
	if fi.Size != size {
		c.Errorf("Stat size = %d, want %d", fi.Size, size)
	}
	rc, err := sb.ReadFile(c.ctx, "large.bin")
	if err != nil {
		c.Fatalf("ReadFile: %v", err)
	}
	defer rc.Close()
	want := newPRNG(7, size)
	a, b := make([]byte, 1<<16), make([]byte, 1<<16)
	var off int64
	for {
		n, rerr := io.ReadFull(rc, a)
		if n > 0 {
			io.ReadFull(want, b[:n])
			if !bytes.Equal(a[:n], b[:n]) {
				c.Fatalf("content differs from what was written at offset %d", off+int64(firstDiff(a[:n], b[:n])))
			}
			off += int64(n)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			c.Fatalf("reading at offset %d: %v", off, rerr)
		}
	}
	if off != size {
		c.Errorf("ReadFile returned %d bytes, want %d", off, size)
	}
}

func checkOverwrite(c *C) {
	sb := c.NewSandbox(nil)
	c.writeFile(sb, "over.txt", []byte("a longer first version"))
	c.writeFile(sb, "over.txt", []byte("short"))
	if got := c.mustRead(sb, "over.txt"); string(got) != "short" {
		c.Errorf("after overwriting, content = %q, want %q", got, "short")
	}
}

func checkNotFound(c *C) {
	sb := c.NewSandbox(nil)
	nf := sandbox.ErrNotFound
	_, err := sb.ReadFile(c.ctx, "no-such-file")
	c.wantKind("ReadFile of a missing file", err, nf)
	_, err = sb.Stat(c.ctx, "no-such-file")
	c.wantKind("Stat of a missing file", err, nf)
	_, err = sb.ReadDir(c.ctx, "no-such-dir")
	c.wantKind("ReadDir of a missing directory", err, nf)
	c.wantKind("Remove of a missing file", sb.Remove(c.ctx, "no-such-file"), nf)
	c.wantKind("Rename of a missing file", sb.Rename(c.ctx, "no-such-file", "other"), nf)
	err = sb.WriteFile(c.ctx, "no-such-dir/file", strings.NewReader("x"), 0o644)
	c.wantKind("WriteFile into a missing directory", err, nf)
}

func checkFileOps(c *C) {
	sb := c.NewSandbox(nil)
	ctx := c.ctx
	if err := sb.MkdirAll(ctx, "ops/a/b", 0o755); err != nil {
		c.Fatalf("MkdirAll ops/a/b: %v", err)
	}
	if err := sb.MkdirAll(ctx, "ops/a/b", 0o755); err != nil {
		c.Errorf("MkdirAll of an existing directory: %v, want nil", err)
	}
	c.writeFile(sb, "ops/a/b/f1", []byte("one"))
	c.writeFile(sb, "ops/a/b/f2", []byte("two!"))
	fi, err := sb.Stat(ctx, "ops/a/b/f2")
	if err != nil {
		c.Fatalf("Stat: %v", err)
	}
	if fi.Name != "f2" || fi.Size != 4 || fi.IsDir() || !fi.Mode.IsRegular() {
		c.Errorf("Stat(ops/a/b/f2) = %+v, want name f2, size 4, a regular file", fi)
	}
	if fi, err := sb.Stat(ctx, "ops/a"); err != nil || !fi.IsDir() {
		c.Errorf("Stat(ops/a) = %+v, %v; want a directory", fi, err)
	}
	list, err := sb.ReadDir(ctx, "ops/a/b")
	if err != nil {
		c.Fatalf("ReadDir: %v", err)
	}
	if names := fileNames(list); names != "f1,f2" {
		c.Errorf("ReadDir(ops/a/b) = %s, want f1,f2 in order", names)
	}
	list, _ = sb.ReadDir(ctx, "ops")
	if len(list) != 1 || list[0].Name != "a" || !list[0].IsDir() {
		c.Errorf("ReadDir(ops) = %+v, want one directory a", list)
	}
	if err := sb.Rename(ctx, "ops/a/b/f1", "ops/moved"); err != nil {
		c.Fatalf("Rename: %v", err)
	}
	if got := c.mustRead(sb, "ops/moved"); string(got) != "one" {
		c.Errorf("renamed file reads %q", got)
	}
	if _, err := sb.Stat(ctx, "ops/a/b/f1"); !errors.Is(err, sandbox.ErrNotFound) {
		c.Errorf("Stat of a renamed-away file: %v, want ErrNotFound", err)
	}
	if err := sb.Rename(ctx, "ops/moved", "ops/a/b/f2"); err != nil {
		c.Errorf("Rename onto an existing file: %v, want it replaced", err)
	} else if got := c.mustRead(sb, "ops/a/b/f2"); string(got) != "one" {
		c.Errorf("after Rename onto f2, f2 reads %q, want %q", got, "one")
	}
	if err := sb.Remove(ctx, "ops/a"); err == nil {
		c.Errorf("Remove of a non-empty directory succeeded")
	}
	if err := sb.Remove(ctx, "ops/a/b/f2"); err != nil {
		c.Errorf("Remove of a file: %v", err)
	}
	if err := sb.Remove(ctx, "ops/a/b"); err != nil {
		c.Errorf("Remove of an empty directory: %v", err)
	}
	c.writeFile(sb, "ops/a/deep", []byte("x"))
	if err := sb.RemoveAll(ctx, "ops"); err != nil {
		c.Errorf("RemoveAll: %v", err)
	}
	if _, err := sb.Stat(ctx, "ops"); !errors.Is(err, sandbox.ErrNotFound) {
		c.Errorf("Stat after RemoveAll: %v, want ErrNotFound", err)
	}
	if err := sb.RemoveAll(ctx, "ops"); err != nil {
		c.Errorf("RemoveAll of a missing tree: %v, want nil", err)
	}
	_, err = sb.ReadFile(ctx, ".")
	c.wantKind("ReadFile of a directory", err, sandbox.ErrInvalidArgument)
}

func fileNames(list []sandbox.FileInfo) string {
	names := make([]string, len(list))
	for i, fi := range list {
		names[i] = fi.Name
	}
	return strings.Join(names, ",")
}

func checkPerm(c *C) {
	sb := c.NewSandbox(nil)
	for _, perm := range []uint32{0o600, 0o755} {
		name := fmt.Sprintf("perm-%o", perm)
		if err := sb.WriteFile(c.ctx, name, strings.NewReader("x"), fs.FileMode(perm)); err != nil {
			c.Fatalf("WriteFile: %v", err)
		}
		fi, err := sb.Stat(c.ctx, name)
		if err != nil {
			c.Fatalf("Stat: %v", err)
		}
		if uint32(fi.Mode.Perm()) != perm {
			c.Errorf("WriteFile with perm %o: Stat says %o", perm, fi.Mode.Perm())
		}
	}
}

// failingReader returns n bytes and then an error.
type failingReader struct{ n int }

var errReaderBroke = errors.New("conformance: the reader broke on purpose")

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, errReaderBroke
	}
	k := min(len(p), r.n)
	for i := range k {
		p[i] = 'N'
	}
	r.n -= k
	return k, nil
}

func checkAtomicWrite(c *C) {
	sb := c.NewSandbox(nil)
	c.writeFile(sb, "keep.txt", []byte("old content"))
	err := sb.WriteFile(c.ctx, "keep.txt", &failingReader{n: 100 << 10}, 0o644)
	if err == nil {
		c.Errorf("WriteFile with a failing reader returned nil")
	}
	if got := c.mustRead(sb, "keep.txt"); string(got) != "old content" {
		c.Errorf("after a failed WriteFile the file holds %d bytes starting %q, want the old content", len(got), got[:min(len(got), 20)])
	}
	list, err := sb.ReadDir(c.ctx, ".")
	if err == nil && fileNames(list) != "keep.txt" {
		c.Errorf("after a failed WriteFile the directory holds %s, want only keep.txt", fileNames(list))
	}
}

func checkDotDot(c *C) {
	sb := c.NewSandbox(nil)
	inv := sandbox.ErrInvalidArgument
	_, err := sb.ReadFile(c.ctx, "../etc/passwd")
	c.wantKind(`ReadFile("../etc/passwd")`, err, inv)
	_, err = sb.ReadFile(c.ctx, "/tmp/../etc/hostname")
	c.wantKind(`ReadFile("/tmp/../etc/hostname")`, err, inv)
	err = sb.WriteFile(c.ctx, "a/../../escape", strings.NewReader("x"), 0o644)
	c.wantKind(`WriteFile("a/../../escape")`, err, inv)
	_, err = sb.Stat(c.ctx, "..")
	c.wantKind(`Stat("..")`, err, inv)
	_, err = sb.ReadDir(c.ctx, "../..")
	c.wantKind(`ReadDir("../..")`, err, inv)
	c.wantKind(`MkdirAll("x/../../y")`, sb.MkdirAll(c.ctx, "x/../../y", 0o755), inv)
	c.wantKind(`Rename("f", "../f")`, sb.Rename(c.ctx, "f", "../f"), inv)
	c.wantKind(`RemoveAll("..")`, sb.RemoveAll(c.ctx, ".."), inv)
	_, err = sb.ReadFile(c.ctx, "")
	c.wantKind(`ReadFile("")`, err, inv)
	_, err = sb.ReadFile(c.ctx, "nul\x00byte")
	c.wantKind(`ReadFile with a NUL byte`, err, inv)
}
