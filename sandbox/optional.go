package sandbox

import (
	"context"
	"net"
	"time"
)

// Pauser is an optional interface that may be implemented by a Sandbox. If a
// Sandbox does not implement it, [Pause] and [Resume] return ErrNotSupported.
type Pauser interface {
	// Pause freezes every process of the sandbox, keeping its memory and files.
	Pause(ctx context.Context) error
	// Resume continues a paused sandbox.
	Resume(ctx context.Context) error
}

// Snapshotter is an optional interface that may be implemented by a Sandbox. If
// a Sandbox does not implement it, [Snapshot] returns ErrNotSupported.
type Snapshotter interface {
	// Snapshot saves the sandbox's filesystem and returns an identifier for
	// Spec.Snapshot.
	Snapshot(ctx context.Context) (string, error)
}

// NetworkUpdater is an optional interface that may be implemented by a Sandbox.
// If a Sandbox does not implement it, [UpdateNetwork] returns ErrNotSupported.
type NetworkUpdater interface {
	// UpdateNetwork replaces the sandbox's egress policy while it runs.
	UpdateNetwork(ctx context.Context, policy *NetworkPolicy) error
}

// TimeoutExtender is an optional interface that may be implemented by a
// Sandbox. If a Sandbox does not implement it, [ExtendTimeout] returns
// ErrNotSupported.
type TimeoutExtender interface {
	// ExtendTimeout moves the sandbox's expiry d later.
	ExtendTimeout(ctx context.Context, d time.Duration) error
}

// Dialer is an optional interface that may be implemented by a Sandbox. If a
// Sandbox does not implement it, [Dial] returns ErrNotSupported.
type Dialer interface {
	// DialContext connects to a TCP port served inside the sandbox.
	DialContext(ctx context.Context, port int) (net.Conn, error)
}

// Resizer is an optional interface that may be implemented by a Process started
// with Cmd.TTY. If a Process does not implement it, [Resize] returns
// ErrNotSupported.
type Resizer interface {
	// Resize changes the terminal's size.
	Resize(ctx context.Context, rows, cols int) error
}

// Pause freezes sb if it implements [Pauser].
func Pause(ctx context.Context, sb Sandbox) error {
	p, ok := sb.(Pauser)
	if !ok {
		return notSupported(sb, "pause")
	}
	return p.Pause(ctx)
}

// Resume continues sb if it implements [Pauser].
func Resume(ctx context.Context, sb Sandbox) error {
	p, ok := sb.(Pauser)
	if !ok {
		return notSupported(sb, "resume")
	}
	return p.Resume(ctx)
}

// Snapshot saves sb's filesystem if it implements [Snapshotter].
func Snapshot(ctx context.Context, sb Sandbox) (string, error) {
	s, ok := sb.(Snapshotter)
	if !ok {
		return "", notSupported(sb, "snapshot")
	}
	return s.Snapshot(ctx)
}

// UpdateNetwork replaces sb's egress policy if it implements [NetworkUpdater].
func UpdateNetwork(ctx context.Context, sb Sandbox, policy *NetworkPolicy) error {
	u, ok := sb.(NetworkUpdater)
	if !ok {
		return notSupported(sb, "update network")
	}
	return u.UpdateNetwork(ctx, policy)
}

// ExtendTimeout moves sb's expiry if it implements [TimeoutExtender].
func ExtendTimeout(ctx context.Context, sb Sandbox, d time.Duration) error {
	e, ok := sb.(TimeoutExtender)
	if !ok {
		return notSupported(sb, "extend timeout")
	}
	return e.ExtendTimeout(ctx, d)
}

// Dial connects to port inside sb if it implements [Dialer].
func Dial(ctx context.Context, sb Sandbox, port int) (net.Conn, error) {
	d, ok := sb.(Dialer)
	if !ok {
		return nil, notSupported(sb, "dial")
	}
	return d.DialContext(ctx, port)
}

// Resize changes the terminal size of p if it implements [Resizer].
func Resize(ctx context.Context, p Process, rows, cols int) error {
	r, ok := p.(Resizer)
	if !ok {
		return &Error{Provider: "sandbox", Op: "resize", Kind: ErrNotSupported}
	}
	return r.Resize(ctx, rows, cols)
}

func notSupported(sb Sandbox, op string) error {
	return &Error{Provider: "sandbox", Sandbox: sb.ID(), Op: op, Kind: ErrNotSupported}
}
