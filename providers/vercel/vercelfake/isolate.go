package vercelfake

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// sandboxCwd is the working directory of a Vercel sandbox, which the fake
// reproduces when it can isolate commands.
const sandboxCwd = "/vercel/sandbox"

// isolateScript builds, in a new mount namespace, a view of the host's
// filesystem read-only, with the sandbox's directory at /vercel/sandbox and
// its own /tmp, chroots into it and runs the command there. So the
// sandbox's commands see paths as a Vercel sandbox's do and cannot reach
// the test host's temporary files; with a new network namespace, they
// have no network (only loopback).
//
// Arguments: mount point, disk, tmp, "1" for no network, cwd, PATH for the
// command, then the command and its arguments.
const isolateScript = `set -e
NR=$1 DISK=$2 TMPD=$3 NONET=$4 DIR=$5 UPATH=$6
shift 6
PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t tmpfs -o mode=755 vercelfake "$NR"
for d in /*; do
  n=${d#/}
  case "$n" in tmp|proc|dev|sys|vercel|lost+found|'*') continue;; esac
  if [ -L "$d" ]; then ln -s "$(readlink "$d")" "$NR/$n"; continue; fi
  [ -d "$d" ] || continue
  mkdir "$NR/$n"
  mount --bind "$d" "$NR/$n"
  mount -o remount,bind,ro "$NR/$n" 2>/dev/null || true
done
mkdir -p "$NR/proc" "$NR/dev" "$NR/sys" "$NR/tmp" "$NR/vercel/sandbox"
mount --rbind /proc "$NR/proc"
mount --rbind /dev "$NR/dev"
mount --rbind /sys "$NR/sys"
mount --bind "$TMPD" "$NR/tmp"
mount --bind "$DISK" "$NR/vercel/sandbox"
if [ "$NONET" = 1 ]; then ip link set lo up 2>/dev/null || true; fi
exec chroot "$NR" /usr/bin/env -C "$DIR" "PATH=$UPATH" "$@"
`

// isolatedCommand returns the command that runs name in se's isolated view.
// A program that is not found exits 127 and one that cannot run 126 (env's
// codes, as a shell's).
func isolatedCommand(se *sessionRec, cwd string, env []string, name string, args []string) *exec.Cmd {
	uArgs := []string{"--mount", "--propagation", "private"}
	if os.Geteuid() != 0 {
		uArgs = append(uArgs, "--map-root-user")
	}
	nonet := "0"
	if denies(se.Network) {
		uArgs = append(uArgs, "--net")
		nonet = "1"
	}
	upath := ""
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			upath = v
		}
	}
	uArgs = append(uArgs, "/bin/sh", "-c", isolateScript, "vercelfake",
		se.mount, se.disk, se.tmp, nonet, cwd, upath, name)
	uArgs = append(uArgs, args...)
	cmd := exec.Command(unsharePath, uArgs...)
	cmd.Env = env
	return cmd
}

var unsharePath = "/usr/bin/unshare"

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
	se := &sessionRec{Cwd: sandboxCwd, disk: filepath.Join(dir, "disk"), tmp: filepath.Join(dir, "tmp"), mount: filepath.Join(dir, "mnt")}
	for _, d := range []string{se.disk, se.tmp, se.mount} {
		if os.Mkdir(d, 0o755) != nil {
			return false
		}
	}
	if os.WriteFile(filepath.Join(se.disk, "probe"), []byte("ok"), 0o644) != nil {
		return false
	}
	out, err := isolatedCommand(se, sandboxCwd, []string{"PATH=/usr/bin:/bin"}, "cat", []string{"probe"}).Output()
	return err == nil && string(out) == "ok"
}

// denies reports whether a network policy shuts the sandbox off the
// network. The fake has no egress proxy, so an allow-list allows nothing.
func denies(policy []byte) bool {
	if len(policy) == 0 {
		return false
	}
	var p struct {
		Mode string `json:"mode"`
	}
	json.Unmarshal(policy, &p)
	return p.Mode != "allow-all"
}

// copyDir copies the tree at src into dst (created), keeping symbolic
// links as they are.
func copyDir(dst, src string) error {
	return os.CopyFS(dst, os.DirFS(src))
}

// Isolated reports whether commands run in an isolated view of the host
// (mount and, for restrictive policies, network namespaces) with their
// files at /vercel/sandbox, or directly on the host in a temporary
// directory.
func (s *Server) Isolated() bool { return s.isolated }
