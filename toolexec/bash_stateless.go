package toolexec

import (
	"context"
	"fmt"
	"time"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// maxStatelessCommand bounds a command sent as an argument (the kernel
// refuses a single argument over 128 KiB).
const maxStatelessCommand = 100000

// statelessSession emulates a persistent shell on a sandbox that can neither
// feed a process's stdin nor give it a terminal: each call is a fresh
// `bash -c` that restores the working directory and the exported variables
// saved by the previous call (in a state file in the sandbox's temporary
// directory) and saves them again on exit. Shell variables that are not
// exported, functions, aliases, options and background jobs do not persist.
type statelessSession struct {
	target Target
	opts   BashOptions
	env    map[string]string
	state  string // the state file's name, in $TMPDIR or /tmp
}

func newStatelessSession(target Target, opts BashOptions) (*statelessSession, error) {
	id, err := newSentinel()
	if err != nil {
		return nil, err
	}
	return &statelessSession{target: target, opts: opts, env: shellEnv(opts), state: ".perimeter-bash-state-" + id[12:36]}, nil
}

func (s *statelessSession) exec(ctx context.Context, command string, timeout time.Duration) (string, int, error) {
	if len(command) > maxStatelessCommand {
		return "", -1, toolErr(fmt.Sprintf("the command is %d bytes; this sandbox has no stdin or terminal for a shell session, and commands sent as an argument are limited to %d bytes", len(command), maxStatelessCommand))
	}
	// One line, so that the command's own line numbers start at 1 as in the
	// persistent modes; "bash" is $0, so messages read "bash: line 1: ...".
	script := fmt.Sprintf(`__perimeter_state="${TMPDIR:-/tmp}/%s"; `+
		`if [ -f "$__perimeter_state" ]; then . "$__perimeter_state" >/dev/null 2>&1; fi; `+
		`trap '__perimeter_rc=$?; { export -p; printf "cd %%q\n" "$PWD"; } >"$__perimeter_state" 2>/dev/null; exit $__perimeter_rc' EXIT; `+
		`eval %s </dev/null 2>&1`, s.state, shellQuote(command))
	out := sandbox.NewCappedBuffer(s.opts.OutputLimit, true)
	args := append(append([]string(nil), s.opts.Shell...), "-c", script, "bash")
	p, err := s.target.Start(ctx, &sandbox.Cmd{Args: args, Dir: s.opts.Dir, Env: s.env, Stdout: out, Stderr: out, Timeout: timeout})
	if err != nil {
		return "", -1, err
	}
	st, err := p.Wait(ctx)
	text := clean(out.Bytes(), out.Omitted(), s.opts.OutputLimit)
	switch {
	case err != nil:
		return "", -1, err
	case st.TimedOut:
		return text, -1, errTimedOut
	case st.Signal != "":
		return "", -1, toolErr(fmt.Sprintf("the shell was killed by %s", st.Signal))
	}
	return text, st.Code, nil
}

// close forgets the saved state (a restart starts afresh) and removes its
// file, best effort.
func (s *statelessSession) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	args := append(append([]string(nil), s.opts.Shell...), "-c", `rm -f "${TMPDIR:-/tmp}/`+s.state+`"`)
	if p, err := s.target.Start(ctx, &sandbox.Cmd{Args: args, Env: s.env}); err == nil {
		p.Wait(ctx)
	}
}
