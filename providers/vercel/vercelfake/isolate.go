package vercelfake

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/perimeter-sdk/perimeter/internal/hostview"
)

// sandboxCwd is the working directory of a Vercel sandbox, which the fake
// reproduces when it can isolate commands.
const sandboxCwd = "/vercel/sandbox"

// isolateScript builds, in a new mount namespace, a view of the host's
// filesystem read-only, with the sandbox's directory at /vercel/sandbox and
// its own /tmp, chroots into it and runs the command there. So the
// sandbox's commands see paths as a Vercel sandbox's do and cannot reach
// the test host's temporary files; with a new network namespace, they
// have no network (only loopback). When the fake runs as root, the view's
// /etc/passwd and /etc/group also name the sandbox user, and the command
// runs as that user unless it asked for sudo. env --default-signal gives
// the command default signal dispositions, as a fresh VM's processes have,
// whatever the process running the fake ignores.
//
// Arguments: mount point, disk, tmp, "1" for no network, cwd, PATH for the
// command, passwd and group files to show ("" for the host's), "UID:GID"
// to run as ("" for root), then the command and its arguments.
const isolateScript = `set -e
NR=$1 DISK=$2 TMPD=$3 NONET=$4 DIR=$5 UPATH=$6 PASSWD=$7 GROUP=$8 USERSPEC=$9
shift 9
PATH=/usr/sbin:/usr/bin:/sbin:/bin
FSNAME=vercelfake OWN=vercel
` + hostview.Script + `mkdir -p "$NR/vercel/sandbox"
mount --bind "$TMPD" "$NR/tmp"
mount --bind "$DISK" "$NR/vercel/sandbox"
if [ -n "$PASSWD" ]; then
  mount --bind "$PASSWD" "$NR/etc/passwd"
  mount --bind "$GROUP" "$NR/etc/group"
fi
if [ "$NONET" = 1 ]; then ip link set lo up 2>/dev/null || true; fi
if [ -n "$USERSPEC" ]; then
  exec chroot --userspec="$USERSPEC" --groups="${USERSPEC#*:}" "$NR" /usr/bin/env --default-signal -C "$DIR" "PATH=$UPATH" "$@"
fi
exec chroot "$NR" /usr/bin/env --default-signal -C "$DIR" "PATH=$UPATH" "$@"
`

// SandboxUser is the user a Vercel sandbox runs commands as (unless they
// ask for sudo). The isolated fake, run as root, runs them as a user of
// this name with a uid the host does not use.
const SandboxUser = "vercel-sandbox"

// sandboxUser is the identity commands run as in the isolated view: the
// files naming it, and its uid and gid. The zero value means root (the
// fake is not root, so it cannot switch users).
type sandboxUser struct {
	passwd, group string
	uid, gid      int
}

// userSpec returns chroot's --userspec for the command, "" for root.
func (u *sandboxUser) userSpec(sudo bool) string {
	if u.passwd == "" || sudo {
		return ""
	}
	return strconv.Itoa(u.uid) + ":" + strconv.Itoa(u.gid)
}

// chown gives a file the sandbox user's ownership (nothing when the fake
// cannot switch users).
func (u *sandboxUser) chown(root *os.Root, name string) error {
	if u.passwd == "" {
		return nil
	}
	return root.Lchown(name, u.uid, u.gid)
}

// newSandboxUser writes passwd and group files into dir: the host's, plus
// SandboxUser with the first uid and gid from 1000 up that the host's
// files do not use.
func newSandboxUser(dir string) (*sandboxUser, error) {
	hostPasswd, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return nil, err
	}
	hostGroup, err := os.ReadFile("/etc/group")
	if err != nil {
		return nil, err
	}
	free := func(file []byte) int {
		used := map[int]bool{}
		for _, line := range strings.Split(string(file), "\n") {
			if f := strings.Split(line, ":"); len(f) > 2 {
				if n, err := strconv.Atoi(f[2]); err == nil {
					used[n] = true
				}
			}
		}
		n := 1000
		for used[n] {
			n++
		}
		return n
	}
	u := &sandboxUser{uid: free(hostPasswd), gid: free(hostGroup),
		passwd: filepath.Join(dir, "passwd"), group: filepath.Join(dir, "group")}
	nl := func(b []byte) string {
		if len(b) > 0 && b[len(b)-1] != '\n' {
			return string(b) + "\n"
		}
		return string(b)
	}
	passwd := nl(hostPasswd) + fmt.Sprintf("%s:x:%d:%d::%s:/bin/bash\n", SandboxUser, u.uid, u.gid, sandboxCwd)
	group := nl(hostGroup) + fmt.Sprintf("%s:x:%d:\n", SandboxUser, u.gid)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := errors.Join(os.WriteFile(u.passwd, []byte(passwd), 0o644), os.WriteFile(u.group, []byte(group), 0o644)); err != nil {
		return nil, err
	}
	return u, nil
}

// isolatedCommand returns the command that runs name in se's isolated view,
// as the sandbox user unless sudo. A program that is not found exits 127
// and one that cannot run 126 (env's codes, as a shell's).
func isolatedCommand(se *sessionRec, u *sandboxUser, sudo bool, cwd string, env []string, name string, args []string) *exec.Cmd {
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
		se.mount, se.disk, se.tmp, nonet, cwd, upath, u.passwd, u.group, u.userSpec(sudo), name)
	uArgs = append(uArgs, args...)
	cmd := exec.Command(unsharePath, uArgs...)
	cmd.Env = env
	return cmd
}

// hostCommand returns the command that runs name directly on the host, in
// cwd, with default signal dispositions (see isolateScript).
func hostCommand(cwd string, env []string, name string, args []string) *exec.Cmd {
	cmd := exec.Command(envPath, append([]string{"--default-signal", "--", name}, args...)...)
	cmd.Dir, cmd.Env = cwd, env
	return cmd
}

var envPath = "/usr/bin/env"

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
	out, err := isolatedCommand(se, &sandboxUser{}, false, sandboxCwd, []string{"PATH=/usr/bin:/bin"}, "cat", []string{"probe"}).Output()
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
// links, modes and owners as they are.
func copyDir(dst, src string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	if out, err := exec.Command("cp", "-a", "--", src+"/.", dst).CombinedOutput(); err != nil {
		return fmt.Errorf("copying %s: %v: %s", src, err, bytes.TrimSpace(out))
	}
	return nil
}

// Isolated reports whether commands run in an isolated view of the host
// (mount and, for restrictive policies, network namespaces) with their
// files at /vercel/sandbox, or directly on the host in a temporary
// directory.
func (s *Server) Isolated() bool { return s.isolated }
