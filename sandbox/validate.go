package sandbox

import (
	"fmt"
	"io/fs"
	"math"
	"path"
	"strings"
)

// Default permissions the portable layer applies when a caller passes 0.
const (
	// DefaultFilePerm is WriteFile's permission when perm is 0.
	DefaultFilePerm fs.FileMode = 0o644
	// DefaultDirPerm is MkdirAll's permission when perm is 0.
	DefaultDirPerm fs.FileMode = 0o755
	// DefaultTerm is the TERM of a TTY whose Term is empty.
	DefaultTerm = "xterm-256color"
)

// invalid is a refused argument; it matches ErrInvalidArgument.
type invalid string

func (e invalid) Error() string        { return string(e) }
func (e invalid) Is(target error) bool { return target == ErrInvalidArgument }

func invalidf(format string, args ...any) error { return invalid(fmt.Sprintf(format, args...)) }

// cleanName checks a file name given to a Sandbox's file methods and returns
// it clean (path.Clean), still relative if it was: the driver resolves a
// relative name against the sandbox's working directory.
func cleanName(what, name string) (string, error) {
	switch {
	case name == "":
		return "", invalidf("empty %s", what)
	case strings.IndexByte(name, 0) >= 0:
		return "", invalidf("%s %s contains a NUL byte", what, shortQuote(name))
	}
	for el := range strings.SplitSeq(name, "/") {
		if el == ".." {
			return "", invalidf(`%s %s has a ".." element`, what, shortQuote(name))
		}
	}
	return path.Clean(name), nil
}

// CleanName resolves a file name against dir (an absolute slash path: a
// sandbox's working directory) and returns the absolute, clean path. It refuses
// an empty name, a name containing a NUL byte and a name with a ".." element,
// with an error that matches ErrInvalidArgument. The portable [Sandbox] already
// checks every name this way before a driver sees it; CleanName is for code
// that maps names itself (tool executors, drivers joining a checked name to
// their working directory).
func CleanName(dir, name string) (string, error) {
	n, err := cleanName("file name", name)
	if err != nil {
		return "", err
	}
	if !path.IsAbs(n) {
		if dir == "" {
			dir = "/"
		}
		n = path.Join(dir, n)
	}
	return n, nil
}

func checkEnv(what string, env map[string]string) error {
	for k, v := range env {
		switch {
		case k == "":
			return invalidf("%s has an empty key", what)
		case strings.ContainsAny(k, "=\x00"):
			return invalidf("%s key %s contains '=' or a NUL byte", what, shortQuote(k))
		case strings.IndexByte(v, 0) >= 0:
			return invalidf("%s value of %s contains a NUL byte", what, shortQuote(k))
		}
	}
	return nil
}

func checkPort(port int) error {
	if port < 1 || port > 65535 {
		return invalidf("port %d is outside 1-65535", port)
	}
	return nil
}

// specialBits are the chmod(2) bits above 0o777 in fs.FileMode's spelling.
const specialBits = fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky

// checkPerm accepts the permission bits of chmod(2), 0o7777, spelled either
// as octal (0o4755) or as fs.FileMode (fs.ModeSetuid|0o755), and returns them
// in fs.FileMode's spelling, with def for 0.
func checkPerm(perm fs.FileMode, def fs.FileMode) (fs.FileMode, error) {
	out := perm & (fs.ModePerm | specialBits)
	rest := perm &^ (fs.ModePerm | specialBits)
	for _, b := range []struct{ octal, mode fs.FileMode }{{0o4000, fs.ModeSetuid}, {0o2000, fs.ModeSetgid}, {0o1000, fs.ModeSticky}} {
		if rest&b.octal != 0 {
			rest &^= b.octal
			out |= b.mode
		}
	}
	if rest != 0 {
		return 0, invalidf("permission %v (%#o) has bits other than the permission bits 0o7777", perm, uint32(perm))
	}
	if out == 0 {
		return def, nil
	}
	return out, nil
}

// checkPolicy validates a network policy and returns it with its default
// applied (a nil policy or an empty mode is NetworkNone). The caller's value is
// never modified.
func checkPolicy(p *NetworkPolicy) (*NetworkPolicy, error) {
	if p == nil {
		return &NetworkPolicy{Mode: NetworkNone}, nil
	}
	out := &NetworkPolicy{Mode: p.Mode, Allow: append([]string(nil), p.Allow...)}
	switch out.Mode {
	case "":
		out.Mode = NetworkNone
	case NetworkNone, NetworkAllowlist, NetworkOpen:
	default:
		return nil, invalidf("unknown network mode %s (want none, allowlist or open)", shortQuote(string(p.Mode)))
	}
	if out.Mode != NetworkAllowlist && len(out.Allow) > 0 {
		return nil, invalidf("network mode %s takes no Allow list (use allowlist)", out.Mode)
	}
	for _, a := range out.Allow {
		if strings.TrimSpace(a) == "" || strings.IndexByte(a, 0) >= 0 {
			return nil, invalidf("network Allow entry %s is empty or contains a NUL byte", shortQuote(a))
		}
	}
	return out, nil
}

// checkSpec validates spec and returns a copy with the contract's defaults
// applied; the caller's spec is never modified.
func checkSpec(spec *Spec) (*Spec, error) {
	var s Spec
	if spec != nil {
		s = *spec
	}
	if err := checkEnv("Spec.Env", s.Env); err != nil {
		return nil, err
	}
	for k := range s.Labels {
		if k == "" {
			return nil, invalid("Spec.Labels has an empty key")
		}
	}
	if s.Workdir != "" {
		w, err := cleanName("Spec.Workdir", s.Workdir)
		if err != nil {
			return nil, err
		}
		s.Workdir = w
	}
	r := s.Resources
	if r.CPU < 0 || math.IsNaN(r.CPU) || math.IsInf(r.CPU, 0) || r.Memory < 0 || r.Disk < 0 || r.PIDs < 0 {
		return nil, invalidf("Spec.Resources has a negative or non-finite field: %+v", r)
	}
	if s.Timeout < 0 {
		return nil, invalidf("negative Spec.Timeout %v", s.Timeout)
	}
	for _, p := range s.Ports {
		if err := checkPort(p); err != nil {
			return nil, invalidf("Spec.Ports: %v", err)
		}
	}
	np, err := checkPolicy(s.Network)
	if err != nil {
		return nil, invalidf("Spec.Network: %v", err)
	}
	s.Network = np
	return &s, nil
}

// checkCmd validates cmd and returns a copy with the contract's defaults
// applied.
func checkCmd(cmd *Cmd, caps *Capabilities) (*Cmd, error) {
	if cmd == nil || len(cmd.Args) == 0 {
		return nil, invalid("empty command (Cmd.Args)")
	}
	if cmd.Args[0] == "" {
		return nil, invalid("empty program name (Cmd.Args[0])")
	}
	for i, a := range cmd.Args {
		if strings.IndexByte(a, 0) >= 0 {
			return nil, invalidf("Cmd.Args[%d] contains a NUL byte", i)
		}
	}
	if err := checkEnv("Cmd.Env", cmd.Env); err != nil {
		return nil, err
	}
	if cmd.Timeout < 0 {
		return nil, invalidf("negative Cmd.Timeout %v", cmd.Timeout)
	}
	c := *cmd
	if c.Dir != "" {
		d, err := cleanName("Cmd.Dir", c.Dir)
		if err != nil {
			return nil, err
		}
		c.Dir = d
	}
	if c.TTY != nil {
		if c.TTY.Rows <= 0 || c.TTY.Cols <= 0 {
			return nil, invalidf("TTY size %dx%d is not positive", c.TTY.Rows, c.TTY.Cols)
		}
		if strings.IndexByte(c.TTY.Term, 0) >= 0 {
			return nil, invalid("TTY.Term contains a NUL byte")
		}
		if !caps.PTY {
			return nil, errNotSupported("Cmd.TTY: this sandbox has no pseudo-terminals (Capabilities.PTY is false)")
		}
		tty := *c.TTY
		if tty.Term == "" {
			tty.Term = DefaultTerm
		}
		c.TTY = &tty
	}
	if c.Stdin != nil && c.TTY == nil && !caps.Stdin {
		return nil, errNotSupported("Cmd.Stdin: this sandbox does not take standard input (Capabilities.Stdin is false)")
	}
	return &c, nil
}

func checkSignal(sig Signal) error {
	switch sig {
	case SIGHUP, SIGINT, SIGQUIT, SIGKILL, SIGUSR1, SIGUSR2, SIGTERM:
		return nil
	}
	return invalidf("unknown signal %s", shortQuote(string(sig)))
}

func checkProtocol(opts *ExposeOptions) (*ExposeOptions, error) {
	if opts == nil || opts.Protocol == "" {
		return &ExposeOptions{Protocol: "http"}, nil
	}
	switch opts.Protocol {
	case "http", "tcp":
		return &ExposeOptions{Protocol: opts.Protocol}, nil
	}
	return nil, invalidf("unknown Expose protocol %s (want http or tcp)", shortQuote(opts.Protocol))
}

// notSupported is a refused ability; it matches ErrNotSupported.
type notSupported string

func (e notSupported) Error() string        { return string(e) }
func (e notSupported) Is(target error) bool { return target == ErrNotSupported }

func errNotSupported(msg string) error { return notSupported(msg) }
