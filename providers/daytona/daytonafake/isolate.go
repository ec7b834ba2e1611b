package daytonafake

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/perimeter-sdk/perimeter/internal/hostview"
)

// homeDir is the working directory of a Daytona sandbox (the home of its
// default user "daytona"), which the fake reproduces when it can isolate
// commands.
const homeDir = "/home/daytona"

// baseScript builds, in the new mount namespace it runs in, a view of the
// host's filesystem read-only at its first argument (with empty /home/daytona and /tmp
// to mount over), then reports "ready" and holds the namespace until it is
// killed. Each sandbox's root is a recursive bind of the base with its own
// directory at /home/daytona and its own /tmp (rootScript); commands enter
// the namespace and chroot into their sandbox's root, so they see paths as
// a Daytona sandbox's do and cannot reach the test host's temporary files.
// (vercelfake builds the whole view for every command; here it is built
// once per fake, and a sandbox or a command costs a few process starts.)
const baseScript = `set -e
NR=$1
PATH=/usr/sbin:/usr/bin:/sbin:/bin
FSNAME=daytonafake OWN=home
` + hostview.Script + `mkdir -p "$NR/home/daytona"
echo ready
exec sleep infinity
`

// rootScript makes a sandbox's root. Arguments: base, root, disk, tmp.
const rootScript = `set -e
PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount --rbind "$0" "$1"
mount --bind "$2" "$1/home/daytona"
mount --bind "$3" "$1/tmp"`

// noNetScript runs, in a new network namespace with only loopback up, the
// chroot into a root. Arguments: root, cwd, PATH, command...
const noNetScript = `r=$0 d=$1 p=$2; shift 2
PATH=/usr/sbin:/usr/bin:/sbin:/bin
ip link set lo up 2>/dev/null
exec chroot "$r" /usr/bin/env --default-signal -C "$d" "PATH=$p" "$@"`

var (
	unsharePath = "/usr/bin/unshare"
	nsenterPath = "/usr/bin/nsenter"
	chrootPath  = "/usr/sbin/chroot"
)

// namespace is the fake's mount namespace: a holder process with the base
// view at base.
type namespace struct {
	holder *exec.Cmd
	base   string
	once   sync.Once
}

// startNamespace builds the base view on the empty directory base.
func startNamespace(base string) (*namespace, error) {
	args := []string{"--mount", "--propagation", "private"}
	if os.Geteuid() != 0 {
		args = append(args, "--user", "--map-root-user")
	}
	args = append(args, "/bin/sh", "-c", baseScript, "daytonafake", base)
	cmd := exec.Command(unsharePath, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("building the isolated view: %s", strings.TrimSpace(stderr.String()))
	}
	return &namespace{holder: cmd, base: base}, nil
}

// close ends the holder, and with it the namespace and every mount in it.
func (n *namespace) close() {
	n.once.Do(func() {
		n.holder.Process.Kill()
		n.holder.Wait()
	})
}

// enter returns nsenter's arguments for the namespace, up to "--".
func (n *namespace) enter() []string {
	a := []string{"--target", strconv.Itoa(n.holder.Process.Pid), "--mount"}
	if os.Geteuid() != 0 {
		a = append(a, "--user", "--preserve-credentials")
	}
	return append(a, "--")
}

// makeRoot mounts a sandbox's root at root (an empty directory).
func (n *namespace) makeRoot(root, disk, tmp string) error {
	args := append(n.enter(), "/bin/sh", "-c", rootScript, n.base, root, disk, tmp)
	if out, err := exec.Command(nsenterPath, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("mounting the sandbox's root: %v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// dropRoot unmounts a sandbox's root.
func (n *namespace) dropRoot(root string) {
	args := append(n.enter(), "/usr/bin/umount", "--recursive", "--lazy", root)
	exec.Command(nsenterPath, args...).Run()
}

// command returns the command that runs name chrooted into root, in a new
// network namespace if nonet. A program that is not found exits 127 and
// one that cannot run 126 (env's codes, as a shell's).
func (n *namespace) command(root string, nonet bool, cwd string, env []string, name string, args ...string) *exec.Cmd {
	upath := ""
	for _, e := range env {
		if p, ok := strings.CutPrefix(e, "PATH="); ok {
			upath = p
		}
	}
	a := n.enter()
	if nonet {
		a = append(a, unsharePath, "--net", "/bin/sh", "-c", noNetScript, root, cwd, upath, name)
	} else {
		a = append(a, chrootPath, root, "/usr/bin/env", "--default-signal", "-C", cwd, "PATH="+upath, name)
	}
	cmd := exec.Command(nsenterPath, append(a, args...)...)
	cmd.Env = env
	return cmd
}

// probeNamespace starts the fake's namespace under dir and checks that a
// sandbox root works in it, with and without network; nil means commands
// run on the host.
func probeNamespace(dir string) *namespace {
	for _, p := range []string{unsharePath, nsenterPath, chrootPath} {
		if _, err := os.Stat(p); err != nil {
			return nil
		}
	}
	base := filepath.Join(dir, ".base")
	probe := filepath.Join(dir, ".probe")
	disk, tmp, root := filepath.Join(probe, "disk"), filepath.Join(probe, "tmp"), filepath.Join(probe, "root")
	defer os.RemoveAll(probe)
	for _, d := range []string{base, disk, tmp, root} {
		if os.MkdirAll(d, 0o755) != nil {
			return nil
		}
	}
	if os.WriteFile(filepath.Join(disk, "probe"), []byte("ok"), 0o644) != nil {
		return nil
	}
	n, err := startNamespace(base)
	if err != nil {
		return nil
	}
	ok := n.makeRoot(root, disk, tmp) == nil
	for _, nonet := range []bool{false, true} {
		out, err := n.command(root, nonet, homeDir, []string{"PATH=/usr/bin:/bin"}, "cat", "probe").Output()
		ok = ok && err == nil && string(out) == "ok"
	}
	n.dropRoot(root)
	if !ok {
		n.close()
		return nil
	}
	return n
}
