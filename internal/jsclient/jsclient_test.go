package jsclient

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInstallWithoutNodeSaysWhatIsMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // no node, no npm
	_, err := Install(context.Background(), t.TempDir())
	if err == nil || !strings.Contains(err.Error(), Toolchain) {
		t.Fatalf("Install without node: %v, want an error saying %q", err, Toolchain)
	}
}

func TestInstallWithoutLockfileFails(t *testing.T) {
	dir := t.TempDir()
	// Stand-ins for node and npm, so that the check reaches the lockfile.
	bin := t.TempDir()
	for name, script := range map[string]string{"node": "echo v22.0.0", "npm": "exit 1"} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", bin)
	if err := os.WriteFile(filepath.Join(dir, "package.json"), []byte(`{"private":true}`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Install(context.Background(), dir)
	if err == nil || !strings.Contains(err.Error(), "package-lock.json") {
		t.Fatalf("Install without a lockfile: %v, want an error naming package-lock.json", err)
	}
}

func TestInstallRefusesOldNode(t *testing.T) {
	bin := t.TempDir()
	for name, script := range map[string]string{"node": "echo v18.20.4", "npm": "exit 1"} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", bin)
	_, err := Install(context.Background(), t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "too old") {
		t.Fatalf("Install with node 18: %v, want an error saying it is too old", err)
	}
}
