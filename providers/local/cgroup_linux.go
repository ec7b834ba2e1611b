package local

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// cgroupRoot is where cgroup hierarchies are mounted.
var cgroupRoot = "/sys/fs/cgroup"

// cgroupParent is the directory, in each hierarchy, holding one cgroup per
// sandbox.
const cgroupParent = "perimeter"

// ownCgroup returns this process's cgroup path in the hierarchy of
// controller ("" for cgroup v2), so that sandboxes nest under the caller's
// own cgroup and stay within its limits.
func ownCgroup(controller string) string {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "/"
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == controller {
				return parts[2]
			}
		}
	}
	return "/"
}

// cgroupDir is the directory holding the sandboxes' cgroups in the
// hierarchy mounted at cgroupRoot/sub for controller.
func cgroupDir(sub, controller string) string {
	return filepath.Join(cgroupRoot, sub, ownCgroup(controller), cgroupParent)
}

// probeCgroup finds a cgroup hierarchy with memory and pids control that this
// process may write to.
func probeCgroup() (string, error) {
	if b, err := os.ReadFile(filepath.Join(cgroupRoot, "cgroup.controllers")); err == nil {
		ctrl := strings.Fields(string(b))
		if has(ctrl, "memory") && has(ctrl, "pids") {
			dir := cgroupDir("", "")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return "none", fmt.Errorf("cgroup v2: %w", err)
			}
			if err := canCreate(dir); err != nil {
				return "none", fmt.Errorf("cgroup v2: %w", err)
			}
			sweepStale(dir)
			// Delegate the controllers to the sandboxes' cgroups.
			if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+memory +pids"), 0); err != nil {
				return "none", fmt.Errorf("cgroup v2: enable memory and pids in %s: %w", dir, err)
			}
			os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+cpu"), 0)
			return "v2", nil
		}
		return "none", errors.New("cgroup v2 without the memory and pids controllers, and no v1 hierarchy")
	}
	for _, c := range []string{"memory", "pids", "cpu"} {
		if err := os.MkdirAll(cgroupDir(c, c), 0o755); err != nil {
			return "none", fmt.Errorf("cgroup v1 %s: %w", c, err)
		}
		if err := canCreate(cgroupDir(c, c)); err != nil {
			return "none", fmt.Errorf("cgroup v1 %s: %w", c, err)
		}
		sweepStale(cgroupDir(c, c))
	}
	sweepStale(cgroupDir("unified", ""))
	return "v1", nil
}

// sweepStale removes sandbox cgroups left by processes that died without
// terminating their sandboxes: empty (the kernel refuses to remove others)
// and older than a minute (so that a cgroup another process is about to
// start a sandbox in is left alone).
func sweepStale(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "sb-") {
			continue
		}
		fi, err := e.Info()
		if err != nil || time.Since(fi.ModTime()) < time.Minute {
			continue
		}
		os.Remove(filepath.Join(dir, e.Name()))
	}
}

// canCreate checks that a sandbox's cgroup could be made in dir.
func canCreate(dir string) error {
	probe := filepath.Join(dir, "probe-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(probe, 0o755); err != nil {
		return err
	}
	return os.Remove(probe)
}

func has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// cgroupSet is one sandbox's cgroups: one in v2, or one per v1 controller
// (plus, on hybrid hosts, one in the controller-less v2 hierarchy, used to
// kill the whole sandbox at once).
type cgroupSet struct {
	version string
	dirs    map[string]string // "memory", "pids", "cpu", "unified" (v1) or "v2" -> path

	oomMu     sync.Mutex
	oomFile   *os.File // the OOM-kill counter, once read
	oomClosed bool
}

// newCgroups makes the sandbox's cgroups and writes the limits of r.
func newCgroups(version, id string, r sandbox.Resources) (*cgroupSet, error) {
	cg := &cgroupSet{version: version, dirs: map[string]string{}}
	mk := func(key, dir string) error {
		if err := os.Mkdir(dir, 0o755); err != nil {
			return err
		}
		cg.dirs[key] = dir
		return nil
	}
	var err error
	if version == "v2" {
		err = mk("v2", filepath.Join(cgroupDir("", ""), id))
	} else {
		for _, c := range []string{"memory", "pids", "cpu"} {
			if err = mk(c, filepath.Join(cgroupDir(c, c), id)); err != nil {
				break
			}
		}
		uni := filepath.Join(cgroupRoot, "unified")
		if err == nil {
			if _, serr := os.Stat(filepath.Join(uni, "cgroup.kill")); serr == nil || fileExists(filepath.Join(uni, "cgroup.procs")) {
				if d := cgroupDir("unified", ""); os.MkdirAll(d, 0o755) == nil {
					mk("unified", filepath.Join(d, id)) // best effort
				}
			}
		}
	}
	if err == nil {
		err = cg.limit(r)
	}
	if err != nil {
		cg.remove()
		return nil, err
	}
	return cg, nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func (cg *cgroupSet) write(key, file, val string) error {
	dir, ok := cg.dirs[key]
	if !ok {
		return fmt.Errorf("no %s cgroup", key)
	}
	if err := os.WriteFile(filepath.Join(dir, file), []byte(val), 0); err != nil {
		return fmt.Errorf("cgroup %s: %w", file, err)
	}
	return nil
}

func (cg *cgroupSet) limit(r sandbox.Resources) error {
	v2 := cg.version == "v2"
	if r.Memory > 0 {
		m := strconv.FormatInt(r.Memory, 10)
		if v2 {
			if err := cg.write("v2", "memory.max", m); err != nil {
				return err
			}
			cg.write("v2", "memory.swap.max", "0")
		} else {
			if err := cg.write("memory", "memory.limit_in_bytes", m); err != nil {
				return err
			}
			cg.write("memory", "memory.memsw.limit_in_bytes", m) // absent without swap accounting
			cg.write("memory", "memory.swappiness", "0")
		}
	}
	if r.PIDs > 0 {
		key := "pids"
		if v2 {
			key = "v2"
		}
		// The agent's threads are processes of the cgroup too: the limit
		// counts them on top of the commands' (see agentThreads).
		if err := cg.write(key, "pids.max", strconv.Itoa(r.PIDs+agentThreads)); err != nil {
			return err
		}
	}
	if r.CPU > 0 {
		const period = 100000
		quota := int64(r.CPU * period)
		if quota < 1000 {
			quota = 1000
		}
		if v2 {
			if err := cg.write("v2", "cpu.max", fmt.Sprintf("%d %d", quota, period)); err != nil {
				return err
			}
		} else {
			if err := cg.write("cpu", "cpu.cfs_period_us", strconv.Itoa(period)); err != nil {
				return err
			}
			if err := cg.write("cpu", "cpu.cfs_quota_us", strconv.FormatInt(quota, 10)); err != nil {
				return err
			}
		}
	}
	return nil
}

// cloneDir is the cgroup to start the init in with CLONE_INTO_CGROUP, if
// any: the v2 group (pure v2) or the unified one (hybrid).
func (cg *cgroupSet) cloneDir() string {
	if d, ok := cg.dirs["v2"]; ok {
		return d
	}
	return cg.dirs["unified"]
}

// join moves pid into the v1 cgroups (v2 uses CLONE_INTO_CGROUP).
func (cg *cgroupSet) join(pid int) error {
	for _, c := range []string{"memory", "pids", "cpu"} {
		if _, ok := cg.dirs[c]; ok {
			if err := cg.write(c, "cgroup.procs", strconv.Itoa(pid)); err != nil {
				return err
			}
		}
	}
	return nil
}

// oomKills returns how many processes the kernel has killed in the sandbox
// for memory. The counter file is kept open and re-read from its start:
// every command of a memory-limited sandbox reads it.
func (cg *cgroupSet) oomKills() int64 {
	cg.oomMu.Lock()
	defer cg.oomMu.Unlock()
	if cg.oomFile == nil {
		if cg.oomClosed {
			return 0
		}
		var p string
		if d, ok := cg.dirs["v2"]; ok {
			p = filepath.Join(d, "memory.events")
		} else if d, ok := cg.dirs["memory"]; ok {
			p = filepath.Join(d, "memory.oom_control")
		} else {
			return 0
		}
		f, err := os.Open(p)
		if err != nil {
			return 0
		}
		cg.oomFile = f
	}
	var buf [4096]byte
	n, _ := cg.oomFile.ReadAt(buf[:], 0)
	sc := bufio.NewScanner(bytes.NewReader(buf[:n]))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), " "); ok && k == "oom_kill" {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

// closeOOM closes the counter file; later reads return 0.
func (cg *cgroupSet) closeOOM() {
	cg.oomMu.Lock()
	defer cg.oomMu.Unlock()
	if cg.oomFile != nil {
		cg.oomFile.Close()
		cg.oomFile = nil
	}
	cg.oomClosed = true
}

// kill kills every process in the sandbox's cgroup, where the kernel can.
func (cg *cgroupSet) kill() bool {
	for _, k := range []string{"v2", "unified"} {
		if d, ok := cg.dirs[k]; ok {
			if os.WriteFile(filepath.Join(d, "cgroup.kill"), []byte("1"), 0) == nil {
				return true
			}
		}
	}
	return false
}

// remove deletes the cgroups, waiting briefly for their last processes to
// go.
func (cg *cgroupSet) remove() error {
	cg.closeOOM()
	var errs []error
	deadline := time.Now().Add(5 * time.Second)
	// cg.dirs is not changed: other goroutines may still read counters
	// (which then read as zero).
	for _, d := range cg.dirs {
		for {
			err := os.Remove(d)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				break
			}
			if time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return errors.Join(errs...)
}
