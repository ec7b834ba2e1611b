package conformance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// unclaimed ends a check whose ability the sandbox declares absent, after
// the check verified the refusal the contract demands.
func (c *C) unclaimed(ability string) {
	c.NotApplicable("%s is not claimed (Capabilities); its refusal with ErrNotSupported was verified", ability)
}

// gone reports whether err says the sandbox no longer exists.
func gone(err error) bool {
	return errors.Is(err, sandbox.ErrNotFound) || errors.Is(err, sandbox.ErrTerminated)
}

// ---- lifecycle

func checkTerminateStops(c *C) {
	sb := c.NewSandbox(nil)
	out := newSyncBuffer()
	p, err := sb.Start(c.ctx, &sandbox.Cmd{Args: []string{"sh", "-c", "echo started; exec sleep 600"}, Stdout: out})
	if err != nil {
		c.Fatalf("Start: %v", err)
	}
	if !c.eventually(60*time.Second, func() bool { return strings.Contains(out.String(), "started") }) {
		c.Fatalf("the command never printed \"started\" within 60s (output %q)", out.String())
	}
	if err := sb.Terminate(c.ctx); err != nil {
		c.Fatalf("Terminate: %v", err)
	}
	wctx, cancel := context.WithTimeout(c.ctx, 60*time.Second)
	defer cancel()
	// Any outcome (a status, ErrTerminated) will do, as long as Wait returns.
	p.Wait(wctx)
	if wctx.Err() != nil && c.ctx.Err() == nil {
		c.Errorf("Terminate returned nil, but a command it should have killed was still running 60s later (Process.Wait did not return): Terminate must kill every process of the sandbox")
	}
}

func checkGoneAfterTerminate(c *C) {
	mark := randomHex()
	sb := c.NewSandbox(func(s *sandbox.Spec) { s.Labels["conformance.gone"] = mark })
	id := sb.ID()
	if err := sb.Terminate(c.ctx); err != nil {
		c.Fatalf("Terminate: %v", err)
	}
	got, err := c.r.h.Provider.Get(c.ctx, id)
	switch {
	case err == nil:
		c.Errorf("Get(%q) of a terminated sandbox returned a handle (ID %q): Get must fail with ErrNotFound once a sandbox is terminated", id, got.ID())
	case !gone(err):
		c.Errorf("Get(%q) of a terminated sandbox: %v; want an error of kind ErrNotFound", id, err)
	}
	for info, err := range c.r.h.Provider.List(c.ctx, &sandbox.ListOptions{Labels: map[string]string{LabelRun: c.r.runID, "conformance.gone": mark}}) {
		if err != nil {
			c.Fatalf("List: %v", err)
		}
		if info.ID == id && info.State != sandbox.StateTerminated {
			c.Errorf("List still yields the terminated sandbox %s, in state %q: leave terminated sandboxes out (or report StateTerminated)", id, info.State)
		}
	}
}

func checkCloseKeeps(c *C) {
	if c.r.h.Open == nil {
		c.NotApplicable("the harness has no Open function, so the suite has no provider of its own to close (set Harness.Open to check that Provider.Close leaves sandboxes running)")
	}
	p2, err := c.r.h.Open(c.ctx)
	if err != nil {
		c.Fatalf("Harness.Open: %v", err)
	}
	closed := false
	defer func() {
		if !closed {
			p2.Close()
		}
	}()
	sb2, err := p2.Create(c.ctx, c.spec())
	if err != nil {
		c.Fatalf("Create through the provider from Harness.Open: %v", err)
	}
	id := sb2.ID()
	c.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if sb, err := c.r.h.Provider.Get(ctx, id); err == nil {
			sb.Terminate(ctx)
		}
	})
	if err := sb2.WriteFile(c.ctx, "kept", strings.NewReader("kept after Close"), 0o644); err != nil {
		c.Fatalf("WriteFile: %v", err)
	}
	if err := p2.Close(); err != nil {
		c.Errorf("Provider.Close: %v", err)
	}
	closed = true
	if _, err := sb2.Info(c.ctx); !errors.Is(err, sandbox.ErrClosed) {
		c.Errorf("Info through a closed provider's handle: %v, want ErrClosed", err)
	}
	sb, err := c.r.h.Provider.Get(c.ctx, id)
	if err != nil {
		c.Fatalf("after Provider.Close, the sandbox %s it created is gone (Get through another provider: %v): Close must release only the provider's own resources; its sandboxes keep running", id, err)
	}
	if got, err := c.readFile(sb, "kept"); err != nil || string(got) != "kept after Close" {
		c.Errorf("after Provider.Close, the sandbox's file reads %q, %v: Close must leave sandboxes as they were", got, err)
	}
	if out := c.sh(sb, "echo alive"); out != "alive\n" {
		c.Errorf("after Provider.Close, a command in the sandbox printed %q", out)
	}
}

func checkTTL(c *C) {
	const ttl = 3 * time.Second
	sb, err := c.create(func(s *sandbox.Spec) { s.Timeout = ttl })
	if errors.Is(err, sandbox.ErrNotSupported) {
		c.NotApplicable("Create refuses Spec.Timeout with ErrNotSupported (an honest refusal): there is no time to live to enforce")
	}
	if err != nil {
		c.Fatalf("Create with Spec.Timeout %v: %v", ttl, err)
	}
	info, err := sb.Info(c.ctx)
	if err != nil {
		c.Fatalf("Info: %v", err)
	}
	if info.Expires.IsZero() {
		c.NotApplicable("Info.Expires is zero for a sandbox created with Spec.Timeout %v: the provider declares no deadline, so there is none to check (a provider that cannot terminate at Spec.Timeout should refuse it with ErrNotSupported)", ttl)
	}
	const bound = 2 * time.Minute
	id := sb.ID()
	ended := func() bool {
		got, err := c.r.h.Provider.Get(c.ctx, id)
		if err != nil {
			return gone(err)
		}
		i, err := got.Info(c.ctx)
		if err != nil {
			return gone(err)
		}
		return i.State == sandbox.StateTerminated || i.State == sandbox.StateStopped
	}
	if time.Until(info.Expires) > 10*time.Minute {
		c.Errorf("Info.Expires is %v away for a sandbox created with Spec.Timeout %v: report the deadline Spec.Timeout sets", time.Until(info.Expires).Round(time.Second), ttl)
		return
	}
	time.Sleep(time.Until(info.Expires)) // the event: the deadline the provider reported
	if !c.eventually(bound, ended) {
		c.Errorf("the sandbox was still running %v after its deadline (Info.Expires %v, from Spec.Timeout %v): the provider must terminate a sandbox when its Spec.Timeout passes, not only report the time",
			bound, info.Expires.Format(time.RFC3339), ttl)
	}
}

// ---- exec

var hostCanary = sync.OnceValue(func() string {
	v := "perimeter-conformance-host-secret-" + randomHex()
	os.Setenv("PERIMETER_CONFORMANCE_HOST_SECRET", v)
	return v
})

func checkEnvHost(c *C) {
	secret := hostCanary()
	sb := c.NewSandbox(nil)
	res := c.run(sb, &sandbox.Cmd{Args: []string{"env"}, Env: map[string]string{"PERIMETER_CMD": "1"}})
	if !res.Status.Success() {
		c.Fatalf("env: %v, stderr %q", res.Status, res.Stderr)
	}
	if strings.Contains(string(res.Stdout), secret) {
		c.Errorf("the environment of the process running the suite reached the command (PERIMETER_CONFORMANCE_HOST_SECRET is in its env): start commands with Spec.Env and Cmd.Env over the sandbox's own defaults, never the host's environment, which holds secrets")
	}
	if !strings.Contains(string(res.Stdout), "PERIMETER_CMD=1") {
		c.Errorf("env printed no PERIMETER_CMD=1 although Cmd.Env set it: %q", res.Stdout)
	}
}

func checkEnvOverride(c *C) {
	const path = "/perimeter-conformance/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	sb := c.NewSandbox(func(s *sandbox.Spec) {
		s.Env = map[string]string{"PATH": path, "HOME": "/perimeter-conformance-home"}
	})
	script := []string{"sh", "-c", `printf '%s|%s' "$PATH" "$HOME"`}
	res := c.run(sb, &sandbox.Cmd{Args: script})
	if want := path + "|/perimeter-conformance-home"; string(res.Stdout) != want {
		c.Errorf("with PATH and HOME in Spec.Env, the command saw PATH|HOME = %q, want %q: Spec.Env must win over the provider's own defaults", res.Stdout, want)
	}
	cmdPath := path + ":/perimeter-conformance/cmd"
	res = c.run(sb, &sandbox.Cmd{Args: script, Env: map[string]string{"PATH": cmdPath, "HOME": "/perimeter-conformance-cmd"}})
	if want := cmdPath + "|/perimeter-conformance-cmd"; string(res.Stdout) != want {
		c.Errorf("with PATH and HOME in Cmd.Env, the command saw PATH|HOME = %q, want %q: Cmd.Env must win over Spec.Env and the provider's defaults", res.Stdout, want)
	}
}

func checkSignalGroup(c *C) {
	sb := c.NewSandbox(nil)
	if !sb.Capabilities().Signal {
		c.NotApplicable("Signal is not claimed (exec/signal verifies the refusal)")
	}
	// The leader traps the signal, starts a child that traps it too, and
	// exits 0 once both have seen it; an untrapped signal (a wrong one)
	// kills the leader.
	const script = `s=$1
trap "echo leader > got-leader-$s" $s
( trap "echo child > got-child-$s; exit 0" $s; echo ready > ready-$s; while :; do sleep 0.05; done ) &
while [ ! -e got-leader-$s ]; do sleep 0.05; done
wait`
	for _, sig := range []sandbox.Signal{sandbox.SIGUSR1, sandbox.SIGHUP, sandbox.SIGUSR2} {
		name := strings.TrimPrefix(string(sig), "SIG")
		p, err := sb.Start(c.ctx, &sandbox.Cmd{Args: []string{"sh", "-c", script, "sh", name}, Timeout: 3 * time.Minute})
		if err != nil {
			c.Fatalf("Start: %v", err)
		}
		if !c.eventually(2*time.Minute, func() bool { _, err := sb.Stat(c.ctx, "ready-"+name); return err == nil }) {
			c.Fatalf("the test command never became ready (it writes ready-%s)", name)
		}
		if err := p.Signal(c.ctx, sig); err != nil {
			c.Fatalf("Signal(%s): %v", sig, err)
		}
		st, err := p.Wait(c.ctx)
		if err != nil {
			c.Fatalf("Wait after Signal(%s): %v", sig, err)
		}
		_, leaderErr := sb.Stat(c.ctx, "got-leader-"+name)
		_, childErr := sb.Stat(c.ctx, "got-child-"+name)
		switch {
		case st.TimedOut && leaderErr == nil && childErr != nil:
			c.Errorf("Signal(%s) reached the command but not the child it started (which waited 3m for it): send the signal to the command's whole process group", sig)
		case st.TimedOut:
			c.Errorf("Signal(%s) never reached the command (it waited 3m for it)", sig)
		case st.Signal != "":
			c.Errorf("Signal(%s) killed the command with %s although it traps %s: deliver the signal asked for, not another", sig, st.Signal, sig)
		case !st.Success():
			c.Errorf("after Signal(%s) the command ended with %v, want exit 0 (both the command and its child trapped it)", sig, st)
		}
	}
}

func checkWaitTwice(c *C) {
	sb := c.NewSandbox(nil)
	p, err := sb.Start(c.ctx, &sandbox.Cmd{Args: []string{"sh", "-c", "while [ ! -e go ]; do sleep 0.05; done; exit 5"}})
	if err != nil {
		c.Fatalf("Start: %v", err)
	}
	type result struct {
		st  sandbox.ExitStatus
		err error
	}
	results := make(chan result, 2)
	for range 2 {
		go func() {
			st, err := p.Wait(c.ctx)
			results <- result{st, err}
		}()
	}
	c.writeFile(sb, "go", nil)
	for i := range 2 {
		r := <-results
		if r.err != nil || r.st.Code != 5 {
			c.Errorf("concurrent Wait %d of 2: %v, %v; want exit status 5 for every caller", i+1, r.st, r.err)
		}
	}
	for i := range 2 {
		st, err := p.Wait(c.ctx)
		if err != nil || st.Code != 5 {
			c.Errorf("Wait again (call %d after the exit): %v, %v; want the same exit status 5 each time: Wait may be called more than once", i+3, st, err)
		}
	}
}

func checkWaitCtx(c *C) {
	sb := c.NewSandbox(nil)
	out := newSyncBuffer()
	p, err := sb.Start(c.ctx, &sandbox.Cmd{
		Args:   []string{"sh", "-c", "while [ ! -e go ]; do sleep 0.05; done; echo survived"},
		Stdout: out,
	})
	if err != nil {
		c.Fatalf("Start: %v", err)
	}
	done, cancel := context.WithCancel(c.ctx)
	cancel()
	type result struct {
		st  sandbox.ExitStatus
		err error
	}
	ch := make(chan result, 1)
	go func() { st, err := p.Wait(done); ch <- result{st, err} }()
	select {
	case r := <-ch:
		if !errors.Is(r.err, context.Canceled) {
			c.Errorf("Wait with a cancelled ctx on a running command: %v, %v; want context.Canceled", r.st, r.err)
		}
	case <-time.After(60 * time.Second):
		c.Fatalf("Wait with a cancelled ctx did not return within 60s: ctx bounds the waiting, so Wait must return ctx.Err() when it is done")
	}
	// A provider that kills the process when a Wait's ctx ends may do it
	// after that Wait has returned. The command cannot end by itself before
	// "go" exists, so give such a kill two seconds to show: a correct
	// provider's Wait can only run out of time here.
	grace, stop := context.WithTimeout(c.ctx, 2*time.Second)
	st, err := p.Wait(grace)
	stop()
	switch {
	case err == nil:
		c.Fatalf("after a Wait whose ctx was cancelled, the command ended (%v) before it was let go: Wait's ctx bounds only the waiting, the process must keep running", st)
	case !errors.Is(err, context.DeadlineExceeded):
		c.Fatalf("Wait with a ctx that runs out while the command runs: %v; want context.DeadlineExceeded", err)
	}
	c.writeFile(sb, "go", nil)
	st, err = p.Wait(c.ctx)
	if err != nil || !st.Success() || out.String() != "survived\n" {
		c.Errorf("after a Wait whose ctx ended, the command ended with %v, %v and printed %q; want exit 0 and \"survived\": Wait's ctx bounds only the waiting, the process must keep running", st, err, out.String())
	}
}

func checkStdinNil(c *C) {
	sb := c.NewSandbox(nil)
	res := c.run(sb, &sandbox.Cmd{Args: []string{"sh", "-c", "cat; echo eof"}, Timeout: 60 * time.Second})
	switch {
	case res.Status.TimedOut:
		c.Errorf("with a nil Cmd.Stdin, cat did not see the end of its input within 60s: a nil Stdin must read as empty, not as a stream left open")
	case !res.Status.Success() || string(res.Stdout) != "eof\n":
		c.Errorf("with a nil Cmd.Stdin, `cat; echo eof` ended with %v and printed %q; want exit 0 and \"eof\"", res.Status, res.Stdout)
	}
}

func checkWorkdir(c *C) {
	const sub = "perimeter-wd"
	sb, err := c.create(func(s *sandbox.Spec) { s.Workdir = sub })
	if errors.Is(err, sandbox.ErrInvalidArgument) {
		// Some providers take only absolute working directories: ask for
		// the same directory by its absolute name.
		c.Logf("Create with the relative Spec.Workdir %q: %v; trying an absolute one", sub, err)
		dflt := strings.TrimSpace(c.sh(c.NewSandbox(nil), "pwd"))
		abs := strings.TrimSuffix(dflt, "/") + "/" + sub
		sb, err = c.create(func(s *sandbox.Spec) { s.Workdir = abs })
	}
	if errors.Is(err, sandbox.ErrNotSupported) {
		c.NotApplicable("Create refuses Spec.Workdir with ErrNotSupported (an honest refusal)")
	}
	if err != nil {
		c.Fatalf("Create with Spec.Workdir: %v", err)
	}
	res := c.run(sb, &sandbox.Cmd{Args: []string{"sh", "-c", "pwd; echo from-cmd > cmd-marker"}})
	if !res.Status.Success() {
		c.Fatalf("pwd: %v, stderr %q", res.Status, res.Stderr)
	}
	if pwd := strings.TrimSpace(string(res.Stdout)); !strings.HasSuffix(pwd, "/"+sub) {
		c.Errorf("with Spec.Workdir %q, commands run in %q: use Spec.Workdir as the working directory of commands", sub, pwd)
	}
	if got, err := c.readFile(sb, "cmd-marker"); err != nil || string(got) != "from-cmd\n" {
		c.Errorf("a file a command wrote in Spec.Workdir, read by its relative name: %q, %v; relative file names must resolve against Spec.Workdir", got, err)
	}
	c.writeFile(sb, "file-marker", []byte("from-write"))
	if out := c.sh(sb, "cat file-marker"); out != "from-write" {
		c.Errorf("a file written by relative name is not in the commands' working directory (cat printed %q)", out)
	}
}

func checkSpecUnsupported(c *C) {
	cases := []struct {
		what string
		edit func(*sandbox.Spec)
	}{
		{`Resources.GPU "perimeter-conformance-no-such-gpu"`, func(s *sandbox.Spec) { s.Resources.GPU = "perimeter-conformance-no-such-gpu" }},
		{`RootFS "/perimeter-conformance/no-such-rootfs"`, func(s *sandbox.Spec) { s.RootFS = "/perimeter-conformance/no-such-rootfs" }},
	}
	for _, tc := range cases {
		sb, err := c.create(tc.edit)
		if err == nil {
			c.Errorf("Create with %s (which no provider can honour) returned sandbox %s: a Spec field the provider cannot honour must be refused with ErrNotSupported (or ErrInvalidArgument, ErrNotFound), never ignored", tc.what, sb.ID())
			continue
		}
		c.wantKind("Create with "+tc.what, err, sandbox.ErrNotSupported, sandbox.ErrInvalidArgument, sandbox.ErrNotFound)
	}
}

// ---- files

func checkFreshRead(c *C) {
	sb := c.NewSandbox(nil)
	c.writeFile(sb, "fresh.txt", []byte("first"))
	if got := c.mustRead(sb, "fresh.txt"); string(got) != "first" {
		c.Fatalf("ReadFile after WriteFile = %q, want %q", got, "first")
	}
	c.sh(sb, "printf 'second!' > fresh.txt")
	if got := c.mustRead(sb, "fresh.txt"); string(got) != "second!" {
		c.Errorf("ReadFile returned %q after a command changed the file to %q: it served a stale copy; read the file as it is now", got, "second!")
	}
	if fi, err := sb.Stat(c.ctx, "fresh.txt"); err != nil || fi.Size != 7 {
		c.Errorf("Stat after a command changed the file: size %d, %v; want 7", fi.Size, err)
	}
}

func checkEmptyWrite(c *C) {
	sb := c.NewSandbox(nil)
	if err := sb.WriteFile(c.ctx, "empty", strings.NewReader(""), 0o644); err != nil {
		c.Fatalf("WriteFile with no data: %v", err)
	}
	fi, err := sb.Stat(c.ctx, "empty")
	if err != nil {
		c.Fatalf("after WriteFile with no data, Stat: %v: an empty write must create an empty file", err)
	}
	if fi.Size != 0 || !fi.Mode.IsRegular() {
		c.Errorf("after WriteFile with no data, Stat = %+v; want an empty regular file", fi)
	}
	c.writeFile(sb, "shrink", []byte("not empty"))
	if err := sb.WriteFile(c.ctx, "shrink", strings.NewReader(""), 0o644); err != nil {
		c.Fatalf("WriteFile with no data over a file: %v", err)
	}
	if got := c.mustRead(sb, "shrink"); len(got) != 0 {
		c.Errorf("after WriteFile with no data over a file, it still holds %q; want it empty", got)
	}
}

func checkModTime(c *C) {
	sb := c.NewSandbox(nil)
	c.writeFile(sb, "timed", []byte("x"))
	floor := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	fi, err := sb.Stat(c.ctx, "timed")
	if err != nil {
		c.Fatalf("Stat: %v", err)
	}
	if fi.ModTime.Before(floor) {
		c.Errorf("Stat of a file just written: ModTime %v; report the file's modification time", fi.ModTime)
	}
	list, err := sb.ReadDir(c.ctx, ".")
	if err != nil {
		c.Fatalf("ReadDir: %v", err)
	}
	for _, e := range list {
		if e.ModTime.Before(floor) {
			c.Errorf("ReadDir entry %q: ModTime %v; report each entry's modification time", e.Name, e.ModTime)
		}
	}
}

func checkStatNoFollow(c *C) {
	sb := c.NewSandbox(nil)
	c.sh(sb, "printf 'target data' > target && ln -s target link && ln -s perimeter-missing dangling")
	fi, err := sb.Stat(c.ctx, "link")
	if err != nil {
		c.Fatalf("Stat of a symbolic link: %v", err)
	}
	if fi.Mode&fs.ModeSymlink == 0 {
		c.Errorf("Stat of a symbolic link = %+v (mode %v): Stat must describe the link itself, not follow it", fi, fi.Mode)
	}
	fi, err = sb.Stat(c.ctx, "dangling")
	if err != nil {
		c.Errorf("Stat of a dangling symbolic link: %v; Stat does not follow a final link, so the link itself exists", err)
	} else if fi.Mode&fs.ModeSymlink == 0 {
		c.Errorf("Stat of a dangling symbolic link: mode %v, want a symbolic link", fi.Mode)
	}
	if got := c.mustRead(sb, "link"); string(got) != "target data" {
		c.Errorf("ReadFile through a link inside the sandbox = %q, want the target's content", got)
	}
}

func checkReadDir(c *C) {
	sb := c.NewSandbox(nil)
	if err := sb.MkdirAll(c.ctx, "rd/sub", 0o755); err != nil {
		c.Fatalf("MkdirAll: %v", err)
	}
	for _, n := range []string{"rd/b", "rd/.hidden", "rd/a", "rd/.z", "rd/B"} {
		c.writeFile(sb, n, []byte(n))
	}
	list, err := sb.ReadDir(c.ctx, "rd")
	if err != nil {
		c.Fatalf("ReadDir: %v", err)
	}
	if got, want := fileNames(list), ".hidden,.z,B,a,b,sub"; got != want {
		c.Errorf("ReadDir(rd) = %s, want %s: every entry, dotfiles included, sorted by name", got, want)
	}
	for _, e := range list {
		if (e.Name == "sub") != e.IsDir() {
			c.Errorf("ReadDir entry %q: IsDir %v", e.Name, e.IsDir())
		}
		if e.Name == "a" && e.Size != 4 {
			c.Errorf("ReadDir entry a: size %d, want 4", e.Size)
		}
	}
}

func checkMkdirPerm(c *C) {
	sb := c.NewSandbox(nil)
	for _, perm := range []fs.FileMode{0o700, 0o751} {
		base := fmt.Sprintf("mk-%o", perm)
		if err := sb.MkdirAll(c.ctx, base+"/a/b", perm); err != nil {
			c.Fatalf("MkdirAll(%s/a/b, %o): %v", base, perm, err)
		}
		for _, d := range []string{base, base + "/a", base + "/a/b"} {
			fi, err := sb.Stat(c.ctx, d)
			if err != nil {
				c.Fatalf("Stat(%s): %v", d, err)
			}
			if fi.Mode.Perm() != perm || !fi.IsDir() {
				c.Errorf("MkdirAll with perm %o made %s with mode %v: each directory it creates gets perm", perm, d, fi.Mode)
			}
		}
	}
	if err := sb.MkdirAll(c.ctx, "mk-700", 0o755); err != nil {
		c.Fatalf("MkdirAll of an existing directory: %v", err)
	}
	if fi, err := sb.Stat(c.ctx, "mk-700"); err != nil || fi.Mode.Perm() != 0o700 {
		c.Errorf("MkdirAll(0755) of an existing 0700 directory changed it to %v (%v): an existing directory keeps its permissions", fi.Mode, err)
	}
}

// ---- pty

func checkPTYTerm(c *C) {
	sb := c.NewSandbox(nil)
	if !sb.Capabilities().PTY {
		c.NotApplicable("PTY is not claimed (pty/run verifies the refusal)")
	}
	for _, tc := range []struct{ term, want string }{{"vt100", "vt100"}, {"", "xterm-256color"}} {
		res := c.run(sb, &sandbox.Cmd{Args: []string{"sh", "-c", `printf 'TERM=%s.' "$TERM"`}, TTY: &sandbox.TTY{Rows: 24, Cols: 80, Term: tc.term}})
		if !strings.Contains(string(res.Stdout), "TERM="+tc.want+".") {
			c.Errorf("on a TTY with Term %q the command printed %q, want TERM=%s: set TERM from TTY.Term", tc.term, res.Stdout, tc.want)
		}
	}
}

// ---- ports

// exposeTarget is a port in a sandbox with a server answering /probe with
// body.
type exposeTarget struct {
	port int
	body string
}

// serveTwo creates a sandbox asking for two ports in Spec.Ports (or none, if
// Create refuses Spec.Ports with ErrNotSupported), and returns it with the
// two ports and the bodies their servers will answer with. The servers are
// started by startTwo.
func (c *C) serveTwo() (*sandbox.Sandbox, [2]exposeTarget) {
	var t [2]exposeTarget
	t[0].port = freePort()
	for t[1].port = freePort(); t[1].port == t[0].port; t[1].port = freePort() {
	}
	sb, err := c.create(func(s *sandbox.Spec) { s.Ports = append(s.Ports, t[0].port, t[1].port) })
	if errors.Is(err, sandbox.ErrNotSupported) {
		c.Logf("Create refuses Spec.Ports with ErrNotSupported; the ports are exposed without it")
		sb = c.NewSandbox(nil)
	} else if err != nil {
		c.Fatalf("Create with Spec.Ports: %v", err)
	}
	for i := range t {
		t[i].body = fmt.Sprintf("perimeter conformance port %d %s", t[i].port, randomHex())
	}
	return sb, t
}

func (c *C) startTwo(sb *sandbox.Sandbox, t [2]exposeTarget) *syncBuffer {
	logs := newSyncBuffer()
	for i, tg := range t {
		dir := fmt.Sprintf("www%d", i)
		if err := sb.MkdirAll(c.ctx, dir, 0o755); err != nil {
			c.Fatalf("MkdirAll %s: %v", dir, err)
		}
		c.writeFile(sb, dir+"/probe", []byte(tg.body))
		c.background(sb, &sandbox.Cmd{Args: c.httpServerArgs(tg.port), Dir: dir, Stdout: logs, Stderr: logs})
	}
	return logs
}

// get fetches url on a fresh connection, so that a withdrawn endpoint is not
// reached through a kept-alive one; otherwise as http.DefaultClient does.
func (c *C) get(url string) (int, string, error) {
	// A clone of the default transport keeps what the process configured
	// there (the roots a provider's test trusts, a proxy).
	tr := &http.Transport{}
	if dt, ok := http.DefaultTransport.(*http.Transport); ok {
		tr = dt.Clone()
	}
	tr.DisableKeepAlives = true
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(c.ctx, "GET", url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func randomHex() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
