package daytonafake

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// homeDir is the working directory of a Daytona sandbox (the home of its
// default user "daytona"), which the fake reproduces when it can isolate
// commands.
const homeDir = "/home/daytona"

// isolateScript builds, in a new mount namespace, a view of the host's
// filesystem read-only, with the sandbox's directory at /home/daytona and
// its own /tmp, chroots into it and runs the command there. So commands
// see paths as a Daytona sandbox's do and cannot reach the test host's
// temporary files; with a new network namespace they reach nothing but
// their own loopback. (The same construction as vercelfake's.)
//
// Arguments: mount point, disk, tmp, "1" for no network, cwd, PATH for the
// command, then the command and its arguments.
const isolateScript = `set -e
NR=$1 DISK=$2 TMPD=$3 NONET=$4 DIR=$5 UPATH=$6
shift 6
PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t tmpfs -o mode=755 daytonafake "$NR"
for d in /*; do
  n=${d#/}
  case "$n" in tmp|proc|dev|sys|home|lost+found|'*') continue;; esac
  if [ -L "$d" ]; then ln -s "$(readlink "$d")" "$NR/$n"; continue; fi
  [ -d "$d" ] || continue
  mkdir "$NR/$n"
  mount --bind "$d" "$NR/$n"
  mount -o remount,bind,ro "$NR/$n" 2>/dev/null || true
done
mkdir -p "$NR/proc" "$NR/dev" "$NR/sys" "$NR/tmp" "$NR/home/daytona"
mount --rbind /proc "$NR/proc"
mount --rbind /dev "$NR/dev"
mount --rbind /sys "$NR/sys"
mount --bind "$TMPD" "$NR/tmp"
mount --bind "$DISK" "$NR/home/daytona"
if [ "$NONET" = 1 ]; then ip link set lo up 2>/dev/null || true; fi
exec chroot "$NR" /usr/bin/env -C "$DIR" "PATH=$UPATH" "$@"
`

var unsharePath = "/usr/bin/unshare"

// isolatedCommand returns the command that runs name in sb's isolated
// view. A program that is not found exits 127 and one that cannot run 126.
func isolatedCommand(disk, tmp, mount string, nonet bool, cwd string, env []string, name string, args ...string) *exec.Cmd {
	uArgs := []string{"--mount", "--propagation", "private"}
	if os.Geteuid() != 0 {
		uArgs = append(uArgs, "--map-root-user")
	}
	net := "0"
	if nonet {
		uArgs = append(uArgs, "--net")
		net = "1"
	}
	upath := ""
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			upath = v
		}
	}
	uArgs = append(uArgs, "/bin/sh", "-c", isolateScript, "daytonafake", mount, disk, tmp, net, cwd, upath, name)
	uArgs = append(uArgs, args...)
	cmd := exec.Command(unsharePath, uArgs...)
	cmd.Env = env
	return cmd
}

// probeIsolation reports whether isolatedCommand works here (it needs
// unshare and the right to mount: root, or unprivileged user namespaces).
func probeIsolation(root string) bool {
	if _, err := os.Stat(unsharePath); err != nil {
		return false
	}
	dir, err := os.MkdirTemp(root, ".probe-")
	if err != nil {
		return false
	}
	defer os.RemoveAll(dir)
	disk, tmp, mnt := filepath.Join(dir, "disk"), filepath.Join(dir, "tmp"), filepath.Join(dir, "mnt")
	for _, d := range []string{disk, tmp, mnt} {
		if os.Mkdir(d, 0o755) != nil {
			return false
		}
	}
	if os.WriteFile(filepath.Join(disk, "probe"), []byte("ok"), 0o644) != nil {
		return false
	}
	out, err := isolatedCommand(disk, tmp, mnt, true, homeDir, []string{"PATH=/usr/bin:/bin"}, "cat", "probe").Output()
	return err == nil && string(out) == "ok"
}
