package sshbox_test

import (
	"context"
	"errors"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/perimeter-sdk/perimeter/sandbox"

	"github.com/perimeter-sdk/perimeter/examples/byo-ssh/sshbox"
)

func TestOptionsFromURL(t *testing.T) {
	kh := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(kh, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, raw := range []string{
		"ssh://host:22/srv",                // no user
		"ssh://me:secret@host:22/srv",      // password
		"ssh://me@host:22",                 // no base
		"ssh://me@host:22/",                // base is /
		"ssh://me@host:22/srv?colour=blue", // unknown parameter
		"ssh://me@host:22/srv?known_hosts=/nonexistent/known_hosts",
		"ssh://me@host:22/srv?identity=/nonexistent/key&known_hosts=" + kh,
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		_, err = sshbox.OptionsFromURL(u)
		if !errors.Is(err, sandbox.ErrInvalidArgument) {
			t.Errorf("OptionsFromURL(%s) = %v, want ErrInvalidArgument", raw, err)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("the error %q shows the password", err)
		}
	}
}

// TestProvider exercises what the conformance suite does not: refusals,
// confinement of absolute names and links, the reaper of Spec.Timeout, and
// Terminate reaching a process that left its process group.
func TestProvider(t *testing.T) {
	srv, base := server(t)
	ctx := context.Background()
	p, err := sandbox.Open(ctx, srv.URL(base))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	create := func(t *testing.T, edit func(*sandbox.Spec)) *sandbox.Sandbox {
		t.Helper()
		spec := openSpec()
		if edit != nil {
			edit(spec)
		}
		sb, err := p.Create(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sb.Terminate(context.Background()) })
		return sb
	}
	sh := func(t *testing.T, sb *sandbox.Sandbox, script string) string {
		t.Helper()
		res, err := sandbox.Run(ctx, sb, &sandbox.Cmd{Args: []string{"sh", "-c", script}}, nil)
		if err != nil || !res.Status.Success() {
			t.Fatalf("sh -c %q: %v %v %s", script, res.Status, err, res.Stderr)
		}
		return string(res.Stdout)
	}

	t.Run("refusals", func(t *testing.T) {
		for name, spec := range map[string]*sandbox.Spec{
			"default network (none)": {},
			"allowlist":              {Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkAllowlist, Allow: []string{"example.com"}}},
			"image":                  {Network: openSpec().Network, Image: "debian"},
			"memory":                 {Network: openSpec().Network, Resources: sandbox.Resources{Memory: 1 << 30}},
		} {
			if sb, err := p.Create(ctx, spec); !errors.Is(err, sandbox.ErrNotSupported) {
				t.Errorf("Create(%s) = %v, want ErrNotSupported", name, err)
				if err == nil {
					sb.Terminate(ctx)
				}
			}
		}
		_, err := p.Create(ctx, &sandbox.Spec{Network: openSpec().Network, Workdir: "/etc"})
		if !errors.Is(err, sandbox.ErrInvalidArgument) {
			t.Errorf("Create with Workdir /etc = %v, want ErrInvalidArgument", err)
		}
		if _, err := p.Get(ctx, "sb-000000000000"); !errors.Is(err, sandbox.ErrNotFound) {
			t.Errorf("Get of an unknown ID = %v, want ErrNotFound", err)
		}
	})

	t.Run("confinement", func(t *testing.T) {
		sb := create(t, func(s *sandbox.Spec) { s.Workdir = "work" })
		var native *sshbox.Sandbox
		if !sb.As(&native) {
			t.Fatal("As(**sshbox.Sandbox) = false")
		}
		root := native.Dir()
		if got := sh(t, sb, "pwd"); got != filepath.Join(root, "work")+"\n" {
			t.Errorf("pwd = %q, want %s/work", got, root)
		}
		outside := filepath.Join(t.TempDir(), "outside")
		if err := os.WriteFile(outside, []byte("host"), 0o644); err != nil {
			t.Fatal(err)
		}
		sh(t, sb, "mkdir -p sub && echo inside > sub/target && ln -s sub/target in-link && ln -s ../work/sub up-link && ln -s "+outside+" out-link")
		for _, name := range []string{"in-link", "up-link/target", root + "/work/sub/target"} {
			r, err := sb.ReadFile(ctx, name)
			if err != nil {
				t.Errorf("ReadFile(%s): %v", name, err)
				continue
			}
			b, _ := io.ReadAll(r)
			r.Close()
			if string(b) != "inside\n" {
				t.Errorf("ReadFile(%s) = %q", name, b)
			}
		}
		for _, name := range []string{"out-link", outside, "/etc/hostname"} {
			if _, err := sb.ReadFile(ctx, name); !errors.Is(err, sandbox.ErrPermissionDenied) {
				t.Errorf("ReadFile(%s) = %v, want ErrPermissionDenied", name, err)
			}
		}
		if err := sb.WriteFile(ctx, "out-link", strings.NewReader("x"), 0o644); !errors.Is(err, sandbox.ErrPermissionDenied) {
			t.Errorf("WriteFile(out-link) = %v, want ErrPermissionDenied", err)
		}
		if fi, err := sb.Stat(ctx, "out-link"); err != nil || fi.Mode&os.ModeSymlink == 0 {
			t.Errorf("Stat(out-link) = %+v, %v; want the link itself", fi, err)
		}
		if err := sb.Remove(ctx, "out-link"); err != nil {
			t.Errorf("Remove(out-link): %v", err)
		}
		if err := sb.Remove(ctx, "sub"); !errors.Is(err, sandbox.ErrInvalidArgument) {
			t.Errorf("Remove of a non-empty directory = %v, want ErrInvalidArgument", err)
		}
		if b, err := os.ReadFile(outside); err != nil || string(b) != "host" {
			t.Errorf("the file outside reads %q, %v", b, err)
		}
	})

	t.Run("timeout-reaper", func(t *testing.T) {
		sb, err := p.Create(ctx, &sandbox.Spec{Network: openSpec().Network, Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		info, err := sb.Info(ctx)
		if err != nil || info.Expires.IsZero() {
			t.Fatalf("Info = %+v, %v; want an expiry", info, err)
		}
		if !eventually(func() bool {
			_, err := p.Get(ctx, sb.ID())
			return errors.Is(err, sandbox.ErrNotFound)
		}) {
			t.Fatal("the sandbox outlived its Spec.Timeout")
		}
		if _, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"true"}}); !errors.Is(err, sandbox.ErrTerminated) && !errors.Is(err, sandbox.ErrNotFound) {
			t.Errorf("Start after expiry = %v, want ErrTerminated", err)
		}
	})

	t.Run("terminate-kills-escaped", func(t *testing.T) {
		sb := create(t, func(s *sandbox.Spec) { s.Timeout = time.Hour })
		// A process that moved to a session and group of its own.
		out := sh(t, sb, "setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $!")
		pid, err := strconv.Atoi(strings.TrimSpace(out))
		if err != nil {
			t.Fatal(out)
		}
		if !alive(pid) {
			t.Fatalf("the escaped process %d is not running", pid)
		}
		if err := sb.Terminate(ctx); err != nil {
			t.Fatal(err)
		}
		if !eventually(func() bool { return !alive(pid) }) {
			t.Errorf("process %d outlived Terminate", pid)
		}
		if !eventually(func() bool { return len(marked("PERIMETER_REAPER="+sb.ID())) == 0 }) {
			t.Errorf("the reaper of %s outlived Terminate", sb.ID())
		}
	})
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// eventually polls cond until it holds, for up to two minutes (a bound on a
// hung machine, not a measure of speed).
func eventually(cond func() bool) bool {
	deadline := time.Now().Add(2 * time.Minute)
	for d := 10 * time.Millisecond; time.Now().Before(deadline); d = min(2*d, 500*time.Millisecond) {
		if cond() {
			return true
		}
		time.Sleep(d)
	}
	return cond()
}

// marked returns the processes whose environment holds the entry env.
func marked(env string) []int {
	var out []int
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + d.Name() + "/environ")
		if err != nil {
			continue
		}
		for _, e := range strings.Split(string(b), "\x00") {
			if e == env || (strings.HasSuffix(env, "=") && strings.HasPrefix(e, env)) {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}
