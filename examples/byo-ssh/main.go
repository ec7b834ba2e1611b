// Command byo-ssh runs Perimeter's conformance suite against the ssh://
// provider of package sshbox and prints the report, with the same flags,
// table, JSON and exit codes as `perimeter conformance` (conformance.Command).
//
//	go run .                                  # against a throwaway sshd on 127.0.0.1
//	go run . 'ssh://me@host:22/srv/sandboxes?identity=/home/me/.ssh/id_ed25519'
//	go run . --json --run 'exec/'             # flags as perimeter conformance
//
// With no URL it starts the system's sshd on an ephemeral loopback port with
// generated keys (see package sshdtest) and a temporary base directory, and
// removes both afterwards. It exits 1 when a MUST check fails.
package main

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"syscall"

	"github.com/perimeter-sdk/perimeter/conformance"
	"github.com/perimeter-sdk/perimeter/sandbox"

	_ "github.com/perimeter-sdk/perimeter/examples/byo-ssh/sshbox" // registers ssh://
	"github.com/perimeter-sdk/perimeter/examples/byo-ssh/sshdtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the command without the process around it: it returns the exit
// code after removing the throwaway server, if it started one.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cleanup []func()
	defer func() {
		for _, f := range cleanup {
			f()
		}
	}()
	return conformance.Command(ctx, args, stdout, stderr, &conformance.CommandOptions{
		Name:      "byo-ssh",
		ArgsUsage: "[ssh://USER@HOST:PORT/BASE?identity=FILE&known_hosts=FILE]",
		Open: func(ctx context.Context, args []string) (*conformance.Harness, error) {
			if len(args) > 1 {
				return nil, fmt.Errorf("%w: one URL at most, got %d arguments", conformance.ErrUsage, len(args))
			}
			url := ""
			if len(args) == 1 {
				url = args[0]
			} else {
				u, done, err := throwawayServer(ctx)
				if err != nil {
					return nil, err
				}
				cleanup = append(cleanup, done)
				url = u
			}
			open := func(ctx context.Context) (*sandbox.Provider, error) { return sandbox.Open(ctx, url) }
			p, err := open(ctx)
			if err != nil {
				return nil, err
			}
			return &conformance.Harness{
				Provider: p,
				Open:     open,
				// A directory sandbox shares the host's network: only NetworkOpen.
				Spec: func() *sandbox.Spec {
					return &sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}}
				},
				NativeError: func() any { return new(*fs.PathError) },
			}, nil
		},
	})
}

// throwawayServer starts sshd on a loopback port with a temporary base
// directory and returns the provider URL and what removes both.
func throwawayServer(ctx context.Context) (string, func(), error) {
	srv, err := sshdtest.Start(ctx)
	if err != nil {
		return "", nil, err
	}
	base, err := os.MkdirTemp("", "perimeter-byo-ssh-")
	if err != nil {
		srv.Stop()
		return "", nil, err
	}
	return srv.URL(base), func() { os.RemoveAll(base); srv.Stop() }, nil
}
