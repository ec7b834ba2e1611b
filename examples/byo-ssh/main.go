// Command byo-ssh runs Perimeter's conformance suite against the ssh://
// provider of package sshbox and prints the report.
//
//	go run .                                  # against a throwaway sshd on 127.0.0.1
//	go run . 'ssh://me@host:22/srv/sandboxes?identity=/home/me/.ssh/id_ed25519'
//
// With no URL it starts the system's sshd on an ephemeral loopback port with
// generated keys (see package sshdtest) and a temporary base directory, and
// removes both afterwards. It exits 1 when a MUST check fails.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
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
	jsonOut := flag.Bool("json", false, "print the report as JSON")
	run := flag.String("run", "", "run only the checks whose ID matches this regular expression")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: byo-ssh [-json] [-run REGEXP] [ssh://USER@HOST:PORT/BASE?identity=FILE&known_hosts=FILE]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 1 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ok, err := runSuite(ctx, flag.Arg(0), *run, *jsonOut)
	if err != nil {
		fmt.Fprintln(os.Stderr, "byo-ssh:", err)
		os.Exit(2)
	}
	if !ok {
		os.Exit(1)
	}
}

func runSuite(ctx context.Context, url, run string, jsonOut bool) (bool, error) {
	if url == "" {
		srv, err := sshdtest.Start(ctx)
		if err != nil {
			return false, err
		}
		defer srv.Stop()
		base, err := os.MkdirTemp("", "perimeter-byo-ssh-")
		if err != nil {
			return false, err
		}
		defer os.RemoveAll(base)
		url = srv.URL(base)
	}
	p, err := sandbox.Open(ctx, url)
	if err != nil {
		return false, err
	}
	defer p.Close()
	rep, err := conformance.RunChecks(ctx, &conformance.Harness{
		Provider: p,
		// A directory sandbox shares the host's network: only NetworkOpen.
		Spec: func() *sandbox.Spec {
			return &sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}}
		},
		NativeError: func() any { return new(*fs.PathError) },
	}, &conformance.Options{
		Run:     run,
		OnStart: func(c conformance.CheckInfo) { fmt.Fprintf(os.Stderr, "running %s\n", c.ID) },
	})
	if rep != nil {
		if jsonOut {
			rep.WriteJSON(os.Stdout)
		} else {
			rep.WriteTable(os.Stdout)
		}
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return false, err
	}
	return rep != nil && rep.OK() && err == nil, nil
}
