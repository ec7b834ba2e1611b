// Package jsclient installs a provider's official JavaScript client, at the
// versions a committed package-lock.json pins, and runs a Node script
// against it. The fakes' tests use it to drive the clients the providers
// ship against the fakes (providers/*/…fake/jsclient).
//
// Installs are cached under $HOME/.cache/perimeter/jsclient, keyed by the
// SHA-256 of package.json and the lockfile, so npm runs once per machine
// and lockfile. npm runs as "npm ci --ignore-scripts": exactly what the
// lockfile says, and no package's install scripts.
package jsclient

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// Toolchain is the message of the error returned when node or npm is
// missing: it says how CI installs them.
const Toolchain = "node and npm are needed to run the official JavaScript clients against the fakes " +
	"(CI's .ci/run installs them with apt-get: apt-get install nodejs npm)"

// Install installs the packages that dir's package.json and
// package-lock.json pin, unless a previous call did, and returns the
// directory holding their node_modules. A failure says what failed and
// carries npm's output.
func Install(ctx context.Context, dir string) (string, error) {
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			return "", fmt.Errorf("jsclient: %s not found: %s", tool, Toolchain)
		}
	}
	if v, err := exec.CommandContext(ctx, "node", "--version").Output(); err != nil {
		return "", fmt.Errorf("jsclient: node --version: %v: %s", err, Toolchain)
	} else if major, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimSpace(string(v)), "v"), "."); atoi(major) < 20 {
		return "", fmt.Errorf("jsclient: node %s is too old: the clients need Node 20.18 or later (their HTTP library, undici 7, does)", strings.TrimSpace(string(v)))
	}
	pkg, err := os.ReadFile(filepath.Join(dir, "package.json"))
	if err != nil {
		return "", fmt.Errorf("jsclient: %w", err)
	}
	lock, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return "", fmt.Errorf("jsclient: %w (the lockfile pins the client's version and must be committed)", err)
	}
	h := sha256.New()
	h.Write(pkg)
	h.Write([]byte{0})
	h.Write(lock)
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("jsclient: no home directory for the npm cache: %w", err)
	}
	cache := filepath.Join(home, ".cache", "perimeter", "jsclient")
	final := filepath.Join(cache, filepath.Base(filepath.Dir(dir))+"-"+hex.EncodeToString(h.Sum(nil))[:16])
	if fi, err := os.Stat(filepath.Join(final, "node_modules")); err == nil && fi.IsDir() {
		return final, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", fmt.Errorf("jsclient: %w", err)
	}
	// Install into a fresh directory and rename it into place, so that a
	// cut install is never taken for a finished one and two test processes
	// installing at once do not mix their files.
	tmp, err := os.MkdirTemp(cache, ".install-")
	if err != nil {
		return "", fmt.Errorf("jsclient: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := errors.Join(os.WriteFile(filepath.Join(tmp, "package.json"), pkg, 0o644),
		os.WriteFile(filepath.Join(tmp, "package-lock.json"), lock, 0o644)); err != nil {
		return "", fmt.Errorf("jsclient: %w", err)
	}
	cmd := exec.CommandContext(ctx, "npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("jsclient: npm ci in %s failed (is npm's registry reachable?): %v\n%s", dir, err, bytes.TrimSpace(out))
	}
	if err := os.Rename(tmp, final); err != nil {
		// Another process finished first: use its install.
		if fi, serr := os.Stat(filepath.Join(final, "node_modules")); serr == nil && fi.IsDir() {
			return final, nil
		}
		return "", fmt.Errorf("jsclient: %w", err)
	}
	return final, nil
}

// Run runs the Node script (a .mjs file) with the installed packages of
// installDir resolvable from it, with env added to the environment, and
// returns its standard output and standard error. A failing script's error
// carries its exit status and both outputs.
func Run(ctx context.Context, installDir, script string, env []string) (stdout, stderr []byte, err error) {
	// Node resolves packages from the script's own directory upwards, so
	// the script runs from a temporary directory next to a link to the
	// installed node_modules.
	dir, err := os.MkdirTemp("", "jsclient-run-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	src, err := os.ReadFile(script)
	if err != nil {
		return nil, nil, err
	}
	if err := errors.Join(os.Symlink(filepath.Join(installDir, "node_modules"), filepath.Join(dir, "node_modules")),
		os.WriteFile(filepath.Join(dir, filepath.Base(script)), src, 0o644)); err != nil {
		return nil, nil, err
	}
	cmd := exec.CommandContext(ctx, "node", filepath.Join(dir, filepath.Base(script)))
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.Bytes(), errOut.Bytes(), fmt.Errorf("%s: %v\nstderr:\n%s\nstdout:\n%s", filepath.Base(script), err,
			strings.TrimSpace(errOut.String()), strings.TrimSpace(out.String()))
	}
	return out.Bytes(), errOut.Bytes(), nil
}

// atoi is strconv.Atoi with 0 for anything that is not a number.
func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
