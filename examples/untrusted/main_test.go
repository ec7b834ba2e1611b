package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestBuiltInScriptIsContained runs the example as a user would and checks
// that every attempt but the workspace write was blocked.
func TestBuiltInScriptIsContained(t *testing.T) {
	// The example keeps its sandboxes in the provider's default root, under
	// $TMPDIR: the test's sandbox goes in a directory of its own, not in
	// the user's.
	t.Setenv("TMPDIR", t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if err := run(ctx, script, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	out := stdout.String()
	if !strings.Contains(out, "ALLOWED  write to /workspace") || !strings.Contains(out, "workspace notes.txt: writing to the workspace") {
		t.Errorf("the workspace write did not work:\n%s", out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "ALLOWED") && !strings.Contains(line, "/workspace") {
			t.Errorf("the sandbox let this through: %s", line)
		}
	}
	want := strings.Count(script, "\ntry \"")
	if n := strings.Count(out, "BLOCKED"); n != want {
		t.Errorf("%d attempts reported BLOCKED, want %d:\n%s", n, want, out)
	}
}
