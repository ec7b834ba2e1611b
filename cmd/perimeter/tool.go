package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/perimeter-sdk/perimeter/toolexec"
)

func init() {
	register(&command{
		name:    "tool",
		summary: "execute agent tool calls (JSON lines on stdin) in one sandbox",
		run:     toolCmd,
	})
}

// maxToolLine bounds one line of input (a tool use with, say, a whole file
// to create).
const maxToolLine = 64 << 20

func toolCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("perimeter tool", flag.ContinueOnError)
	fs.SetOutput(stderr)
	provider := fs.String("provider", defaultProvider, "provider `URL`")
	memory := fs.String("memory", "", "host `directory` backing the memory tool's /memories (default: memory tool off)")
	tools := fs.String("tools", "", "comma-separated tool `names` to enable (default: bash, the text editor and the file tools, plus memory with --memory)")
	bashTimeout := fs.Duration("bash-timeout", toolexec.DefaultBashTimeout, "per-call timeout of the bash tool")
	keep := fs.Bool("keep", false, "do not terminate the sandbox afterwards; print its ID on stderr")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: perimeter tool [flags] < tool_uses.jsonl > tool_results.jsonl")
		fmt.Fprintln(fs.Output(), "\nEach input line is a tool use, {\"id\":...,\"name\":...,\"input\":{...}};")
		fmt.Fprintln(fs.Output(), "each output line is its tool_result. All lines share one sandbox and one")
		fmt.Fprintln(fs.Output(), "bash session, as one conversation does.")
		fs.PrintDefaults()
	}
	pos, code, ok := parseFlags(fs, args, -1)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "perimeter tool: unexpected argument %q (tool uses are read from standard input)\n", pos[0])
		return 2
	}
	opts := &toolexec.Options{Bash: toolexec.BashOptions{Timeout: *bashTimeout}}
	if *tools != "" {
		opts.Tools = strings.Split(*tools, ",")
	}
	if *memory != "" {
		store, err := toolexec.HostDir(*memory)
		if err != nil {
			printErr(stderr, "perimeter", err)
			return 1
		}
		defer store.Close()
		opts.Memory = store
	}

	ss, code := newSession(ctx, *provider, *keep, nil, stderr)
	if ss == nil {
		return code
	}
	defer ss.close(ctx, stderr)
	ts, err := toolexec.New(ss.sb, opts)
	if err != nil {
		printErr(stderr, "perimeter", err)
		return 2
	}
	defer ts.Close()

	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 64<<10), maxToolLine)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		var use toolexec.ToolUse
		if err := json.Unmarshal([]byte(text), &use); err != nil {
			// Answer anyway, so that a script reading results line by line
			// stays in step with its input.
			res := toolexec.ToolResult{Content: []toolexec.Block{toolexec.TextBlock(fmt.Sprintf("Error: line %d is not a tool use: %v", line, err))}, IsError: true}
			if err := enc.Encode(res); err != nil {
				printErr(stderr, "perimeter", err)
				return 1
			}
			continue
		}
		res, err := ts.Execute(ctx, use)
		if encErr := enc.Encode(res); encErr != nil {
			fmt.Fprintf(stderr, "perimeter: %v\n", encErr)
			return 1
		}
		if err != nil {
			fmt.Fprintf(stderr, "perimeter: tool use %s (line %d): %v\n", use.ID, line, err)
			return 1
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(stderr, "perimeter: reading tool uses: %v\n", err)
		return 1
	}
	return 0
}
