package modalfake

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// holder keeps a sandbox's namespaces alive: a sleeping process, started with
// unshare(1), in a mount namespace of its own where the sandbox's directory is
// bind-mounted over /tmp (so a sandbox sees its own /tmp, not the host's or
// another sandbox's) and, when egress is blocked or allowlisted, a network
// namespace with only a loopback interface. Every command of the sandbox
// joins them with nsenter(1), and the file API resolves names inside the
// holder's root with openat2(RESOLVE_IN_ROOT), so symbolic links cannot lead
// out of the sandbox's view.
//
// The rest of the host's filesystem stays visible (read-write) to commands:
// the fake is a test double, not a security boundary. It cannot route to an
// allowlist's ranges, so it enforces an allowlist as "nothing reachable",
// which is stricter than Modal.
type holder struct {
	cmd    *exec.Cmd
	userns bool
	net    bool
	done   chan struct{}
	root   *os.File // /proc/PID/root, an O_PATH handle
}

// startHolder starts the holder for a sandbox whose /tmp is dir. It tries a
// plain mount (and network) namespace, which needs root, then one inside a
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
		args = append(args, "--", "sh", "-c", `mount --bind "$1" /tmp && exec sleep 2147483647`, "sh", dir)
		cmd := exec.Command("unshare", args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("modalfake: sandboxes need unshare(1): %w", err)
		}
		h := &holder{cmd: cmd, userns: userns, net: isolateNet, done: make(chan struct{})}
		go func() { cmd.Wait(); close(h.done) }()
		if err := h.waitReady(dir); err != nil {
			h.stop()
			errs = append(errs, err)
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
	return nil, fmt.Errorf("modalfake: cannot create a sandbox's namespaces: %v", errs)
}

// waitReady waits until the holder sleeps with dir mounted on its /tmp.
func (h *holder) waitReady(dir string) error {
	want, err := os.Stat(dir)
	if err != nil {
		return err
	}
	tmp := "/proc/" + strconv.Itoa(h.cmd.Process.Pid) + "/root/tmp"
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-h.done:
			return fmt.Errorf("unshare exited: %v", h.cmd.ProcessState)
		default:
		}
		if fi, err := os.Stat(tmp); err == nil && os.SameFile(fi, want) {
			return nil
		}
		time.Sleep(2 * time.Millisecond)
	}
	return fmt.Errorf("the sandbox's namespaces were not ready in time")
}

// enterArgs returns nsenter's arguments to run argv in the namespaces, in
// directory dir.
func (h *holder) enterArgs(dir string, argv ...string) []string {
	args := []string{"-t", strconv.Itoa(h.cmd.Process.Pid), "-m", "--wdns=" + dir}
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
