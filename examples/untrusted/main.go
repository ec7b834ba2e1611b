// Command untrusted runs an untrusted shell script in an isolated local
// sandbox, with no network, a memory limit and a workspace, and prints what
// the sandbox blocked.
//
//	go run ./examples/untrusted            # the built-in script
//	go run ./examples/untrusted script.sh  # your own
//
// It needs Linux with user namespaces (root or not); it fails with the name
// of the missing layer elsewhere.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/perimeter-sdk/perimeter/providers/local"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// script tries, one line each, things an untrusted script should not be
// able to do, and reports each as BLOCKED or ALLOWED.
const script = `
try() { if sh -c "$2" >/dev/null 2>&1; then echo "ALLOWED  $1"; else echo "BLOCKED  $1"; fi; }
echo "writing to the workspace" > /workspace/notes.txt && echo "ALLOWED  write to /workspace"
try "read /etc/shadow"            'test -s /etc/shadow && cat /etc/shadow'
try "write to /usr"               'touch /usr/evil'
try "see host processes"          'test $(ls /proc | grep -c "^[0-9]") -gt 10'
try "connect to 192.0.2.1:443"    'exec 3<>/dev/tcp/192.0.2.1/443'
try "resolve a domain"            'getent hosts example.com'
try "mount a filesystem"          'mount -t tmpfs x /tmp'
try "trace a process"             'strace -o /dev/null true'
try "allocate 512 MiB"            'head -c 536870912 /dev/zero | tail'
try "open /proc/1/root"           'ls /proc/1/root/'
`

func main() {
	local.Init() // a sandbox's init is this binary: let it take over first

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	body := script
	if len(os.Args) > 1 {
		b, err := os.ReadFile(os.Args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		body = string(b)
	}
	if err := run(ctx, body, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "untrusted:", err)
		os.Exit(1)
	}
}

// run runs body in a fresh sandbox, writing what it printed to stdout and
// stderr.
func run(ctx context.Context, body string, stdout, stderr io.Writer) error {
	p, err := local.New(&local.Options{RequireLevel: local.LevelNamespaces})
	if err != nil {
		return err
	}
	defer p.Close()
	sb, err := p.Create(ctx, &sandbox.Spec{
		Network:   &sandbox.NetworkPolicy{Mode: sandbox.NetworkNone},
		Resources: sandbox.Resources{Memory: 256 << 20, PIDs: 128},
	})
	if err != nil {
		return err
	}
	defer sb.Terminate(context.Background())
	if err := sb.WriteFile(ctx, "script.sh", strings.NewReader(body), 0o755); err != nil {
		return err
	}
	var ls *local.Sandbox // As reaches the local provider's own report
	if sb.As(&ls) {
		fmt.Fprintln(stdout, "isolation:", ls.Isolation())
	}
	res, err := sandbox.Run(ctx, sb, &sandbox.Cmd{Args: []string{"sh", "script.sh"}, Stdout: stdout, Stderr: stderr, Timeout: time.Minute}, nil)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "script:", res.Status)
	rc, err := sb.ReadFile(ctx, "notes.txt")
	if err == nil {
		defer rc.Close()
		b, _ := io.ReadAll(io.LimitReader(rc, 256))
		fmt.Fprintf(stdout, "workspace notes.txt: %s", b)
	}
	return nil
}
