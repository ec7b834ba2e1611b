package kubernetes

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/stretchr/testify/require"
)

// runWrapper runs the exec wrapper on a new terminal that has no size yet,
// as a container's terminal is before the exec stream's first resize
// arrives, with stty being the one in sttyDir. setSize, if not nil, runs
// once the wrapper has started (it stands for that first resize). It
// returns what the terminal showed.
func runWrapper(t *testing.T, sttyDir string, setSize func(*os.File)) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("sh", "-c", wrapper, "perimeter", filepath.Join(dir, "pid"), dir, "33 111", "0",
		"sh", "-c", "stty size; echo done")
	cmd.Env = []string{"PATH=" + sttyDir + ":/usr/bin:/bin"}
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{})
	require.NoError(t, err)
	defer ptmx.Close()
	if setSize != nil {
		// The wrapper has started once it has written its PID.
		require.Eventually(t, func() bool {
			b, _ := os.ReadFile(filepath.Join(dir, "pid"))
			return len(b) > 0
		}, time.Minute, 10*time.Millisecond)
		setSize(ptmx)
	}
	var out bytes.Buffer
	io.Copy(&out, ptmx) // ends with EIO once the command has exited
	require.NoError(t, cmd.Wait())
	return strings.ReplaceAll(out.String(), "\r", "")
}

// sttys returns the directories holding each stty to try: the host's
// (GNU coreutils prints "0 0" for a terminal without a size) and, when
// installed, busybox's (which prints nothing and fails), as in the test
// cluster's images.
func sttys(t *testing.T) map[string]string {
	dirs := map[string]string{"coreutils": "/usr/bin"}
	if bb, err := exec.LookPath("busybox"); err == nil {
		d := t.TempDir()
		require.NoError(t, os.Symlink(bb, filepath.Join(d, "stty")))
		dirs["busybox"] = d
	} else {
		t.Log("busybox is not installed: only coreutils' stty is tried")
	}
	return dirs
}

func TestWrapperWaitsForTheTerminalSize(t *testing.T) {
	for name, dir := range sttys(t) {
		t.Run(name, func(t *testing.T) {
			out := runWrapper(t, dir, func(ptmx *os.File) {
				time.Sleep(200 * time.Millisecond) // the resize comes late
				require.NoError(t, pty.Setsize(ptmx, &pty.Winsize{Rows: 33, Cols: 111}))
			})
			require.Equal(t, "33 111\ndone\n", out)
		})
	}
}

func TestWrapperSetsTheSizeWhenNoneArrives(t *testing.T) {
	if testing.Short() {
		t.Skip("waits the wrapper's 10 s bound; runs without -short")
	}
	for name, dir := range sttys(t) {
		t.Run(name, func(t *testing.T) {
			require.Equal(t, "33 111\ndone\n", runWrapper(t, dir, nil))
		})
	}
}

// treeScript signals a command only once the wrapper's subshell has said
// that its signal dispositions are the command's (the PID file's second
// line): a signal that reaches the subshell before it has reset the
// wrapper's traps is lost. The command here blocks SIGTERM, so a signal
// sent shows as pending the moment kill returns.
func TestSignalWaitsForTheSubshell(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is not installed: no command here can block SIGTERM")
	}
	dir := t.TempDir()
	root := exec.Command("sh", "-c", `python3 -c 'import signal, time; signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM]); print("ready", flush=True); time.sleep(120)' & wait`)
	out, err := root.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, root.Start())
	t.Cleanup(func() {
		exec.Command("pkill", "-KILL", "-P", strconv.Itoa(root.Process.Pid)).Run()
		root.Process.Kill()
		root.Wait()
	})
	line := make([]byte, 6)
	_, err = io.ReadFull(out, line)
	require.NoError(t, err)
	require.Equal(t, "ready\n", string(line))
	kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", root.Process.Pid, root.Process.Pid))
	require.NoError(t, err)
	child := strings.TrimSpace(string(kids))
	termPending := func() bool {
		b, err := os.ReadFile("/proc/" + child + "/status")
		require.NoError(t, err)
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "ShdPnd:"); ok {
				mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
				require.NoError(t, err)
				return mask&(1<<(15-1)) != 0
			}
		}
		t.Fatal("no ShdPnd in /proc/PID/status")
		return false
	}
	pidFile := filepath.Join(dir, "pid")
	signal := func() int {
		err := exec.Command("sh", "-c", treeScript, "perimeter", pidFile, "TERM", "2").Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		require.NoError(t, err)
		return 0
	}

	require.NoError(t, os.WriteFile(pidFile, []byte(strconv.Itoa(root.Process.Pid)+"\n"), 0o600))
	require.Equal(t, 3, signal(), "the subshell has not said it is ready: the script gives up")
	require.False(t, termPending(), "SIGTERM was sent before the subshell said it was ready")

	f, err := os.OpenFile(pidFile, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString("run\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.Equal(t, 0, signal())
	require.True(t, termPending(), "SIGTERM was not sent once the subshell was ready")
}
