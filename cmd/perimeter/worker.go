package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	sdk "github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/toolexec"
	"github.com/perimeter-sdk/perimeter/toolexec/anthropic/environment"
)

func init() {
	register(&command{
		name:    "worker",
		summary: "serve a Claude Managed Agents self-hosted environment, each session in its own sandbox",
		run:     workerCmd,
	})
}

// environmentKeyVar is where perimeter worker reads the environment key.
const environmentKeyVar = "ANTHROPIC_ENVIRONMENT_KEY"

func workerCmd(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("perimeter worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	envID := fs.String("environment-id", "", "the self-hosted environment's `ID` (required)")
	provider := fs.String("provider", defaultProvider, "provider `URL` for the sessions' sandboxes")
	specFile := fs.String("spec", "", "JSON `file` with the sandbox spec (image, resources, network, workdir, ...)")
	maxSessions := fs.Int("max-sessions", 1, "sessions served at once, each in its own sandbox")
	keyFile := fs.String("key-file", "", "`file` holding the environment key (default: $"+environmentKeyVar+")")
	workdir := fs.String("workdir", "", "host `directory` for the sessions' skills and memory folders (default: a temporary directory)")
	grace := fs.Duration("grace", 0, "keep a session's sandbox this long after its work item ends, for the same session")
	drain := fs.Duration("drain-timeout", environment.DefaultDrainTimeout, "on SIGTERM, how long running tool calls may take to finish")
	bashTimeout := fs.Duration("bash-timeout", toolexec.DefaultBashTimeout, "per-call timeout of the bash tool")
	memorySync := fs.Duration("memory-sync", 0, "memory sync interval (0: the SDK's default, 15s; negative: no memory)")
	metricsAddr := fs.String("metrics", "", "serve Prometheus metrics at http://`ADDR`/metrics")
	baseURL := fs.String("base-url", "", "API base `URL` (default: the SDK's, which honours $ANTHROPIC_BASE_URL)")
	workerID := fs.String("worker-id", "", "worker `ID` reported to the API (default: host name and random hex)")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: perimeter worker --environment-id ID [--provider URL] [--spec FILE] [--max-sessions N] [flags]")
		fmt.Fprintln(stderr, "\nPolls the environment's work queue and runs each claimed session's tools")
		fmt.Fprintln(stderr, "(bash, read, write, edit, glob, grep) in its own sandbox. The environment key")
		fmt.Fprintln(stderr, "is read from $"+environmentKeyVar+" or --key-file, never from a flag.")
		fmt.Fprintln(stderr, "SIGTERM lets running tool calls finish, releases claimed work and")
		fmt.Fprintln(stderr, "terminates the sandboxes.")
		fs.PrintDefaults()
	}
	pos, code, ok := parseFlags(fs, args, -1)
	if !ok {
		return code
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "perimeter worker: "+format+"\n", a...)
		return code
	}
	switch {
	case len(pos) > 0:
		return fail(2, "unexpected argument %q", pos[0])
	case *envID == "":
		return fail(2, "--environment-id is required")
	case *maxSessions < 1:
		return fail(2, "--max-sessions must be at least 1, not %d", *maxSessions)
	case *logFormat != "text" && *logFormat != "json":
		return fail(2, "--log-format must be text or json, not %q", *logFormat)
	}
	key, err := environmentKey(*keyFile)
	if err != nil {
		return fail(2, "%v", err)
	}
	var spec *sandbox.Spec
	if *specFile != "" {
		if spec, err = readSpec(*specFile); err != nil {
			return fail(2, "%v", err)
		}
	}
	var h slog.Handler = slog.NewTextHandler(stderr, nil)
	if *logFormat == "json" {
		h = slog.NewJSONHandler(stderr, nil)
	}
	log := slog.New(h)
	// The SDK's HandleItem would take these for an item that lacks them:
	// they belong to one claimed item of another tool, never to this worker.
	for _, k := range []string{"ANTHROPIC_WORK_SECRET", "ANTHROPIC_WORK_LAST_HEARTBEAT"} {
		if _, ok := os.LookupEnv(k); ok {
			log.Warn("ignoring a per-item variable in the worker's environment", slog.String("variable", k))
			os.Unsetenv(k)
		}
	}

	p, err := sandbox.Open(ctx, *provider)
	if err != nil {
		return fail(1, "%v", err)
	}
	defer p.Close()
	if *workdir == "" {
		dir, err := os.MkdirTemp("", "perimeter-worker-")
		if err != nil {
			return fail(1, "%v", err)
		}
		defer os.RemoveAll(dir)
		*workdir = dir
	}
	metrics := &environment.Metrics{}
	if *metricsAddr != "" {
		ln, err := net.Listen("tcp", *metricsAddr)
		if err != nil {
			return fail(1, "metrics: %v", err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/metrics" {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			_ = metrics.WriteText(w)
		}), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln) //nolint:errcheck // ends with Close below
		defer srv.Close()
		fmt.Fprintf(stdout, "metrics at http://%s/metrics\n", ln.Addr())
	}

	clientOpts := []option.RequestOption{option.WithAuthToken(key)}
	if *baseURL != "" {
		clientOpts = append(clientOpts, option.WithBaseURL(*baseURL))
	}
	opts := environment.WorkerOptions{
		EnvironmentID:      *envID,
		EnvironmentKey:     key,
		WorkerID:           *workerID,
		Workdir:            *workdir,
		MaxSessions:        *maxSessions,
		MemorySyncInterval: *memorySync,
		Logger:             log,
		Sandboxes: environment.Options{
			Provider:     p,
			Spec:         spec,
			Tools:        &toolexec.Options{Bash: toolexec.BashOptions{Timeout: *bashTimeout}},
			Grace:        *grace,
			DrainTimeout: *drain,
			Logger:       log,
			Metrics:      metrics,
		},
	}
	w, err := environment.NewWorker(sdk.NewClient(clientOpts...), opts)
	if err != nil {
		return fail(2, "%v", err)
	}
	log.Info("worker started", slog.String("environment_id", *envID), slog.String("provider", p.Name()), slog.Int("max_sessions", *maxSessions))
	if err := w.Run(ctx); err != nil {
		return fail(1, "%v", err)
	}
	log.Info("worker stopped", slog.Int64("tool_calls", metrics.ToolCalls.Load()), slog.Int64("sessions", metrics.Sessions.Load()))
	return 0
}

// environmentKey reads the key from file, or else from the environment.
func environmentKey(file string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("--key-file: %w", err)
		}
		k := strings.TrimSpace(string(b))
		if k == "" {
			return "", fmt.Errorf("--key-file: %s is empty", file)
		}
		return k, nil
	}
	if k := strings.TrimSpace(os.Getenv(environmentKeyVar)); k != "" {
		return k, nil
	}
	return "", errors.New("no environment key: set $" + environmentKeyVar + " or pass --key-file")
}

// readSpec reads a sandbox spec from a JSON file; unknown fields are errors.
func readSpec(file string) (*sandbox.Spec, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("--spec: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var spec sandbox.Spec
	if err := dec.Decode(&spec); err != nil {
		return nil, fmt.Errorf("--spec %s: %w", file, err)
	}
	return &spec, nil
}
