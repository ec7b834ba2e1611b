package main

// run --keep and tool --keep on an isolated local sandbox. Such a sandbox
// lives with the process that created it (its init is that process's child
// and dies with it), so the CLI does not create it itself: it starts a
// keeper, this binary again as a detached process (its own session, no
// terminal, standard streams on /dev/null, an empty environment, working
// directory /), which creates the sandbox from the same provider URL and
// Spec and holds it until it ends: perimeter rm (Get and Terminate from
// another process), its --ttl passing, or its init dying. The keeper then
// releases everything (local.Sandbox.Done) and exits. The CLI reads the
// sandbox's ID, or the keeper's error, from a pipe, and uses the sandbox
// through Get as perimeter exec does.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/perimeter-sdk/perimeter/providers/local"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// keeperArg, as the first argument, makes this binary a keeper. It is not
// a command a person runs (help does not list it).
const keeperArg = "__keeper"

// Descriptors the CLI passes to a keeper.
const (
	keeperConfigFD = 3 // read end of a pipe carrying a keeperConfig
	keeperReportFD = 4 // write end of a pipe; the keeper writes a keeperReport
)

// keeperConfig is what the CLI tells a keeper.
type keeperConfig struct {
	// URL is the provider's URL with its root made explicit, so that the
	// keeper's provider is the CLI's whatever the environment.
	URL  string        `json:"url"`
	Spec *sandbox.Spec `json:"spec,omitempty"`
}

// keeperReport is the keeper's answer: the sandbox it holds, or why it could
// not create one (the error's text, for the person who ran the CLI).
type keeperReport struct {
	ID    string `json:"id,omitempty"`
	Error string `json:"error,omitempty"`
}

// isolatedLocal returns p's local driver if p makes isolated local
// sandboxes, which need a keeper to be kept.
func isolatedLocal(p *sandbox.Provider) *local.Provider {
	var lp *local.Provider
	if p.As(&lp) && lp.Isolated() {
		return lp
	}
	return nil
}

// keeper is a started keeper process.
type keeper struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once it has exited (and been reaped)
}

// stop asks the keeper to terminate its sandbox and exit, and waits until it
// has.
func (k *keeper) stop() {
	k.cmd.Process.Signal(syscall.SIGTERM)
	<-k.exited
}

// startKeeper starts a keeper that creates a sandbox from spec on the local
// provider lp, opened from rawURL, and returns the sandbox's ID once the
// keeper holds it. On an error the keeper has exited.
func startKeeper(ctx context.Context, rawURL string, lp *local.Provider, spec *sandbox.Spec) (string, *keeper, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", nil, err
	}
	u.Host, u.Path = "", lp.Root()
	cfg, err := json.Marshal(keeperConfig{URL: u.String(), Spec: spec})
	if err != nil {
		return "", nil, err
	}
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return "", nil, err
	}
	defer cfgW.Close()
	repR, repW, err := os.Pipe()
	if err != nil {
		cfgR.Close()
		return "", nil, err
	}
	defer repR.Close()
	cmd := &exec.Cmd{
		Path:        "/proc/self/exe",
		Args:        []string{"perimeter", keeperArg},
		Env:         []string{}, // nothing: the URL carries the root
		Dir:         "/",
		ExtraFiles:  []*os.File{cfgR, repW}, // keeperConfigFD, keeperReportFD
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	err = cmd.Start()
	cfgR.Close()
	repW.Close()
	if err != nil {
		return "", nil, fmt.Errorf("start the sandbox's keeper: %w", err)
	}
	k := &keeper{cmd: cmd, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(k.exited)
	}()
	// The configuration fits in the pipe's buffer or the keeper reads it:
	// either way the write ends, and a keeper that died makes it fail.
	if _, err := cfgW.Write(cfg); err != nil {
		k.stop()
		return "", nil, fmt.Errorf("configure the sandbox's keeper: %w", err)
	}
	cfgW.Close()

	reported := make(chan keeperReport, 1)
	go func() {
		var rep keeperReport
		if err := json.NewDecoder(repR).Decode(&rep); err != nil {
			<-k.exited
			rep.Error = "the sandbox's keeper exited before it reported (" + cmd.ProcessState.String() + ")"
		}
		reported <- rep
	}()
	select {
	case rep := <-reported:
		if rep.Error != "" {
			<-k.exited // it exits after reporting an error
			return "", nil, errors.New(rep.Error)
		}
		return rep.ID, k, nil
	case <-ctx.Done():
		// Ctrl-C while the sandbox is made: the keeper, in a session of
		// its own, did not get it.
		k.stop()
		return "", nil, ctx.Err()
	}
}

// keptSession is newSession's --keep on an isolated local provider: a keeper
// holds the sandbox, this process uses it through Get.
func keptSession(ctx context.Context, p *sandbox.Provider, lp *local.Provider, url string, spec *sandbox.Spec, stderr io.Writer) (*session, int) {
	id, k, err := startKeeper(ctx, url, lp, spec)
	if err == nil {
		var sb *sandbox.Sandbox
		if sb, err = p.Get(ctx, id); err == nil {
			fmt.Fprintf(stderr, "perimeter: sandbox %s kept (held by process %d until it ends); use it with: perimeter exec|cp|rm [--provider URL] %s\n", id, k.cmd.Process.Pid, id)
			return &session{p: p, sb: sb, keep: true}, 0
		}
		k.stop()
	}
	p.Close()
	if interrupted(ctx) {
		return nil, 130
	}
	printErr(stderr, "perimeter", err)
	return nil, 1
}

// runKeeper is the keeper: it reads its configuration, creates the sandbox,
// reports its ID and holds it until it ends, or terminates it on SIGINT or
// SIGTERM (ctx).
func runKeeper(ctx context.Context, stderr io.Writer) int {
	if !isPipe(keeperConfigFD) || !isPipe(keeperReportFD) {
		fmt.Fprintln(stderr, "perimeter: "+keeperArg+" is started by run --keep and tool --keep, not by hand")
		return 2
	}
	closeInherited(keeperReportFD + 1)
	// With no terminal, a hangup is someone's request to stop.
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGHUP)
	defer stop()
	report := os.NewFile(keeperReportFD, "report")
	defer report.Close()
	fail := func(err error) int {
		json.NewEncoder(report).Encode(keeperReport{Error: err.Error()})
		return 1
	}
	cfgFile := os.NewFile(keeperConfigFD, "config")
	var cfg keeperConfig
	err := json.NewDecoder(cfgFile).Decode(&cfg)
	cfgFile.Close()
	if err != nil {
		return fail(fmt.Errorf("the sandbox's keeper: read its configuration: %w", err))
	}
	p, err := sandbox.Open(ctx, cfg.URL)
	if err != nil {
		return fail(err)
	}
	defer p.Close()
	if isolatedLocal(p) == nil {
		return fail(fmt.Errorf("the sandbox's keeper holds isolated local sandboxes, not those of %s", cfg.URL))
	}
	sb, err := p.Create(ctx, cfg.Spec)
	if err != nil {
		return fail(err)
	}
	var d *local.Sandbox
	sb.As(&d)
	if err := json.NewEncoder(report).Encode(keeperReport{ID: sb.ID()}); err != nil {
		sb.Terminate(context.Background())
		return 1
	}
	report.Close()
	select {
	case <-d.Done():
	case <-ctx.Done():
		sb.Terminate(context.Background())
	}
	return 0
}

// closeInherited closes every descriptor from first up that this process
// inherited without close-on-exec (a program that ran the CLI may leave
// some open); the Go runtime's own carry FD_CLOEXEC and stay.
func closeInherited(first int) {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		unix.CloseRange(uint(first), ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
		return
	}
	names, _ := d.Readdirnames(-1)
	self := int(d.Fd())
	for _, n := range names {
		fd, err := strconv.Atoi(n)
		if err != nil || fd < first || fd == self {
			continue
		}
		if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil && flags&unix.FD_CLOEXEC == 0 {
			unix.Close(fd)
		}
	}
	d.Close()
}

// isPipe reports whether descriptor fd is open on a pipe.
func isPipe(fd int) bool {
	var st unix.Stat_t
	return unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFIFO
}
