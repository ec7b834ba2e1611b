package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
)

// TestCommand runs the command as `go run . --run ...` would, against the
// throwaway sshd it starts, and checks its report and exit codes.
func TestCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"--run", "^(lifecycle/create|files/dotdot)$"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit code %d, want 0; stdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "2 passed, 0 failed (MUST)") {
		t.Fatalf("the report does not say both checks passed:\n%s", out.String())
	}
	entries, err := os.ReadDir(os.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "perimeter-byo-ssh-") {
			t.Errorf("the throwaway base directory %s was left behind", e.Name())
		}
	}

	out.Reset()
	errOut.Reset()
	if code := run(context.Background(), []string{"ssh://a/b", "ssh://c/d"}, &out, &errOut); code != 2 {
		t.Fatalf("two URLs: exit code %d, want 2 (a bad command line); stderr:\n%s", code, errOut.String())
	}
}
