package cloudflarefake

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/perimeter-sdk/perimeter/internal/hostview"
)

// holderScript builds, in a new mount namespace, a view of the host's
// filesystem read-only with the sandbox's workspace at /workspace and its
// own /tmp, chroots into it, says "ready" and sleeps. The sandbox's
// commands then enter its mount namespace and root (nsenter), so the view
// is built once per sandbox rather than once per command.
//
// Arguments: mount point, workspace, tmp.
const holderScript = `set -e
NR=$1 WS=$2 TMPD=$3
PATH=/usr/sbin:/usr/bin:/sbin:/bin
FSNAME=cloudflarefake OWN=workspace
` + hostview.Script + `mkdir -p "$NR/workspace"
mount --bind "$TMPD" "$NR/tmp"
mount --bind "$WS" "$NR/workspace"
exec chroot "$NR" /bin/sh -c 'echo ready; exec sleep 2147483647'
`

var (
	unsharePath = "/usr/bin/unshare"
	nsenterPath = "/usr/bin/nsenter"
)

// startHolder builds b's isolated view and keeps it alive in a holder
// process, which carries the sandbox's mark (Delete and Close kill it).
func startHolder(b *box) error {
	args := []string{"--mount", "--propagation", "private"}
	if os.Geteuid() != 0 {
		args = append(args, "--map-root-user")
	}
	args = append(args, "/bin/sh", "-c", holderScript, "cloudflarefake",
		filepath.Join(b.dir, "mnt"), b.workspace(), filepath.Join(b.dir, "tmp"))
	cmd := exec.Command(unsharePath, args...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", boxEnv + "=" + b.id}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "ready\n" {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		return errors.New("isolating the sandbox: " + strings.TrimSpace(stderr.String()))
	}
	b.holder = cmd.Process.Pid
	go cmd.Wait() // reaps the holder when the sandbox is deleted
	return nil
}

// isolatedCommand runs argv in b's isolated view, in directory dir (an
// absolute path inside the view).
func isolatedCommand(b *box, dir string, argv []string) *exec.Cmd {
	args := []string{"-t", strconv.Itoa(b.holder), "-m", "-r"}
	if os.Geteuid() != 0 {
		args = append(args, "-U", "--preserve-credentials")
	}
	args = append(args, "/usr/bin/env", "--default-signal", "-C", dir)
	return exec.Command(nsenterPath, append(args, argv...)...)
}

// probeIsolation reports whether the isolated view works here (it needs
// unshare, nsenter and the right to mount: root, or unprivileged user
// namespaces).
func probeIsolation(root string) bool {
	for _, p := range []string{unsharePath, nsenterPath} {
		if _, err := os.Stat(p); err != nil {
			return false
		}
	}
	dir, err := os.MkdirTemp(root, ".probe-")
	if err != nil {
		return false
	}
	defer os.RemoveAll(dir)
	b := &box{id: "probe" + filepath.Base(dir), dir: dir}
	for _, d := range []string{b.workspace(), filepath.Join(dir, "tmp"), filepath.Join(dir, "mnt")} {
		if os.Mkdir(d, 0o755) != nil {
			return false
		}
	}
	if os.WriteFile(filepath.Join(b.workspace(), "probe"), []byte("ok"), 0o644) != nil {
		return false
	}
	if startHolder(b) != nil {
		return false
	}
	defer killBox(b.id)
	cmd := isolatedCommand(b, "/workspace", []string{"cat", "probe"})
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	out, err := cmd.Output()
	return err == nil && string(out) == "ok"
}
