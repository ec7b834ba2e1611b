// Package sshbox is a Perimeter provider whose sandboxes are directories on a
// remote host reached over SSH. It is an example of a third-party provider:
// it lives outside Perimeter's own module, implements the interfaces of
// package sandbox/driver, and registers its own URL scheme:
//
//	import _ "github.com/perimeter-sdk/perimeter/examples/byo-ssh/sshbox"
//
//	p, err := sandbox.Open(ctx, "ssh://deploy@build-1.internal:22/srv/sandboxes")
//
// # What a sandbox is
//
// A sandbox is the directory BASE/ID on the remote host: BASE/ID/root is its
// working directory and the root of its files, BASE/ID/meta.json holds its
// labels, environment and expiry, so List and Get work from any client.
// Commands run as the SSH user with that user's view of the host: a directory
// sandbox isolates nothing (Info.Isolation says so). It is the right shape for
// a trusted build host or a per-tenant VM that already is the boundary.
//
// # Network
//
// Commands share the remote host's network, so the only egress policy this
// provider can honour is sandbox.NetworkOpen. The contract's default (a nil
// Spec.Network) is NetworkNone, which it cannot enforce: Create refuses it,
// and NetworkAllowlist, with sandbox.ErrNotSupported. Ask for NetworkOpen.
// Dial and Expose use SSH port forwarding to 127.0.0.1 on the remote host
// (the server must allow local TCP forwarding); Expose listens on the
// client's 127.0.0.1.
//
// # Processes
//
// Each command is one SSH session running a small POSIX sh wrapper: it
// changes to the command's directory, reports its process ID, and execs the
// argv (through env for the environment), so the session's process is the
// command itself and exit codes and signals arrive through SSH's exit-status
// and exit-signal. OpenSSH starts every session's command in a new session
// (setsid), so that process ID is also the process group of the whole tree;
// the wrapper checks this and refuses to run otherwise. Signals, Cmd.Timeout
// and cancelling Start's context send "kill -s SIG -- -PGID" to a
// long-lived control shell (one more session, started with the first
// command, so that a signal does not wait for a login shell to start), which
// reaches every process of the tree that has not moved to a process group
// of its own. Every command also carries
// PERIMETER_SANDBOX=ID in its environment; Terminate kills every process of
// the SSH user that carries it, then removes the directory. A process that
// clears its environment and leaves its process group escapes both: this is
// not a containment boundary.
//
// Spec.Timeout starts a detached reaper process on the remote host that
// terminates the sandbox at Info.Expires by the remote host's clock (the
// client's and the host's clocks are assumed to agree); Terminate kills it.
// PTYs are SSH pseudo-terminals (Resize is SSH's window-change).
//
// # Files
//
// Files move over SFTP. Names resolve inside BASE/ID/root: absolute names
// must lie inside it, and symbolic links are resolved one component at a time
// on the client and followed only while they stay inside it; a name that
// leads outside is sandbox.ErrPermissionDenied. This keeps the file API from
// being led out of the sandbox by a link a command planted. It does not stop
// a command racing the resolution by swapping a directory for a link, which
// grants nothing a command cannot already do itself, as the same user. Writes
// go to a temporary file in the same directory and are renamed into place
// (posix-rename@openssh.com), so a failed write leaves the old content.
//
// # Native types
//
// Provider.As sets *ssh.Client and *sftp.Client targets; a Sandbox's As sets
// **Sandbox. File errors wrap *fs.PathError with the remote path.
package sshbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

// Name is the provider's name and URL scheme.
const Name = "ssh"

func init() {
	sandbox.Register(Name, func(ctx context.Context, u *url.URL) (driver.Provider, error) {
		opts, err := OptionsFromURL(u)
		if err != nil {
			return nil, err
		}
		d, err := NewDriver(ctx, opts)
		if err != nil {
			return nil, err
		}
		return d, nil
	})
}

// Options configures a Provider.
type Options struct {
	// Addr is the SSH server's host:port.
	Addr string
	// Config authenticates the client and verifies the server's host key.
	Config *ssh.ClientConfig
	// Base is the absolute directory on the remote host that holds the
	// sandboxes; it is created if missing.
	Base string
	// Closer, if set, is closed with the Provider (OptionsFromURL sets it to
	// its connection to the SSH agent).
	Closer io.Closer
	// SessionsPerConn bounds the SSH sessions opened on one connection
	// (OpenSSH's MaxSessions defaults to 10); more concurrent commands open
	// more connections. Zero means 8.
	SessionsPerConn int
}

// OptionsFromURL reads ssh://USER@HOST[:PORT]/BASE. The query may name
// identity=FILE (a private key without passphrase) and known_hosts=FILE;
// without identity the SSH agent at SSH_AUTH_SOCK is used, else
// ~/.ssh/id_ed25519, id_ecdsa or id_rsa; without known_hosts,
// ~/.ssh/known_hosts. The host key is always verified. Passwords in the
// URL are refused.
func OptionsFromURL(u *url.URL) (*Options, error) {
	bad := func(format string, args ...any) error {
		return sandbox.Errorf(Name, "", "open", sandbox.ErrInvalidArgument, "URL %s: "+format, append([]any{u.Redacted()}, args...)...)
	}
	if u.User == nil || u.User.Username() == "" {
		return nil, bad("no user (want ssh://USER@HOST:PORT/BASE)")
	}
	if _, ok := u.User.Password(); ok {
		return nil, bad("passwords in URLs are not accepted; use a key")
	}
	if u.Hostname() == "" {
		return nil, bad("no host")
	}
	if u.Path == "" || u.Path == "/" || !path.IsAbs(u.Path) {
		return nil, bad("no base directory (want an absolute path such as /srv/sandboxes)")
	}
	port := u.Port()
	if port == "" {
		port = "22"
	}
	q := u.Query()
	for k := range q {
		if k != "identity" && k != "known_hosts" {
			return nil, bad("unknown parameter %q (want identity or known_hosts)", k)
		}
	}
	home, _ := os.UserHomeDir()
	khFile := q.Get("known_hosts")
	if khFile == "" {
		khFile = filepath.Join(home, ".ssh", "known_hosts")
	}
	hostKeys, err := knownhosts.New(khFile)
	if err != nil {
		return nil, bad("known_hosts: %v", err)
	}
	auth, closer, err := authMethod(q.Get("identity"), home)
	if err != nil {
		return nil, bad("%v", err)
	}
	return &Options{
		Closer: closer,
		Addr:   net.JoinHostPort(u.Hostname(), port),
		Base:   path.Clean(u.Path),
		Config: &ssh.ClientConfig{
			User:            u.User.Username(),
			Auth:            []ssh.AuthMethod{auth},
			HostKeyCallback: hostKeys,
			Timeout:         30 * time.Second,
		},
	}, nil
}

func authMethod(identity, home string) (ssh.AuthMethod, io.Closer, error) {
	if identity == "" {
		if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
			conn, err := net.Dial("unix", sock)
			if err != nil {
				return nil, nil, fmt.Errorf("SSH agent at SSH_AUTH_SOCK: %w", err)
			}
			return ssh.PublicKeysCallback(agent.NewClient(conn).Signers), conn, nil
		}
		for _, f := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
			p := filepath.Join(home, ".ssh", f)
			if _, err := os.Stat(p); err == nil {
				identity = p
				break
			}
		}
		if identity == "" {
			return nil, nil, errors.New("no identity: set identity=FILE, SSH_AUTH_SOCK, or create ~/.ssh/id_ed25519")
		}
	}
	key, err := os.ReadFile(identity)
	if err != nil {
		return nil, nil, fmt.Errorf("identity: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("identity %s: %w", identity, err)
	}
	return ssh.PublicKeys(signer), nil, nil
}

// New returns a provider for host code.
func New(ctx context.Context, opts *Options) (*sandbox.Provider, error) {
	d, err := NewDriver(ctx, opts)
	if err != nil {
		return nil, err
	}
	return sandbox.NewProvider(d, nil), nil
}

// Provider is the driver: a pool of SSH connections to one host and an SFTP
// client on the first of them.
type Provider struct {
	opts  Options
	sftp  *sftp.Client
	first *conn

	ctl     control
	ctlOnce sync.Once

	dialMu sync.Mutex // one dial at a time
	mu     sync.Mutex
	conns  []*conn // kept open until Close; as many as the peak needs
	closed bool
}

type conn struct {
	client *ssh.Client
	n      int // open sessions
	dead   bool
}

// NewDriver connects to the server, starts SFTP and makes sure the base
// directory exists.
func NewDriver(ctx context.Context, opts *Options) (_ *Provider, err error) {
	if opts != nil && opts.Closer != nil {
		defer func() {
			if err != nil {
				opts.Closer.Close()
			}
		}()
	}
	if opts == nil || opts.Addr == "" || opts.Config == nil || opts.Base == "" {
		return nil, sandbox.Errorf(Name, "", "open", sandbox.ErrInvalidArgument, "Options need Addr, Config and Base")
	}
	if !path.IsAbs(opts.Base) || path.Clean(opts.Base) == "/" {
		return nil, sandbox.Errorf(Name, "", "open", sandbox.ErrInvalidArgument, "Options.Base %q: want an absolute directory other than /", opts.Base)
	}
	p := &Provider{opts: *opts}
	p.ctl.p = p
	p.opts.Base = path.Clean(opts.Base)
	if p.opts.SessionsPerConn <= 0 {
		p.opts.SessionsPerConn = 8
	}
	c, err := p.dial(ctx)
	if err != nil {
		return nil, err
	}
	p.first = c
	c.n = 1 // the SFTP session
	p.conns = []*conn{c}
	p.sftp, err = sftp.NewClient(c.client, sftp.UseConcurrentWrites(true))
	if err != nil {
		c.client.Close()
		return nil, sandbox.NewError(Name, "", "open", sandbox.ErrUnavailable, fmt.Errorf("starting SFTP: %w", err))
	}
	if err := p.sftp.MkdirAll(p.opts.Base); err != nil {
		p.Close()
		return nil, sandbox.NewError(Name, "", "open", kindOf(err), pathErr("mkdir", p.opts.Base, err))
	}
	return p, nil
}

func (p *Provider) dial(ctx context.Context) (*conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", p.opts.Addr)
	if err != nil {
		return nil, sandbox.NewError(Name, "", "connect", sandbox.ErrUnavailable, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	cc, chans, reqs, err := ssh.NewClientConn(nc, p.opts.Addr, p.opts.Config)
	if err != nil {
		nc.Close()
		return nil, sandbox.NewError(Name, "", "connect", sandbox.ErrUnavailable, err)
	}
	nc.SetDeadline(time.Time{})
	c := &conn{client: ssh.NewClient(cc, chans, reqs)}
	go func() {
		c.client.Wait()
		p.mu.Lock()
		c.dead = true
		p.mu.Unlock()
	}()
	return c, nil
}

// session opens an SSH session on a connection with room for it, dialling a
// new connection when every one is full. release must be called when the
// session is closed.
func (p *Provider) session(ctx context.Context) (_ *ssh.Session, release func(), err error) {
	for attempt := 0; ; attempt++ {
		c, err := p.reserve(ctx)
		if err != nil {
			return nil, nil, err
		}
		s, err := c.client.NewSession()
		if err == nil {
			var once sync.Once
			return s, func() { once.Do(func() { p.unreserve(c) }) }, nil
		}
		p.unreserve(c)
		var open *ssh.OpenChannelError
		if attempt < 2 && (errors.As(err, &open) || errors.Is(err, io.EOF)) {
			// The server refused a session here (MaxSessions lower than
			// ours) or the connection died: use another.
			p.mu.Lock()
			c.dead = true
			p.mu.Unlock()
			continue
		}
		return nil, nil, sandbox.NewError(Name, "", "session", sandbox.ErrUnavailable, err)
	}
}

func (p *Provider) reserve(ctx context.Context) (*conn, error) {
	if c, err := p.room(); c != nil || err != nil {
		return c, err
	}
	// One dial at a time: a burst of commands must not become a burst of
	// unauthenticated connections, which sshd's MaxStartups drops.
	p.dialMu.Lock()
	defer p.dialMu.Unlock()
	if c, err := p.room(); c != nil || err != nil {
		return c, err
	}
	var c *conn
	var err error
	for attempt, wait := 0, 50*time.Millisecond; ; attempt, wait = attempt+1, 2*wait {
		c, err = p.dial(ctx)
		if err == nil || attempt == 5 || !transient(err) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.client.Close()
		return nil, sandbox.NewError(Name, "", "session", sandbox.ErrClosed, errors.New("provider closed"))
	}
	c.n = 1
	p.conns = append(p.conns, c)
	return c, nil
}

// room reserves a session on an open connection with room for one.
func (p *Provider) room() (*conn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, sandbox.NewError(Name, "", "session", sandbox.ErrClosed, errors.New("provider closed"))
	}
	for _, c := range p.conns {
		if !c.dead && c.n < p.opts.SessionsPerConn {
			c.n++
			return c, nil
		}
	}
	return nil, nil
}

// transient reports a connection the server dropped before authentication
// (sshd's MaxStartups under a burst, or a restart).
func transient(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNREFUSED)
}

func (p *Provider) unreserve(c *conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c.n--
	if c.dead && c.n == 0 {
		for i, x := range p.conns {
			if x == c {
				p.conns = append(p.conns[:i], p.conns[i+1:]...)
				break
			}
		}
		c.client.Close()
	}
}

// Name returns "ssh".
func (p *Provider) Name() string { return Name }

// Close closes the SFTP client and every SSH connection. Sandboxes and their
// processes keep running on the remote host.
func (p *Provider) Close() error {
	p.ctl.mu.Lock()
	p.ctl.stop()
	p.ctl.mu.Unlock()
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	var err error
	if p.sftp != nil {
		err = p.sftp.Close()
	}
	for _, c := range conns {
		if e := c.client.Close(); e != nil && !errors.Is(e, net.ErrClosed) && err == nil {
			err = e
		}
	}
	if p.opts.Closer != nil {
		p.opts.Closer.Close()
	}
	if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
		return sandbox.NewError(Name, "", "close", sandbox.ErrUnavailable, err)
	}
	return nil
}

// As sets *ssh.Client (the first connection) and *sftp.Client targets.
func (p *Provider) As(target any) bool {
	switch t := target.(type) {
	case **ssh.Client:
		*t = p.first.client
		return true
	case **sftp.Client:
		*t = p.sftp
		return true
	}
	return false
}

// runScript runs a POSIX sh script on the remote host with args as $1...
// and returns its stdout; a non-zero exit is an error carrying its stderr.
func (p *Provider) runScript(ctx context.Context, script string, args ...string) (string, error) {
	s, release, err := p.session(ctx)
	if err != nil {
		return "", err
	}
	defer release()
	defer s.Close()
	var stdout, stderr limitedBuffer
	s.Stdout, s.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	go func() { done <- s.Run(shellCommand(script, args...)) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		s.Close()
		<-done
		return "", ctx.Err()
	}
	if err != nil {
		return stdout.String(), fmt.Errorf("%w: %s", err, stderr.String())
	}
	return stdout.String(), nil
}

// limitedBuffer keeps the first 64 KiB written to it.
type limitedBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := 64<<10 - len(b.buf); room > 0 {
		b.buf = append(b.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (b *limitedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// shellCommand returns the command line for an SSH exec request that runs
// script with /bin/sh and args as its positional parameters, whatever the
// user's login shell (as long as it parses POSIX single quotes).
func shellCommand(script string, args ...string) string {
	b := []byte("exec /bin/sh -c ")
	b = append(b, quote(script)...)
	b = append(b, " perimeter-ssh"...)
	for _, a := range args {
		b = append(b, ' ')
		b = append(b, quote(a)...)
	}
	return string(b)
}

// quote quotes s for a POSIX shell: inside single quotes every byte is
// literal, and a single quote is written as '\”.
func quote(s string) string {
	b := make([]byte, 0, len(s)+2)
	b = append(b, '\'')
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			b = append(b, `'\''`...)
		} else {
			b = append(b, s[i])
		}
	}
	return string(append(b, '\''))
}

var _ driver.Provider = (*Provider)(nil)
