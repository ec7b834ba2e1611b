package toolexec_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/toolexec"
)

// BenchmarkBashTrue compares a bash tool call of `true` (a command sent to
// the toolset's persistent shell) with a bare exec of `true` on the same
// local sandbox. Compare the two sub-benchmarks' ns/op.
func BenchmarkBashTrue(b *testing.B) {
	sb := newSandbox(b)
	ctx := context.Background()
	b.Run("bare-exec", func(b *testing.B) {
		for b.Loop() {
			res, err := sandbox.Run(ctx, sb, &sandbox.Cmd{Args: []string{"true"}}, nil)
			if err != nil || res.Status.Code != 0 {
				b.Fatal(err, res)
			}
		}
	})
	// `true` is a bash builtin, so the tool call forks nothing; the
	// /bin/true variant adds the fork and exec the bare exec pays.
	for name, command := range map[string]string{"bash-tool": "true", "bash-tool-bin-true": "/bin/true"} {
		b.Run(name, func(b *testing.B) { benchBash(b, sb, command) })
	}
}

func benchBash(b *testing.B, sb *sandbox.Sandbox, command string) {
	ctx := context.Background()
	ts, err := toolexec.New(sb, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer ts.Close()
	input, _ := json.Marshal(map[string]string{"command": command})
	use := toolexec.ToolUse{ID: "toolu_b", Name: "bash", Input: input}
	if _, err := ts.Execute(ctx, use); err != nil { // start the shell outside the loop
		b.Fatal(err)
	}
	for b.Loop() {
		res, err := ts.Execute(ctx, use)
		if err != nil || res.IsError {
			b.Fatal(err, res.Text())
		}
	}
}

// BenchmarkBashTruePTY is BenchmarkBashTrue on the local provider's isolated
// mode, where the bash tool's shell takes its input through a PTY.
func BenchmarkBashTruePTY(b *testing.B) {
	sb := newIsolatedSandbox(b)
	ctx := context.Background()
	b.Run("bare-exec", func(b *testing.B) {
		for b.Loop() {
			res, err := sandbox.Run(ctx, sb, &sandbox.Cmd{Args: []string{"true"}}, nil)
			if err != nil || res.Status.Code != 0 {
				b.Fatal(err, res)
			}
		}
	})
	b.Run("bash-tool", func(b *testing.B) { benchBash(b, sb, "true") })
	b.Run("bash-tool-seq-10000", func(b *testing.B) { benchBash(b, sb, "seq 1 10000") })
}
