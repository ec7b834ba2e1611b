package sshbox_test

import (
	"context"
	"io/fs"
	"os"
	"strings"
	"testing"

	"github.com/perimeter-sdk/perimeter/conformance"
	"github.com/perimeter-sdk/perimeter/sandbox"

	_ "github.com/perimeter-sdk/perimeter/examples/byo-ssh/sshbox"
	"github.com/perimeter-sdk/perimeter/examples/byo-ssh/sshdtest"
)

// server starts a throwaway sshd for the test, and a base directory for
// sandboxes on it that must be empty when the test ends.
func server(t *testing.T) (*sshdtest.Server, string) { return benchServer(t) }

func benchServer(t testing.TB) (*sshdtest.Server, string) {
	t.Helper()
	if _, err := sshdtest.Binary(); err != nil {
		t.Skipf("cannot start a real OpenSSH server: %v", err)
	}
	srv, err := sshdtest.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	base, err := os.MkdirTemp("", "perimeter-sshbox-base-")
	if err != nil {
		srv.Stop()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		entries, _ := os.ReadDir(base)
		var left []string
		for _, e := range entries {
			left = append(left, e.Name())
		}
		if len(left) > 0 {
			t.Errorf("left on the remote host under %s: %s", base, strings.Join(left, ", "))
		}
		// Every sandbox was terminated: no command and no reaper is left.
		for _, env := range []string{"PERIMETER_SANDBOX=", "PERIMETER_REAPER="} {
			if pids := marked(env); len(pids) > 0 {
				t.Errorf("processes carrying %s outlived the test: %v", env, pids)
			}
		}
		os.RemoveAll(base)
		if err := srv.Stop(); err != nil {
			t.Errorf("stopping sshd: %v", err)
		}
	})
	return srv, base
}

func openSpec() *sandbox.Spec {
	return &sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}}
}

// TestConformance runs the whole conformance suite against a real sshd,
// opening the provider through its registered ssh:// scheme.
func TestConformance(t *testing.T) {
	srv, base := server(t)
	p, err := sandbox.Open(context.Background(), srv.URL(base))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	conformance.Run(t, &conformance.Harness{
		Provider:    p,
		Spec:        openSpec,
		NativeError: func() any { return new(*fs.PathError) },
	}, nil)
}
