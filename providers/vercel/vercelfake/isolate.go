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
	"sync"

	"github.com/perimeter-sdk/perimeter/internal/hostview"
)

// sandboxCwd is the working directory of a Vercel sandbox, which the fake
// reproduces when it can isolate commands.
const sandboxCwd = "/vercel/sandbox"

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

// cred returns whom a command runs as, nil for root.
func (u *sandboxUser) cred(sudo bool) *hostview.Cred {
	if u.passwd == "" || sudo {
		return nil
	}
	return &hostview.Cred{UID: u.uid, GID: u.gid}
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

// startView builds the isolated view of a session (see the package
// documentation): a read-only view of the host with the sandbox's
// directory at /vercel/sandbox and its own /tmp, and, when the fake runs as
// root, /etc/passwd and /etc/group naming the sandbox user.
func startView(se *sessionRec, u *sandboxUser) (*hostview.Holder, error) {
	return hostview.Start(hostview.Config{
		Name: "vercelfake", Mount: se.mount, Dir: se.disk, At: sandboxCwd, Tmp: se.tmp,
		Passwd: u.passwd, Group: u.group,
	})
}

// isolatedCommand returns the command that runs name in the session's view
// h, as the sandbox user unless sudo, without network when the session's
// network policy denies it now. A program that is not found exits 127 and
// one that cannot run 126 (env's codes, as a shell's).
func isolatedCommand(h *hostview.Holder, se *sessionRec, u *sandboxUser, sudo bool, cwd string, env []string, name string, args []string) *exec.Cmd {
	return h.Command(hostview.Command{
		Argv: append([]string{name}, args...), Dir: cwd, Env: env,
		NoNetwork: denies(se.Network), Cred: u.cred(sudo),
	})
}

// hostCommand returns the command that runs name directly on the host, in
// cwd, with default signal dispositions (as a fresh VM's processes have,
// whatever the process running the fake ignores).
func hostCommand(cwd string, env []string, name string, args []string) *exec.Cmd {
	cmd := exec.Command(hostview.EnvPath, append([]string{"--default-signal", "--", name}, args...)...)
	cmd.Dir, cmd.Env = cwd, env
	return cmd
}

var probe struct {
	once sync.Once
	ok   bool
}

// probeIsolation reports whether isolated views work here (they need
// unshare, nsenter and the right to mount: root, or unprivileged user
// namespaces). The answer is the same for every fake of the process.
func probeIsolation(root string) bool {
	probe.once.Do(func() { probe.ok = tryIsolation(root) })
	return probe.ok
}

func tryIsolation(root string) bool {
	for _, p := range []string{hostview.UnsharePath, hostview.NsenterPath, hostview.EnvPath} {
		if _, err := os.Stat(p); err != nil {
			return false
		}
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
	h, err := startView(se, &sandboxUser{})
	if err != nil {
		return false
	}
	defer h.Close()
	out, err := isolatedCommand(h, se, &sandboxUser{}, false, sandboxCwd, []string{"PATH=/usr/bin:/bin"}, "cat", []string{"probe"}).Output()
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
