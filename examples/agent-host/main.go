// Command agent-host is a small HTTP service that runs agent tasks: each
// task goes to the Anthropic Messages API with the bash and text editor
// tools, and the SDK's tool runner executes every tool call inside a
// Perimeter sandbox that belongs to the conversation. Progress streams back
// to the caller as Server-Sent Events.
//
//	export ANTHROPIC_API_KEY=...
//	go run . --provider local:// --listen 127.0.0.1:8080
//	curl -N localhost:8080/v1/tasks -d '{"task":"Write fizzbuzz.py and run it"}'
//
// A conversation keeps its sandbox (files, bash session) for follow-up
// tasks ({"conversation": ID, "task": ...}) until it has been idle for
// --idle; at most --max-sandboxes conversations live at once. Each tool
// call is logged (tool, duration, exit status, sandbox; never its input or
// output). SIGINT or SIGTERM stops accepting requests, lets running tasks
// finish for --grace, then cancels them and terminates every sandbox.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	_ "github.com/perimeter-sdk/perimeter/providers/local"
)

func main() {
	var cfg Config
	listen := flag.String("listen", "127.0.0.1:8080", "listen `address`")
	flag.StringVar(&cfg.Provider, "provider", "local://", "sandbox provider `URL`")
	flag.StringVar(&cfg.Model, "model", "claude-sonnet-4-5", "model `name`")
	flag.IntVar(&cfg.MaxModelCalls, "max-model-calls", 30, "Messages API calls allowed per task")
	flag.IntVar(&cfg.MaxSandboxes, "max-sandboxes", 8, "live conversations (one sandbox each) at once")
	flag.DurationVar(&cfg.IdleTimeout, "idle", 15*time.Minute, "terminate a conversation's sandbox after this long without a task")
	flag.DurationVar(&cfg.BashTimeout, "bash-timeout", 2*time.Minute, "bound on each bash command")
	grace := flag.Duration("grace", 30*time.Second, "on shutdown, how long running tasks may go on")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if os.Getenv("ANTHROPIC_API_KEY") == "" {
		log.Error("agent-host: ANTHROPIC_API_KEY is not set")
		os.Exit(1)
	}
	// AGENT_HOST_TOKEN, when set, is required of every caller as a bearer
	// token. Without it, anyone who reaches the listener can run commands in
	// sandboxes: keep the default loopback address or put auth in front.
	cfg.Token = os.Getenv("AGENT_HOST_TOKEN")
	cfg.Logger = log
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", *listen)
	if err == nil {
		err = serve(ctx, ln, *grace, cfg)
	}
	if err != nil {
		stop()
		log.Error("agent-host", "err", err)
		os.Exit(1)
	}
}

// serve serves on ln until ctx ends, then shuts down gracefully: no new
// connections, running tasks may go on for grace, then they are cancelled
// and every sandbox is terminated. It closes ln.
func serve(ctx context.Context, ln net.Listener, grace time.Duration, cfg Config) error {
	h, err := New(ctx, cfg)
	if err != nil {
		ln.Close()
		return err
	}
	log := h.log
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "provider", cfg.Provider)

	select {
	case err = <-served:
		err = fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
		log.Info("shutting down", "grace", grace.String())
		sctx, cancel := context.WithTimeout(context.Background(), grace)
		if serr := srv.Shutdown(sctx); serr != nil {
			log.Info("grace period over; cancelling the running tasks")
		}
		cancel()
	}
	// Cancels what still runs, terminates every sandbox.
	cerr := h.Close()
	srv.Close()
	return errors.Join(err, cerr)
}
