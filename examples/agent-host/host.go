package main

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	sdk "github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/toolexec"
	perimeter "github.com/perimeter-sdk/perimeter/toolexec/anthropic"
)

// Config is what a Host needs. Zero fields take the defaults noted.
type Config struct {
	// Provider is the sandbox provider URL, such as "local://". Required.
	Provider string
	// Model is the model name. Default: claude-sonnet-4-5.
	Model string
	// MaxTokens bounds each model reply. Default: 4096.
	MaxTokens int64
	// MaxModelCalls bounds the Messages API calls of one task. Default: 30.
	MaxModelCalls int
	// MaxSandboxes bounds the live conversations (one sandbox each); a new
	// conversation beyond it is refused with 503. Default: 8.
	MaxSandboxes int
	// IdleTimeout is how long a conversation with no task running keeps
	// its sandbox; then the sandbox is terminated and the conversation
	// forgotten. Default: 15 minutes.
	IdleTimeout time.Duration
	// BashTimeout bounds each bash command. Default: toolexec's (120 s).
	BashTimeout time.Duration
	// Token, when set, is the bearer token every request must carry
	// (Authorization: Bearer TOKEN).
	Token string
	// Logger receives the service's log; nil means slog.Default().
	Logger *slog.Logger
	// ClientOptions are extra Anthropic client options (tests point the
	// base URL at a fake). The API key comes from ANTHROPIC_API_KEY unless
	// an option sets one.
	ClientOptions []option.RequestOption
}

// maxRequestBytes bounds a task request's body.
const maxRequestBytes = 1 << 20

// summaryBytes bounds the output excerpt a tool_result event carries.
const summaryBytes = 400

// keepAlive is how often an idle event stream gets an SSE comment, so that
// proxies do not close it while a long command runs.
const keepAlive = 15 * time.Second

// systemPrompt tells the model where it may write.
const systemPrompt = "You work in a sandbox. Create files under your working directory " +
	"(run pwd in bash to see it) or /tmp; other paths may be read-only."

// Host serves agent tasks over HTTP: each conversation has its own sandbox
// and bash session, kept between tasks until it has been idle for
// Config.IdleTimeout. It is an http.Handler; Close it to terminate every
// sandbox.
type Host struct {
	cfg      Config
	log      *slog.Logger
	provider *sandbox.Provider
	client   sdk.Client
	mux      *http.ServeMux

	mu       sync.Mutex
	convs    map[string]*conversation
	creating int  // sandboxes being created, counted against MaxSandboxes
	closed   bool // Close has begun: no new task starts
	turns    sync.WaitGroup

	stopReaper chan struct{}
	reaperDone chan struct{}
}

// conversation is one user's session: a sandbox, the toolset on it (one
// bash session) and the message history.
type conversation struct {
	id string
	sb *sandbox.Sandbox
	ts *toolexec.Toolset

	// Guarded by Host.mu.
	busy     bool
	cancel   context.CancelCauseFunc // of the running task
	lastUsed time.Time
	history  []sdk.BetaMessageParam
	// interrupted says why the previous task ended early, for the next.
	interrupted string
}

var (
	errShutdown   = errors.New("the service is shutting down")
	errDisconnect = errors.New("the caller disconnected")
)

// New opens the provider and returns a Host whose reaper is running.
func New(ctx context.Context, cfg Config) (*Host, error) {
	if cfg.Provider == "" {
		return nil, errors.New("agent-host: Config.Provider is empty; give a sandbox provider URL such as local://")
	}
	if cfg.Model == "" {
		cfg.Model = "claude-sonnet-4-5"
	}
	if cfg.MaxTokens <= 0 {
		cfg.MaxTokens = 4096
	}
	if cfg.MaxModelCalls <= 0 {
		cfg.MaxModelCalls = 30
	}
	if cfg.MaxSandboxes <= 0 {
		cfg.MaxSandboxes = 8
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 15 * time.Minute
	}
	if cfg.BashTimeout < 0 {
		return nil, fmt.Errorf("agent-host: negative BashTimeout %v", cfg.BashTimeout)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	p, err := sandbox.Open(ctx, cfg.Provider)
	if err != nil {
		return nil, fmt.Errorf("agent-host: opening the sandbox provider: %w", err)
	}
	h := &Host{
		cfg:        cfg,
		log:        cfg.Logger,
		provider:   p,
		client:     sdk.NewClient(cfg.ClientOptions...),
		convs:      map[string]*conversation{},
		stopReaper: make(chan struct{}),
		reaperDone: make(chan struct{}),
	}
	h.mux = http.NewServeMux()
	h.mux.HandleFunc("POST /v1/tasks", h.handleTask)
	h.mux.HandleFunc("DELETE /v1/conversations/{id}", h.handleDelete)
	h.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
	})
	go h.reaper()
	return h, nil
}

// ServeHTTP serves the API:
//
//	POST   /v1/tasks               {"task": "...", "conversation": "ID"?} → text/event-stream
//	DELETE /v1/conversations/{id}  terminate the conversation's sandbox
//	GET    /healthz
func (h *Host) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Token != "" {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(h.cfg.Token)) != 1 {
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
	}
	h.mux.ServeHTTP(w, r)
}

// taskRequest is the body of POST /v1/tasks.
type taskRequest struct {
	// Task is the user's message.
	Task string `json:"task"`
	// Conversation continues an earlier conversation (the ID its first
	// event gave); empty starts a new one with a new sandbox.
	Conversation string `json:"conversation,omitempty"`
}

func (h *Host) handleTask(w http.ResponseWriter, r *http.Request) {
	var req taskRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "the body must be a JSON object {\"task\": string, \"conversation\"?: string}: "+err.Error())
		return
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "the body must hold one JSON object")
		return
	}
	if strings.TrimSpace(req.Task) == "" {
		writeError(w, http.StatusBadRequest, "task is empty")
		return
	}

	// The task's context ends when the caller disconnects or Close cancels
	// it (with errShutdown as the cause).
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	var conv *conversation
	if req.Conversation == "" {
		c, status, msg := h.newConversation(r.Context(), cancel)
		if c == nil {
			if status == http.StatusServiceUnavailable {
				w.Header().Set("Retry-After", "30")
			}
			writeError(w, status, msg)
			return
		}
		conv = c
	} else {
		c, status, msg := h.claim(req.Conversation, cancel)
		if c == nil {
			writeError(w, status, msg)
			return
		}
		conv = c
	}
	// claim and newConversation registered the task with h.turns.
	defer h.turns.Done()

	ev := newEventStream(w)
	stopPing := ev.keepAlive(keepAlive)
	ev.send("conversation", map[string]any{"id": conv.id})
	reason, err := h.runTask(ctx, conv, req.Task, ev)
	stopPing()

	cause := context.Cause(ctx)
	if r.Context().Err() != nil {
		cause = errDisconnect
	}
	interrupted := ""
	switch {
	case err == nil:
	case cause != nil:
		interrupted = cause.Error()
	case reason == "max_model_calls":
		interrupted = err.Error()
	default:
		interrupted = "the service could not complete it"
	}
	h.mu.Lock()
	conv.busy = false
	conv.cancel = nil
	conv.lastUsed = time.Now()
	conv.interrupted = interrupted
	h.mu.Unlock()

	attrs := []any{"conversation", conv.id, "sandbox", conv.sb.ID()}
	switch {
	case err == nil:
		h.log.Info("task ended", append(attrs, "stop_reason", reason)...)
		ev.send("done", map[string]any{"stop_reason": reason})
	case cause != nil:
		h.log.Info("task cancelled", append(attrs, "cause", cause.Error())...)
		ev.send("error", map[string]any{"error": "task cancelled: " + cause.Error()})
	default:
		h.log.Error("task failed", append(attrs, "err", err)...)
		ev.send("error", map[string]any{"error": err.Error()})
	}
}

// newConversation creates a sandbox and a toolset for a new conversation,
// unless the sandbox limit is reached. It returns the conversation marked
// busy, or an HTTP status and message.
func (h *Host) newConversation(ctx context.Context, cancel context.CancelCauseFunc) (*conversation, int, string) {
	h.mu.Lock()
	switch {
	case h.closed:
		h.mu.Unlock()
		return nil, http.StatusServiceUnavailable, errShutdown.Error()
	case len(h.convs)+h.creating >= h.cfg.MaxSandboxes:
		n := len(h.convs) + h.creating
		h.mu.Unlock()
		return nil, http.StatusServiceUnavailable, fmt.Sprintf("all %d sandboxes are in use (%d conversations); retry later or continue an existing conversation", h.cfg.MaxSandboxes, n)
	}
	h.creating++
	h.turns.Add(1)
	h.mu.Unlock()

	conv, err := h.create(ctx)

	h.mu.Lock()
	h.creating--
	if err == nil && h.closed {
		err = errShutdown
	}
	if err != nil {
		h.mu.Unlock()
		h.turns.Done()
		if conv != nil {
			h.terminate(conv, "shutdown")
		}
		if errors.Is(err, errShutdown) {
			return nil, http.StatusServiceUnavailable, err.Error()
		}
		h.log.Error("creating a sandbox", "err", err)
		return nil, http.StatusInternalServerError, "could not create a sandbox; the service log has the cause"
	}
	conv.busy = true
	conv.cancel = cancel
	conv.lastUsed = time.Now()
	h.convs[conv.id] = conv
	h.mu.Unlock()
	h.log.Info("conversation started", "conversation", conv.id, "sandbox", conv.sb.ID())
	return conv, 0, ""
}

// create makes the sandbox and toolset of a new conversation. On an error
// after the sandbox exists, it returns the conversation too, for
// termination.
func (h *Host) create(ctx context.Context) (*conversation, error) {
	id, err := newID()
	if err != nil {
		return nil, err
	}
	sb, err := h.provider.Create(ctx, &sandbox.Spec{Labels: map[string]string{"app": "agent-host", "conversation": id}})
	if err != nil {
		return nil, err
	}
	conv := &conversation{id: id, sb: sb}
	ts, err := toolexec.New(sb, &toolexec.Options{
		Tools: []string{toolexec.BashName, toolexec.EditorName},
		Bash:  toolexec.BashOptions{Timeout: h.cfg.BashTimeout},
	})
	if err != nil {
		return conv, err
	}
	conv.ts = ts
	return conv, nil
}

// claim marks an existing conversation busy for a new task, or returns an
// HTTP status and message.
func (h *Host) claim(id string, cancel context.CancelCauseFunc) (*conversation, int, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, http.StatusServiceUnavailable, errShutdown.Error()
	}
	conv := h.convs[id]
	if conv == nil {
		return nil, http.StatusNotFound, "no conversation " + strconv.Quote(id) + " (it never existed, was deleted, or was idle too long and its sandbox was reaped); start a new one without \"conversation\""
	}
	if conv.busy {
		return nil, http.StatusConflict, "conversation " + id + " is running a task; wait for its done event"
	}
	conv.busy = true
	conv.cancel = cancel
	conv.lastUsed = time.Now()
	h.turns.Add(1)
	return conv, 0, ""
}

func (h *Host) handleDelete(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	h.mu.Lock()
	conv := h.convs[id]
	switch {
	case conv == nil:
		h.mu.Unlock()
		writeError(w, http.StatusNotFound, "no conversation "+strconv.Quote(id))
		return
	case conv.busy:
		h.mu.Unlock()
		writeError(w, http.StatusConflict, "conversation "+id+" is running a task; disconnect from its event stream first")
		return
	}
	delete(h.convs, id)
	h.mu.Unlock()
	h.terminate(conv, "deleted")
	w.WriteHeader(http.StatusNoContent)
}

// runTask runs one task of conv with the SDK's tool runner, sending events
// to ev. It returns the last reply's stop reason, or a short reason and the
// error that ended the task early.
func (h *Host) runTask(ctx context.Context, conv *conversation, task string, ev *eventStream) (string, error) {
	h.mu.Lock()
	messages := slices.Clone(conv.history)
	note := conv.interrupted
	h.mu.Unlock()
	messages = appendUserTurn(messages, task, note)

	t := &taskState{host: h, conv: conv, ev: ev, pending: map[string][]string{}}
	runner := h.client.Beta.Messages.NewToolRunner(t.tools(), sdk.BetaToolRunnerParams{
		BetaMessageNewParams: sdk.BetaMessageNewParams{
			Model:     sdk.Model(h.cfg.Model),
			MaxTokens: h.cfg.MaxTokens,
			System:    []sdk.BetaTextBlockParam{{Text: systemPrompt}},
			Messages:  messages,
			// The built-in definitions (bash_20250124,
			// text_editor_20250728), not custom tools.
			Tools: perimeter.BetaToolDefinitions(conv.ts),
		},
		MaxIterations: h.cfg.MaxModelCalls,
		// This service keeps the history itself, so that a follow-up task
		// can continue it.
		DisableThread: true,
	})
	defer func() {
		h.mu.Lock()
		conv.history = runner.Messages()
		h.mu.Unlock()
	}()

	var last *sdk.BetaMessage
	for {
		msg, err := runner.NextMessage(ctx)
		if err != nil {
			return "error", err
		}
		if msg == nil {
			break
		}
		last = msg
		t.announce(msg)
	}
	if last == nil {
		return "", errors.New("the model was not called")
	}
	if last.StopReason == sdk.BetaStopReasonToolUse {
		return "max_model_calls", fmt.Errorf("the model still asked for tools after %d model calls (the limit of one task)", h.cfg.MaxModelCalls)
	}
	return string(last.StopReason), nil
}

// appendUserTurn adds the user's task to the history. If the previous task
// ended early, its unanswered tool calls get error results first (the API
// requires them) and a note says why; a history ending with a user message
// (tool results whose reply never came) gets the task in that message.
func appendUserTurn(history []sdk.BetaMessageParam, task, interrupted string) []sdk.BetaMessageParam {
	var blocks []sdk.BetaContentBlockParamUnion
	if n := len(history); n > 0 && history[n-1].OfAssistant != nil {
		for _, b := range history[n-1].OfAssistant.Content {
			if b.OfToolUse != nil {
				blocks = append(blocks, sdk.NewBetaToolResultBlock(b.OfToolUse.ID,
					"Error: not run: the previous task ended before this tool call ran ("+orUnknown(interrupted)+")", true))
			}
		}
	}
	if interrupted != "" {
		blocks = append(blocks, sdk.NewBetaTextBlock("(The previous task ended early: "+interrupted+".)"))
	}
	blocks = append(blocks, sdk.NewBetaTextBlock(task))
	if n := len(history); n > 0 && history[n-1].OfUser != nil {
		last := *history[n-1].OfUser // a copy: the stored history stays as it was
		last.Content = append(slices.Clone(last.Content), blocks...)
		history[n-1] = sdk.BetaMessageParam{OfUser: &last}
		return history
	}
	return append(history, sdk.NewBetaUserMessage(blocks...))
}

func orUnknown(s string) string {
	if s == "" {
		return "reason unknown"
	}
	return s
}

// taskState is one running task: it streams the model's turns and the tool
// calls and logs each call.
type taskState struct {
	host *Host
	conv *conversation
	ev   *eventStream

	mu sync.Mutex
	// pending maps a tool call's name and input, as the runner passes
	// them to a tool, to the ids of the calls not yet run: the runner does
	// not pass the id.
	pending map[string][]string
}

func callKey(name string, input []byte) string { return name + "\x00" + string(input) }

// announce streams a reply's text and tool calls and records the calls'
// ids for the tools.
func (t *taskState) announce(msg *sdk.BetaMessage) {
	for _, b := range msg.Content {
		switch b.Type {
		case "text":
			t.ev.send("text", map[string]any{"text": b.Text})
		case "tool_use":
			use := b.AsToolUse()
			input, err := json.Marshal(use.Input) // as the runner does
			if err != nil {
				continue
			}
			t.mu.Lock()
			k := callKey(use.Name, input)
			t.pending[k] = append(t.pending[k], use.ID)
			t.mu.Unlock()
			t.ev.send("tool_call", map[string]any{"id": use.ID, "name": use.Name, "input": json.RawMessage(input)})
		}
	}
}

// tools returns the conversation's tools wrapped to stream and log each
// call.
func (t *taskState) tools() []sdk.BetaTool {
	inner := perimeter.BetaTools(t.conv.ts)
	out := make([]sdk.BetaTool, len(inner))
	for i, tool := range inner {
		out[i] = &observedTool{BetaTool: tool, task: t}
	}
	return out
}

// observedTool runs a tool through the toolset and reports the call: an
// event with a summary of the result to the caller, and a log record with
// the tool, duration and exit status (never the input or output).
type observedTool struct {
	sdk.BetaTool
	task *taskState
}

// Execute runs the tool and reports it.
func (o *observedTool) Execute(ctx context.Context, input json.RawMessage) ([]sdk.BetaToolResultBlockParamContentUnion, error) {
	t := o.task
	t.mu.Lock()
	k := callKey(o.Name(), input)
	var id string
	if ids := t.pending[k]; len(ids) > 0 {
		id, t.pending[k] = ids[0], ids[1:]
	}
	t.mu.Unlock()

	start := time.Now()
	content, err := o.BetaTool.Execute(ctx, input)
	d := time.Since(start)

	var text string
	if err != nil {
		text = err.Error()
	} else {
		var sb strings.Builder
		for _, c := range content {
			if c.OfText != nil {
				sb.WriteString(c.OfText.Text)
			}
		}
		text = sb.String()
	}
	status := exitStatus(o.Name(), text, err, ctx.Err())
	t.host.log.Info("tool call",
		"conversation", t.conv.id, "sandbox", t.conv.sb.ID(),
		"tool", o.Name(), "tool_use_id", id,
		"duration_ms", float64(d.Microseconds())/1000, "exit", status)
	summary := text
	if len(summary) > summaryBytes {
		summary = strings.ToValidUTF8(summary[:summaryBytes], "") + "…"
	}
	t.ev.send("tool_result", map[string]any{
		"id": id, "name": o.Name(), "is_error": err != nil, "exit": status,
		"duration_ms": d.Milliseconds(), "output_bytes": len(text), "summary": summary,
	})
	return content, err
}

var exitCodeLine = regexp.MustCompile(`(?:^|\n)exit code: (-?\d+)$`)

// exitStatus describes how a tool call ended, for the log: for bash the
// command's exit code ("0", "2"), "timeout" or "error" (the shell failed);
// for other tools "ok" or "error"; "cancelled" when the task's context
// ended during the call.
func exitStatus(tool, text string, err, ctxErr error) string {
	switch {
	case err == nil && tool == toolexec.BashName:
		return "0"
	case err == nil:
		return "ok"
	case ctxErr != nil:
		return "cancelled"
	case tool != toolexec.BashName:
		return "error"
	}
	if m := exitCodeLine.FindStringSubmatch(text); m != nil {
		return m[1]
	}
	if strings.Contains(text, "\n[timed out after ") || strings.HasPrefix(text, "[timed out after ") {
		return "timeout"
	}
	return "error"
}

// reaper terminates the sandboxes of conversations idle for longer than
// Config.IdleTimeout.
func (h *Host) reaper() {
	defer close(h.reaperDone)
	every := min(max(h.cfg.IdleTimeout/4, 10*time.Millisecond), time.Minute)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-h.stopReaper:
			return
		case now := <-tick.C:
			h.reapIdle(now)
		}
	}
}

// reapIdle terminates every conversation not busy and last used more than
// Config.IdleTimeout before now.
func (h *Host) reapIdle(now time.Time) {
	var idle []*conversation
	h.mu.Lock()
	for id, c := range h.convs {
		if !c.busy && now.Sub(c.lastUsed) > h.cfg.IdleTimeout {
			idle = append(idle, c)
			delete(h.convs, id)
		}
	}
	h.mu.Unlock()
	for _, c := range idle {
		h.terminate(c, "idle")
	}
}

// terminate ends a conversation's bash session and sandbox. The
// conversation is no longer in h.convs.
func (h *Host) terminate(c *conversation, why string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := c.sb.Terminate(ctx)
	if c.ts != nil {
		c.ts.Close() // after the sandbox: its shell is gone already
	}
	if err != nil {
		h.log.Error("terminating a sandbox", "conversation", c.id, "sandbox", c.sb.ID(), "reason", why, "err", err)
		return
	}
	h.log.Info("sandbox terminated", "conversation", c.id, "sandbox", c.sb.ID(), "reason", why)
}

// Close refuses new tasks, cancels the running ones and waits for them to
// end, terminates every conversation's sandbox and closes the provider.
// For a graceful stop, shut the HTTP server down first (it waits for the
// running tasks) and call Close after it or when its grace period ends.
func (h *Host) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	for _, c := range h.convs {
		if c.cancel != nil {
			c.cancel(errShutdown)
		}
	}
	h.mu.Unlock()
	close(h.stopReaper)
	<-h.reaperDone
	h.turns.Wait()

	h.mu.Lock()
	convs := make([]*conversation, 0, len(h.convs))
	for id, c := range h.convs {
		convs = append(convs, c)
		delete(h.convs, id)
	}
	h.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range convs {
		wg.Go(func() { h.terminate(c, "shutdown") })
	}
	wg.Wait()
	return h.provider.Close()
}

func newID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return "conv_" + hex.EncodeToString(b[:]), nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"error": msg})
}
