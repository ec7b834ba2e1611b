package environment

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	sdk "github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/lib/environments"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/anthropics/anthropic-sdk-go/v2/packages/param"
)

// WorkerOptions configures a [Worker].
type WorkerOptions struct {
	// EnvironmentID is the self-hosted environment to serve. Required.
	EnvironmentID string
	// EnvironmentKey is the environment's key. Required. Never logged.
	EnvironmentKey string
	// WorkerID identifies this worker to the API; empty: the SDK's default
	// (host name and random hex).
	WorkerID string
	// Workdir is the host directory under which each concurrent session
	// gets its own folder (slot-N) for the skills and memory stores the SDK
	// downloads. Required; created if missing.
	Workdir string
	// MaxSessions bounds the sessions served at once, each in its own
	// sandbox. Zero means 1.
	MaxSessions int
	// MaxFileBytes, MaxIdle, MemorySyncInterval and MemorySyncDeletions are
	// passed to the SDK's EnvironmentWorkerOptions.
	MaxFileBytes        int64
	MaxIdle             *time.Duration
	MemorySyncInterval  time.Duration
	MemorySyncDeletions environments.MemoryDeleteMode
	// RequestOptions are applied to every request (a base URL, a proxy).
	RequestOptions []option.RequestOption
	// Logger: nil means slog.Default().
	Logger *slog.Logger
	// Sandboxes configures the per-session sandboxes; its Logger defaults
	// to Logger.
	Sandboxes Options
}

// Worker serves an environment's work queue with the SDK's WorkPoller and
// EnvironmentWorker.HandleItem, running each session's tools in its own
// sandbox. HandleItem reads ANTHROPIC_WORK_SECRET and
// ANTHROPIC_WORK_LAST_HEARTBEAT from the process environment for an item
// that lacks them; they must not be set in a worker's environment
// (perimeter worker clears them).
type Worker struct {
	client sdk.Client
	opts   WorkerOptions
	log    *slog.Logger
	sb     *Sandboxes
}

// NewWorker returns a Worker; it checks opts and makes nothing yet.
func NewWorker(client sdk.Client, opts WorkerOptions) (*Worker, error) {
	switch {
	case opts.EnvironmentID == "":
		return nil, errors.New("environment: WorkerOptions.EnvironmentID is required")
	case opts.EnvironmentKey == "":
		return nil, errors.New("environment: WorkerOptions.EnvironmentKey is required")
	case opts.Workdir == "":
		return nil, errors.New("environment: WorkerOptions.Workdir is required")
	case opts.MaxSessions < 0:
		return nil, fmt.Errorf("environment: negative WorkerOptions.MaxSessions %d", opts.MaxSessions)
	case opts.MemorySyncInterval > 0 && opts.MemorySyncInterval < environments.MinMemorySyncInterval:
		return nil, fmt.Errorf("environment: WorkerOptions.MemorySyncInterval %v is below the SDK's minimum %v", opts.MemorySyncInterval, environments.MinMemorySyncInterval)
	}
	if opts.MaxSessions == 0 {
		opts.MaxSessions = 1
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if opts.Sandboxes.Logger == nil {
		opts.Sandboxes.Logger = log
	}
	wd, err := filepath.Abs(opts.Workdir)
	if err != nil {
		return nil, err
	}
	opts.Workdir = wd
	sb, err := New(opts.Sandboxes)
	if err != nil {
		return nil, err
	}
	return &Worker{client: client, opts: opts, log: log, sb: sb}, nil
}

// Sandboxes returns the worker's sandboxes.
func (w *Worker) Sandboxes() *Sandboxes { return w.sb }

// Run polls for work and serves it until ctx ends. Then it stops claiming,
// lets the tool calls that are running finish (up to
// Options.DrainTimeout) and post their results, ends every session (the
// SDK flushes memory and stops each work item it still holds) and
// terminates every sandbox. A cancelled ctx returns nil; an error the
// poller cannot recover from (a rejected key) is returned. A Worker runs
// once: its sandboxes are closed when Run returns.
func (w *Worker) Run(ctx context.Context) error {
	if err := os.MkdirAll(w.opts.Workdir, 0o700); err != nil {
		return fmt.Errorf("environment: workdir: %w", err)
	}
	items, cancelItems := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelItems()
	stop := context.AfterFunc(ctx, func() {
		w.log.Info("shutting down: finishing running tool calls")
		w.sb.Drain()
		cancelItems()
	})
	defer stop()

	poller := environments.NewWorkPoller(ctx, w.client, environments.WorkPollerOptions{
		EnvironmentID:  w.opts.EnvironmentID,
		EnvironmentKey: w.opts.EnvironmentKey,
		WorkerID:       w.opts.WorkerID,
		RequestOptions: w.opts.RequestOptions,
		AutoStop:       param.NewOpt(false),
		Logger:         w.log,
	})
	slots := make(chan int, w.opts.MaxSessions)
	for i := range w.opts.MaxSessions {
		slots <- i
	}
	var wg sync.WaitGroup
	for {
		var slot int
		select {
		case slot = <-slots:
		case <-ctx.Done():
		}
		if ctx.Err() != nil || !poller.Next() {
			break
		}
		work := poller.Current()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { slots <- slot }()
			w.handle(items, slot, work)
		}()
	}
	wg.Wait()
	_ = poller.Close()
	cerr := w.sb.Close(context.WithoutCancel(ctx))
	if err := poller.Err(); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return errors.Join(err, cerr)
	}
	return cerr
}

// handle serves one claimed work item.
func (w *Worker) handle(ctx context.Context, slot int, work *sdk.BetaSelfHostedWork) {
	m := w.opts.Sandboxes.Metrics
	m.add(func(m *Metrics) *atomic.Int64 { return &m.WorkItems }, 1)
	log := w.log.With(slog.String("work_id", work.ID), slog.String("session_id", work.Data.ID))
	if string(work.Data.Type) != "session" {
		// Health checks and other items carry no session: done at once.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		opts := append(append([]option.RequestOption{}, w.opts.RequestOptions...), option.WithHeaderDel("X-Api-Key"), option.WithAuthToken(w.opts.EnvironmentKey))
		_, err := w.client.Beta.Environments.Work.Stop(sctx, work.ID, sdk.BetaEnvironmentWorkStopParams{
			EnvironmentID:                 work.EnvironmentID,
			BetaSelfHostedWorkStopRequest: sdk.BetaSelfHostedWorkStopRequestParam{Force: param.NewOpt(true)},
		}, opts...)
		log.Info("non-session work item stopped", slog.String("type", string(work.Data.Type)), slog.Any("error", err))
		return
	}
	dir := filepath.Join(w.opts.Workdir, fmt.Sprintf("slot-%d", slot))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		log.Error("session folder", slog.Any("error", err))
	}
	start := time.Now()
	log.Info("session started", slog.Int("slot", slot))
	ew := environments.NewEnvironmentWorker(w.client, environments.EnvironmentWorkerOptions{
		EnvironmentID:       w.opts.EnvironmentID,
		EnvironmentKey:      w.opts.EnvironmentKey,
		WorkerID:            w.opts.WorkerID,
		Workdir:             dir,
		MaxFileBytes:        w.opts.MaxFileBytes,
		ToolsFunc:           w.sb.ToolsFunc(ctx, work.Data.ID),
		MaxIdle:             w.opts.MaxIdle,
		MemorySyncInterval:  w.opts.MemorySyncInterval,
		MemorySyncDeletions: w.opts.MemorySyncDeletions,
		RequestOptions:      w.opts.RequestOptions,
		Logger:              log,
	})
	err := ew.HandleItem(ctx, environments.HandleItemOptions{
		WorkID:         work.ID,
		EnvironmentID:  work.EnvironmentID,
		SessionID:      work.Data.ID,
		EnvironmentKey: w.opts.EnvironmentKey,
		WorkSecret:     work.Secret,
	})
	if err != nil {
		m.add(func(m *Metrics) *atomic.Int64 { return &m.WorkItemFailures }, 1)
		log.Error("session ended with an error", slog.Duration("duration", time.Since(start)), slog.Any("error", err))
		return
	}
	log.Info("session ended", slog.Duration("duration", time.Since(start)))
}
