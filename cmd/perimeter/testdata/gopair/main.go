// Command gopair is the least a sandbox launched by a Go program with a Go
// init costs: it starts itself again in new mount, UTS, IPC, user, PID and
// network namespaces (the ones the local provider's init gets), and that
// second start, as PID 1, runs CMD and waits for it. No root is built, no
// cgroup, filter or agent is set up. With -direct, CMD itself is started in
// those namespaces as PID 1, with no init between: what a launcher pays
// whose init is not a Go program. BenchmarkRunTrueVsBwrap times both beside
// bwrap: what is left of the target once the starts and the namespaces are
// paid for.
//
//	gopair [-direct] CMD [ARGS...]
package main

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

// initArg0 is argv[0] of the second start.
const initArg0 = "gopair-init"

func main() {
	args := os.Args[1:]
	direct := len(args) > 0 && args[0] == "-direct"
	if direct {
		args = args[1:]
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: gopair [-direct] CMD [ARGS...]")
		os.Exit(2)
	}
	if os.Args[0] == initArg0 {
		if os.Getpid() != 1 {
			fail(fmt.Errorf("the init runs as pid %d, not 1: no new PID namespace", os.Getpid()))
		}
		run(exec.Command(args[0], args[1:]...), nil)
		return
	}
	cmd := &exec.Cmd{Path: "/proc/self/exe", Args: append([]string{initArg0}, args...)}
	if direct {
		cmd = exec.Command(args[0], args[1:]...)
	}
	run(cmd, &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC |
			syscall.CLONE_NEWUSER | syscall.CLONE_NEWPID | syscall.CLONE_NEWNET,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
	})
}

// run runs cmd with the caller's standard streams and exits as it exited.
func run(cmd *exec.Cmd, attr *syscall.SysProcAttr) {
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = attr
	if err := cmd.Run(); err != nil {
		if exit, ok := err.(*exec.ExitError); ok {
			os.Exit(exit.ExitCode())
		}
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "gopair:", err)
	os.Exit(1)
}
