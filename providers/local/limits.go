package local

import (
	"fmt"
	"os"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// Unlimited, as a field of [Limits], leaves that resource unbounded.
const Unlimited = -1

// Limits are the resource limits an isolated sandbox gets for each field
// its Spec.Resources leaves zero. In Options.Limits a zero field means the
// field of [DefaultLimits] and [Unlimited] means no limit: unlimited is
// always an explicit choice.
type Limits struct {
	// Memory bounds the sandbox's memory in bytes: its processes and, at
	// L3, its tmpfs files (/tmp, an image's writable layer, a /workspace
	// made by Resources.Disk), which the kernel charges to its cgroup.
	Memory int64
	// PIDs bounds its processes and threads.
	PIDs int
	// CPU bounds its processor time, in cores.
	CPU float64
	// Tmp is the size of /tmp (and of an image's writable layer) when
	// Resources.Disk is zero. At L2, without a cgroup to charge it to, /tmp
	// is never larger than the memory limit.
	Tmp int64
}

// DefaultLimits are the limits of a sandbox whose Spec.Resources and
// Options.Limits leave a field zero: 2 GiB of memory, 1024 processes,
// 512 MiB of /tmp, and no CPU limit.
var DefaultLimits = Limits{Memory: 2 << 30, PIDs: 1024, CPU: Unlimited, Tmp: 512 << 20}

// resolveLimits fills zero fields of l from DefaultLimits and checks them.
func resolveLimits(l *Limits) (Limits, error) {
	var out Limits
	if l != nil {
		out = *l
	}
	if out.Memory == 0 {
		out.Memory = DefaultLimits.Memory
	}
	if out.PIDs == 0 {
		out.PIDs = DefaultLimits.PIDs
	}
	if out.CPU == 0 {
		out.CPU = DefaultLimits.CPU
	}
	if out.Tmp == 0 {
		out.Tmp = DefaultLimits.Tmp
	}
	switch {
	case out.Memory < Unlimited || out.PIDs < Unlimited || out.CPU < Unlimited || out.Tmp < Unlimited:
		return out, fmt.Errorf("Options.Limits %+v: a limit is negative and not Unlimited (-1)", out)
	case out.Memory > 0 && out.Memory < minMemory:
		return out, fmt.Errorf("Options.Limits.Memory %d is below the %d MiB the sandbox's init needs", out.Memory, minMemory>>20)
	}
	return out, nil
}

// minMemory is the least memory a sandbox's init runs in.
const minMemory = 16 << 20

// effective is what a sandbox is given. Zero means unbounded.
type effective struct {
	Memory int64
	PIDs   int
	CPU    float64
	Tmp    int64 // the size of /tmp and of an image's writable layer
	// Workspace is the size of a tmpfs /workspace (Resources.Disk), or 0
	// for the host directory.
	Workspace int64
}

// effective returns the limits of a sandbox created with r: r's fields, or
// l's where r leaves them zero; cgroup tells whether a cgroup enforces them.
// Without a cgroup, the process limit is RLIMIT_NPROC, which counts every
// process of the sandbox's uid: when that uid is the caller's own (a
// provider that is not root), the default is not applied, only an explicit
// Resources.PIDs.
func (l Limits) effective(r sandbox.Resources, cgroup bool) effective {
	pick := func(spec, def int64) int64 {
		switch {
		case spec > 0:
			return spec
		case def > 0:
			return def
		}
		return 0
	}
	e := effective{
		Memory: pick(r.Memory, l.Memory),
		PIDs:   int(pick(int64(r.PIDs), int64(l.PIDs))),
		Tmp:    pick(r.Disk, l.Tmp),
	}
	if !cgroup && r.PIDs == 0 && os.Getuid() != 0 {
		e.PIDs = 0
	}
	if r.CPU > 0 {
		e.CPU = r.CPU
	} else if l.CPU > 0 {
		e.CPU = l.CPU
	}
	if r.Disk > 0 {
		e.Workspace = r.Disk
	}
	if !cgroup && e.Memory > 0 {
		// No cgroup charges tmpfs pages to the sandbox: bound them by
		// size instead.
		if e.Tmp == 0 || e.Tmp > e.Memory {
			e.Tmp = e.Memory
		}
		if e.Workspace > e.Memory {
			e.Workspace = e.Memory
		}
	}
	return e
}

// resources is e as cgroup limits.
func (e effective) resources() sandbox.Resources {
	return sandbox.Resources{Memory: e.Memory, PIDs: e.PIDs, CPU: e.CPU}
}
