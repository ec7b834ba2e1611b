package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ttyReader and ttyWriter stand in for a terminal (see isTerminal).
type ttyReader struct{ *strings.Reader }

func (ttyReader) Terminal() bool { return true }

type ttyWriter struct{ bytes.Buffer }

func (*ttyWriter) Terminal() bool { return true }

func TestStdinIsPassedUnlessATerminal(t *testing.T) {
	t.Parallel()
	url := providerURL(t)
	// A pipe or a file: passed without -i, as docker run -i and ssh do.
	code, out, errOut := cli(t, "piped in", "run", "--provider", url, "--", "cat")
	assert.Equal(t, 0, code, errOut)
	assert.Equal(t, "piped in", out)

	// A terminal: not read unless -i.
	var o, e bytes.Buffer
	code = dispatch(context.Background(), []string{"run", "--provider", url, "--", "cat"}, ttyReader{strings.NewReader("typed")}, &o, &e)
	assert.Equal(t, 0, code, e.String())
	assert.Empty(t, o.String(), "a terminal's input was read without -i")
	o.Reset()
	code = dispatch(context.Background(), []string{"run", "--provider", url, "-i", "--", "cat"}, ttyReader{strings.NewReader("typed")}, &o, &e)
	assert.Equal(t, 0, code, e.String())
	assert.Equal(t, "typed", o.String())

	// /dev/null is a character device but no terminal.
	devNull, err := os.Open(os.DevNull)
	require.NoError(t, err)
	defer devNull.Close()
	assert.False(t, isTerminal(devNull))
	assert.True(t, emptyInput(devNull))
}

func TestUnknownURLParametersForEveryProvider(t *testing.T) {
	t.Parallel()
	for url, known := range map[string]string{
		"local://" + t.TempDir() + "?requre=L3":            "isolation, require",
		"vercel://team/project?endpont=http://127.0.0.1:1": "endpoint",
		"modal://app?enviroment=dev":                       "environment, image",
		"daytona://?endpont=http://127.0.0.1:1":            "endpoint",
		"cloudflare://127.0.0.1:1?schem=http":              "scheme",
	} {
		code, _, errOut := cli(t, "", "run", "--provider", url, "--", "true")
		assert.Equal(t, 1, code, url)
		assert.Regexp(t, `unknown (URL )?(query )?parameter "\w+" \(known: `+regexp.QuoteMeta(known)+`\)`, errOut, url)
	}
}

func TestFlagsAfterPositionalArguments(t *testing.T) {
	t.Parallel()
	url := providerURL(t)
	code, out, errOut := cli(t, "", "conformance", "--run", "^errors/unknown-id$", url, "--json")
	assert.Equal(t, 0, code, errOut)
	assert.Contains(t, out, `"id": "errors/unknown-id"`)

	// A flag no command knows is named.
	for _, args := range [][]string{
		{"conformance", url, "--bogus"},
		{"ls", "--bogus"},
		{"rm", "sb-0000000000000000", "--bogus"},
		{"cp", "a", "b:c", "--bogus"},
		{"exec", "sb-0000000000000000", "--bogus", "--", "true"},
		{"tool", "--bogus"},
		{"cloudflare", "doctor", "--bogus"},
	} {
		code, _, errOut := cli(t, "", args...)
		assert.Equal(t, 2, code, args)
		assert.Contains(t, errOut, "flag provided but not defined: -bogus", args)
	}
	code, _, errOut = cli(t, "", "tool", "extra")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, `unexpected argument "extra"`)
	code, _, errOut = cli(t, "", "conformance", url, url)
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "one provider URL, not 2")

	// After run's command, flags are the command's own.
	code, out, errOut = cli(t, "", "run", "--provider", url, "echo", "--keep", "-n")
	assert.Equal(t, 0, code, errOut)
	assert.Equal(t, "--keep -n\n", out)
}

func TestHelpAndVersion(t *testing.T) {
	t.Parallel()
	for name := range commands {
		code, out, errOut := cli(t, "", "help", name)
		assert.Equal(t, 0, code, name)
		assert.Contains(t, out, "usage:", name)
		assert.Empty(t, errOut, "help %s writes to stdout", name)
		code, out, errOut = cli(t, "", name, "-h")
		assert.Equal(t, 0, code, name)
		assert.Contains(t, out+errOut, "usage:", name)
		code, _, _ = cli(t, "", name, "--help")
		assert.Equal(t, 0, code, name)
	}
	// Subcommands of subcommands too.
	for _, args := range [][]string{
		{"tunnel", "connect", "-h"}, {"tunnel", "edge", "--help"}, {"tunnel", "serve", "-h"},
		{"tunnel", "certs", "-h"}, {"tunnel", "anthropic", "create", "-h"},
		{"tunnel", "anthropic", "ca", "list", "-h"},
	} {
		code, out, errOut := cli(t, "", args...)
		assert.Equal(t, 0, code, args)
		assert.Regexp(t, `(?m)^\s+-\w`, out+errOut, "the flags are listed: %v", args)
	}
	code, out, _ := cli(t, "", "help", "run")
	assert.Equal(t, 0, code)
	assert.Contains(t, out, "usage: perimeter run")
	assert.Contains(t, out, "-keep")
	code, out, _ = cli(t, "", "help", "list")
	assert.Equal(t, 0, code)
	assert.Contains(t, out, "usage: perimeter ls")
	code, _, errOut := cli(t, "", "help", "frobnicate")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, `unknown command "frobnicate"`)
	code, _, errOut = cli(t, "")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "usage: perimeter COMMAND")

	code, out, _ = cli(t, "", "--version")
	assert.Equal(t, 0, code)
	assert.Regexp(t, `^perimeter (devel|v\d+\.\d+\.\d+\S*)( [0-9a-f]+(, modified)?)? \(go`, out)
}

func TestBenchShowsProgressOnATerminal(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	errOut := &ttyWriter{}
	code := dispatch(context.Background(), []string{"bench", "--provider", providerURL(t), "-n", "2"}, strings.NewReader(""), &out, errOut)
	require.Equal(t, 0, code, errOut.String())
	assert.Contains(t, errOut.String(), "[4/4] create+terminate")
	assert.True(t, strings.HasSuffix(errOut.String(), "\r\033[K"), "the progress line is cleared at the end: %q", errOut.String())

	// Not on a terminal: nothing but the report.
	code, _, plain := cli(t, "", "bench", "--provider", providerURL(t), "-n", "1")
	require.Equal(t, 0, code, plain)
	assert.Empty(t, plain)
}

// apiName matches a Go API name such as Cmd.Timeout or Options.Run.
var apiName = regexp.MustCompile(`\b(Options|Cmd|Spec|Resources|Capabilities|NetworkPolicy|ExitStatus)\.[A-Z]`)

func TestErrorsNameFlagsNotGoAPI(t *testing.T) {
	t.Parallel()
	url := providerURL(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"conformance", "--run", "(", url}, "--run"},
		{[]string{"run", "--provider", url, "--", ""}, "empty program name"},
		{[]string{"run", "--provider", url, "--memory", "1M", "--", "true"}, "--memory 1048576 is below"},
		{[]string{"run", "--provider", url, "--timeout", "-1s", "--", "true"}, "--timeout -1s: must not be negative"},
		{[]string{"run", "--provider", url, "--env", "=x", "--", "true"}, "want K=V"},
	} {
		_, _, errOut := cli(t, "", tc.args...)
		assert.Contains(t, errOut, tc.want, tc.args)
		assert.NotRegexp(t, apiName, errOut, tc.args)
	}
	// The messages of the SDK that the CLI's flags can reach, translated.
	for in, want := range map[string]string{
		"negative Cmd.Timeout -1s":                                                    "negative --timeout -1s",
		"empty program name (Cmd.Args[0])":                                            "empty program name",
		"Cmd.Args[2] contains a NUL byte":                                             "argument 2 of the command contains a NUL byte",
		"Cmd.Stdin: no stdin (Capabilities.Stdin is false)":                           "standard input: no stdin",
		"Resources.CPU 0.5: Vercel takes a whole number of vCPUs":                     "--cpus 0.5: Vercel takes a whole number of vCPUs",
		"missing x; set Options.AllowUnisolated (URL local://?isolation=none) to run": "missing x; open local://?isolation=none to run",
		"conformance: Options.Run \"x\" matches no check":                             "conformance: --run \"x\" matches no check",
	} {
		got := errText(errorString(in))
		assert.Equal(t, want, got)
		assert.NotRegexp(t, apiName, got)
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }

func TestEarlyInterruptExits130Quietly(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Ctrl-C before the sandbox exists
	url := providerURL(t)
	for _, args := range [][]string{
		{"run", "--provider", url, "--", "true"},
		{"tool", "--provider", url},
		{"bench", "--provider", url, "-n", "1"},
		{"exec", "--provider", url, "sb-0000000000000000", "--", "true"},
		{"conformance", "--run", "^exec/env$", url},
		{"ls", "--provider", url},
		{"rm", "--provider", url, "sb-0000000000000000"},
	} {
		var out, errb bytes.Buffer
		code := dispatch(ctx, args, strings.NewReader(""), &out, &errb)
		assert.Equal(t, 130, code, args)
		assert.Empty(t, errb.String(), args)
	}
}

func TestKeptSandboxExecCpLsRm(t *testing.T) {
	t.Parallel()
	// An isolated sandbox (the default) is held by a keeper process; an
	// unisolated one is kept on disk. Every command reaches either.
	t.Run("isolated", func(t *testing.T) {
		t.Parallel()
		root := t.TempDir()
		k := runKept(t, "local://"+root, "--", "sh", "-c", "echo kept > f.txt")
		testKeptSandbox(t, "local://"+root, k.id)
		k.requireGone(t, root)
	})
	t.Run("unisolated", func(t *testing.T) {
		t.Parallel()
		url := "local://" + t.TempDir() + "?isolation=none"
		code, _, errOut := cli(t, "", "run", "--provider", url, "--network", "open", "--keep", "--", "sh", "-c", "echo kept > f.txt")
		require.Equal(t, 0, code, errOut)
		m := regexp.MustCompile(`sandbox (sb-[0-9a-f]{16}) kept`).FindStringSubmatch(errOut)
		require.NotNil(t, m, errOut)
		testKeptSandbox(t, url, m[1])
	})
}

// testKeptSandbox uses the kept sandbox id on url, in which f.txt holds
// "kept", with exec, cp, ls and rm, and removes it.
func testKeptSandbox(t *testing.T, url, id string) {
	t.Helper()
	code, out, errOut := cli(t, "", "exec", id, "--provider", url, "--env", "W=world", "--", "sh", "-c", `cat f.txt; echo "hello $W"`)
	assert.Equal(t, 0, code, errOut)
	assert.Equal(t, "kept\nhello world\n", out)
	code, out, errOut = cli(t, "piped", "exec", "--provider", url, id, "cat")
	assert.Equal(t, 0, code, errOut)
	assert.Equal(t, "piped", out)
	code, _, errOut = cli(t, "", "exec", "--provider", url, "--dir", "missing", id, "--", "true")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "not found")

	// cp: host to sandbox, sandbox to host and to stdout.
	host := t.TempDir()
	src := filepath.Join(host, "in.txt")
	require.NoError(t, os.WriteFile(src, []byte("from the host"), 0o640))
	code, _, errOut = cli(t, "", "cp", src, id+":copied.txt", "--provider", url)
	require.Equal(t, 0, code, errOut)
	code, out, errOut = cli(t, "", "cp", "--provider", url, id+":copied.txt", "-")
	assert.Equal(t, 0, code, errOut)
	assert.Equal(t, "from the host", out)
	code, _, errOut = cli(t, "", "cp", "--provider", url, id+":f.txt", host)
	require.Equal(t, 0, code, errOut)
	b, err := os.ReadFile(filepath.Join(host, "f.txt"))
	require.NoError(t, err)
	assert.Equal(t, "kept\n", string(b))
	code, _, errOut = cli(t, "", "cp", "--provider", url, "-", id+":stdin.txt")
	require.Equal(t, 0, code, errOut)
	code, _, errOut = cli(t, "", "cp", "--provider", url, id+":nope.txt", filepath.Join(host, "nope.txt"))
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "not found")
	_, err = os.Stat(filepath.Join(host, "nope.txt"))
	assert.ErrorIs(t, err, os.ErrNotExist, "a failed copy leaves nothing behind")
	entries, _ := os.ReadDir(host)
	assert.Len(t, entries, 2, "no temporary file is left behind")
	for _, bad := range [][]string{{"a", "b"}, {id + ":a", id + ":b"}, {id + ":", "b"}} {
		code, _, errOut = cli(t, "", append([]string{"cp", "--provider", url}, bad...)...)
		assert.Equal(t, 2, code, bad)
		assert.NotEmpty(t, errOut, bad)
	}

	// ls and list; rm and terminate.
	for _, name := range []string{"ls", "list"} {
		code, out, errOut = cli(t, "", name, "--provider", url)
		assert.Equal(t, 0, code, errOut)
		assert.Contains(t, out, id, name)
		assert.Contains(t, out, "ISOLATION", name)
	}
	code, out, _ = cli(t, "", "ls", "--provider", url, "--json")
	assert.Equal(t, 0, code)
	assert.Contains(t, out, `"id":"`+id+`"`)
	code, out, errOut = cli(t, "", "rm", id, "--provider", url)
	assert.Equal(t, 0, code, errOut)
	assert.Equal(t, id+"\n", out)
	code, out, _ = cli(t, "", "ls", "--provider", url)
	assert.Equal(t, 0, code)
	assert.NotContains(t, out, id)
	code, _, errOut = cli(t, "", "terminate", "--provider", url, id)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "no sandbox \""+id+"\"")
	code, _, errOut = cli(t, "", "exec", "--provider", url, id, "true")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "perimeter ls lists them")
}
