package local

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
	"github.com/perimeter-sdk/perimeter/sandbox/driver/driverutil"
)

// isoState is the host's side of an isolated sandbox: its init process, the
// agent socket, cgroups and egress proxy.
type isoState struct {
	iso     Isolation
	sock    string // the agent socket, as a short path (see shortPath)
	ctlDir  *os.File
	uidBase int
	uids    uidRange

	init     *exec.Cmd
	initPID  int
	initDone chan struct{}
	initErr  *bytes.Buffer // the init's stderr, for errors
	cg       *cgroupSet
	proxy    *egressProxy
	env      map[string]string // added to every command (proxy variables)
	l1       *l1Config         // set at L1: no namespaces
	limits   effective         // the resource limits applied

	idleMu sync.Mutex
	idle   []net.Conn // clean agent connections, for the next exec
	closed bool

	// In the process that created the sandbox: the owner lock (owner.go),
	// held until the sandbox is released.
	ownerMu sync.Mutex
	owner   *os.File
	// In another process (attached): a pidfd of the init, which stands for
	// init and its Wait, and the owner lock file, to wait for the owner.
	attached  bool
	pidfd     *os.File
	ownerWait *os.File
}

// maxIdle bounds the agent connections kept for reuse.
const maxIdle = 4

// getConn returns an idle agent connection, or dials a new one.
func (st *isoState) getConn(ctx context.Context) (c net.Conn, pooled bool, err error) {
	st.idleMu.Lock()
	if n := len(st.idle); n > 0 {
		c = st.idle[n-1]
		st.idle = st.idle[:n-1]
	}
	st.idleMu.Unlock()
	if c != nil {
		return c, true, nil
	}
	var d net.Dialer
	c, err = d.DialContext(ctx, "unix", st.sock)
	return c, false, err
}

// putConn keeps c for reuse, or closes it.
func (st *isoState) putConn(c net.Conn) {
	st.idleMu.Lock()
	if !st.closed && len(st.idle) < maxIdle {
		st.idle = append(st.idle, c)
		c = nil
	}
	st.idleMu.Unlock()
	if c != nil {
		c.Close()
	}
}

// closeIdle closes the kept connections and stops keeping more.
func (st *isoState) closeIdle() {
	st.idleMu.Lock()
	idle := st.idle
	st.idle, st.closed = nil, true
	st.idleMu.Unlock()
	for _, c := range idle {
		c.Close()
	}
}

// uidRange is a range of host ids held for one sandbox.
type uidRange struct {
	base   int
	lock   *os.File // nil when not root (the range is the caller's own uid)
	legacy *os.File // the same slot's lock of earlier versions, if any
}

func (r uidRange) free() {
	if r.lock != nil {
		r.lock.Close()
	}
	if r.legacy != nil {
		r.legacy.Close()
	}
}

// startIsolated builds an isolated sandbox in dir: it starts the init in new
// namespaces, puts it in its cgroups, hands it its configuration and waits
// until its agent answers.
func (p *Provider) startIsolated(ctx context.Context, spec *sandbox.Spec, id, dir string) (st *isoState, err error) {
	host := Probe()
	netMode := "none"
	if spec.Network != nil {
		switch spec.Network.Mode {
		case sandbox.NetworkNone, "":
		case sandbox.NetworkAllowlist:
			netMode = "proxy"
		case sandbox.NetworkOpen:
			netMode = "host"
		}
	}
	uids, err := allocUIDRange()
	if err != nil {
		return nil, err
	}
	st = &isoState{
		uids:     uids,
		uidBase:  uids.base,
		initDone: make(chan struct{}),
		initErr:  &bytes.Buffer{},
	}
	l1 := p.level == LevelLandlock
	st.iso = Isolation{
		UserNS: true, MountNS: true, PIDNS: true, UTSNS: true, IPCNS: true,
		NetNS:   netMode != "host",
		UIDBase: st.uidBase,
		Cgroup:  host.Cgroup,
		RootFS:  "host",
		Network: netMode,
	}
	if l1 {
		st.iso = Isolation{UIDBase: st.uidBase, Cgroup: host.Cgroup, RootFS: "none", Network: netMode}
	}
	defer func() {
		if err != nil {
			st.destroy()
		}
	}()
	chown := func(path string) error {
		if os.Getuid() == 0 {
			return os.Lchown(path, st.uidBase, st.uidBase)
		}
		return nil
	}
	ctl := filepath.Join(dir, "control")
	if err := os.Mkdir(ctl, 0o700); err != nil {
		return st, err
	}
	if err := chown(ctl); err != nil {
		return st, err
	}
	// Unix socket paths are limited to 107 bytes, which a deep root
	// exceeds: reach the socket through a descriptor of its directory.
	if st.ctlDir, err = os.Open(ctl); err != nil {
		return st, err
	}
	st.sock = shortPath(st.ctlDir, agentSocket)
	// The workspace, and the working directory Create made in it, belong
	// to the sandbox's root.
	if err := filepath.WalkDir(filepath.Join(dir, "workspace"), func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return chown(path)
	}); err != nil {
		return st, err
	}

	files := map[int]*os.File{}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	useCgroup := host.Cgroup != "none" && p.level != LevelNamespaces
	st.limits = p.limits.effective(spec.Resources, useCgroup)
	cfg := initConfig{Hostname: "sandbox", NetNS: netMode != "host", TmpBytes: st.limits.Tmp, WorkspaceBytes: st.limits.Workspace}
	if cfg.BootID, err = newBootID(); err != nil {
		return st, err
	}
	// open passes the directory path to the init as a detached mount (as
	// root), or as a path the init clones itself (as another user, whose
	// own directories the init can reach).
	open := func(fd int, path string) error {
		mfd, err := unix.OpenTree(unix.AT_FDCWD, path, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
		if err == nil {
			files[fd] = os.NewFile(uintptr(mfd), path)
			return nil
		}
		if !errors.Is(err, unix.EPERM) {
			return fmt.Errorf("clone a mount of %s: %w", path, err)
		}
		if cfg.Paths == nil {
			cfg.Paths = map[int]string{}
		}
		cfg.Paths[fd] = path
		f, err := os.Open(os.DevNull) // keeps the descriptor slot taken
		if err != nil {
			return err
		}
		files[fd] = f
		return nil
	}
	if l1 {
		// The init reaches the workspace by its path: as root the sandbox
		// runs as its own uid, which needs to search the directories above
		// (0711: no listing) to get there.
		if os.Getuid() == 0 {
			for d := filepath.Dir(p.root); ; d = filepath.Dir(d) {
				if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 {
					return st, fmt.Errorf("without namespaces (L1) the sandbox's uid must reach its workspace by path, but %s is not searchable by other users (chmod o+x %s, or choose another Options.Root)", d, d)
				}
				if d == "/" {
					break
				}
			}
			for _, d := range []string{p.root, dir} {
				if err := os.Chmod(d, 0o711); err != nil {
					return st, err
				}
			}
		}
		tmp := filepath.Join(dir, "tmp")
		if err := os.Mkdir(tmp, 0o700); err != nil {
			return st, err
		}
		if err := chown(tmp); err != nil {
			return st, err
		}
		st.l1 = &l1Config{Workspace: filepath.Join(dir, "workspace"), Tmp: tmp, Network: netMode}
		cfg.L1 = st.l1
		st.env = map[string]string{"TMPDIR": tmp}
	} else if err := open(fdWorkspace, filepath.Join(dir, "workspace")); err != nil {
		return st, err
	}
	if f, err := os.OpenFile(ctl, os.O_RDONLY|unix.O_DIRECTORY, 0); err != nil {
		return st, err
	} else {
		files[fdControl] = f
	}
	if spec.RootFS != "" {
		root, err := p.prepareRootFS(spec.RootFS, dir)
		if err != nil {
			return st, err
		}
		if err := open(fdRootFS, root); err != nil {
			return st, fmt.Errorf("rootfs: %w", err)
		}
		cfg.RootFS = true
		st.iso.RootFS = "image"
	}
	if netMode == "proxy" && l1 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return st, err
		}
		st.proxy, err = newEgressProxy(id, spec.Network.Allow, ln, p.log)
		if err != nil {
			ln.Close()
			return st, sandbox.NewError(Name, id, "create", sandbox.ErrInvalidArgument, err)
		}
		st.l1.ProxyPort = ln.Addr().(*net.TCPAddr).Port
		u := "http://" + ln.Addr().String()
		for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"} {
			st.env[k] = u
		}
	} else if netMode == "proxy" {
		netDir := filepath.Join(dir, "net")
		if err := os.Mkdir(netDir, 0o755); err != nil {
			return st, err
		}
		nd, err := os.Open(netDir)
		if err != nil {
			return st, err
		}
		ln, err := net.Listen("unix", shortPath(nd, "proxy.sock"))
		nd.Close()
		if err != nil {
			return st, err
		}
		ln.(*net.UnixListener).SetUnlinkOnClose(false) // removed with the directory
		if err := os.Chmod(filepath.Join(netDir, "proxy.sock"), 0o666); err != nil {
			ln.Close()
			return st, err
		}
		st.proxy, err = newEgressProxy(id, spec.Network.Allow, ln, p.log)
		if err != nil {
			ln.Close()
			return st, sandbox.NewError(Name, id, "create", sandbox.ErrInvalidArgument, err)
		}
		if err := open(fdNet, netDir); err != nil {
			return st, err
		}
		cfg.Proxy = true
		u := "http://" + proxyAddr
		st.env = map[string]string{
			"HTTP_PROXY": u, "HTTPS_PROXY": u, "ALL_PROXY": u,
			"http_proxy": u, "https_proxy": u, "all_proxy": u,
			"NO_PROXY": "localhost,127.0.0.1,::1", "no_proxy": "localhost,127.0.0.1,::1",
		}
	}
	if useCgroup {
		st.cg, err = newCgroups(host.Cgroup, id, st.limits.resources())
		if err != nil {
			return st, fmt.Errorf("cgroups: %w", err)
		}
		st.iso.Level = LevelFull
	} else {
		st.iso.Cgroup = "none"
		st.iso.Level = LevelNamespaces
		st.iso.Rlimits = true
		if st.limits.PIDs > 0 {
			// Counted per uid, and the agent shares the commands': the
			// limit counts its threads on top (see agentThreads).
			cfg.RlimitNPROC = uint64(st.limits.PIDs + agentThreads)
		}
		if st.limits.Memory > 0 {
			cfg.RlimitAS = uint64(st.limits.Memory)
		}
	}
	if host.LandlockABI == 0 && st.iso.Level > LevelNamespaces {
		st.iso.Level = LevelNamespaces
	}
	if l1 {
		st.iso.Level = LevelLandlock
	}

	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return st, err
	}
	files[fdConfig] = cfgR
	defer cfgW.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return st, err
	}
	files[fdReady] = readyW
	defer readyR.Close()

	cmd := exec.Command("/proc/self/exe")
	cmd.Args = []string{"perimeter-local-init", id}
	cmd.Env = []string{initEnv + "=sandbox", "GOMAXPROCS=2", "GOTRACEBACK=single"}
	if l1 {
		cmd.Env[0] = initEnv + "=l1"
	}
	cmd.Stderr = &limitedWriter{w: st.initErr, n: 64 << 10}
	extra := make([]*os.File, fdRootFS-2)
	for fd, f := range files {
		extra[fd-3] = f
	}
	// Every descriptor from fdConfig to fdRootFS is set in the init, the
	// unused ones to /dev/null: the init closes fdNet and fdRootFS by number,
	// and a gap there would be free for its Go runtime's own descriptors (its
	// epoll, seen under `ip netns exec`), which it would then close.
	for i, f := range extra {
		if f == nil {
			null, err := os.Open(os.DevNull)
			if err != nil {
				return st, err
			}
			defer null.Close()
			extra[i] = null
		}
	}
	cmd.ExtraFiles = extra
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: nsFlags(netMode != "host"),
		Pdeathsig:  syscall.SIGKILL,
		Setsid:     true,
	}
	if l1 {
		cmd.SysProcAttr.Cloneflags = 0
		if os.Getuid() == 0 {
			cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(st.uidBase), Gid: uint32(st.uidBase), Groups: []uint32{}}
		}
	} else {
		setIDMaps(cmd.SysProcAttr, st.uidBase)
	}
	if st.cg != nil {
		if d := st.cg.cloneDir(); d != "" {
			cgfd, err := os.Open(d)
			if err != nil {
				return st, err
			}
			defer cgfd.Close()
			cmd.SysProcAttr.UseCgroupFD = true
			cmd.SysProcAttr.CgroupFD = int(cgfd.Fd())
		}
	}
	if err := cmd.Start(); err != nil {
		return st, fmt.Errorf("start the sandbox's init: %w", err)
	}
	st.init, st.initPID = cmd, cmd.Process.Pid
	go func() {
		cmd.Wait()
		close(st.initDone)
	}()
	for _, f := range files {
		f.Close()
	}
	clear(files)
	if st.cg != nil {
		if err := st.cg.join(cmd.Process.Pid); err != nil {
			return st, err
		}
	}
	if err := json.NewEncoder(cfgW).Encode(&cfg); err != nil {
		return st, fmt.Errorf("configure the sandbox's init: %w", err)
	}
	cfgW.Close()

	// Wait for the init's report, bounded by ctx.
	repCh := make(chan initReport, 1)
	go func() {
		var rep initReport
		if err := json.NewDecoder(readyR).Decode(&rep); err != nil {
			rep.Error = "the sandbox's init exited before it was ready"
		}
		repCh <- rep
	}()
	var rep initReport
	select {
	case rep = <-repCh:
	case <-ctx.Done():
		return st, ctx.Err()
	}
	if rep.Error != "" {
		<-st.initDone
		msg := rep.Error
		if s := bytes.TrimSpace(st.initErr.Bytes()); len(s) > 0 {
			msg += ": " + string(s)
		}
		return st, errors.New(msg)
	}
	if !l1 && !rep.NoUserNS {
		return st, errors.New("the sandbox's init did not forbid nested user namespaces")
	}
	st.iso.LandlockABI = rep.LandlockABI
	st.iso.Seccomp = rep.Seccomp
	st.iso.NoNewPrivs = rep.NoNewPrivs
	st.iso.CapsDropped = rep.CapsDropped
	return st, nil
}

// destroy kills everything in the sandbox and releases the host-side
// resources: cgroups, the proxy and the uid range. Mounts live in the
// sandbox's mount namespace and go with it.
func (st *isoState) destroy() error {
	if st.attached {
		// Another process owns what the sandbox holds on the host.
		st.killAttached()
		return nil
	}
	var errs []error
	st.closeIdle()
	if st.init != nil {
		if st.l1 != nil && st.alive() {
			// No pid namespace: the agent (a subreaper) kills every
			// descendant before it goes.
			ctx, cancel := context.WithTimeout(context.Background(), killallTimeout)
			st.call(ctx, &agentRequest{Op: "killall"})
			cancel()
		}
		if st.cg != nil {
			st.cg.kill()
		}
		st.init.Process.Kill() // PID 1: the kernel kills the whole pid namespace
		<-st.initDone
	}
	if st.proxy != nil {
		st.proxy.Close()
	}
	if st.cg != nil {
		if err := st.cg.remove(); err != nil {
			errs = append(errs, err)
		}
	}
	st.uids.free()
	if st.ctlDir != nil {
		st.ctlDir.Close()
	}
	return errors.Join(errs...)
}

// killallTimeout bounds the agent's killing of every process at L1.
const killallTimeout = 10 * time.Second

// shortPath names file in the directory d by a path short enough for a
// Unix socket address, however deep d is: /proc/self/fd/N/file.
func shortPath(d *os.File, file string) string {
	return "/proc/self/fd/" + strconv.Itoa(int(d.Fd())) + "/" + file
}

// alive reports whether the init still runs.
func (st *isoState) alive() bool {
	select {
	case <-st.initDone:
		return false
	default:
		return true
	}
}

// dial opens a connection to the agent and sends req.
func (st *isoState) dial(ctx context.Context, req *agentRequest) (net.Conn, *frameWriter, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", st.sock)
	if err != nil {
		return nil, nil, err
	}
	fw := &frameWriter{w: c}
	if err := fw.writeJSON(frameRequest, req); err != nil {
		c.Close()
		return nil, nil, err
	}
	return c, fw, nil
}

// call sends a one-shot request and waits for its answer.
func (st *isoState) call(ctx context.Context, req *agentRequest) error {
	c, _, err := st.dial(ctx, req)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	var buf []byte
	typ, p, err := readFrame(c, &buf)
	if err != nil {
		return err
	}
	if typ == frameError {
		return errors.New(string(p))
	}
	return nil
}

type limitedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
	n  int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.n - l.w.Len(); room > 0 {
		l.w.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// isoProcess is a command run by a sandbox's agent.
type isoProcess struct {
	sb   *Sandbox
	st   *isoState
	conn net.Conn
	fw   *frameWriter
	pid  int
	id   uint64 // the agent's name for the command (0 from an older agent)
	tty  bool
	// reuse: the connection goes back to the pool after a clean exit.
	reuse bool

	watchOOM  bool
	oomBefore int64
	done      chan struct{}
	status    sandbox.ExitStatus
	err       error

	mu     sync.Mutex
	ctxErr error
	exited bool
}

var _ driver.Resizer = (*isoProcess)(nil)

// As reports false: a local process has no native type to expose.
func (pr *isoProcess) As(any) bool { return false }

// startIsolatedCmd sends cmd to the agent. dir is the sandbox path of the
// working directory and env the full environment.
func (s *Sandbox) startIsolatedCmd(ctx context.Context, cmd *sandbox.Cmd, dir string, env []string) (driver.Process, error) {
	const op = "exec"
	st := s.iso
	req := &agentRequest{Op: "exec", Args: cmd.Args, Dir: dir, Env: env, Stdin: cmd.Stdin != nil, WantID: true}
	if cmd.Timeout > 0 {
		req.TimeoutMS = max(1, cmd.Timeout.Milliseconds())
	}
	if cmd.TTY != nil {
		if cmd.TTY.Rows > 65535 || cmd.TTY.Cols > 65535 {
			return nil, sandbox.Errorf(Name, s.id, op, sandbox.ErrInvalidArgument,
				"terminal size %dx%d out of range 1-65535", cmd.TTY.Rows, cmd.TTY.Cols)
		}
		req.TTY = &ttySize{Rows: cmd.TTY.Rows, Cols: cmd.TTY.Cols}
	}
	// A memory cgroup kills for memory only under a limit.
	var oom int64
	watchOOM := st.cg != nil && s.memLimit > 0
	if watchOOM {
		oom = st.cg.oomKills()
	}
	// A command without stdin or a terminal may use a kept connection: the
	// agent leaves it clean after reporting the exit.
	plain := req.TTY == nil && !req.Stdin
	var c net.Conn
	var fw *frameWriter
	var err error
	if plain {
		c, _, err = st.getConn(ctx)
		if err == nil {
			fw = &frameWriter{w: c}
			if err = fw.writeJSON(frameRequest, req); err != nil {
				c.Close()
			}
		}
	} else {
		c, fw, err = st.dial(ctx, req)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !st.alive() {
			return nil, sandbox.NewError(Name, s.id, op, sandbox.ErrTerminated, errors.New("the sandbox's init has exited"))
		}
		return nil, sandbox.NewError(Name, s.id, op, sandbox.ErrUnavailable, err)
	}
	var buf []byte
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) })
	typ, p, err := readFrame(c, &buf)
	stopped := stop()
	if err != nil || typ != frameStarted {
		c.Close()
		if !stopped || ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err == nil {
			err = fmt.Errorf("agent: %s", p)
			return nil, sandbox.NewError(Name, s.id, op, sandbox.ErrInvalidArgument, err)
		}
		return nil, sandbox.NewError(Name, s.id, op, sandbox.ErrUnavailable, err)
	}
	// "pid id", or "pid" from an agent that predates ids.
	pidText, idText, _ := strings.Cut(string(p), " ")
	pid, _ := strconv.Atoi(pidText)
	id, _ := strconv.ParseUint(idText, 10, 64)
	pr := &isoProcess{sb: s, st: st, conn: c, fw: fw, pid: pid, id: id, tty: cmd.TTY != nil, reuse: plain, watchOOM: watchOOM, oomBefore: oom, done: make(chan struct{})}
	s.mu.Lock()
	if s.terminated {
		s.mu.Unlock()
		c.Close()
		return nil, sandbox.NewError(Name, s.id, op, sandbox.ErrTerminated, nil)
	}
	s.isoProcs[pr] = struct{}{}
	s.mu.Unlock()

	if cmd.Stdin != nil {
		go pr.feed(cmd.Stdin)
	}
	go pr.read(writerOr(cmd.Stdout), writerOr(cmd.Stderr))
	if ctx.Done() != nil {
		go func() {
			select {
			case <-ctx.Done():
				pr.mu.Lock()
				pr.ctxErr = ctx.Err()
				pr.mu.Unlock()
				pr.signal(context.Background(), unix.SIGKILL)
			case <-pr.done:
			}
		}()
	}
	return pr, nil
}

// feed copies r to the command's stdin. It ends when r's Read returns after
// the command is done.
func (pr *isoProcess) feed(r io.Reader) {
	b := make([]byte, 32<<10)
	for {
		n, err := r.Read(b)
		if n > 0 {
			if pr.fw.write(frameStdin, b[:n]) != nil {
				return
			}
		}
		if err != nil {
			pr.fw.write(frameStdinEOF, nil)
			return
		}
		select {
		case <-pr.done:
			return
		default:
		}
	}
}

// read copies the command's output until its exit frame.
func (pr *isoProcess) read(stdout, stderr io.Writer) {
	var buf []byte
	st := sandbox.ExitStatus{Code: -1, Signal: sandbox.SIGKILL}
	var err error
	for {
		var typ byte
		var p []byte
		typ, p, err = readFrame(pr.conn, &buf)
		if err != nil {
			break
		}
		switch typ {
		case frameStdout:
			stdout.Write(p)
		case frameStderr:
			stderr.Write(p)
		case frameExit:
			var rep exitReport
			if err = json.Unmarshal(p, &rep); err == nil {
				st = sandbox.ExitStatus{Code: rep.Code, Signal: sandbox.Signal(rep.Signal), TimedOut: rep.TimedOut}
			}
		}
		if typ == frameExit {
			break
		}
	}
	pr.mu.Lock()
	cancelled := pr.ctxErr != nil
	pr.mu.Unlock()
	if err == nil && pr.reuse && !cancelled {
		pr.st.putConn(pr.conn)
	} else {
		pr.conn.Close()
	}
	if err != nil {
		// The connection broke before the exit frame: the agent died, which
		// only happens when the sandbox is killed. Wait for the init to be
		// reaped to tell.
		select {
		case <-pr.st.initDone:
			pr.err = sandbox.NewError(Name, pr.sb.id, "wait", sandbox.ErrTerminated, errors.New("the sandbox ended while the command ran"))
		case <-time.After(2 * time.Second):
			pr.err = sandbox.NewError(Name, pr.sb.id, "wait", sandbox.ErrUnavailable, fmt.Errorf("lost the agent: %w", err))
		}
	}
	// Killed (or a shell reporting its child killed, 128+9) while the
	// sandbox's OOM-kill count rose: the kernel killed it for memory.
	if (st.Signal == sandbox.SIGKILL || st.Code == 128+9) && pr.watchOOM && pr.st.cg.oomKills() > pr.oomBefore {
		st.OOMKilled = true
	}
	pr.mu.Lock()
	if pr.ctxErr != nil {
		pr.err = pr.ctxErr
		st.Code, st.Signal = -1, sandbox.SIGKILL
	}
	pr.exited = true
	pr.mu.Unlock()
	pr.status = st
	pr.sb.mu.Lock()
	delete(pr.sb.isoProcs, pr)
	pr.sb.mu.Unlock()
	close(pr.done)
}

// Wait waits for the command and its output.
func (pr *isoProcess) Wait(ctx context.Context) (sandbox.ExitStatus, error) {
	select {
	case <-pr.done:
		return pr.status, pr.err
	case <-ctx.Done():
		return sandbox.ExitStatus{}, ctx.Err()
	}
}

// Signal sends sig to the command's process group inside the sandbox.
func (pr *isoProcess) Signal(ctx context.Context, sig sandbox.Signal) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	n, known := driverutil.SignalNumber(sig)
	num := unix.Signal(n)
	if !known {
		return sandbox.Errorf(Name, pr.sb.id, "signal", sandbox.ErrInvalidArgument, "unknown signal %q", sig)
	}
	return pr.signal(ctx, num)
}

func (pr *isoProcess) signal(ctx context.Context, num unix.Signal) error {
	pr.mu.Lock()
	exited := pr.exited
	pr.mu.Unlock()
	if exited || pr.pid == 0 {
		return nil
	}
	if err := pr.st.call(ctx, &agentRequest{Op: "signal", Pid: pr.pid, ID: pr.id, Signal: int(num)}); err != nil {
		if !pr.st.alive() {
			return nil // the sandbox, and the process, are gone
		}
		return sandbox.NewError(Name, pr.sb.id, "signal", sandbox.ErrUnavailable, err)
	}
	return nil
}

// Resize changes the size of the command's terminal.
func (pr *isoProcess) Resize(ctx context.Context, rows, cols int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !pr.tty {
		return sandbox.Errorf(Name, pr.sb.id, "resize", sandbox.ErrInvalidArgument, "the command has no terminal (Cmd.TTY was nil)")
	}
	if rows <= 0 || cols <= 0 || rows > 65535 || cols > 65535 {
		return sandbox.Errorf(Name, pr.sb.id, "resize", sandbox.ErrInvalidArgument,
			"terminal size %dx%d out of range 1-65535", rows, cols)
	}
	pr.mu.Lock()
	exited := pr.exited
	pr.mu.Unlock()
	if exited {
		return nil
	}
	if err := pr.st.call(ctx, &agentRequest{Op: "resize", Pid: pr.pid, ID: pr.id, TTY: &ttySize{Rows: rows, Cols: cols}}); err != nil {
		return sandbox.NewError(Name, pr.sb.id, "resize", sandbox.ErrUnavailable, err)
	}
	return nil
}

// dialIsolated connects to port inside the sandbox's network namespace
// through the agent.
func (s *Sandbox) dialIsolated(ctx context.Context, port int) (net.Conn, error) {
	c, _, err := s.iso.dial(ctx, &agentRequest{Op: "dial", Port: port})
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) })
	var buf []byte
	typ, p, err := readFrame(c, &buf)
	stopped := stop()
	if !stopped {
		c.Close()
		return nil, ctx.Err()
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	if typ != frameStarted {
		c.Close()
		return nil, fmt.Errorf("port %d in the sandbox: %s", port, p)
	}
	return c, nil
}
