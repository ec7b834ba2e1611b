package modalfake

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// holder keeps a sandbox's namespaces alive: a sleeping process, started with
// unshare(1), in a mount namespace of its own and chrooted into the
// sandbox's root, a directory in the fake's temporary tree. In that view
// the host's top-level directories (/usr, /etc, /home, ...) are bind-mounted
// read-only, /proc, /dev and /sys are the host's, and everything else — /,
// /tmp, a workdir such as /w1 — is the sandbox's own root directory, so
// whatever a command writes lands in the fake's tree and never on the host.
// When egress is blocked or allowlisted it also gets a network namespace
// with only a loopback interface. Every command of the sandbox joins them
// with nsenter(1), and the file API resolves names inside the holder's root
// with openat2(RESOLVE_IN_ROOT), so symbolic links cannot lead out.
//
// The fake is a test double, not a security boundary: the host's files stay
// readable. It cannot route to an allowlist's ranges, so it enforces an
// allowlist as "nothing reachable", which is stricter than Modal; and the
// host's directories are read-only, where a Modal container's image is
// writable.
type holder struct {
	cmd    *exec.Cmd
	userns bool
	net    bool
	done   chan struct{}
	root   *os.File // /proc/PID/root, an O_PATH handle
}

// holderScript builds the view in the new mount namespace and sleeps in
// it. It prints "ready" from inside the chroot, once the view is complete.
// Argument: the root.
const holderScript = `set -e
R=$1
PATH=/usr/sbin:/usr/bin:/sbin:/bin
for d in /*; do
  n=${d#/}
  case "$n" in tmp|proc|dev|sys|lost+found|'*') continue;; esac
  if [ -L "$d" ]; then
    [ -e "$R/$n" ] || [ -L "$R/$n" ] || ln -s "$(readlink "$d")" "$R/$n"
    continue
  fi
  [ -d "$d" ] || continue
  mkdir -p "$R/$n"
  mount --bind "$d" "$R/$n"
  mount -o remount,bind,ro "$R/$n" 2>/dev/null || true
done
mkdir -p "$R/proc" "$R/dev" "$R/sys" "$R/tmp"
chmod 1777 "$R/tmp"
mount --rbind /proc "$R/proc"
mount --rbind /dev "$R/dev"
mount --rbind /sys "$R/sys"
exec chroot "$R" /bin/sh -c 'echo ready; exec sleep 2147483647'
`

// startHolder starts the holder for a sandbox whose root is dir. It tries
// plain mount (and network) namespaces, which need root, then ones inside a
// user namespace.
func startHolder(dir string, isolateNet bool) (*holder, error) {
	var errs []error
	for _, userns := range []bool{false, true} {
		args := []string{"-m", "--propagation", "private"}
		if isolateNet {
			args = append(args, "-n")
		}
		if userns {
			args = append(args, "-U", "-r")
		}
		args = append(args, "--", "sh", "-c", holderScript, "sh", dir)
		cmd := exec.Command("unshare", args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		ready, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("modalfake: sandboxes need unshare(1): %w", err)
		}
		h := &holder{cmd: cmd, userns: userns, net: isolateNet, done: make(chan struct{})}
		line, _ := bufio.NewReader(ready).ReadString('\n')
		go func() { io.Copy(io.Discard, ready); cmd.Wait(); close(h.done) }()
		if line != "ready\n" {
			h.stop()
			errs = append(errs, fmt.Errorf("unshare (user namespace %v): %s", userns, strings.TrimSpace(stderr.String())))
			continue
		}
		root, err := os.OpenFile("/proc/"+strconv.Itoa(cmd.Process.Pid)+"/root", unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			h.stop()
			return nil, err
		}
		h.root = root
		if isolateNet {
			// Loopback up, so a sandbox's own processes can talk; without
			// ip(8) it stays down, which still blocks egress.
			exec.Command("nsenter", h.enterArgs("/", "ip", "link", "set", "lo", "up")...).Run()
		}
		return h, nil
	}
	return nil, fmt.Errorf("modalfake: cannot create a sandbox's namespaces (needs unshare(1) and root or user namespaces): %v", errors.Join(errs...))
}

// enterArgs returns nsenter's arguments to run argv in the namespaces and
// the sandbox's root, in directory dir.
func (h *holder) enterArgs(dir string, argv ...string) []string {
	args := []string{"-t", strconv.Itoa(h.cmd.Process.Pid), "-m", "-r", "--wdns=" + dir}
	if h.net {
		args = append(args, "-n")
	}
	if h.userns {
		args = append(args, "-U", "--preserve-credentials")
	}
	return append(append(args, "--"), argv...)
}

// open opens name (absolute, in the sandbox's view) resolving every element
// inside the sandbox's root.
func (h *holder) open(name string, flag int, perm uint32) (*os.File, error) {
	how := &unix.OpenHow{
		Flags:   uint64(flag) | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	if flag&unix.O_CREAT != 0 {
		how.Mode = uint64(perm) // openat2 refuses a mode without O_CREAT
	}
	fd, err := unix.Openat2(int(h.root.Fd()), name, how)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	return os.NewFile(uintptr(fd), name), nil
}

func (h *holder) stop() {
	syscall.Kill(-h.cmd.Process.Pid, syscall.SIGKILL)
	<-h.done
	if h.root != nil {
		h.root.Close()
	}
}
