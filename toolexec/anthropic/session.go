package anthropic

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	sdk "github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/tools/agenttoolset"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/toolexec"
)

// SessionTools returns [BetaTools] for ts that also implement io.Closer:
// closing any of them (once for all) closes ts and then calls release, if
// not nil, such as terminating the session's sandbox.
// agenttoolset.CloseAll, which the SDK's environment worker calls when a
// session ends, does that.
func SessionTools(ts *toolexec.Toolset, release func() error) []sdk.BetaTool {
	c := &sessionCloser{ts: ts, release: release}
	tools := BetaTools(ts)
	out := make([]sdk.BetaTool, len(tools))
	for i, t := range tools {
		out[i] = &closingTool{BetaTool: t, c: c}
	}
	return out
}

type sessionCloser struct {
	ts      *toolexec.Toolset
	release func() error
	once    sync.Once
	err     error
}

func (c *sessionCloser) close() error {
	c.once.Do(func() {
		c.err = c.ts.Close()
		if c.release != nil {
			c.err = errors.Join(c.err, c.release())
		}
	})
	return c.err
}

type closingTool struct {
	sdk.BetaTool
	c *sessionCloser
}

// Close ends the session's tools; see [SessionTools].
func (t *closingTool) Close() error { return t.c.close() }

// ToolsFunc returns a function for the SDK's environment worker
// (environments.EnvironmentWorkerOptions.ToolsFunc) that gives every claimed
// session its own sandbox, created from provider with spec, and a toolset on
// it made with opts (nil: the default tools, whose names include the
// agent_toolset_20260401 set: bash, read, write, edit, glob, grep). The worker
// closes the tools when the session ends, which terminates the sandbox.
//
// The session context's MaxFileBytes, when positive, bounds the read and edit
// tools unless opts sets FilesOptions.MaxFileBytes. The session's Workdir and
// AllowedRoots are host directories: what the worker downloads into them
// (skills, memory stores) is not copied into the sandbox, and what the agent
// writes in the sandbox is not synced back; run the worker with memory sync
// disabled. Package environment (toolexec/anthropic/environment) does both.
//
// If the sandbox or toolset cannot be made, every tool answers each call
// with an error naming the cause.
func ToolsFunc(ctx context.Context, provider *sandbox.Provider, spec *sandbox.Spec, opts *toolexec.Options) func(env *agenttoolset.AgentToolContext) []sdk.BetaTool {
	return func(env *agenttoolset.AgentToolContext) []sdk.BetaTool {
		o := toolexec.Options{}
		if opts != nil {
			o = *opts
		}
		if env != nil && env.MaxFileBytes > 0 && o.Files.MaxFileBytes == 0 {
			o.Files.MaxFileBytes = env.MaxFileBytes
		}
		sb, err := provider.Create(ctx, spec)
		if err != nil {
			return failingTools(fmt.Errorf("creating the session's sandbox: %w", err))
		}
		terminate := func() error {
			tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			return sb.Terminate(tctx)
		}
		ts, err := toolexec.New(sb, &o)
		if err != nil {
			terminate()
			return failingTools(err)
		}
		return SessionTools(ts, terminate)
	}
}

// failingTools stands in for a session whose sandbox could not be made.
func failingTools(err error) []sdk.BetaTool {
	var out []sdk.BetaTool
	for _, name := range []string{toolexec.BashName, toolexec.ReadName, toolexec.WriteName, toolexec.EditName, toolexec.GlobName, toolexec.GrepName} {
		out = append(out, &failingTool{name: name, err: err})
	}
	return out
}

type failingTool struct {
	name string
	err  error
}

func (t *failingTool) Name() string        { return t.name }
func (t *failingTool) Description() string { return "unavailable: " + t.err.Error() }
func (t *failingTool) InputSchema() sdk.BetaToolInputSchemaParam {
	return sdk.BetaToolInputSchemaParam{}
}
func (t *failingTool) Execute(context.Context, json.RawMessage) ([]sdk.BetaToolResultBlockParamContentUnion, error) {
	return nil, t.err
}
