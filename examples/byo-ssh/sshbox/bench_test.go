package sshbox_test

import (
	"context"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// BenchmarkExec runs `true` side by side: as a bare SSH session on one
// connection (the baseline), and through the provider (a session under the
// wrapper, stdout and stderr copied, the exit status mapped). The ratio of
// the two is the provider's own cost per command.
func BenchmarkExec(b *testing.B) {
	srv, base := benchServer(b)
	ctx := context.Background()
	client, err := ssh.Dial("tcp", srv.Addr, srv.ClientConfig())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { client.Close() })
	p, err := sandbox.Open(ctx, srv.URL(base))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	sb, err := p.Create(ctx, openSpec())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sb.Terminate(context.Background()) })

	b.Run("ssh-session", func(b *testing.B) {
		for b.Loop() {
			s, err := client.NewSession()
			if err != nil {
				b.Fatal(err)
			}
			if err := s.Run("true"); err != nil {
				b.Fatal(err)
			}
			s.Close()
		}
	})
	b.Run("sshbox", func(b *testing.B) {
		for b.Loop() {
			res, err := sandbox.Run(ctx, sb, &sandbox.Cmd{Args: []string{"true"}}, nil)
			if err != nil || !res.Status.Success() {
				b.Fatal(res.Status, err)
			}
		}
	})
}
