package cloudflarefake

import (
	"os"
	"os/exec"
	"path/filepath"
)

// isolateScript builds, in a new mount namespace, a view of the host's
// filesystem read-only with the sandbox's workspace at /workspace and its
// own /tmp, chroots into it and runs the command there in directory DIR.
//
// Arguments: mount point, workspace, tmp, cwd, then the command.
const isolateScript = `set -e
NR=$1 WS=$2 TMPD=$3 DIR=$4 UPATH=$PATH
shift 4
PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t tmpfs -o mode=755 cloudflarefake "$NR"
for d in /*; do
  n=${d#/}
  case "$n" in tmp|proc|dev|sys|workspace|lost+found|'*') continue;; esac
  if [ -L "$d" ]; then ln -s "$(readlink "$d")" "$NR/$n"; continue; fi
  [ -d "$d" ] || continue
  mkdir "$NR/$n"
  mount --bind "$d" "$NR/$n"
  mount -o remount,bind,ro "$NR/$n" 2>/dev/null || true
done
mkdir -p "$NR/proc" "$NR/dev" "$NR/sys" "$NR/tmp" "$NR/workspace"
mount --rbind /proc "$NR/proc"
mount --rbind /dev "$NR/dev"
mount --rbind /sys "$NR/sys"
mount --bind "$TMPD" "$NR/tmp"
mount --bind "$WS" "$NR/workspace"
exec chroot "$NR" /usr/bin/env -C "$DIR" "PATH=$UPATH" "$@"
`

var unsharePath = "/usr/bin/unshare"

// isolatedCommand runs argv in b's isolated view, in directory dir (an
// absolute path inside the view).
func isolatedCommand(b *box, dir string, argv []string) *exec.Cmd {
	args := []string{"--mount", "--propagation", "private"}
	if os.Geteuid() != 0 {
		args = append(args, "--map-root-user")
	}
	args = append(args, "/bin/sh", "-c", isolateScript, "cloudflarefake",
		filepath.Join(b.dir, "mnt"), b.workspace(), filepath.Join(b.dir, "tmp"), dir)
	args = append(args, argv...)
	return exec.Command(unsharePath, args...)
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
	b := &box{id: "probe", dir: dir}
	for _, d := range []string{b.workspace(), filepath.Join(dir, "tmp"), filepath.Join(dir, "mnt")} {
		if os.Mkdir(d, 0o755) != nil {
			return false
		}
	}
	if os.WriteFile(filepath.Join(b.workspace(), "probe"), []byte("ok"), 0o644) != nil {
		return false
	}
	cmd := isolatedCommand(b, "/workspace", []string{"cat", "probe"})
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	out, err := cmd.Output()
	return err == nil && string(out) == "ok"
}
