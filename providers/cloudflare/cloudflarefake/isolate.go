package cloudflarefake

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"

	"github.com/perimeter-sdk/perimeter/internal/hostview"
)

// startView builds b's isolated view: a read-only view of the host's
// filesystem with the sandbox's workspace at /workspace and its own /tmp,
// held by a process that carries the sandbox's mark. The sandbox's
// commands join it, so the view is built once per sandbox rather than once
// per command.
func startView(b *box) (*hostview.Holder, error) {
	return hostview.Start(hostview.Config{
		Name: "cloudflarefake", Mount: filepath.Join(b.dir, "mnt"),
		Dir: b.workspace(), At: "/workspace", Tmp: filepath.Join(b.dir, "tmp"),
		Env: []string{boxEnv + "=" + b.id},
	})
}

// startBase builds the fake's base view under root: its boxes' views are
// derived from it (hostview.Holder.Derive), a copy of its mount namespace
// with the box's workspace and /tmp bound in, which costs a few process
// starts rather than the few dozen a view of its own takes. It returns the
// base's directory and holder, or a nil holder if it cannot be built.
func startBase(root string) (string, *hostview.Holder) {
	dir, err := os.MkdirTemp(root, ".base-")
	if err != nil {
		return "", nil
	}
	b := &box{id: "base", dir: dir}
	for _, d := range []string{b.workspace(), filepath.Join(dir, "tmp"), filepath.Join(dir, "mnt")} {
		if os.Mkdir(d, 0o755) != nil {
			return dir, nil
		}
	}
	h, err := hostview.Start(hostview.Config{
		Name: "cloudflarefake", Mount: filepath.Join(dir, "mnt"),
		Dir: b.workspace(), At: "/workspace", Tmp: filepath.Join(dir, "tmp"),
	})
	if err != nil {
		return dir, nil
	}
	return dir, h
}

// isolatedCommand runs argv in b's isolated view, in directory dir (an
// absolute path inside the view), with environment env.
func isolatedCommand(b *box, dir string, env, argv []string) *exec.Cmd {
	return b.view.Command(hostview.Command{Argv: argv, Dir: dir, Env: env})
}

var probe struct {
	once sync.Once
	ok   bool
}

// probeIsolation reports whether the isolated view works here (it needs
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
	b := &box{id: "probe" + filepath.Base(dir), dir: dir}
	for _, d := range []string{b.workspace(), filepath.Join(dir, "tmp"), filepath.Join(dir, "mnt")} {
		if os.Mkdir(d, 0o755) != nil {
			return false
		}
	}
	if os.WriteFile(filepath.Join(b.workspace(), "probe"), []byte("ok"), 0o644) != nil {
		return false
	}
	if b.view, err = startView(b); err != nil {
		return false
	}
	defer b.kill()
	out, err := isolatedCommand(b, "/workspace", []string{"PATH=/usr/bin:/bin"}, []string{"cat", "probe"}).Output()
	return err == nil && string(out) == "ok"
}
