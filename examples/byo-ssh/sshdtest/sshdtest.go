// Package sshdtest starts a throwaway OpenSSH server for tests and demos: the
// system's sshd binary, run in the foreground (sshd -D -e) on an ephemeral
// port of 127.0.0.1 (sshd -D -E LOGFILE -f CONFIG), with a host key, a user key, an authorized_keys file and
// a known_hosts file generated in a temporary directory. Nothing of the
// system's own sshd configuration or keys is read or changed.
package sshdtest

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

// Server is a running sshd.
type Server struct {
	// Addr is the server's host:port on 127.0.0.1.
	Addr string
	// User is the account to log in as: the user running the server.
	User string
	// Dir is the temporary directory holding the server's files.
	Dir string
	// IdentityFile and KnownHostsFile are the client's private key and a
	// known_hosts file listing the server's host key, both in Dir.
	IdentityFile, KnownHostsFile string
	// Signer is the client's key, for an ssh.ClientConfig.
	Signer ssh.Signer
	// HostKey is the server's public host key.
	HostKey ssh.PublicKey

	cmd      *exec.Cmd
	done     chan struct{}
	waitErr  error
	logFile  string
	stopOnce sync.Once
}

// Binary returns the path of the sshd binary, looked up on PATH and in
// /usr/sbin, or an error saying how to install it.
func Binary() (string, error) {
	if p, err := exec.LookPath("sshd"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/sshd", "/usr/local/sbin/sshd"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("sshdtest: no sshd binary (Debian: apt-get install openssh-server)")
}

// Start starts sshd in a new temporary directory and returns once it accepts
// connections. The caller must call Stop, which also removes the directory.
func Start(ctx context.Context) (_ *Server, err error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	u, err := user.Current()
	if err != nil {
		return nil, fmt.Errorf("sshdtest: current user: %w", err)
	}
	dir, err := os.MkdirTemp("", "perimeter-sshd-")
	if err != nil {
		return nil, fmt.Errorf("sshdtest: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	s := &Server{User: u.Username, Dir: dir, done: make(chan struct{})}
	_, hostPub, err := writeKey(filepath.Join(dir, "host_ed25519_key"))
	if err != nil {
		return nil, err
	}
	s.HostKey = hostPub
	s.IdentityFile = filepath.Join(dir, "id_ed25519")
	userKey, userPub, err := writeKey(s.IdentityFile)
	if err != nil {
		return nil, err
	}
	s.Signer = userKey
	authKeys := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authKeys, ssh.MarshalAuthorizedKey(userPub), 0o600); err != nil {
		return nil, fmt.Errorf("sshdtest: %w", err)
	}

	// The port is chosen by the kernel and released just before sshd binds
	// it; a collision makes sshd exit, and Start tries another port.
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		s.KnownHostsFile = filepath.Join(dir, "known_hosts")
		line := fmt.Sprintf("[127.0.0.1]:%d %s", port, ssh.MarshalAuthorizedKey(hostPub))
		if err := os.WriteFile(s.KnownHostsFile, []byte(line), 0o600); err != nil {
			return nil, fmt.Errorf("sshdtest: %w", err)
		}
		conf := filepath.Join(dir, "sshd_config")
		if err := os.WriteFile(conf, []byte(config(dir, port, authKeys)), 0o600); err != nil {
			return nil, fmt.Errorf("sshdtest: %w", err)
		}
		if lastErr = s.start(ctx, bin, conf); lastErr == nil {
			return s, nil
		}
	}
	return nil, lastErr
}

// config is the server's configuration: key authentication against the
// generated authorized_keys only, no PAM, and the internal SFTP server.
func config(dir string, port int, authKeys string) string {
	return strings.Join([]string{
		"ListenAddress 127.0.0.1:" + strconv.Itoa(port),
		"HostKey " + filepath.Join(dir, "host_ed25519_key"),
		"PidFile none",
		"AuthorizedKeysFile " + authKeys,
		"PubkeyAuthentication yes",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"PermitRootLogin prohibit-password",
		"UsePAM no",
		// The temporary directory is not root-owned all the way up.
		"StrictModes no",
		"Subsystem sftp internal-sftp",
		// bash reads ~/.bashrc for SSH sessions started at shell level 1;
		// the level is raised so that a developer's heavy ~/.bashrc does
		// not cost every command seconds.
		"SetEnv SHLVL=1",
		"AllowTcpForwarding local",
		"X11Forwarding no",
		"PrintMotd no",
		"PrintLastLog no",
		"LogLevel ERROR",
		"",
	}, "\n")
}

func (s *Server) start(ctx context.Context, bin, conf string) error {
	// -E: sshd's log goes to a file; with -e, messages logged inside a
	// session would reach that session's stderr.
	s.logFile = filepath.Join(s.Dir, "sshd.log")
	cmd := exec.Command(bin, "-D", "-E", s.logFile, "-f", conf)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("sshdtest: starting %s: %w", bin, err)
	}
	s.cmd = cmd
	s.done = make(chan struct{})
	go func() {
		s.waitErr = cmd.Wait()
		close(s.done)
	}()
	// Ready when a TCP connection gets the SSH banner.
	for {
		if err := banner(ctx, s.Addr); err == nil {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("sshdtest: sshd exited: %v; its log: %s", s.waitErr, s.Log())
		case <-ctx.Done():
			s.Stop()
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func banner(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "SSH-2.0-") {
		return fmt.Errorf("not an SSH server: %q", line)
	}
	return nil
}

// ClientConfig returns a client configuration that logs in with the
// generated key and accepts only the server's host key.
func (s *Server) ClientConfig() *ssh.ClientConfig {
	return &ssh.ClientConfig{
		User:            s.User,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(s.Signer)},
		HostKeyCallback: ssh.FixedHostKey(s.HostKey),
		Timeout:         30 * time.Second,
	}
}

// URL returns the ssh:// URL of a sandbox base directory on this server,
// with the identity and known_hosts files as query parameters.
func (s *Server) URL(base string) string {
	return fmt.Sprintf("ssh://%s@%s%s?identity=%s&known_hosts=%s", s.User, s.Addr, base, s.IdentityFile, s.KnownHostsFile)
}

// Log returns what sshd has logged so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.logFile)
	return string(b)
}

// Stop stops sshd and removes the temporary directory. A connection still
// open keeps its own sshd process until its client closes it, so callers
// close their clients first.
func (s *Server) Stop() error {
	var err error
	s.stopOnce.Do(func() {
		if s.cmd != nil && s.cmd.Process != nil {
			s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.done:
			case <-time.After(10 * time.Second):
				s.cmd.Process.Kill()
				<-s.done
			}
		}
		err = os.RemoveAll(s.Dir)
	})
	return err
}

func writeKey(file string) (ssh.Signer, ssh.PublicKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("sshdtest: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return nil, nil, fmt.Errorf("sshdtest: %w", err)
	}
	if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, nil, fmt.Errorf("sshdtest: %w", err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, nil, fmt.Errorf("sshdtest: %w", err)
	}
	if err := os.WriteFile(file+".pub", ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o644); err != nil {
		return nil, nil, fmt.Errorf("sshdtest: %w", err)
	}
	return signer, signer.PublicKey(), nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("sshdtest: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
