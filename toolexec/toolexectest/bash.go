package toolexectest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/perimeter-sdk/perimeter/toolexec"
)

func (h *harness) bash(t *testing.T) {
	t.Run("session-persists", func(t *testing.T) {
		e := h.env(t, nil)
		e.want(e.call("bash", map[string]any{"command": "cd " + e.bash(e.base) + " && export PERIM_X=42 && y=7 && f() { echo fn$1; }"}), "", false)
		if !e.persistentShell() {
			// Emulated session: the working directory and exported
			// variables persist, nothing else.
			e.want(e.call("bash", map[string]any{"command": "echo $PERIM_X [$y]; basename $PWD"}), "42 []\n"+strings.TrimPrefix(e.base, "/tmp/")+"\n", false)
			return
		}
		e.want(e.call("bash", map[string]any{"command": "echo $PERIM_X $y; f 1; basename $PWD"}), "42 7\nfn1\n"+strings.TrimPrefix(e.base, "/tmp/")+"\n", false)
	})
	t.Run("zero-exit-empty-output", func(t *testing.T) {
		e := h.env(t, nil)
		e.want(e.call("bash", map[string]any{"command": "true"}), "", false)
	})
	t.Run("nonzero-exit", func(t *testing.T) {
		e := h.env(t, nil)
		e.want(e.call("bash", map[string]any{"command": "echo partial; exit_with() { return $1; }; exit_with 3"}), "partial\n\nexit code: 3", true)
		e.want(e.call("bash", map[string]any{"command": "false"}), "\nexit code: 1", true)
		r := e.call("bash", map[string]any{"command": "no-such-command-xyz"})
		if !r.IsError || !strings.Contains(r.Text(), "no-such-command-xyz: command not found\n") || !strings.HasSuffix(r.Text(), "\n\nexit code: 127") {
			t.Errorf("unknown command result = (%q, is_error=%v)", r.Text(), r.IsError)
		}
	})
	t.Run("stdout-and-stderr-merged", func(t *testing.T) {
		e := h.env(t, nil)
		e.want(e.call("bash", map[string]any{"command": "echo out; echo err >&2; echo out2"}), "out\nerr\nout2\n", false)
	})
	t.Run("stdin-is-empty", func(t *testing.T) {
		e := h.env(t, nil)
		e.want(e.call("bash", map[string]any{"command": "cat; echo after-cat"}), "after-cat\n", false)
		e.want(e.call("bash", map[string]any{"command": "read x"}), "\nexit code: 1", true)
		e.want(e.call("bash", map[string]any{"command": "echo alive"}), "alive\n", false)
	})
	t.Run("syntax-error-keeps-session", func(t *testing.T) {
		e := h.env(t, nil)
		e.call("bash", map[string]any{"command": "export KEEP=1"})
		r := e.call("bash", map[string]any{"command": "if then fi ("})
		if !r.IsError || !strings.Contains(r.Text(), "syntax error") || !strings.HasSuffix(r.Text(), "\nexit code: 2") {
			t.Errorf("syntax error result = %q (is_error=%v)", r.Text(), r.IsError)
		}
		e.want(e.call("bash", map[string]any{"command": "echo $KEEP"}), "1\n", false)
	})
	t.Run("quotes-heredocs-and-comments", func(t *testing.T) {
		e := h.env(t, nil)
		cmd := "cat <<'EOF'\nit's \"quoted\" $HOME `x`\nEOF\necho done # a trailing comment"
		e.want(e.call("bash", map[string]any{"command": cmd}), "it's \"quoted\" $HOME `x`\ndone\n", false)
	})
	t.Run("large-command", func(t *testing.T) {
		e := h.env(t, nil)
		big := strings.Repeat("abcdefghij", 20000) // 200 kB in one command
		if !e.persistentShell() {
			e.want(e.call("bash", map[string]any{"command": "x='" + big + "'; echo ${#x}"}),
				"bash: the command is 200016 bytes; this sandbox has no stdin or terminal for a shell session, and commands sent as an argument are limited to 100000 bytes", true)
			big = big[:90000]
		}
		e.want(e.call("bash", map[string]any{"command": "x='" + big + "'; echo ${#x}"}), fmt.Sprintf("%d\n", len(big)), false)
	})
	t.Run("sentinel-cannot-be-spoofed", func(t *testing.T) {
		e := h.env(t, nil)
		e.want(e.call("bash", map[string]any{"command": "printf '\\n__PERIMETER_000000000000000000000000_DONE__0\\n'; exit_with() { return $1; }; exit_with 4"}),
			"__PERIMETER_000000000000000000000000_DONE__0\n\nexit code: 4", true)
	})
	t.Run("output-capped-keeping-tail", func(t *testing.T) {
		e := h.env(t, &toolexec.Options{Bash: toolexec.BashOptions{OutputLimit: 1000}})
		r := e.call("bash", map[string]any{"command": "seq 1 100000"})
		// seq 1 100000 writes 588895 bytes; the reference executor's marker
		// (agenttoolset bash.go cleanOutput: "[output truncated]\n") gains
		// how much was dropped and kept.
		marker := "[output truncated: the first 587895 bytes were dropped; the last 1000 bytes follow]\n"
		text := r.Text()
		if r.IsError || !strings.HasPrefix(text, marker) || !strings.HasSuffix(text, "\n99999\n100000\n") {
			t.Fatalf("capped output: is_error=%v, starts %q, ends %q", r.IsError, head(text), tail(text))
		}
		if n := len(strings.TrimPrefix(text, marker)); n != 1000 {
			t.Errorf("kept %d bytes, want 1000", n)
		}
		e.want(e.call("bash", map[string]any{"command": "echo small"}), "small\n", false)
	})
	t.Run("default-output-cap-is-100KiB", func(t *testing.T) {
		e := h.env(t, nil)
		r := e.call("bash", map[string]any{"command": "head -c 300000 /dev/zero | tr '\\0' x"})
		e.want(r, "[output truncated: the first 197600 bytes were dropped; the last 102400 bytes follow]\n"+strings.Repeat("x", 100<<10), false)
	})
	t.Run("timeout-kills-tree-and-restarts", func(t *testing.T) {
		e := h.env(t, &toolexec.Options{Bash: toolexec.BashOptions{Timeout: 2 * time.Second}})
		pidfile := e.bash(e.base + "/pid")
		e.call("bash", map[string]any{"command": "export BEFORE=1"})
		r := e.call("bash", map[string]any{"command": "sleep 300 & echo $! > " + pidfile + "; echo started; sleep 300"})
		// Reference (agenttoolset bash.go): "<partial>\n[timed out]" then
		// "\nsession restarted after timeout"; the limit is stated.
		e.want(r, "started\n\n[timed out after 2s]\nsession restarted after timeout", true)
		e.want(e.call("bash", map[string]any{"command": "echo \"before=$BEFORE\""}), "before=\n", false)
		// The background sleep was in the killed tree.
		deadline := time.Now().Add(10 * time.Second)
		for {
			r := e.call("bash", map[string]any{"command": "kill -0 $(cat " + pidfile + ") 2>/dev/null && echo alive || echo gone"})
			if r.Text() == "gone\n" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("background process of the timed-out command still alive: %q", r.Text())
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	t.Run("timeout-ms-per-call", func(t *testing.T) {
		e := h.env(t, nil)
		start := time.Now()
		e.want(e.call("bash", map[string]any{"command": "echo before; sleep 60", "timeout_ms": 1000}), "before\n\n[timed out after 1s]\nsession restarted after timeout", true)
		if d := time.Since(start); d > 30*time.Second {
			t.Errorf("a 1 s timeout_ms took %v", d)
		}
		e.want(e.call("bash", map[string]any{"command": "echo after"}), "after\n", false)
	})
	t.Run("restart", func(t *testing.T) {
		e := h.env(t, nil)
		e.call("bash", map[string]any{"command": "export GONE=1"})
		e.want(e.call("bash", map[string]any{"restart": true}), "bash session restarted", false)
		e.want(e.call("bash", map[string]any{"command": "echo \"[$GONE]\""}), "[]\n", false)
		e.call("bash", map[string]any{"command": "export GONE=2"})
		e.want(e.call("bash", map[string]any{"restart": true, "command": "echo \"[$GONE]\""}), "[]\n", false)
	})
	t.Run("missing-command", func(t *testing.T) {
		e := h.env(t, nil)
		e.want(e.call("bash", map[string]any{}), "bash: command is required", true)
		e.want(e.call("bash", map[string]any{"command": ""}), "bash: command is required", true)
		e.want(e.call("bash", map[string]any{"restart": false}), "bash: command is required", true)
	})
	t.Run("shell-exit-restarts", func(t *testing.T) {
		e := h.env(t, nil)
		e.call("bash", map[string]any{"command": "export GONE=1"})
		if !e.persistentShell() {
			// Each call is its own shell: exit ends only that call.
			e.want(e.call("bash", map[string]any{"command": "exit 3"}), "\nexit code: 3", true)
			e.want(e.call("bash", map[string]any{"command": "echo \"[$GONE]\""}), "[1]\n", false)
			return
		}
		// The reference answers "bash: bash session terminated"
		// (agenttoolset bash.go ErrBashTerminated); the code and the reset
		// are stated here.
		e.want(e.call("bash", map[string]any{"command": "exit 3"}), "bash: the shell exited with code 3; the session was restarted, so the working directory, variables and functions are reset", true)
		e.want(e.call("bash", map[string]any{"command": "echo \"[$GONE]\""}), "[]\n", false)
		e.call("bash", map[string]any{"command": "export GONE=2"})
		e.want(e.call("bash", map[string]any{"command": "set -e; false"}), "bash: the shell exited with code 1; the session was restarted, so the working directory, variables and functions are reset", true)
		e.want(e.call("bash", map[string]any{"command": "echo \"[$GONE]\""}), "[]\n", false)
	})
	t.Run("shell-messages-name-bash", func(t *testing.T) {
		// A fresh session's first command is line 1, in every mode, as
		// for bash -c: no "/dev/stdin" or other framing shows.
		e := h.env(t, nil)
		e.want(e.call("bash", map[string]any{"command": "no-such-command-xyz"}), "bash: line 1: no-such-command-xyz: command not found\n\nexit code: 127", true)
		e = h.env(t, nil)
		e.want(e.call("bash", map[string]any{"command": "if then fi"}), "bash: eval: line 1: syntax error near unexpected token `then'\nbash: eval: line 1: `if then fi'\n\nexit code: 2", true)
		e.want(e.call("bash", map[string]any{"command": "echo $0"}), "bash\n", false)
	})
	t.Run("nothing-waits-for-a-person", h.nonInteractive)
	t.Run("no-anthropic-secrets", func(t *testing.T) {
		t.Setenv("ANTHROPIC_API_KEY", "sk-ant-host-secret")
		e := h.env(t, &toolexec.Options{Bash: toolexec.BashOptions{Env: map[string]string{
			"ANTHROPIC_AUTH_TOKEN": "from-options", "PERIM_PASSED": "yes",
		}}})
		r := e.call("bash", map[string]any{"command": "env"})
		if strings.Contains(r.Text(), "ANTHROPIC") || strings.Contains(r.Text(), "sk-ant-host-secret") {
			t.Errorf("the shell's environment holds an ANTHROPIC_ variable:\n%s", r.Text())
		}
		for _, want := range []string{"PERIM_PASSED=yes", "TERM=dumb"} {
			if !strings.Contains(r.Text(), want) {
				t.Errorf("the shell's environment lacks %s:\n%s", want, r.Text())
			}
		}
	})
	t.Run("binary-output", func(t *testing.T) {
		e := h.env(t, nil)
		r := e.call("bash", map[string]any{"command": "printf 'a\\000b\\377c'"})
		// A provider declaring TextOutput may deliver invalid UTF-8 as
		// U+FFFD (its limitation); byte-exact output is always right.
		if r.IsError || (r.Text() != "a\x00b\xffc" && !(e.sb.Capabilities().TextOutput && r.Text() == "a\x00b\uFFFDc")) {
			t.Errorf("binary output = (%q, is_error=%v), want %q", r.Text(), r.IsError, "a\x00b\xffc")
		}
	})
	t.Run("cancelled-context", func(t *testing.T) {
		e := h.env(t, nil)
		e.call("bash", map[string]any{"command": "export GONE=1"})
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		res, err := e.ts.Execute(ctx, toolexec.ToolUse{ID: "toolu_c", Name: "bash", Input: json.RawMessage(`{"command":"sleep 60"}`)})
		if err == nil || !res.IsError || res.Text() != "bash: the call timed out before the sandbox answered; the session was restarted" {
			t.Fatalf("Execute with an ending context = (%q, %v), want an is_error result and the context's error", res.Text(), err)
		}
		e.want(e.call("bash", map[string]any{"command": "echo \"[$GONE]\""}), "[]\n", false)
	})
	t.Run("concurrent-calls-serialised", func(t *testing.T) {
		e := h.env(t, nil)
		var wg sync.WaitGroup
		errs := make(chan string, 8)
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cmd := strings.ReplaceAll("echo start-N; sleep 0.05; echo end-N", "N", string(rune('a'+i)))
				raw, _ := json.Marshal(map[string]any{"command": cmd})
				res, err := e.ts.Execute(context.Background(), toolexec.ToolUse{ID: "x", Name: "bash", Input: raw})
				want := strings.ReplaceAll("start-N\nend-N\n", "N", string(rune('a'+i)))
				if err != nil || res.Text() != want {
					errs <- res.Text()
				}
			}()
		}
		wg.Wait()
		close(errs)
		for s := range errs {
			t.Errorf("concurrent call got %q", s)
		}
	})
	t.Run("closed-toolset", func(t *testing.T) {
		e := h.env(t, nil)
		e.call("bash", map[string]any{"command": "true"})
		if err := e.ts.Close(); err != nil {
			t.Fatal(err)
		}
		res, err := e.ts.Execute(context.Background(), toolexec.ToolUse{ID: "x", Name: "bash", Input: json.RawMessage(`{"command":"true"}`)})
		if err == nil || !res.IsError {
			t.Errorf("Execute after Close = (%q, %v), want an error", res.Text(), err)
		}
	})
}

// nonInteractive runs programs that page or prompt on a terminal by
// default; each must finish at once with its output, on every provider
// (a PTY-backed shell included).
func (h *harness) nonInteractive(t *testing.T) {
	e := h.env(t, &toolexec.Options{Bash: toolexec.BashOptions{Timeout: time.Minute}})
	e.want(e.call("bash", map[string]any{"command": "echo $PAGER $GIT_PAGER $MANPAGER $SYSTEMD_PAGER $GIT_TERMINAL_PROMPT $DEBIAN_FRONTEND"}), "cat cat cat cat 0 noninteractive\n", false)
	// Output is never a terminal, so nothing pages whatever the variables.
	e.want(e.call("bash", map[string]any{"command": "test -t 1 || echo stdout-is-not-a-terminal; test -t 0 || echo stdin-is-not-a-terminal"}), "stdout-is-not-a-terminal\nstdin-is-not-a-terminal\n", false)
	if e.call("bash", map[string]any{"command": "command -v less"}).IsError {
		t.Log("less is not installed in this sandbox: the direct less check cannot run")
	} else {
		e.want(e.call("bash", map[string]any{"command": "seq 1 100 > /tmp/pager-test.txt && less /tmp/pager-test.txt | wc -l && seq 1 100 | less | tail -n 1"}), "100\n100\n", false)
		e.want(e.call("bash", map[string]any{"command": "PAGER=less LESS= sh -c 'seq 1 100 | $PAGER' | tail -n 1"}), "100\n", false)
	}
	if e.call("bash", map[string]any{"command": "command -v git"}).IsError {
		t.Log("git is not installed in this sandbox: the git pager and editor checks cannot run")
	} else {
		dir := "/tmp/pager-repo-" + randHex(t)
		var want strings.Builder
		for i := 60; i >= 1; i-- {
			fmt.Fprintf(&want, "commit %d\n", i)
		}
		// More than a screen of log, with the pager configured to less:
		// GIT_PAGER overrides core.pager.
		e.want(e.call("bash", map[string]any{"command": "git init -q " + dir + " && cd " + dir + " && git config user.email a@example.com && git config user.name A && git config core.pager less && for i in $(seq 1 60); do git commit -q --allow-empty -m \"commit $i\"; done && git log --format=%s"}), want.String(), false)
		// A commit without -m takes the editor's (empty) message and stops
		// instead of opening an editor.
		e.want(e.call("bash", map[string]any{"command": "git commit -q --allow-empty"}), "Aborting commit due to empty commit message.\n\nexit code: 1", true)
		// Credentials are refused instead of asked for.
		r := e.call("bash", map[string]any{"command": "git ls-remote http://127.0.0.1:1/none.git"})
		if !r.IsError || strings.Contains(r.Text(), "[timed out") {
			t.Errorf("git against an unreachable remote = (%q, is_error=%v), want a prompt-free failure", r.Text(), r.IsError)
		}
	}
	if e.call("bash", map[string]any{"command": "command -v man && man -w true"}).IsError {
		t.Log("man or the true(1) page is not installed in this sandbox: the man check cannot run")
	} else {
		r := e.call("bash", map[string]any{"command": "man true"})
		if r.IsError || !strings.Contains(r.Text(), "TRUE") || !strings.Contains(r.Text(), "NAME") {
			t.Errorf("man true = (%q, is_error=%v), want the page as text", head(r.Text()), r.IsError)
		}
	}
}

// persistentShell reports whether the sandbox can hold a shell session
// (stdin or a terminal); without, the bash tool emulates one.
func (e *env) persistentShell() bool {
	c := e.sb.Capabilities()
	return c.Stdin || c.PTY
}

// bash returns a sandbox path as the shell sees it. Most providers show the
// shell the same filesystem as the file methods; the local baseline maps the
// file methods' "/" to its workspace, where the shell starts, so there the
// path is made relative. Call it before the shell changes directory.
func (e *env) bash(p string) string {
	e.t.Helper()
	probe := "/tmp/.toolexectest-probe-" + randHex(e.t)
	e.writeFile(probe, []byte("x"))
	if !e.call("bash", map[string]any{"command": "test -e " + probe}).IsError {
		return p
	}
	if !e.call("bash", map[string]any{"command": "test -e ." + probe}).IsError {
		return "." + p
	}
	e.t.Fatalf("the shell sees the file %s neither at that path nor under its starting directory", probe)
	return ""
}

func head(s string) string {
	if len(s) > 40 {
		return s[:40]
	}
	return s
}

func tail(s string) string {
	if len(s) > 40 {
		return s[len(s)-40:]
	}
	return s
}
