package sandbox

import (
	"context"
	"fmt"
	"sync"
)

// DefaultOutputLimit is the number of bytes [Run] keeps of each stream when
// RunOptions.OutputLimit is zero.
const DefaultOutputLimit = 1 << 20

// RunOptions configures [Run]. Nil means defaults.
type RunOptions struct {
	// OutputLimit is how many bytes of each of stdout and stderr to keep;
	// zero means DefaultOutputLimit and a negative value means no limit.
	OutputLimit int
	// KeepTail keeps the last OutputLimit bytes instead of the first.
	KeepTail bool
}

// Result is what [Run] captured.
type Result struct {
	Status ExitStatus
	// Stdout and Stderr are the kept output. When output was dropped, they
	// end (or, with KeepTail, begin) with a marker line such as
	// "[perimeter: 1234 bytes of stdout omitted]".
	Stdout, Stderr []byte
	// StdoutOmitted and StderrOmitted count the bytes dropped.
	StdoutOmitted, StderrOmitted int64
}

// Run starts cmd on sb, waits for it, and returns its status and captured
// output. cmd.Stdout and cmd.Stderr, if set, still receive the whole output.
// A non-zero exit is a result, not an error.
func Run(ctx context.Context, sb *Sandbox, cmd *Cmd, opts *RunOptions) (*Result, error) {
	if opts == nil {
		opts = &RunOptions{}
	}
	limit := opts.OutputLimit
	if limit == 0 {
		limit = DefaultOutputLimit
	}
	if cmd == nil {
		return nil, sb.fail("exec", invalid("nil Cmd"))
	}
	stdout := NewCappedBuffer(limit, opts.KeepTail)
	stderr := NewCappedBuffer(limit, opts.KeepTail)
	c := *cmd
	c.Stdout = tee(stdout, cmd.Stdout)
	c.Stderr = tee(stderr, cmd.Stderr)
	p, err := sb.Start(ctx, &c)
	if err != nil {
		return nil, err
	}
	st, err := p.Wait(ctx)
	res := &Result{
		Status:        st,
		Stdout:        stdout.BytesWithMarker("stdout"),
		Stderr:        stderr.BytesWithMarker("stderr"),
		StdoutOmitted: stdout.Omitted(),
		StderrOmitted: stderr.Omitted(),
	}
	return res, err
}

func tee(a *CappedBuffer, b interface{ Write([]byte) (int, error) }) interface{ Write([]byte) (int, error) } {
	if b == nil {
		return a
	}
	return &teeWriter{a, b}
}

type teeWriter struct {
	a *CappedBuffer
	b interface{ Write([]byte) (int, error) }
}

func (t *teeWriter) Write(p []byte) (int, error) {
	t.a.Write(p)
	return t.b.Write(p)
}

// CappedBuffer is an io.Writer that keeps at most a fixed number of bytes
// (the first or the last) and counts the rest. It never fails a write, so a
// process producing endless output is never blocked by it. Each Write costs
// time linear in its length, whichever bytes are kept. It is safe for
// concurrent use.
type CappedBuffer struct {
	mu      sync.Mutex
	limit   int
	tail    bool
	buf     []byte // head mode and no limit: the kept bytes; tail mode: a ring
	start   int    // tail mode: index in buf of the oldest kept byte
	omitted int64
}

// NewCappedBuffer returns a buffer keeping limit bytes (negative: no limit),
// the last ones if tail is set.
func NewCappedBuffer(limit int, tail bool) *CappedBuffer {
	return &CappedBuffer{limit: limit, tail: tail && limit >= 0}
}

// Write keeps what fits and counts the rest. It always returns len(p), nil.
func (b *CappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(p)
	switch {
	case b.limit < 0:
		b.buf = append(b.buf, p...)
	case !b.tail:
		room := min(b.limit-len(b.buf), len(p))
		b.buf = append(b.buf, p[:room]...)
		b.omitted += int64(len(p) - room)
	default:
		b.writeTail(p)
	}
	return n, nil
}

// writeTail keeps the last b.limit bytes in a ring: b.buf grows to b.limit,
// then new bytes overwrite the oldest, at b.start.
func (b *CappedBuffer) writeTail(p []byte) {
	if b.limit == 0 {
		b.omitted += int64(len(p))
		return
	}
	if len(p) >= b.limit {
		b.omitted += int64(len(b.buf) + len(p) - b.limit)
		if cap(b.buf) < b.limit {
			b.buf = make([]byte, b.limit)
		}
		b.buf = b.buf[:b.limit]
		copy(b.buf, p[len(p)-b.limit:])
		b.start = 0
		return
	}
	if room := b.limit - len(b.buf); room > 0 { // still filling
		k := min(room, len(p))
		b.buf = append(b.buf, p[:k]...)
		p = p[k:]
	}
	for len(p) > 0 { // full: overwrite the oldest bytes
		k := copy(b.buf[b.start:], p)
		b.omitted += int64(k)
		p = p[k:]
		b.start = (b.start + k) % b.limit
	}
}

// kept returns the kept bytes in order, as a new slice; b.mu is held.
func (b *CappedBuffer) kept() []byte {
	out := make([]byte, 0, len(b.buf))
	out = append(out, b.buf[b.start:]...)
	return append(out, b.buf[:b.start]...)
}

// Bytes returns a copy of the kept bytes.
func (b *CappedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.kept()
}

// Omitted returns the number of bytes dropped.
func (b *CappedBuffer) Omitted() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.omitted
}

// BytesWithMarker returns the kept bytes with, if anything was dropped, a
// marker line naming the stream and the count: appended after the kept head,
// or put before the kept tail.
func (b *CappedBuffer) BytesWithMarker(stream string) []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.kept()
	if b.omitted == 0 {
		return out
	}
	marker := fmt.Sprintf("[perimeter: %d bytes of %s omitted]\n", b.omitted, stream)
	if b.tail {
		return append([]byte(marker), out...)
	}
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	return append(out, marker...)
}
