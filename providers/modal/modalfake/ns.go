package modalfake

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"

	"github.com/perimeter-sdk/perimeter/internal/hostview"
	"golang.org/x/sys/unix"
)

// holder is a sandbox's confinement: a hostview holder whose root is the
// sandbox's own directory, in the fake's temporary tree. In that view the
// host's top-level directories (/usr, /etc, /home, ...) are bind-mounted
// read-only, /proc, /dev and /sys are the host's, and everything else — /,
// /tmp, a workdir such as /w1 — is the sandbox's own root directory, so
// whatever a command writes lands in the fake's tree and never on the host.
// When egress is blocked or allowlisted its commands run in the view's
// network namespace, which has only a loopback interface. The file API
// resolves names inside the view's root with openat2(RESOLVE_IN_ROOT), so
// symbolic links cannot lead out.
//
// The fake is a test double, not a security boundary: the host's files stay
// readable. It cannot route to an allowlist's ranges, so it enforces an
// allowlist as "nothing reachable", which is stricter than Modal; and the
// host's directories are read-only, where a Modal container's image is
// writable.
type holder struct {
	view *hostview.Holder
	net  bool     // commands run without the host's network
	root *os.File // /proc/PID/root of the view's holder, an O_PATH handle
}

// startHolder starts the holder for a sandbox whose root is dir.
func startHolder(dir string, isolateNet bool) (*holder, error) {
	view, err := hostview.Start(hostview.Config{Dir: dir, At: "/"})
	if err != nil {
		return nil, fmt.Errorf("modalfake: cannot create a sandbox's namespaces (needs unshare(1), nsenter(1) and root or user namespaces): %w", err)
	}
	root, err := os.OpenFile("/proc/"+strconv.Itoa(view.Pid())+"/root", unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		view.Close()
		return nil, err
	}
	return &holder{view: view, net: isolateNet, root: root}, nil
}

// command returns the command that runs argv in the sandbox's view, in
// directory dir, with environment env and default signal dispositions.
func (h *holder) command(dir string, env []string, argv ...string) *exec.Cmd {
	return h.view.Command(hostview.Command{Argv: argv, Dir: dir, Env: env, NoNetwork: h.net})
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

// stop ends the view and every process in it.
func (h *holder) stop() {
	h.root.Close()
	h.view.Close()
}
