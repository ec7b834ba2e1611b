package daytonafake

import (
	"os"
	"os/exec"
	"path/filepath"

	"github.com/perimeter-sdk/perimeter/internal/hostview"
)

// homeDir is the working directory of a Daytona sandbox (the home of its
// default user "daytona"), which the fake reproduces when it can isolate
// commands.
const homeDir = "/home/daytona"

// startBase builds, under dir, the fake's base view: the host's
// filesystem read-only, with an empty /home/daytona. Each sandbox's view
// is derived from it (see startView).
func startBase(dir string) (*hostview.Holder, error) {
	mnt, home := filepath.Join(dir, ".base"), filepath.Join(dir, ".base-home")
	for _, d := range []string{mnt, home} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	return hostview.Start(hostview.Config{Name: "daytonafake", Mount: mnt, Dir: home, At: homeDir})
}

// startView starts a sandbox's isolated view: the base view with the
// sandbox's disk at /home/daytona and its own /tmp, in a mount namespace
// of its own. Its commands join the view, so they see paths as a Daytona
// sandbox's do and cannot reach the test host's temporary files.
func startView(base *hostview.Holder, disk, tmp string) (*hostview.Holder, error) {
	return base.Derive(disk, tmp, nil)
}

// isolatedCommand returns the command that runs name in view, in cwd,
// without network if nonet. A program that is not found exits 127 and one
// that cannot run 126 (env's codes, as a shell's).
func isolatedCommand(view *hostview.Holder, nonet bool, cwd string, env []string, name string, args ...string) *exec.Cmd {
	return view.Command(hostview.Command{Argv: append([]string{name}, args...), Dir: cwd, Env: env, NoNetwork: nonet})
}

// probeIsolation starts the fake's base view under dir and checks that a
// sandbox's view works with it, with and without network; nil means
// commands run on the host. It needs unshare, nsenter and the right to
// mount: root, or unprivileged user namespaces.
func probeIsolation(dir string) *hostview.Holder {
	base, err := startBase(dir)
	if err != nil {
		return nil
	}
	if !tryIsolation(base, dir) {
		base.Close()
		return nil
	}
	return base
}

func tryIsolation(base *hostview.Holder, dir string) bool {
	for _, p := range []string{hostview.UnsharePath, hostview.NsenterPath, hostview.EnvPath} {
		if _, err := os.Stat(p); err != nil {
			return false
		}
	}
	probe, err := os.MkdirTemp(dir, ".probe-")
	if err != nil {
		return false
	}
	defer os.RemoveAll(probe)
	disk, tmp := filepath.Join(probe, "disk"), filepath.Join(probe, "tmp")
	for _, d := range []string{disk, tmp} {
		if os.Mkdir(d, 0o755) != nil {
			return false
		}
	}
	if os.WriteFile(filepath.Join(disk, "probe"), []byte("ok"), 0o644) != nil {
		return false
	}
	view, err := startView(base, disk, tmp)
	if err != nil {
		return false
	}
	defer view.Close()
	for _, nonet := range []bool{false, true} {
		out, err := isolatedCommand(view, nonet, homeDir, []string{"PATH=/usr/bin:/bin"}, "cat", "probe").Output()
		if err != nil || string(out) != "ok" {
			return false
		}
	}
	return true
}
