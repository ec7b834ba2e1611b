// Package hostview gives the providers' fakes a sandbox whose commands see a
// read-only view of the test host's filesystem, with the sandbox's own
// directory where the real provider puts it, so that they see the paths a
// real sandbox has and cannot write to (or read the temporary files of) the
// host.
//
// A [Holder] builds the view once per sandbox, in a new mount namespace
// (and a network namespace with only loopback), and keeps it alive in a
// sleeping process; each command joins it with nsenter(1), which costs a
// few process starts rather than the dozens that building the view takes.
// [Holder.Derive] gives another sandbox a copy of a view, cheaper still.
// [Holder.Close] ends the holder and every process in its namespace.
// It needs util-linux's unshare and nsenter, and root or unprivileged user
// namespaces. It is a test fixture, not a security boundary: the host's
// files stay readable.
package hostview

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/perimeter-sdk/perimeter/internal/procgroup"
)

// Paths of the programs the holder and its commands use; the fakes check
// them before they choose to isolate.
const (
	UnsharePath = "/usr/bin/unshare"
	NsenterPath = "/usr/bin/nsenter"
	EnvPath     = "/usr/bin/env"
)

// Config describes a sandbox's view.
type Config struct {
	// Name names the tmpfs the view is built on (it shows in
	// /proc/self/mountinfo), such as "vercelfake".
	Name string
	// Mount is an empty host directory the view is mounted on in the
	// holder's mount namespace; on the host it stays empty. Unused when
	// At is "/".
	Mount string
	// Dir is the sandbox's own host directory, shown at At, an absolute
	// path such as "/workspace". At "/" makes Dir the view's root itself:
	// the host's top-level directories are mounted on directories (or
	// symbolic links) the holder makes in Dir, and whatever a command
	// writes anywhere else lands in Dir.
	Dir, At string
	// Tmp, if set, is a host directory shown at /tmp; otherwise /tmp is a
	// directory of the view's own (on its tmpfs, or Dir/tmp), mode 1777.
	Tmp string
	// Passwd and Group, if set, are host files shown at /etc/passwd and
	// /etc/group (both or neither).
	Passwd, Group string
	// Env is added to the holder's environment (as a mark, say).
	Env []string
}

// holderScript builds the view at $NR (on a tmpfs named $FSNAME unless
// that is empty) and holds it: each of the host's top-level directories
// bound read-only (the one named $OWN left out, for the sandbox's own),
// symbolic links copied, /proc, /dev and /sys bound recursively, the
// sandbox's directory at $AT, /tmp, and passwd and group. It brings up
// loopback in its network namespace, chroots into the view, says "ready"
// and sleeps.
const holderScript = `set -e
NR=$1 FSNAME=$2 OWN=$3 DIR=$4 AT=$5 TMPD=$6 PASSWD=$7 GROUP=$8
PATH=/usr/sbin:/usr/bin:/sbin:/bin
if [ -n "$FSNAME" ]; then mount -t tmpfs -o mode=755 "$FSNAME" "$NR"; fi
# Few processes: one cp for the links, one mkdir, one mount per directory.
skip() {
  case "${1#/}" in tmp|proc|dev|sys|lost+found|'*'|"$OWN") return 0;; esac
  return 1
}
set --
for d in /*; do
  skip "$d" || ! [ -L "$d" ] || [ -e "$NR$d" ] || [ -L "$NR$d" ] || set -- "$@" "$d"
done
[ $# = 0 ] || cp -P -t "$NR" -- "$@"
set --
for d in /*; do skip "$d" || [ -L "$d" ] || ! [ -d "$d" ] || set -- "$@" "$NR$d"; done
[ $# = 0 ] || mkdir -p -- "$@"
for m; do
  d=${m#"$NR"}
  mount --bind -o ro "$d" "$m" 2>/dev/null || mount --bind "$d" "$m"
done
mkdir -p "$NR/proc" "$NR/dev" "$NR/sys" "$NR/tmp"
mount --rbind /proc "$NR/proc"
mount --rbind /dev "$NR/dev"
mount --rbind /sys "$NR/sys"
if [ -n "$TMPD" ]; then mount --bind "$TMPD" "$NR/tmp"; else chmod 1777 "$NR/tmp"; fi
if [ "$AT" != / ]; then
  mkdir -p "$NR$AT"
  mount --bind "$DIR" "$NR$AT"
fi
if [ -n "$PASSWD" ]; then
  mount --bind "$PASSWD" "$NR/etc/passwd"
  mount --bind "$GROUP" "$NR/etc/group"
fi
ip link set lo up 2>/dev/null || true
exec chroot "$NR" /bin/sh -c 'echo ready; exec sleep 2147483647'
`

// Holder keeps a sandbox's view alive: a sleeping process in a mount
// namespace of its own, chrooted into the view, and in a network namespace
// with only loopback. Its methods are safe for concurrent use.
type Holder struct {
	cmd    *exec.Cmd
	userns bool
	root   string   // where the view is mounted in the holder's namespace
	at     string   // Config.At
	mntNS  string   // "mnt:[inode]" of the holder's mount namespace
	nsRef  *os.File // keeps that namespace, and so its inode number, until Close ends
	// leader holds the holder unreaped, and with it its group's id, until
	// Close reaps it: a kill(-pid) after an early reap could reach any
	// process group that took the id.
	leader  *procgroup.Leader
	waitErr error // the holder's Wait, once Close has reaped it
	once    sync.Once
	err     error
}

// Start builds the view cfg describes and starts its holder. When the
// process is not root, the namespaces are made inside a user namespace
// that maps it to root.
func Start(cfg Config) (*Holder, error) {
	if !path.IsAbs(cfg.At) || path.Clean(cfg.At) != cfg.At {
		return nil, fmt.Errorf("hostview: the sandbox's path %q is not a clean absolute path", cfg.At)
	}
	if (cfg.Passwd == "") != (cfg.Group == "") {
		return nil, errors.New("hostview: Passwd and Group go together")
	}
	root, fsname, own := cfg.Mount, cfg.Name, strings.SplitN(cfg.At[1:], "/", 2)[0]
	if cfg.At == "/" {
		root, fsname, own = cfg.Dir, "", ""
	} else if cfg.Mount == "" || cfg.Name == "" {
		return nil, errors.New("hostview: Mount and Name are needed unless At is \"/\"")
	}
	userns := os.Geteuid() != 0
	args := []string{"--mount", "--net", "--propagation", "private"}
	if userns {
		args = append(args, "--user", "--map-root-user")
	}
	args = append(args, "/bin/sh", "-c", holderScript, "hostview",
		root, fsname, own, cfg.Dir, cfg.At, cfg.Tmp, cfg.Passwd, cfg.Group)
	h := &Holder{userns: userns, root: root, at: cfg.At}
	if err := h.launch(exec.Command(UnsharePath, args...), cfg.Env); err != nil {
		return nil, err
	}
	return h, nil
}

// deriveScript shows a sandbox's directory ($DIR) at $AT and its /tmp
// ($TMPD) in a copy of a view's mount namespace, then holds it as
// holderScript does.
const deriveScript = `set -e
NR=$1 DIR=$2 AT=$3 TMPD=$4
PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount --bind "$DIR" "$NR$AT"
mount --bind "$TMPD" "$NR/tmp"
ip link set lo up 2>/dev/null || true
exec chroot "$NR" /bin/sh -c 'echo ready; exec sleep 2147483647'
`

// Derive starts a holder for another sandbox whose view is h's with dir
// shown at h's Config.At and tmp at /tmp: its mount namespace is a copy of
// h's, so the host's directories are not mounted again (a few process
// starts instead of a few dozen), and its network namespace is its own.
// h must be a view with At other than "/"; it stays open while the derived
// holders live (closing it does not close them).
func (h *Holder) Derive(dir, tmp string, env []string) (*Holder, error) {
	if h.at == "/" {
		return nil, errors.New("hostview: a view rooted at its sandbox's directory cannot be derived from")
	}
	args := []string{"--target", strconv.Itoa(h.Pid()), "--mount"}
	if h.userns {
		args = append(args, "--user", "--preserve-credentials")
	}
	args = append(args, "--", UnsharePath, "--mount", "--net", "--propagation", "private",
		"/bin/sh", "-c", deriveScript, "hostview", h.root, dir, h.at, tmp)
	d := &Holder{userns: h.userns, root: h.root, at: h.at}
	if err := d.launch(exec.Command(NsenterPath, args...), env); err != nil {
		return nil, err
	}
	return d, nil
}

// launch starts cmd as h's holder, with env added to its environment, and
// waits for it to say its view is ready.
func (h *Holder) launch(cmd *exec.Cmd, env []string) error {
	cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, env...)
	// Its own process group, and killed if the process that started it
	// dies without closing it (see onStarterThread).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	onStarterThread(func() { err = cmd.Start() })
	if err != nil {
		return fmt.Errorf("hostview: starting the holder: %w", err)
	}
	h.cmd = cmd
	h.leader = procgroup.Watch(cmd)
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "ready\n" {
		h.Close()
		msg := strings.TrimSpace(stderr.String())
		if msg == "" && h.waitErr != nil {
			msg = h.waitErr.Error()
		}
		return fmt.Errorf("hostview: building the view: %s", msg)
	}
	// The namespace is held open while the holder lives so that its inode
	// number, by which Close finds the processes in it, cannot be given to
	// another namespace meanwhile.
	if h.nsRef, err = os.Open(procPath(cmd.Process.Pid, "ns/mnt")); err == nil {
		h.mntNS, err = os.Readlink(procPath(cmd.Process.Pid, "ns/mnt"))
	}
	if err != nil {
		h.Close()
		return fmt.Errorf("hostview: %w", err)
	}
	live.Lock()
	live.m[h] = struct{}{}
	live.Unlock()
	return nil
}

// starter is a goroutine locked to its thread for the life of the process.
var starter struct {
	once sync.Once
	reqs chan func()
}

// onStarterThread runs f on the starter's thread. A holder is started
// there because its parent-death signal is sent when the thread that
// started it exits (not the process), and a Go thread can exit while the
// process lives on: this one never does.
func onStarterThread(f func()) {
	starter.once.Do(func() {
		starter.reqs = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked
			for f := range starter.reqs {
				f()
			}
		}()
	})
	done := make(chan struct{})
	starter.reqs <- func() { f(); close(done) }
	<-done
}

// live holds the holders started and not yet closed.
var live = struct {
	sync.Mutex
	m map[*Holder]struct{}
}{m: map[*Holder]struct{}{}}

// CheckClosed returns an error naming the holders this process started and
// has not closed, for tests that check that nothing is left behind (a
// holder's mounts and namespaces last as long as it does).
func CheckClosed() error {
	live.Lock()
	defer live.Unlock()
	if len(live.m) == 0 {
		return nil
	}
	pids := make([]string, 0, len(live.m))
	for h := range live.m {
		pids = append(pids, strconv.Itoa(h.Pid()))
	}
	return fmt.Errorf("hostview: %d sandbox views left open (holder pids %s)", len(pids), strings.Join(pids, ", "))
}

// ExitCode is for a test package's TestMain, given what m.Run returned:
// it reports on standard error any view left open and returns 1 if there
// is one, code otherwise.
//
//	func TestMain(m *testing.M) { os.Exit(hostview.ExitCode(m.Run())) }
func ExitCode(code int) int {
	if err := CheckClosed(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return code
}

// Pid returns the holder's process id; /proc/PID/root is the view.
func (h *Holder) Pid() int { return h.cmd.Process.Pid }

// Command describes a command to run in the view.
type Command struct {
	// Argv is the program and its arguments; a program without a slash
	// is looked up in Env's PATH. One that is not found exits 127, one
	// that cannot run 126 (env's codes, a shell's).
	Argv []string
	// Dir is the working directory, an absolute path in the view.
	Dir string
	// Env is the command's whole environment.
	Env []string
	// NoNetwork runs it in the holder's network namespace, which has only
	// loopback, instead of the host's.
	NoNetwork bool
	// Cred, if set, is the user it runs as (with no supplementary groups
	// but its gid); nil means root.
	Cred *Cred
}

// Cred is a user and group id.
type Cred struct{ UID, GID int }

// Command returns the exec.Cmd that runs c in the view, with default
// signal dispositions (as a fresh machine's processes have, whatever the
// calling process ignores). The process it starts is c's program itself
// (nsenter and env exec it), so signals sent to it reach the program; the
// caller sets up its process group, terminal and I/O.
func (h *Holder) Command(c Command) *exec.Cmd {
	args := []string{"--target", strconv.Itoa(h.Pid()), "--mount", "--root"}
	if c.NoNetwork {
		args = append(args, "--net")
	}
	if h.userns {
		args = append(args, "--user", "--preserve-credentials")
	}
	if c.Cred != nil {
		args = append(args, "--setgid", strconv.Itoa(c.Cred.GID), "--setuid", strconv.Itoa(c.Cred.UID))
	}
	args = append(args, "--", EnvPath, "--default-signal", "-C", c.Dir, "--")
	cmd := exec.Command(NsenterPath, append(args, c.Argv...)...)
	cmd.Env = c.Env
	if cmd.Env == nil {
		cmd.Env = []string{} // not the caller's
	}
	return cmd
}

// Close kills the holder and every process in its mount namespace; the
// view and its namespaces end with them. It waits for the holder to exit.
// Closing again returns the first call's result.
func (h *Holder) Close() error {
	h.once.Do(func() {
		h.err = h.close()
		live.Lock()
		delete(live.m, h)
		live.Unlock()
	})
	return h.err
}

func (h *Holder) close() error {
	var errs []error
	// Commands that joined the namespace are not the holder's children:
	// find them by their mount namespace. Repeat until none is left, as
	// a command may fork while it is being killed.
	for range 100 {
		if h.mntNS == "" || h.killMembers() == 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := h.leader.Signal(syscall.SIGKILL); err != nil {
		errs = append(errs, fmt.Errorf("hostview: killing the holder: %w", err))
	}
	h.waitErr = h.leader.Reap() // Wait closes the holder's stdout
	if h.mntNS != "" && h.killMembers() != 0 {
		errs = append(errs, errors.New("hostview: processes remain in the sandbox's namespace"))
	}
	if h.nsRef != nil {
		h.nsRef.Close() // the namespace, and every mount in it, ends here
	}
	return errors.Join(errs...)
}

// members returns the processes (but the holder) whose mount namespace is
// the holder's.
func (h *Holder) members() []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == h.Pid() {
			continue
		}
		if h.isMember(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func (h *Holder) isMember(pid int) bool {
	ns, err := os.Readlink(procPath(pid, "ns/mnt"))
	return err == nil && ns == h.mntNS
}

// killMembers sends SIGKILL to the members and returns how many there
// were; each is checked again once pinned, so that a pid that has passed
// to another process is not signalled.
func (h *Holder) killMembers() int {
	n := 0
	for _, pid := range h.members() {
		if procgroup.KillIf(pid, func() bool { return h.isMember(pid) }) {
			n++
		}
	}
	return n
}

func procPath(pid int, name string) string {
	return filepath.Join("/proc", strconv.Itoa(pid), name)
}
