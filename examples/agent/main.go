// Command agent is a complete agent loop: it sends a task to the Anthropic
// Messages API with the bash and text editor tools, and executes every tool
// call the model makes inside a Perimeter sandbox opened from a provider URL.
//
//	export ANTHROPIC_API_KEY=...
//	go run . --provider local:// "Write fizzbuzz.py and run it for 1..15"
//
// The model's commands never run on the host (with a provider that isolates),
// and the API key never reaches the sandbox: the bash tool starts its shell
// with a clean environment.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"

	_ "github.com/perimeter-sdk/perimeter/providers/local"
	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/toolexec"
	perimeter "github.com/perimeter-sdk/perimeter/toolexec/anthropic"
)

// config is what one run needs.
type config struct {
	Provider string // sandbox provider URL, such as "local://"
	Model    string
	Task     string
	MaxTurns int
	// Options are extra client options (the test points BaseURL at a fake).
	Options []option.RequestOption
}

func main() {
	provider := flag.String("provider", "local://", "sandbox provider `URL`")
	model := flag.String("model", "claude-sonnet-4-5", "model `name`")
	maxTurns := flag.Int("max-turns", 20, "stop after this many model turns")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: agent [--provider URL] [--model NAME] TASK...")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	err := run(ctx, config{Provider: *provider, Model: *model, Task: strings.Join(flag.Args(), " "), MaxTurns: *maxTurns}, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
}

// run drives the conversation until the model stops asking for tools,
// printing the model's text and each tool call to out.
func run(ctx context.Context, cfg config, out io.Writer) error {
	p, err := sandbox.Open(ctx, cfg.Provider)
	if err != nil {
		return err
	}
	defer p.Close()
	sb, err := p.Create(ctx, nil)
	if err != nil {
		return err
	}
	defer func() {
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		sb.Terminate(tctx)
	}()

	// One toolset per conversation: one bash session, the editor, nothing
	// else offered to the model.
	tools, err := toolexec.New(sb, &toolexec.Options{Tools: []string{toolexec.BashName, toolexec.EditorName}})
	if err != nil {
		return err
	}
	defer tools.Close()

	client := anthropic.NewClient(cfg.Options...) // ANTHROPIC_API_KEY from the environment
	params := anthropic.MessageNewParams{
		Model:     anthropic.Model(cfg.Model),
		MaxTokens: 4096,
		Tools:     perimeter.Tools(tools),
		// Sandboxes differ in where files may be written (an isolated local
		// sandbox's root is read-only; /workspace is writable).
		System: []anthropic.TextBlockParam{{Text: "You work in a sandbox. Create files under your " +
			"working directory (run pwd in bash to see it) or /tmp; other paths may be read-only."}},
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(cfg.Task))},
	}
	for turn := 0; turn < cfg.MaxTurns; turn++ {
		msg, err := client.Messages.New(ctx, params)
		if err != nil {
			return err
		}
		for _, block := range msg.Content {
			switch block.Type {
			case "text":
				fmt.Fprintln(out, block.Text)
			case "tool_use":
				fmt.Fprintf(out, "[%s] %s\n", block.Name, block.Input)
			}
		}
		// Every tool_use of this turn is answered in the next user message,
		// tool results first.
		reply, used, err := perimeter.Answer(ctx, tools, msg)
		if err != nil {
			return fmt.Errorf("executing tools: %w", err)
		}
		if !used {
			return nil
		}
		params.Messages = append(params.Messages, msg.ToParam(), reply)
	}
	return errors.New("the model was still asking for tools after the maximum number of turns")
}
