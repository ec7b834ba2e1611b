package sshbox

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
)

// control is one long-lived session running controlScript, which sends
// signals to process groups on request. Starting a session costs the remote
// user's login shell start-up each time (a heavy ~/.bashrc takes seconds);
// signals, timeouts and cancellation must not wait for that. (SSH's own
// "signal" request would do, but OpenSSH refuses it for root logins.)
type control struct {
	p *Provider

	mu      sync.Mutex // one request at a time; guards the fields below
	sess    *ssh.Session
	release func()
	in      io.WriteCloser
	out     *bufio.Reader
}

// controlScript answers each line "SIGNAL PGID" with "ok" or "err".
const controlScript = `
echo ready
while read -r sig pg; do
	if kill -s "$sig" -- "-$pg" 2>/dev/null; then echo ok; else echo err; fi
done
`

// start opens the session if there is none; c.mu is held.
func (c *control) start(ctx context.Context) error {
	if c.sess != nil {
		return nil
	}
	sess, release, err := c.p.session(ctx)
	if err != nil {
		return err
	}
	in, err1 := sess.StdinPipe()
	out, err2 := sess.StdoutPipe()
	if err := errors.Join(err1, err2); err != nil {
		sess.Close()
		release()
		return err
	}
	if err := sess.Start(shellCommand(controlScript)); err != nil {
		sess.Close()
		release()
		return err
	}
	r := bufio.NewReader(out)
	ready := make(chan error, 1)
	go func() {
		l, err := r.ReadString('\n')
		if err == nil && l != "ready\n" {
			err = fmt.Errorf("the control shell said %q", l)
		}
		ready <- err
	}()
	select {
	case err = <-ready:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		sess.Close()
		release()
		return err
	}
	c.sess, c.release, c.in, c.out = sess, release, in, r
	return nil
}

// stop closes the session; c.mu is held.
func (c *control) stop() {
	if c.sess != nil {
		c.sess.Close()
		c.release()
		c.sess = nil
	}
}

// prepare starts the session ahead of need.
func (c *control) prepare(ctx context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.start(ctx)
}

// signal sends sig ("TERM") to process group pgid. It reports
// errNoProcess when no process of the group is left.
func (c *control) signal(ctx context.Context, sig string, pgid int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for attempt := 0; ; attempt++ {
		if err := c.start(ctx); err != nil {
			return err
		}
		answer := make(chan string, 1)
		go func() {
			if _, err := fmt.Fprintf(c.in, "%s %d\n", sig, pgid); err != nil {
				answer <- ""
				return
			}
			l, _ := c.out.ReadString('\n')
			answer <- strings.TrimSpace(l)
		}()
		var a string
		select {
		case a = <-answer:
		case <-ctx.Done():
			c.stop() // the answer would come out of turn
			<-answer
			return ctx.Err()
		}
		switch a {
		case "ok":
			return nil
		case "err":
			return errNoProcess
		}
		// The session died: start another once.
		c.stop()
		if attempt > 0 {
			return errors.New("the control shell on the remote host ended")
		}
	}
}

var errNoProcess = errors.New("no such process group")
