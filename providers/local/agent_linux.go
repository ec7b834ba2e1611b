package local

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/perimeter-sdk/perimeter/sandbox/driver/driverutil"
)

// agent is a sandbox's PID 1: it serves the host's requests on the agent
// socket, starts commands from its hardened spawner thread, and reaps every
// process of the sandbox, its own commands' and orphans alike.
type agent struct {
	ln    net.Listener
	proxy bool
	l1    *l1Config // set at L1
	// rlimitAS bounds each command's address space where no cgroup limits
	// memory. The agent, a Go program, cannot live under it itself, so it
	// is set on each command as soon as it has started.
	rlimitAS uint64
	devNull  int // /dev/null, the stdin of commands given none
	spawn    chan spawnRequest
	starting chan struct{} // a slot for each command being started

	mu      sync.Mutex
	waiters map[int]chan unix.WaitStatus // pid -> its exit status, once
	reapNow chan struct{}
	procs   map[uint64]*agentProc // the running commands, by id
	lastID  uint64
}

type agentProc struct {
	id     uint64
	pgid   int
	master *os.File // the PTY's master, if any
	// pidfd refers to the command's leader (CLONE_PIDFD, so from its very
	// start), or is -1. It names the leader's group even after the leader
	// has been reaped and its id passed on: see kill.
	pidfd int

	mu     sync.Mutex
	exited bool // the command is done; pidfd is closed
}

// kill signals the command's process group: the group the leader made, and
// never another. Where the kernel signals a group through a pidfd (Linux
// 6.9's PIDFD_SIGNAL_PROCESS_GROUP), that is exact whatever the leader's
// state: the pidfd holds the leader's pid, so the signal goes to the
// processes still in that group after the leader has been reaped, and to
// none of a group that has since taken the same number. Elsewhere the
// group is signalled by its id, which after the leader is reaped is the
// group's only while a member is left in it.
func (p *agentProc) kill(sig unix.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited {
		return
	}
	if p.pidfd >= 0 && pidfdGroupSignals() {
		unix.PidfdSendSignal(p.pidfd, sig, nil, unix.PIDFD_SIGNAL_PROCESS_GROUP)
		return
	}
	unix.Kill(-p.pgid, sig)
}

// done marks the command done: it is no longer signalled.
func (p *agentProc) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.exited = true
	if p.pidfd >= 0 {
		unix.Close(p.pidfd)
		p.pidfd = -1
	}
}

// pidfdGroupSignals reports whether pidfd_send_signal takes
// PIDFD_SIGNAL_PROCESS_GROUP (Linux 6.9 and later; older kernels refuse
// the flag with EINVAL): asked once, with signal 0 through a pidfd of this
// process to the group of its number (ESRCH when it leads none).
var pidfdGroupSignals = sync.OnceValue(func() bool {
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	err = unix.PidfdSendSignal(fd, 0, nil, unix.PIDFD_SIGNAL_PROCESS_GROUP)
	return err == nil || err == unix.ESRCH
})

type spawnRequest struct {
	path  string
	args  []string
	attr  *syscall.ProcAttr
	reply chan spawnResult
}

type spawnResult struct {
	pid  int
	wait chan unix.WaitStatus
	err  error
}

func newAgent(ln net.Listener, proxy bool) *agent {
	devNull, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		devNull = -1
	}
	return &agent{
		devNull: devNull,
		reapNow: make(chan struct{}, 1),
		ln:      ln, proxy: proxy,
		spawn:    make(chan spawnRequest),
		starting: make(chan struct{}, startingSlots),
		waiters:  map[int]chan unix.WaitStatus{},
		procs:    map[uint64]*agentProc{},
	}
}

// startSpawner starts the thread every command is forked from, hardens it,
// and returns what the hardening achieved. Any failure is fatal: a sandbox
// is never left half-hardened.
func (a *agent) startSpawner() (initReport, error) {
	type result struct {
		rep initReport
		err error
	}
	ready := make(chan result, 1)
	go func() {
		// The thread is never unlocked: when this goroutine ends (never, in
		// practice) the runtime throws the thread away instead of reusing it.
		runtime.LockOSThread()
		var rep initReport
		if a.l1 != nil {
			r, err := hardenL1(a.l1)
			ready <- result{rep: r, err: err}
			if err != nil {
				return
			}
			a.spawnLoop()
			return
		}
		// A cgroup namespace rooted at the sandbox's own cgroups (joined
		// before the init was configured): commands see "/" in
		// /proc/self/cgroup, not the host's cgroup paths.
		if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
			ready <- result{err: fmt.Errorf("cgroup namespace: %w", err)}
			return
		}
		if err := dropCapabilities(); err != nil {
			ready <- result{err: err}
			return
		}
		rep.CapsDropped = true
		abi, err := applyLandlock([]string{"/workspace", "/tmp", "/dev"})
		if err != nil {
			ready <- result{err: err}
			return
		}
		rep.LandlockABI, rep.NoNewPrivs = abi, true
		if err := applySeccomp(); err != nil {
			ready <- result{err: err}
			return
		}
		rep.Seccomp = true
		ready <- result{rep: rep}
		a.spawnLoop()
	}()
	r := <-ready
	return r.rep, r.err
}

// spawnLoop forks the commands, on the hardened thread.
func (a *agent) spawnLoop() {
	for req := range a.spawn {
		a.mu.Lock()
		pid, err := syscall.ForkExec(req.path, req.args, req.attr)
		var wait chan unix.WaitStatus
		if err == nil {
			wait = make(chan unix.WaitStatus, 1)
			a.waiters[pid] = wait
			// The waiter's own copy of the pidfd: the command's is closed
			// when it is done, which may be before the waiter wakes.
			pidfd := -1
			if sys := req.attr.Sys; sys != nil && sys.PidFD != nil && *sys.PidFD >= 0 {
				if fd, err := unix.FcntlInt(uintptr(*sys.PidFD), unix.F_DUPFD_CLOEXEC, 0); err == nil {
					pidfd = fd
				}
			}
			go a.waitFor(pid, pidfd, wait)
		}
		a.mu.Unlock()
		req.reply <- spawnResult{pid: pid, wait: wait, err: err}
	}
}

// Reaping: each command's own goroutine waits for it, through the
// netpoller on the command's pidfd (readable once it has exited), or where
// there is none with a blocking wait4, which takes a thread per command;
// reapOrphans, run on SIGCHLD and after each command, collects every other
// child (orphans re-parented to PID 1, or to the agent as a subreaper at L1)
// without touching the commands'.

// waitFor waits for the command pid and delivers its status. It owns pidfd
// (-1 for none).
func (a *agent) waitFor(pid, pidfd int, ch chan unix.WaitStatus) {
	var ws unix.WaitStatus
	if !waitPolled(pid, pidfd, &ws) {
		for {
			_, err := unix.Wait4(pid, &ws, 0, nil)
			if err != unix.EINTR {
				break
			}
		}
	}
	a.mu.Lock()
	delete(a.waiters, pid)
	a.mu.Unlock()
	ch <- ws
	a.nudge()
}

// waitPolled reaps pid once its pidfd is readable, parking the goroutine
// in the netpoller rather than a thread in wait4, and reports whether it
// did. It closes pidfd. A false return leaves pid unreaped.
func waitPolled(pid, pidfd int, ws *unix.WaitStatus) bool {
	if pidfd < 0 {
		return false
	}
	if err := unix.SetNonblock(pidfd, true); err != nil {
		unix.Close(pidfd)
		return false
	}
	f := os.NewFile(uintptr(pidfd), "pidfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	reaped := false
	err = rc.Read(func(uintptr) bool {
		for {
			got, err := unix.Wait4(pid, ws, unix.WNOHANG, nil)
			switch {
			case err == unix.EINTR:
				continue
			case err != nil || got == pid:
				// Reaped, or (ECHILD) not ours to wait for any more:
				// the blocking wait4 would return the same at once.
				reaped = true
				return true
			}
			return false // still running: wait until the pidfd is readable
		}
	})
	// An error here is a pidfd the netpoller cannot watch; nothing was
	// reaped unless the callback said so.
	return err == nil && reaped
}

// agentThreads is the threads a sandbox's limit allows its agent on top of
// the commands' (pids.max, or RLIMIT_NPROC without a cgroup): the Go
// runtime aborts the process when it cannot make a thread, and commands can
// use every process the limit allows. The agent needs few: agentProcs
// processors, the spawner's thread, and one for each system call under way
// (commands are waited for through the netpoller, and startingSlots start
// at a time). It starts agentThreadReserve of them before any command runs
// and leaves them idle, so that the runtime, which takes an idle thread
// before it makes one, does not make more; the rest of the allowance is
// margin for the runtime's own.
const (
	agentThreads       = 32
	agentThreadReserve = 24
)

// startingSlots is how many commands the agent starts at once.
const startingSlots = 4

// agentProcs is the agent's GOMAXPROCS: it relays bytes and forks commands,
// and each processor in use can take a thread of its own.
const agentProcs = 2

// startReserve starts the agent's reserve of threads (see agentThreads) in
// the background; the channel is closed once it is made.
func startReserve() <-chan struct{} {
	reserved := make(chan struct{})
	go func() {
		reserveThreads(agentThreadReserve)
		close(reserved)
	}()
	return reserved
}

// reserveThreads has the runtime start threads until the process has about
// n, and leaves them idle: the runtime takes an idle thread before it makes
// a new one, and never ends one it has. The init calls it before any
// command runs, so that the threads fit in the sandbox's limit, and beside
// building the root, which it does not disturb: idle threads share the
// process's root and working directory, and the spawner's hardening is its
// own thread's.
func reserveThreads(n int) {
	if runtime.GOMAXPROCS(0) > agentProcs {
		runtime.GOMAXPROCS(agentProcs)
	}
	for range 3 { // idle threads already there absorb some of each round
		have := threadCount()
		if have >= n {
			return
		}
		var locked, release sync.WaitGroup
		locked.Add(n - have)
		release.Add(1)
		for range n - have {
			go func() {
				// Parked while locked, the goroutine holds its thread, so
				// the others need threads of their own.
				runtime.LockOSThread()
				locked.Done()
				release.Wait()
				runtime.UnlockOSThread()
			}()
		}
		locked.Wait()
		release.Done()
	}
}

// threadCount is the number of threads the runtime has made (it ends none
// but those of goroutines that exit locked to theirs).
func threadCount() int {
	n, _ := runtime.ThreadCreateProfile(nil)
	return n
}

// nudge asks reapOrphans to run.
func (a *agent) nudge() {
	select {
	case a.reapNow <- struct{}{}:
	default:
	}
}

// reapOrphans reaps exited children that are not commands.
func (a *agent) reapOrphans() {
	for {
		var info unix.Siginfo
		if err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil); err != nil {
			return
		}
		// si_pid follows si_signo, si_errno, si_code and padding; Linux
		// leaves it zero when no child is waitable.
		pid := int(*(*int32)(unsafe.Add(unsafe.Pointer(&info), 16)))
		if pid <= 0 {
			return
		}
		a.mu.Lock()
		_, tracked := a.waiters[pid]
		a.mu.Unlock()
		if tracked {
			return // its own goroutine reaps it, then nudges
		}
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, unix.WNOHANG, nil)
	}
}

// serve runs the agent until the sandbox is killed.
func (a *agent) serve() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGCHLD)
	// Signals from inside the sandbox must not end PID 1 (Landlock's signal
	// scope blocks them where available; this covers older kernels). They
	// are caught and dropped rather than ignored: an ignored disposition
	// would be inherited by every command across exec.
	drop := make(chan os.Signal, 8)
	signal.Notify(drop, unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2, unix.SIGPIPE, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU)
	go func() {
		for range drop {
		}
	}()
	go func() {
		for {
			select {
			case <-sigs:
			case <-a.reapNow:
			}
			a.reapOrphans()
		}
	}()
	if a.proxy {
		go a.relayProxy()
	}
	for {
		c, err := a.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go a.handle(c)
	}
}

// proxyAddr is where commands find the egress proxy in allowlist mode.
const proxyAddr = "127.0.0.1:3128"

// relayProxy listens on proxyAddr inside the sandbox's network namespace and
// relays each connection to the host's proxy socket.
func (a *agent) relayProxy() {
	ln, err := net.Listen("tcp", proxyAddr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "perimeter agent: proxy relay: %v\n", err)
		return
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			up, err := net.Dial("unix", "/run/perimeter/proxy.sock")
			if err != nil {
				c.Close()
				return
			}
			pipeConns(c, up)
		}()
	}
}

// pipeConns copies both ways until both directions end, then closes both.
func pipeConns(a, b net.Conn) {
	done := make(chan struct{})
	go func() {
		io.Copy(b, a)
		closeWrite(b)
		close(done)
	}()
	io.Copy(a, b)
	closeWrite(a)
	<-done
	a.Close()
	b.Close()
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		c.Close()
	}
}

func (a *agent) handle(c net.Conn) {
	var buf []byte
	for {
		typ, p, err := readFrame(c, &buf)
		if err != nil || typ != frameRequest {
			c.Close()
			return
		}
		var req agentRequest
		if err := json.Unmarshal(p, &req); err != nil {
			c.Close()
			return
		}
		if !a.serveRequest(c, &req) {
			c.Close()
			return
		}
		// The host may send another request on the same connection.
	}
}

// serveRequest answers one request and reports whether the connection can
// carry another.
func (a *agent) serveRequest(c net.Conn, req *agentRequest) bool {
	fw := &frameWriter{w: c}
	switch req.Op {
	case "ping":
		return fw.write(frameStarted, nil) == nil
	case "killall":
		killDescendants(time.Now().Add(5 * time.Second))
		return fw.write(frameStarted, nil) == nil
	case "exec":
		return a.exec(c, fw, req)
	case "signal", "resize":
		pr := a.lookup(req)
		switch {
		case pr == nil:
			fw.write(frameStarted, nil) // exited: not an error
		case req.Op == "signal":
			pr.kill(unix.Signal(req.Signal))
			fw.write(frameStarted, nil)
		case pr.master == nil:
			fw.write(frameError, []byte("the process has no terminal"))
		case req.TTY == nil:
			fw.write(frameError, []byte("no size given"))
		default:
			if err := pty.Setsize(pr.master, &pty.Winsize{Rows: uint16(req.TTY.Rows), Cols: uint16(req.TTY.Cols)}); err != nil {
				fw.write(frameError, []byte(err.Error()))
			} else {
				fw.write(frameStarted, nil)
			}
		}
		return false
	case "dial":
		up, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(req.Port)), 10*time.Second)
		if err != nil {
			fw.write(frameError, []byte(err.Error()))
			return false
		}
		if fw.write(frameStarted, nil) != nil {
			up.Close()
			return false
		}
		pipeConns(c, up)
		return false
	default:
		fw.write(frameError, []byte("unknown request "+strconv.Quote(req.Op)))
		return false
	}
}

// lookup finds the running command a signal or resize request names: by
// its id or, from a host that knows only pids, the newest command with the
// pid (an older one with the same pid has had its leader reaped).
func (a *agent) lookup(req *agentRequest) *agentProc {
	a.mu.Lock()
	defer a.mu.Unlock()
	if req.ID != 0 {
		return a.procs[req.ID]
	}
	var found *agentProc
	for _, p := range a.procs {
		if p.pgid == req.Pid && (found == nil || p.id > found.id) {
			found = p
		}
	}
	return found
}

// exec runs one command for the host and streams it back on c.
// It reports whether c can carry another request: after a command without
// stdin or a terminal the connection is clean once its exit is reported
// (the host sends nothing on it meanwhile).
func (a *agent) exec(c net.Conn, fw *frameWriter, req *agentRequest) (reusable bool) {
	if len(req.Args) == 0 {
		fw.write(frameError, []byte("empty command"))
		return false
	}
	// Starting a command is a run of system calls, each of which can hold
	// a thread (see agentThreads): a few commands start at a time.
	a.starting <- struct{}{}
	started := false
	doneStarting := func() {
		if !started {
			started = true
			<-a.starting
		}
	}
	defer doneStarting()
	prog, code, lookErr := lookPath(req.Args[0], req.Dir, envValue(req.Env, "PATH"))
	if lookErr != nil {
		doneStarting() // before writing to the host, which may be slow to read
		fw.write(frameStarted, []byte("0"))
		fw.write(frameStderr, []byte(fmt.Sprintf("perimeter: %s: %v\n", req.Args[0], lookErr)))
		return fw.writeJSON(frameExit, exitReport{Code: code}) == nil && !req.Stdin && req.TTY == nil
	}

	var (
		child   []*os.File // the child's ends, closed here once it started
		outputs []*os.File // our read ends of its stdout and stderr (or the PTY)
		stdinW  *os.File
		master  *os.File
	)
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			f.Close()
		}
	}
	sys := &syscall.SysProcAttr{}
	var files []uintptr
	if req.TTY != nil {
		m, s, err := pty.Open()
		if err != nil {
			fw.write(frameError, []byte("open a terminal: "+err.Error()))
			return false
		}
		pty.Setsize(m, &pty.Winsize{Rows: uint16(req.TTY.Rows), Cols: uint16(req.TTY.Cols)})
		master = m
		child = []*os.File{s}
		files = []uintptr{s.Fd(), s.Fd(), s.Fd()}
		sys.Setsid, sys.Setctty, sys.Ctty = true, true, 0
	} else {
		sys.Setpgid = true
		var in *os.File
		if req.Stdin {
			r, w, err := os.Pipe()
			if err != nil {
				fw.write(frameError, []byte(err.Error()))
				return
			}
			in, stdinW = r, w
		} else {
			in = nil // a.devNull
		}
		outR, outW, err := os.Pipe()
		if err != nil {
			if in != nil {
				in.Close()
			}
			fw.write(frameError, []byte(err.Error()))
			return false
		}
		errR, errW, err := os.Pipe()
		if err != nil {
			if in != nil {
				in.Close()
			}
			closeAll([]*os.File{outR, outW})
			fw.write(frameError, []byte(err.Error()))
			return false
		}
		outputs = []*os.File{outR, errR}
		if in != nil {
			child = []*os.File{in, outW, errW}
			files = []uintptr{in.Fd(), outW.Fd(), errW.Fd()}
		} else {
			child = []*os.File{outW, errW}
			files = []uintptr{uintptr(a.devNull), outW.Fd(), errW.Fd()}
		}
	}
	cloexecAll()
	pidfd := -1
	sys.PidFD = &pidfd
	reply := make(chan spawnResult, 1)
	a.spawn <- spawnRequest{path: prog, args: req.Args, reply: reply, attr: &syscall.ProcAttr{
		Dir: req.Dir, Env: req.Env, Files: files, Sys: sys,
	}}
	res := <-reply
	closeAll(child)
	if res.err != nil {
		doneStarting()
		closeAll(outputs)
		if stdinW != nil {
			stdinW.Close()
		}
		if master != nil {
			master.Close()
		}
		code, ok := driverutil.ShellExitCode(res.err)
		if !ok {
			code = 126
		}
		fw.write(frameStarted, []byte("0"))
		fw.write(frameStderr, []byte(fmt.Sprintf("perimeter: %s: %v\n", req.Args[0], res.err)))
		return fw.writeJSON(frameExit, exitReport{Code: code}) == nil && !req.Stdin && req.TTY == nil
	}
	if a.rlimitAS > 0 {
		lim := unix.Rlimit{Cur: a.rlimitAS, Max: a.rlimitAS}
		unix.Prlimit(res.pid, unix.RLIMIT_AS, &lim, nil)
	}
	// The kernel's OOM killer must pick the command, never the agent (the
	// sandbox's PID 1): commands are made its first choice.
	setOOMScoreAdj(res.pid, commandOOMScoreAdj)
	doneStarting()
	pr := &agentProc{pgid: res.pid, master: master, pidfd: pidfd}
	a.mu.Lock()
	a.lastID++
	pr.id = a.lastID
	a.procs[pr.id] = pr
	a.mu.Unlock()
	startedMsg := strconv.Itoa(res.pid)
	if req.WantID {
		startedMsg += " " + strconv.FormatUint(pr.id, 10)
	}
	fw.write(frameStarted, []byte(startedMsg))

	// Output.
	var copies outputCopier
	if master != nil {
		copies.copy(master, func(b []byte) { fw.write(frameStdout, b) })
	} else {
		copies.copy(outputs[0], func(b []byte) { fw.write(frameStdout, b) })
		copies.copy(outputs[1], func(b []byte) { fw.write(frameStderr, b) })
	}
	// Input, and the host going away.
	var recycling atomic.Bool
	readerDone := make(chan error, 1)
	go func() {
		var buf []byte
		for {
			typ, p, err := readFrame(c, &buf)
			if err != nil {
				if !recycling.Load() {
					pr.kill(unix.SIGKILL)
				}
				if stdinW != nil {
					stdinW.Close()
				}
				readerDone <- err
				return
			}
			switch typ {
			case frameStdin:
				switch {
				case stdinW != nil:
					stdinW.Write(p)
				case master != nil:
					master.Write(p)
				}
			case frameStdinEOF:
				switch {
				case stdinW != nil:
					stdinW.Close()
				case master != nil:
					master.Write([]byte{4}) // ^D: end of input on a terminal
				}
			}
		}
	}()

	var timedOut bool
	var ws unix.WaitStatus
	if req.TimeoutMS > 0 {
		t := time.NewTimer(time.Duration(req.TimeoutMS) * time.Millisecond)
		select {
		case ws = <-res.wait:
		case <-t.C:
			timedOut = true
			pr.kill(unix.SIGKILL)
			ws = <-res.wait
		}
		t.Stop()
	} else {
		ws = <-res.wait
	}
	if ws.Signaled() || timedOut {
		// Take the group with the leader, as the host-side provider does.
		pr.kill(unix.SIGKILL)
	}
	// Copy the output until it ends or, for background processes that
	// still hold it, stays idle for outputGrace.
	copies.exit()
	pr.done()
	a.mu.Lock()
	delete(a.procs, pr.id)
	a.mu.Unlock()
	closeAll(outputs)
	if master != nil {
		master.Close()
	}
	if stdinW != nil {
		stdinW.Close()
	}
	st := driverutil.ExitStatusOf(syscall.WaitStatus(ws))
	rep := exitReport{Code: st.Code, Signal: string(st.Signal), TimedOut: timedOut}
	if !req.Stdin && req.TTY == nil {
		// Stop the reader before reporting the exit, after which the host
		// may send its next request on this connection.
		recycling.Store(true)
		c.SetReadDeadline(time.Unix(1, 0))
		err := <-readerDone
		c.SetReadDeadline(time.Time{})
		reusable = errors.Is(err, os.ErrDeadlineExceeded)
	}
	if fw.writeJSON(frameExit, rep) != nil {
		return false
	}
	return reusable
}
