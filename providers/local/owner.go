package local

// Isolated sandboxes across processes.
//
// The process that creates an isolated sandbox owns it: it is the parent of
// the sandbox's init and holds what the sandbox needs on the host (the uid
// range's lock, the egress proxy, the cgroups, the expiry timer). It also
// holds an flock on the sandbox directory's owner.lock from Create until it
// has released all of that, so that other processes can tell a sandbox being
// cleaned up by its owner from one whose owner died.
//
// Another process using the same root reaches a running sandbox with Get: it
// attaches to the init it finds in the metadata (identified by pid and start
// time through a pidfd), and uses the agent's socket and the init's root as
// the owner does. Its Terminate kills the sandbox as the owner's would, then
// waits on owner.lock until the owner has released everything (or cleans up
// after an owner that died). The owner learns of the end from its init's
// exit and releases everything then: [Sandbox.Done] is closed when it has.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// ownerLockFile, in a sandbox's directory, is flocked by the process that
// created the sandbox until it has released it.
const ownerLockFile = "owner.lock"

// Done returns a channel that is closed once the sandbox has ended and this
// process has released what it held for it. That is after Terminate on this
// handle returned, or, for an isolated sandbox, once its init ended for any
// other reason: another process terminated it (Get and Terminate, as
// perimeter rm does), its Spec.Timeout passed, or it was killed. In the
// process that created an isolated sandbox, the end of its init releases
// everything (processes, cgroups, egress proxy, uid range, directory) before
// Done is closed; a program that holds sandboxes for others (perimeter run
// --keep) waits on it and exits.
//
// For an unisolated (L0) sandbox, Done is closed when Terminate through this
// handle has returned.
func (s *Sandbox) Done() <-chan struct{} { return s.done }

// lockOwner creates dir's owner lock and takes it; the file stays locked
// while this process holds the sandbox.
func lockOwner(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, ownerLockFile), os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return f, nil
}

// releaseOwner releases the owner lock (once: later calls do nothing).
func (st *isoState) releaseOwner() {
	st.ownerMu.Lock()
	defer st.ownerMu.Unlock()
	if st.owner != nil {
		st.owner.Close()
		st.owner = nil
	}
}

// ownerHeld reports whether a process holds dir's owner lock; known is
// false when dir has no lock file (a sandbox of an earlier version, or one
// whose directory is going).
func ownerHeld(dir string) (held, known bool) {
	fd, err := unix.Open(filepath.Join(dir, ownerLockFile), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, false
	}
	defer unix.Close(fd)
	return unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB) != nil, true
}

// liveness is what List and the sweep make of a sandbox's metadata.
type liveness int

const (
	running liveness = iota // list it
	ending                  // its owner is releasing it: skip it
	dead                    // nobody will clean up: remove what it left
)

// liveness tells a running isolated sandbox from one that has ended. A
// handle of this process that owns the sandbox answers for it (once its
// init has ended, after it released the sandbox). Otherwise the owner lock
// tells whether a live process owns the sandbox, and its init's pid and
// start time whether it still runs (a reused pid does not keep a dead
// sandbox alive). Sandboxes without an owner lock (made by earlier
// versions) are judged by their init, or, before their init ran, by their
// creator.
func (p *Provider) liveness(m *meta) liveness {
	if !m.Isolated {
		return running
	}
	dir := filepath.Join(p.root, m.ID)
	live.mu.Lock()
	sb, mine := live.sandboxes[dir]
	live.mu.Unlock()
	if mine && sb.iso != nil && !sb.iso.attached {
		if !sb.initEnded() {
			return running
		}
		<-sb.done // its init's end terminates the handle
		return ending
	}
	initDead := m.InitPID != 0 && !processRuns(m.InitPID, m.InitStart)
	held, known := ownerHeld(dir)
	switch {
	case known && held && initDead:
		return ending
	case known && held:
		return running
	case known && (initDead || m.InitPID == 0):
		// The owner let go without removing the directory, or died.
		return dead
	case known:
		return running // an init that outlived its owner: Get and Terminate end it
	case m.InitPID != 0:
		if initDead {
			return dead
		}
		return running
	case m.CreatorPID != 0 && procStart(m.CreatorPID) != m.CreatorStart:
		return dead
	}
	return running
}

// waitReleased waits until a handle of this process on sandbox id that is
// being terminated has released it.
func (p *Provider) waitReleased(id string) {
	live.mu.Lock()
	sb, mine := live.sandboxes[filepath.Join(p.root, id)]
	live.mu.Unlock()
	if !mine {
		return
	}
	sb.mu.Lock()
	ending := sb.terminated
	sb.mu.Unlock()
	if ending {
		<-sb.done
	}
}

// attachState is what another process needs to use an isolated sandbox. Its
// creator records it in the metadata once the sandbox runs.
type attachState struct {
	Isolation Isolation         `json:"isolation"`
	Env       map[string]string `json:"env,omitempty"` // added to every command
	L1        *l1Config         `json:"l1,omitempty"`
	// Memory is the memory limit (for OOM reporting); Workspace the size of
	// a tmpfs /workspace (0: the host directory).
	Memory    int64 `json:"memory,omitempty"`
	Workspace int64 `json:"workspace,omitempty"`
	// CgroupVersion and CgroupDirs are the sandbox's cgroups, by key as
	// cgroupSet keeps them.
	CgroupVersion string            `json:"cgroup_version,omitempty"`
	CgroupDirs    map[string]string `json:"cgroup_dirs,omitempty"`
}

// attachState returns what st's sandbox records for other processes.
func (st *isoState) attachState() *attachState {
	a := &attachState{Isolation: st.iso, Env: st.env, L1: st.l1, Memory: st.limits.Memory, Workspace: st.limits.Workspace}
	if st.cg != nil {
		a.CgroupVersion, a.CgroupDirs = st.cg.version, st.cg.dirs
	}
	return a
}

// validCgroup reports whether d may be a cgroup of sandbox id: a directory
// named after it under cgroupRoot. Metadata is never trusted further.
func validCgroup(d, id string) bool {
	return filepath.IsAbs(d) && filepath.Clean(d) == d && strings.HasPrefix(d, cgroupRoot+"/") && filepath.Base(d) == id
}

// attachIso returns the host's side of the isolated sandbox in dir for a
// process that did not create it: its init, found by pid and checked by
// start time, watched through a pidfd; its agent socket; its cgroups (for
// OOM reports and kill). The caller makes the handle and then calls
// attached to check that the init still runs.
func attachIso(dir string, m *meta) (*isoState, error) {
	notRunning := func(why string) error {
		return sandbox.Errorf(Name, m.ID, "get", sandbox.ErrNotFound, "the sandbox is not running (%s)", why)
	}
	a := m.Attach
	switch {
	case m.InitPID == 0:
		return nil, sandbox.Errorf(Name, m.ID, "get", sandbox.ErrUnavailable, "the sandbox is being created")
	case a == nil:
		return nil, sandbox.Errorf(Name, m.ID, "get", sandbox.ErrNotFound,
			"the sandbox was made by a version of this provider that only its creating process can use")
	}
	pidfd, err := unix.PidfdOpen(m.InitPID, unix.PIDFD_NONBLOCK)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, notRunning("its init has exited")
		}
		return nil, sandbox.NewError(Name, m.ID, "get", kindOf(err), fmt.Errorf("pidfd of the sandbox's init: %w", err))
	}
	// The pidfd now names a process: the init, if it started when the
	// metadata says (a pid reused since names another).
	if procStart(m.InitPID) != m.InitStart {
		unix.Close(pidfd)
		return nil, notRunning("its init has exited")
	}
	st := &isoState{
		iso:      a.Isolation,
		uidBase:  a.Isolation.UIDBase,
		initPID:  m.InitPID,
		attached: true,
		env:      a.Env,
		l1:       a.L1,
		limits:   effective{Memory: a.Memory, Workspace: a.Workspace},
	}
	st.pidfd = os.NewFile(uintptr(pidfd), "pidfd")
	fail := func(err error) (*isoState, error) {
		st.closeAttached()
		return nil, err
	}
	if os.Getuid() == 0 {
		// The file methods take the sandbox root's uid: the kernel's, not
		// the metadata's word, decides which.
		if uid, err := initUID(m.InitPID, st.l1 != nil); err != nil || uid != st.uidBase {
			return fail(sandbox.Errorf(Name, m.ID, "get", sandbox.ErrUnavailable,
				"the sandbox's init runs as host uid %d (%v), not the recorded %d: refused", uid, err, st.uidBase))
		}
	}
	if len(a.CgroupDirs) > 0 {
		for _, d := range a.CgroupDirs {
			if !validCgroup(d, m.ID) {
				return fail(sandbox.Errorf(Name, m.ID, "get", sandbox.ErrUnavailable, "the metadata names cgroup %q, which is not this sandbox's: refused", d))
			}
		}
		st.cg = &cgroupSet{version: a.CgroupVersion, dirs: a.CgroupDirs}
	}
	ctl := filepath.Join(dir, "control")
	cfd, err := unix.Open(ctl, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail(sandbox.NewError(Name, m.ID, "get", kindOf(err), err))
	}
	st.ctlDir = os.NewFile(uintptr(cfd), ctl)
	st.sock = shortPath(st.ctlDir, agentSocket)
	if lf, err := os.OpenFile(filepath.Join(dir, ownerLockFile), os.O_RDONLY|unix.O_NOFOLLOW, 0); err == nil {
		st.ownerWait = lf
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fail(sandbox.NewError(Name, m.ID, "get", kindOf(err), err))
	}
	st.initDone = watchPidfd(st.pidfd)
	return st, nil
}

// attachedCheck checks, once the handle's root is open, that the init still
// runs: then the /proc/PID/root opened was its root.
func (st *isoState) attachedCheck(id string) error {
	if pidfdExited(st.pidfd) {
		return sandbox.Errorf(Name, id, "get", sandbox.ErrNotFound, "the sandbox is not running (its init has exited)")
	}
	return nil
}

// closeAttached releases what attach opened.
func (st *isoState) closeAttached() {
	if st.cg != nil {
		st.cg.closeOOM()
	}
	if st.ctlDir != nil {
		st.ctlDir.Close()
	}
	if st.ownerWait != nil {
		st.ownerWait.Close()
	}
	if st.pidfd != nil {
		st.pidfd.Close() // ends watchPidfd's goroutine
	}
}

// initUID returns the host uid that is root inside the sandbox of the init
// pid: its user namespace's mapping of uid 0, or at L1 (no namespace) its
// real uid.
func initUID(pid int, l1 bool) (int, error) {
	if l1 {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err != nil {
			return -1, err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "Uid:" {
				return strconv.Atoi(f[1])
			}
		}
		return -1, errors.New("no Uid line")
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/uid_map")
	if err != nil {
		return -1, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "0" {
			return strconv.Atoi(f[1])
		}
	}
	return -1, errors.New("uid 0 is not mapped")
}

// pidfdExited reports whether the process of pidfd has exited.
func pidfdExited(f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return true
	}
	exited := true
	rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		exited = err != nil || n > 0
	})
	return exited
}

// watchPidfd returns a channel closed when the process of f exits, or when
// f is closed. A pidfd becomes readable when its process exits; the wait
// goes through the runtime's poller, so it holds no thread.
func watchPidfd(f *os.File) chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		rc, err := f.SyscallConn()
		if err != nil {
			return
		}
		rc.Read(func(fd uintptr) bool {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(fds, 0)
			return err != nil || n > 0
		})
	}()
	return done
}

// killAttached kills the sandbox from a process that did not create it, as
// destroy does for its creator: the agent first kills every descendant at
// L1 (no pid namespace), the cgroup kills what it holds, and killing the
// init ends the pid namespace. It returns once the init has exited.
func (st *isoState) killAttached() {
	st.closeIdle()
	if st.l1 != nil && st.alive() {
		ctx, cancel := context.WithTimeout(context.Background(), killallTimeout)
		st.call(ctx, &agentRequest{Op: "killall"})
		cancel()
	}
	if st.cg != nil {
		st.cg.kill()
	}
	if rc, err := st.pidfd.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.PidfdSendSignal(int(fd), unix.SIGKILL, nil, 0) })
	}
	<-st.initDone
}

// endAttached finishes Terminate in a process that did not create the
// sandbox, once its init has exited: it waits (bounded by ctx) until the
// owner has released the sandbox, and removes what an owner that died left.
func (s *Sandbox) endAttached(ctx context.Context) error {
	st := s.iso
	defer st.closeAttached()
	if st.ownerWait != nil {
		locked := make(chan error, 1)
		f := st.ownerWait
		st.ownerWait = nil
		go func() {
			// Granted when the owner closes its lock: after it removed the
			// directory, or when it died. Closed by this goroutine, which
			// outlives an early return on ctx only until then.
			err := unix.Flock(int(f.Fd()), unix.LOCK_EX)
			if err == nil {
				err = s.removeLeft()
			}
			f.Close()
			locked <- err
		}()
		select {
		case err := <-locked:
			if err != nil {
				return sandbox.NewError(Name, s.id, "terminate", kindOf(err), err)
			}
		case <-ctx.Done():
			return sandbox.NewError(Name, s.id, "terminate", sandbox.ErrUnavailable,
				fmt.Errorf("the sandbox's processes are killed; its owner has not released it yet: %w", ctx.Err()))
		}
		return nil
	}
	if err := s.removeLeft(); err != nil {
		return sandbox.NewError(Name, s.id, "terminate", kindOf(err), err)
	}
	return nil
}

// removeLeft removes what an owner that died without releasing the sandbox
// left: its cgroups and its directory. After a clean release there is
// nothing.
func (s *Sandbox) removeLeft() error {
	if _, err := os.Stat(filepath.Join(s.dir, metaFile)); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if s.iso.cg != nil {
		s.iso.cg.remove()
	}
	if err := os.Remove(filepath.Join(s.dir, metaFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return removeAll(s.dir)
}

// watchInit terminates the handle once the sandbox's init has ended,
// whoever ended it: the owner releases what it holds, another process's
// handle waits for the owner.
func (s *Sandbox) watchInit() {
	select {
	case <-s.iso.initDone:
		s.Terminate(context.Background())
	case <-s.done:
	}
}

// processRuns reports whether process pid, started at start (clock ticks
// since boot), still runs: not another process given the same pid, and not
// a zombie (an init whose creator died is reaped by whatever adopts it, and
// that may take its time).
func processRuns(pid int, start uint64) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return false
	}
	n, _ := strconv.ParseUint(f[19], 10, 64)
	return n == start
}
