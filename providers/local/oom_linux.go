package local

import (
	"os"
	"strconv"
)

// commandOOMScoreAdj is every command's oom_score_adj, set by the agent as
// soon as the command has started: the kernel's OOM killer picks sandboxed
// commands before anything else, inside the sandbox's memory cgroup (before
// its agent, which keeps the host process's value) and host-wide. A command
// cannot lower it again where Landlock applies (no writes under /proc).
// The agent is deliberately not given a negative value: that would need
// CAP_SYS_RESOURCE and would let its commands, which inherit the floor it
// sets, lower themselves as far. The value is written just after the
// command's exec, before Start returns: a child the command forks in that
// window keeps the agent's value (the runtime gives no hook between fork and
// exec to set it earlier).
const commandOOMScoreAdj = 1000

// setOOMScoreAdj sets the oom_score_adj of process pid, as seen in this
// process's /proc.
func setOOMScoreAdj(pid, adj int) error {
	return os.WriteFile("/proc/"+strconv.Itoa(pid)+"/oom_score_adj", []byte(strconv.Itoa(adj)), 0)
}
