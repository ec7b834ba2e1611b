package local

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// ownerEnv makes this test binary, re-executed, the owner process of
// TestSandboxOfAnotherProcess: it creates a sandbox on the root it names,
// writes the ID to descriptor 3 and exits once the sandbox is released.
const ownerEnv = "PERIMETER_LOCAL_TEST_OWNER"

// TestOwnerProcess is the owner process's body; it does nothing in a normal
// run of the tests.
func TestOwnerProcess(t *testing.T) {
	var cfg struct {
		Root  string
		Level Level
		Spec  *sandbox.Spec
	}
	if err := json.Unmarshal([]byte(os.Getenv(ownerEnv)), &cfg); err != nil {
		t.Skip("the owner process of TestSandboxOfAnotherProcess, run by that test")
	}
	report := os.NewFile(3, "report")
	p, err := New(&Options{Root: cfg.Root, Level: cfg.Level})
	if err == nil {
		var sb *sandbox.Sandbox
		if sb, err = p.Create(context.Background(), cfg.Spec); err == nil {
			var d *Sandbox
			sb.As(&d)
			report.WriteString(sb.ID() + "\n")
			report.Close()
			<-d.Done()
			os.Exit(0)
		}
	}
	report.WriteString("error: " + err.Error() + "\n")
	os.Exit(1)
}

// owner is a process that created a sandbox.
type owner struct {
	cmd    *exec.Cmd
	id     string
	exited chan struct{} // closed once it has exited; then err is its Wait's
	err    error
}

// startOwner starts the owner process and returns once its sandbox runs.
func startOwner(t *testing.T, root string, level Level, spec *sandbox.Spec) *owner {
	t.Helper()
	cfg, err := json.Marshal(map[string]any{"Root": root, "Level": level, "Spec": spec})
	require.NoError(t, err)
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestOwnerProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), ownerEnv+"="+string(cfg))
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	w.Close()
	o := &owner{cmd: cmd, exited: make(chan struct{})}
	go func() {
		o.err = cmd.Wait()
		close(o.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-o.exited
	})
	line, _ := io.ReadAll(r)
	s := strings.TrimSpace(string(line))
	require.True(t, validID(s), "the owner process reported %q", s)
	o.id = s
	return o
}

// heldFiles lists the files this process holds open whose path starts with
// prefix.
func heldFiles(t *testing.T, prefix string) []string {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	var out []string
	for _, fd := range fds {
		if p, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && strings.HasPrefix(p, prefix) {
			out = append(out, p)
		}
	}
	return out
}

// waitClosed waits, bounded against a hang, for ch to be closed.
func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(2 * time.Minute):
		t.Fatalf("%s: not after 2 minutes", what)
	}
}

// TestSandboxOfAnotherProcess: a process that did not create an isolated
// sandbox uses it through Get (commands, files, Info, List, ExtendTimeout)
// and terminates it; the owner learns of it, releases everything and
// exits, and nothing of the sandbox is left.
func TestSandboxOfAnotherProcess(t *testing.T) {
	for _, level := range []Level{LevelFull, LevelLandlock} {
		t.Run(level.String(), func(t *testing.T) {
			if Probe().MaxLevel() < level {
				t.Skipf("this host reaches %v", Probe().MaxLevel())
			}
			ctx := context.Background()
			root := t.TempDir()
			if level == LevelLandlock {
				// At L1 the sandbox's uid reaches its workspace by path.
				require.NoError(t, os.Chmod(root, 0o711))
				require.NoError(t, os.Chmod(filepath.Dir(root), 0o711))
				root = filepath.Join(root, "root")
			}
			spec := &sandbox.Spec{
				Env:       map[string]string{"FROM": "spec"},
				Resources: sandbox.Resources{Memory: 256 << 20},
				Network:   &sandbox.NetworkPolicy{Mode: sandbox.NetworkAllowlist, Allow: []string{"example.com"}},
			}
			o := startOwner(t, root, level, spec)
			p, err := New(&Options{Root: root, Level: level})
			require.NoError(t, err)
			defer p.Close()
			before := takeSnapshot(t)

			sb, err := p.Get(ctx, o.id)
			require.NoError(t, err)
			var d *Sandbox
			require.True(t, sb.As(&d))
			require.True(t, d.attached())
			assert.Equal(t, level, d.Isolation().Level)
			res, err := sandbox.Run(ctx, sb, &sandbox.Cmd{Args: []string{"sh", "-c", `echo "$FROM $HTTPS_PROXY"; id -u`}}, nil)
			require.NoError(t, err)
			assert.Equal(t, 0, res.Status.Code, string(res.Stderr))
			want := "spec http://127.0.0.1:3128\n0\n"
			if level == LevelLandlock {
				want = "spec " + d.iso.env["HTTPS_PROXY"] + "\n" + strconv.Itoa(d.Isolation().UIDBase) + "\n"
				if os.Getuid() != 0 {
					want = "spec " + d.iso.env["HTTPS_PROXY"] + "\n" + strconv.Itoa(os.Getuid()) + "\n"
				}
			}
			assert.Equal(t, want, string(res.Stdout))
			require.NoError(t, sb.WriteFile(ctx, "f.txt", strings.NewReader("written by another process"), 0o600))
			res, err = sandbox.Run(ctx, sb, &sandbox.Cmd{Args: []string{"cat", "f.txt"}}, nil)
			require.NoError(t, err)
			assert.Equal(t, "written by another process", string(res.Stdout))
			info, err := sb.Info(ctx)
			require.NoError(t, err)
			assert.Contains(t, info.Isolation, level.String())
			n := 0
			for info, err := range p.List(ctx, nil) {
				require.NoError(t, err)
				assert.Equal(t, o.id, info.ID)
				n++
			}
			assert.Equal(t, 1, n)
			require.NoError(t, sb.ExtendTimeout(ctx, time.Hour))
			m, err := readMeta(filepath.Join(root, o.id))
			require.NoError(t, err)
			assert.False(t, m.Expires.IsZero(), "the extension is recorded for the owner")

			require.NoError(t, sb.Terminate(ctx))
			// The owner released everything and exited on its own.
			select {
			case <-o.exited:
				require.NoError(t, o.err, "the owner process")
			case <-time.After(2 * time.Minute):
				t.Fatal("the owner process did not exit after its sandbox was terminated")
			}
			assert.NotEqual(t, m.InitStart, procStart(m.InitPID), "the sandbox's init still runs")
			assert.NoDirExists(t, filepath.Join(root, o.id), "the sandbox's directory is left")
			assert.Empty(t, sandboxCgroups(o.id), "cgroups left behind")
			for _, d := range m.Cgroups {
				assert.NoDirExists(t, d)
			}
			_, err = p.Get(ctx, o.id)
			assert.ErrorIs(t, err, sandbox.ErrNotFound)
			assert.Empty(t, heldFiles(t, root), "descriptors of the sandbox are held")
			after := takeSnapshot(t)
			assert.LessOrEqual(t, after.goroutines, before.goroutines, "goroutines left")
			assert.LessOrEqual(t, after.fds, before.fds, "descriptors left")
			assert.Equal(t, before.mounts, after.mounts, "mounts left")
		})
	}
}

// TestGetRefusesWhatIsNotRunning: Get from another process finds only a
// running sandbox; after its owner was killed outright, the init is gone
// with it (Pdeathsig) and List removes what the owner left.
func TestGetRefusesWhatIsNotRunning(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	o := startOwner(t, root, 0, nil)
	m, err := readMeta(filepath.Join(root, o.id))
	require.NoError(t, err)
	fd, err := unix.PidfdOpen(m.InitPID, unix.PIDFD_NONBLOCK)
	require.NoError(t, err)
	pidfd := os.NewFile(uintptr(fd), "pidfd")
	defer pidfd.Close()
	initExited := watchPidfd(pidfd)
	require.NoError(t, o.cmd.Process.Kill())
	<-o.exited
	waitClosed(t, initExited, "the init's exit after its owner was killed")
	p, err := New(&Options{Root: root, RequireLevel: LevelNamespaces})
	require.NoError(t, err)
	defer p.Close()
	_, err = p.Get(ctx, o.id)
	require.Error(t, err)
	assert.True(t, errors.Is(err, sandbox.ErrNotFound), "%v", err)
	for info, err := range p.List(ctx, nil) {
		require.NoError(t, err)
		t.Errorf("%s of a killed owner is listed", info.ID)
	}
	entries, _ := os.ReadDir(root)
	assert.Empty(t, entries, "what the killed owner left is removed")
	for _, d := range m.Cgroups {
		assert.NoDirExists(t, d)
	}
}

// TestInitEndReleasesTheSandbox: in the owning process, the end of the
// init (here a kill; in use another process's Terminate) releases the
// sandbox: Done is closed once the processes, cgroups, uid range lock,
// owner lock and directory are gone.
func TestInitEndReleasesTheSandbox(t *testing.T) {
	p := newIsolated(t)
	sb := create(t, p, &sandbox.Spec{Resources: sandbox.Resources{Memory: 256 << 20}})
	dir := sb.d.dir
	var cgroups []string
	if sb.d.iso.cg != nil {
		for _, d := range sb.d.iso.cg.dirs {
			cgroups = append(cgroups, d)
		}
	}
	var uidLock string
	if l := sb.d.iso.uids.lock; l != nil {
		uidLock = l.Name()
		require.NotEmpty(t, heldFiles(t, uidLock))
	}
	require.NotEmpty(t, heldFiles(t, filepath.Join(dir, ownerLockFile)))
	select {
	case <-sb.d.Done():
		t.Fatal("Done is closed while the sandbox runs")
	default:
	}
	require.NoError(t, sb.d.iso.init.Process.Kill())
	waitClosed(t, sb.d.Done(), "Done after the init was killed")
	assert.NoDirExists(t, dir)
	for _, d := range cgroups {
		assert.NoDirExists(t, d)
	}
	if uidLock != "" {
		assert.Empty(t, heldFiles(t, uidLock), "the uid range's lock is held")
	}
	assert.Empty(t, heldFiles(t, dir), "the owner lock is held")
	_, err := sandbox.Run(context.Background(), sb.Sandbox, &sandbox.Cmd{Args: []string{"true"}}, nil)
	assert.ErrorIs(t, err, sandbox.ErrTerminated)
}

// TestExpiryEndsTheSandbox: a sandbox's Spec.Timeout ends it by itself;
// an expiry another process moved later (in the metadata) is honoured.
func TestExpiryEndsTheSandbox(t *testing.T) {
	p := newIsolated(t)
	sb := create(t, p, &sandbox.Spec{Timeout: time.Second})
	waitClosed(t, sb.d.Done(), "Done after the sandbox's timeout")
	assert.NoDirExists(t, sb.d.dir)

	// Extended by another process: the owner's timer re-reads the expiry.
	sb = create(t, p, &sandbox.Spec{Timeout: time.Hour})
	m, err := readMeta(sb.d.dir)
	require.NoError(t, err)
	m.Expires = time.Now().Add(2 * time.Hour)
	require.NoError(t, writeMeta(sb.d.dir, m))
	sb.d.expire()
	st, _, _ := sh(t, sb, "true")
	assert.True(t, st.Success(), "the sandbox ended at an expiry another process had moved")
	m.Expires = time.Now().Add(-time.Second)
	require.NoError(t, writeMeta(sb.d.dir, m))
	sb.d.expire()
	waitClosed(t, sb.d.Done(), "Done after the expiry")
}
