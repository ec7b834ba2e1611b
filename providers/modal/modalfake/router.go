package modalfake

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	pb "github.com/modal-labs/libmodal/modal-go/proto/modal_proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/perimeter-sdk/perimeter/internal/procgroup"
)

// router implements modal.task_command_router.TaskCommandRouter.
type router struct {
	pb.UnimplementedTaskCommandRouterServer
	s *Server
}

// execProc is one command started with TaskExecStart.
type execProc struct {
	leader         *procgroup.Leader // the command's group, until reaped
	stdout, stderr *outBuf
	stdin          *inBuf
	done           chan struct{} // closed once reaped and output drained
	timer          *time.Timer

	mu     sync.Mutex
	code   *int32
	signal *int32
}

func (e *execProc) exited() bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}

// kill kills the command's process group.
func (e *execProc) kill() {
	if e.leader != nil {
		e.leader.Signal(syscall.SIGKILL)
	}
}

// outBuf keeps everything a command wrote to one stream, for offset reads.
type outBuf struct {
	mu     sync.Mutex
	data   []byte
	closed bool
	notify chan struct{} // closed and replaced on every change
}

func newOutBuf() *outBuf { return &outBuf{notify: make(chan struct{})} }

func (b *outBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.data = append(b.data, p...)
	close(b.notify)
	b.notify = make(chan struct{})
	return len(p), nil
}

func (b *outBuf) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	close(b.notify)
	b.notify = make(chan struct{})
}

// inBuf queues stdin written by offset and feeds it to the process.
type inBuf struct {
	mu       sync.Mutex
	received uint64
	pending  [][]byte
	eof      bool
	notify   chan struct{}
}

func (r *router) lookupExec(taskID, execID string) (*sandbox, *execProc, error) {
	sb, err := r.s.lookupTask(taskID)
	if err != nil {
		return nil, nil, err
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	e := sb.execs[execID]
	if e == nil {
		return nil, nil, status.Errorf(codes.NotFound, "exec '%s' not found in task '%s'", execID, taskID)
	}
	return sb, e, nil
}

// baseEnv is what every command starts with, before the secrets' variables.
func baseEnv(dir string) map[string]string {
	return map[string]string{
		"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME": dir,
		"LANG": "C.UTF-8",
	}
}

// TaskExecStart starts a command in the sandbox, in a process group of its own.
func (r *router) TaskExecStart(ctx context.Context, req *pb.TaskExecStartRequest) (*pb.TaskExecStartResponse, error) {
	s := r.s
	sb, err := s.runningTask(req.GetTaskId())
	if err != nil {
		return nil, err
	}
	args := req.GetCommandArgs()
	if len(args) == 0 {
		return nil, status.Error(codes.InvalidArgument, "command_args must not be empty")
	}
	if req.GetExecId() == "" {
		return nil, status.Error(codes.InvalidArgument, "exec_id is required")
	}
	if req.HasPtyInfo() && req.GetPtyInfo().GetEnabled() {
		return nil, status.Error(codes.Unimplemented, "modalfake: PTY execs are not faked")
	}
	dir := sb.workdir
	if req.HasWorkdir() {
		dir = req.GetWorkdir()
		if !filepath.IsAbs(dir) {
			return nil, status.Errorf(codes.InvalidArgument, "workdir must be an absolute path, got: %s", dir)
		}
		if !sb.isDir(dir) {
			return nil, status.Errorf(codes.InvalidArgument, "workdir %s does not exist or is not a directory", dir)
		}
	}
	s.mu.Lock()
	execEnv, err := s.secretEnv(req.GetSecretIds())
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}

	sb.mu.Lock()
	if sb.result != nil {
		sb.mu.Unlock()
		return nil, status.Errorf(codes.FailedPrecondition, "Task '%s' has already finished", sb.taskID)
	}
	if sb.execs[req.GetExecId()] != nil {
		// The exec id is the idempotency key: a retried start is
		// answered with the command already started.
		sb.mu.Unlock()
		return pb.TaskExecStartResponse_builder{}.Build(), nil
	}
	e, err := sb.startProcess(args, dir, sb.commandEnv(execEnv),
		req.GetStdoutConfig() == pb.TaskExecStdoutConfig_TASK_EXEC_STDOUT_CONFIG_PIPE,
		req.GetStderrConfig() == pb.TaskExecStderrConfig_TASK_EXEC_STDERR_CONFIG_PIPE)
	if err != nil {
		sb.mu.Unlock()
		return nil, status.Errorf(codes.Internal, "starting the command: %v", err)
	}
	sb.execs[req.GetExecId()] = e
	sb.mu.Unlock()
	if req.HasTimeoutSecs() && req.GetTimeoutSecs() > 0 {
		e.mu.Lock()
		e.timer = time.AfterFunc(time.Duration(req.GetTimeoutSecs())*time.Second, e.kill)
		e.mu.Unlock()
	}
	return pb.TaskExecStartResponse_builder{}.Build(), nil
}

// commandEnv is the environment of a command: the base, then the
// sandbox's secrets, then the command's own.
func (sb *sandbox) commandEnv(execEnv map[string]string) []string {
	env := baseEnv(sb.workdir)
	for _, m := range []map[string]string{sb.env, execEnv} {
		for k, v := range m {
			env[k] = v
		}
	}
	envList := make([]string, 0, len(env))
	for k, v := range env {
		envList = append(envList, k+"="+v)
	}
	sort.Strings(envList)
	return envList
}

// startProcess starts args in the sandbox's namespaces and root, in dir,
// in a process group of its own, with default signal dispositions (as a
// fresh container's processes have, whatever the fake's process ignores).
// A program that cannot be found exits 127, one that cannot run 126 (env's
// codes, a shell's). sb.mu is held or sb is not yet shared.
func (sb *sandbox) startProcess(args []string, dir string, env []string, pipeStdout, pipeStderr bool) (*execProc, error) {
	e := &execProc{
		stdout: newOutBuf(), stderr: newOutBuf(),
		stdin: &inBuf{notify: make(chan struct{})},
		done:  make(chan struct{}),
	}
	cmd := sb.h.command(dir, env, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if pipeStdout {
		cmd.Stdout = e.stdout
	}
	if pipeStderr {
		cmd.Stderr = e.stderr
	}
	cmd.WaitDelay = time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	e.leader = procgroup.Watch(cmd)
	go e.feedStdin(stdin)
	go func() {
		e.leader.Reap()
		e.mu.Lock()
		if e.timer != nil {
			e.timer.Stop()
		}
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			sig := int32(ws.Signal())
			e.signal = &sig
		} else {
			code := int32(cmd.ProcessState.ExitCode())
			e.code = &code
		}
		e.mu.Unlock()
		e.stdin.close()
		e.stdout.close()
		e.stderr.close()
		close(e.done)
	}()
	return e, nil
}

func (b *inBuf) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.eof {
		b.eof = true
		close(b.notify)
		b.notify = make(chan struct{})
	}
}

// feedStdin copies queued stdin to the process until EOF or until the
// process is gone. It is owned by the exec and ends with it.
func (e *execProc) feedStdin(w interface {
	Write([]byte) (int, error)
	Close() error
}) {
	defer w.Close()
	for {
		e.stdin.mu.Lock()
		for len(e.stdin.pending) == 0 && !e.stdin.eof {
			ch := e.stdin.notify
			e.stdin.mu.Unlock()
			<-ch
			e.stdin.mu.Lock()
		}
		chunks := e.stdin.pending
		e.stdin.pending = nil
		eof := e.stdin.eof
		e.stdin.mu.Unlock()
		for _, c := range chunks {
			if _, err := w.Write(c); err != nil {
				return
			}
		}
		if eof {
			return
		}
	}
}

// TaskExecStdinWrite queues stdin by offset (repeats are ignored); eof closes it.
func (r *router) TaskExecStdinWrite(ctx context.Context, req *pb.TaskExecStdinWriteRequest) (*pb.TaskExecStdinWriteResponse, error) {
	_, e, err := r.lookupExec(req.GetTaskId(), req.GetExecId())
	if err != nil {
		return nil, err
	}
	if e.exited() {
		// The process is gone; what it did not read is dropped.
		return pb.TaskExecStdinWriteResponse_builder{}.Build(), nil
	}
	b := e.stdin
	b.mu.Lock()
	defer b.mu.Unlock()
	off, data := req.GetOffset(), req.GetData()
	if off > b.received {
		return nil, status.Errorf(codes.InvalidArgument, "stdin offset %d is past the %d bytes received", off, b.received)
	}
	if skip := b.received - off; skip < uint64(len(data)) {
		if b.eof {
			return nil, status.Error(codes.FailedPrecondition, "stdin is closed")
		}
		chunk := append([]byte(nil), data[skip:]...)
		b.pending = append(b.pending, chunk)
		b.received += uint64(len(chunk))
	}
	if req.GetEof() {
		b.eof = true
	}
	close(b.notify)
	b.notify = make(chan struct{})
	return pb.TaskExecStdinWriteResponse_builder{}.Build(), nil
}

// maxChunk bounds one TaskExecStdioRead message.
const maxChunk = 1 << 20

// TaskExecStdioRead streams stdout or stderr from an offset until the command has exited and everything was sent.
func (r *router) TaskExecStdioRead(req *pb.TaskExecStdioReadRequest, stream grpc.ServerStreamingServer[pb.TaskExecStdioReadResponse]) error {
	_, e, err := r.lookupExec(req.GetTaskId(), req.GetExecId())
	if err != nil {
		return err
	}
	var b *outBuf
	switch req.GetFileDescriptor() {
	case pb.TaskExecStdioFileDescriptor_TASK_EXEC_STDIO_FILE_DESCRIPTOR_STDOUT:
		b = e.stdout
	case pb.TaskExecStdioFileDescriptor_TASK_EXEC_STDIO_FILE_DESCRIPTOR_STDERR:
		b = e.stderr
	default:
		return status.Errorf(codes.InvalidArgument, "invalid file descriptor %v", req.GetFileDescriptor())
	}
	off := req.GetOffset()
	ctx := stream.Context()
	for {
		b.mu.Lock()
		if off > uint64(len(b.data)) {
			b.mu.Unlock()
			return status.Errorf(codes.OutOfRange, "offset %d is past the end of the stream", off)
		}
		chunk := b.data[off:min(uint64(len(b.data)), off+maxChunk)]
		closed, notify := b.closed, b.notify
		b.mu.Unlock()
		if len(chunk) > 0 {
			if err := stream.Send(pb.TaskExecStdioReadResponse_builder{Data: chunk}.Build()); err != nil {
				return err
			}
			off += uint64(len(chunk))
			continue
		}
		if closed {
			return nil // end of stream
		}
		select {
		case <-notify:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

func (e *execProc) status() *pb.TaskExecWaitResponse {
	e.mu.Lock()
	defer e.mu.Unlock()
	return pb.TaskExecWaitResponse_builder{Code: e.code, Signal: e.signal}.Build()
}

// TaskExecWait waits for the command and reports its exit code or signal.
func (r *router) TaskExecWait(ctx context.Context, req *pb.TaskExecWaitRequest) (*pb.TaskExecWaitResponse, error) {
	_, e, err := r.lookupExec(req.GetTaskId(), req.GetExecId())
	if err != nil {
		return nil, err
	}
	select {
	case <-e.done:
		return e.status(), nil
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// TaskExecPoll reports the exit code or signal of a finished command, or nothing.
func (r *router) TaskExecPoll(ctx context.Context, req *pb.TaskExecPollRequest) (*pb.TaskExecPollResponse, error) {
	_, e, err := r.lookupExec(req.GetTaskId(), req.GetExecId())
	if err != nil {
		return nil, err
	}
	if !e.exited() {
		return pb.TaskExecPollResponse_builder{}.Build(), nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return pb.TaskExecPollResponse_builder{Code: e.code, Signal: e.signal}.Build(), nil
}

// isDir reports whether name, in the sandbox's view, is a directory.
func (sb *sandbox) isDir(name string) bool {
	f, err := sb.openFile(name, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}
