package local

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// procMasked are /proc files that describe the host rather than the
// sandbox (its kernel's symbols and command line, keyrings, timers, the
// scheduler, devices, disks and memory layout): an empty read-only file is
// bound over each that exists. Files only the host's root may read (mode
// 0400: kpage*, slabinfo, vmallocinfo, pagetypeinfo) are closed to the
// sandbox's root, which is not the host's, and are left as they are.
var procMasked = []string{
	"cmdline", "kallsyms", "keys", "key-users", "timer_list", "sched_debug",
	"kcore", "latency_stats", "sysrq-trigger", "config.gz", "modules",
	"iomem", "ioports", "dma", "interrupts", "softirqs", "schedstat",
	"zoneinfo", "buddyinfo", "partitions", "diskstats", "swaps", "consoles",
	"devices", "misc", "locks",
}

// procMaskedDirs are /proc directories of host hardware, hidden behind an
// empty read-only tmpfs.
var procMaskedDirs = []string{"acpi", "asound", "scsi", "bus", "driver", "irq", "tty", "fs"}

// procVirtual are /proc files replaced by the sandbox's own constant
// content: the host's load and boot id are not the sandbox's business.
func procVirtual(bootID string) map[string]string {
	return map[string]string{
		"loadavg":                   "0.00 0.00 0.00 1/1 1\n",
		"sys/kernel/random/boot_id": bootID + "\n",
	}
}

// maskProc hides what the sandbox's /proc (mounted at proc) shows of the
// host. The files it binds live on a small tmpfs under scratch, made
// read-only before they are bound: every bind inherits that.
func maskProc(scratch, proc, bootID string) error {
	src := filepath.Join(scratch, "procmask")
	if err := os.Mkdir(src, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", src, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=64k,mode=0755"); err != nil {
		return fmt.Errorf("mount /proc masks: %w", err)
	}
	empty := filepath.Join(src, "empty")
	emptyDir := filepath.Join(src, "emptydir")
	if err := os.WriteFile(empty, nil, 0o444); err != nil {
		return err
	}
	if err := os.Mkdir(emptyDir, 0o555); err != nil {
		return err
	}
	virtual := procVirtual(bootID)
	for name, content := range virtual {
		if err := os.WriteFile(filepath.Join(src, filepath.Base(name)), []byte(content), 0o444); err != nil {
			return err
		}
	}
	if err := unix.MountSetattr(unix.AT_FDCWD, src, 0, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}); err != nil {
		return fmt.Errorf("make /proc masks read-only: %w", err)
	}
	bind := func(from, name string) error {
		to := filepath.Join(proc, name)
		if _, err := os.Lstat(to); err != nil {
			return nil // absent on this kernel
		}
		if err := unix.Mount(from, to, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("mask /proc/%s: %w", name, err)
		}
		return nil
	}
	for _, name := range procMasked {
		if err := bind(empty, name); err != nil {
			return err
		}
	}
	for _, name := range procMaskedDirs {
		if err := bind(emptyDir, name); err != nil {
			return err
		}
	}
	for name := range virtual {
		if err := bind(filepath.Join(src, filepath.Base(name)), name); err != nil {
			return err
		}
	}
	return nil
}

// newBootID returns a random boot id in the kernel's format.
func newBootID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}
