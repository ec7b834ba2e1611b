package local

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"sync"
)

// The agent protocol: the host and the PID-1 agent inside a sandbox talk over
// a Unix socket. A connection carries one request, or, after an exec without
// stdin or a terminal, the next one too. Every message is a frame: one
// type byte, a 4-byte big-endian length, and the payload.
//
// A connection starts with a frameRequest carrying a JSON agentRequest. For
// "exec", the agent answers frameStarted (the pid, or 0 when the program
// could not be started; with WantID, "pid id", where the id names this
// command alone among the sandbox's, as its pid does not once its process
// is reaped), then streams frameStdout and frameStderr, and ends with
// frameExit (a JSON exitReport); the host may send frameStdin and
// frameStdinEOF meanwhile. For "dial", the agent answers frameStarted and
// the connection becomes a raw byte stream to the port. "signal" and
// "resize" act on a running exec, named by its id (or, from a host that
// sent no WantID, by its pid), and are answered with frameStarted or
// frameError.
const (
	frameRequest  = 'R'
	frameStdin    = 'I'
	frameStdinEOF = 'E'
	frameStarted  = 'P'
	frameStdout   = 'o'
	frameStderr   = 'e'
	frameExit     = 'X'
	frameError    = 'N'
)

// maxFrame bounds a data frame's payload (output, input); larger writes
// are split. maxRequest bounds a JSON frame, which is never split: a
// command's argv and environment can be as large as the kernel's ARG_MAX.
const (
	maxFrame   = 1 << 16
	maxRequest = 8 << 20
)

type agentRequest struct {
	Op        string   `json:"op"`
	Args      []string `json:"args,omitempty"`
	Dir       string   `json:"dir,omitempty"`
	Env       []string `json:"env,omitempty"`
	Stdin     bool     `json:"stdin,omitempty"`
	TTY       *ttySize `json:"tty,omitempty"`
	TimeoutMS int64    `json:"timeout_ms,omitempty"`
	Pid       int      `json:"pid,omitempty"`
	ID        uint64   `json:"id,omitempty"`      // signal, resize: the command's id
	WantID    bool     `json:"want_id,omitempty"` // exec: report the command's id
	Signal    int      `json:"signal,omitempty"`
	Port      int      `json:"port,omitempty"`
}

type ttySize struct {
	Rows int    `json:"rows"`
	Cols int    `json:"cols"`
	Term string `json:"term,omitempty"`
}

type exitReport struct {
	Code     int    `json:"code"`
	Signal   string `json:"signal,omitempty"`
	TimedOut bool   `json:"timed_out,omitempty"`
}

// frameWriter writes frames to w; it is safe for concurrent use.
type frameWriter struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

func (fw *frameWriter) write(typ byte, p []byte) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	for {
		// One write per frame: header and payload together.
		n := min(len(p), maxFrame)
		fw.buf = append(fw.buf[:0], typ, 0, 0, 0, 0)
		binary.BigEndian.PutUint32(fw.buf[1:], uint32(n))
		fw.buf = append(fw.buf, p[:n]...)
		if _, err := fw.w.Write(fw.buf); err != nil {
			return err
		}
		p = p[n:]
		if len(p) == 0 {
			return nil
		}
	}
}

func (fw *frameWriter) writeJSON(typ byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(b) > maxRequest {
		return fmt.Errorf("agent protocol: request of %d bytes exceeds %d", len(b), maxRequest)
	}
	fw.mu.Lock()
	defer fw.mu.Unlock()
	fw.buf = append(fw.buf[:0], typ, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(fw.buf[1:], uint32(len(b)))
	fw.buf = append(fw.buf, b...)
	_, err = fw.w.Write(fw.buf)
	if cap(fw.buf) > 2*maxFrame+5 {
		fw.buf = nil // do not keep a large request's buffer
	}
	return err
}

// readFrame reads one frame into buf (grown as needed) and returns its type
// and payload, which is valid until the next call.
func readFrame(r io.Reader, buf *[]byte) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxRequest {
		return 0, nil, fmt.Errorf("agent protocol: frame of %d bytes exceeds %d", n, maxRequest)
	}
	if cap(*buf) < int(n) {
		*buf = make([]byte, n)
	}
	p := (*buf)[:n]
	if _, err := io.ReadFull(r, p); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return hdr[0], p, nil
}
