package modalfake_test

// Regression tests for fidelity bugs that Modal's official JavaScript SDK
// found (issue 12). They speak raw gRPC where the Go SDK would hide the
// difference.

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modal-labs/libmodal/modal-go"
	pb "github.com/modal-labs/libmodal/modal-go/proto/modal_proto"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// rawControlPlane returns a control-plane client and a context carrying the
// token metadata (and the auth token) the SDKs send.
func rawControlPlane(t *testing.T) (context.Context, pb.ModalClientClient) {
	t.Helper()
	conn, err := grpc.NewClient(strings.TrimPrefix(srv.URL, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	cp := pb.NewModalClientClient(conn)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-modal-token-id", srv.TokenID, "x-modal-token-secret", srv.TokenSecret)
	return ctx, cp
}

// fsOutput fetches a file request's output once, returning its batches.
func fsOutput(t *testing.T, ctx context.Context, cp pb.ModalClientClient, execID string) []*pb.FilesystemRuntimeOutputBatch {
	t.Helper()
	st, err := cp.ContainerFilesystemExecGetOutput(ctx, pb.ContainerFilesystemExecGetOutputRequest_builder{ExecId: execID, Timeout: 55}.Build())
	require.NoError(t, err)
	var out []*pb.FilesystemRuntimeOutputBatch
	for {
		b, err := st.Recv()
		if err == io.EOF {
			return out
		}
		require.NoError(t, err)
		out = append(out, b)
	}
}

func TestFileErrorsNeverComeWithEOFAndCanBeFetchedAgain(t *testing.T) {
	c := newClient(t)
	sb := newSandbox(t, c, nil)
	ctx, taskID, _, _ := rawClients(t, sb.SandboxID)
	_, cp := rawControlPlane(t)
	open := func(path, mode string) *pb.ContainerFilesystemExecResponse {
		resp, err := cp.ContainerFilesystemExec(ctx, pb.ContainerFilesystemExecRequest_builder{
			TaskId:          taskID,
			FileOpenRequest: pb.ContainerFileOpenRequest_builder{Path: path, Mode: mode}.Build(),
		}.Build())
		require.NoError(t, err)
		return resp
	}
	for _, path := range []string{"/no/such/file", "/tmp"} {
		resp := open(path, "r")
		for attempt := range 2 { // the official clients fetch again after an error
			batches := fsOutput(t, ctx, cp, resp.GetExecId())
			require.Len(t, batches, 1, "%s, fetch %d", path, attempt)
			assert.NotNil(t, batches[0].GetError(), "%s, fetch %d: an error", path, attempt)
			assert.False(t, batches[0].GetEof(), "%s, fetch %d: an error never comes with eof (the JS and Python clients read eof as success)", path, attempt)
		}
	}
	resp := open("/tmp/ok", "w")
	for attempt := range 2 {
		batches := fsOutput(t, ctx, cp, resp.GetExecId())
		require.Len(t, batches, 1)
		assert.True(t, batches[0].GetEof(), "fetch %d", attempt)
		assert.Nil(t, batches[0].GetError())
	}

	// Through the Go SDK the errors stay errors.
	_, err := sb.Open(context.Background(), "/no/such/file", "r")
	var fe modal.SandboxFilesystemError
	assert.ErrorAs(t, err, &fe)
}

func TestExecStartRetryWithTheSameIDAnswersTheSameCommand(t *testing.T) {
	c := newClient(t)
	sb := newSandbox(t, c, nil)
	ctx, taskID, rt, jwt := rawClients(t, sb.SandboxID)
	rctx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+jwt)
	req := pb.TaskExecStartRequest_builder{
		TaskId: taskID, ExecId: "exec-retried",
		CommandArgs:  []string{"sh", "-c", "echo once >> /tmp/count"},
		StdoutConfig: pb.TaskExecStdoutConfig_TASK_EXEC_STDOUT_CONFIG_PIPE,
		StderrConfig: pb.TaskExecStderrConfig_TASK_EXEC_STDERR_CONFIG_PIPE,
	}.Build()
	_, err := rt.TaskExecStart(rctx, req)
	require.NoError(t, err)
	_, err = rt.TaskExecStart(rctx, req)
	require.NoError(t, err, "a retried start with the same exec id is not an error")
	w, err := rt.TaskExecWait(rctx, pb.TaskExecWaitRequest_builder{TaskId: taskID, ExecId: "exec-retried"}.Build())
	require.NoError(t, err)
	assert.Equal(t, int32(0), w.GetCode())
	p, err := sb.Exec(context.Background(), []string{"cat", "/tmp/count"}, nil)
	require.NoError(t, err)
	out, err := io.ReadAll(p.Stdout)
	require.NoError(t, err)
	assert.Equal(t, "once\n", string(out), "the command ran once")
}

func TestSandboxRunsItsEntrypointAndEndsWithIt(t *testing.T) {
	c := newClient(t)
	for _, tc := range []struct {
		cmd  []string
		code int
	}{
		{[]string{"sh", "-c", "exit 7"}, 7},
		{[]string{"true"}, 0},
		{[]string{"sh", "-c", "kill -TERM $$"}, 128 + 15},
	} {
		sb := newSandbox(t, c, &modal.SandboxCreateParams{Command: tc.cmd})
		code, err := sb.Wait(context.Background())
		require.NoError(t, err)
		assert.Equal(t, tc.code, code, "%v", tc.cmd)
		got, ok := srv.Sandbox(sb.SandboxID)
		require.True(t, ok)
		assert.True(t, got.Finished)
	}
}

func TestAuthTokenIsOptionalButChecked(t *testing.T) {
	ctx, cp := rawControlPlane(t)
	_, err := cp.SandboxList(ctx, pb.SandboxListRequest_builder{}.Build())
	assert.NoError(t, err, "token id and secret suffice, as on the service")
	_, err = cp.SandboxList(metadata.AppendToOutgoingContext(ctx, "x-modal-auth-token", "forged"), pb.SandboxListRequest_builder{}.Build())
	assert.Equal(t, codes.Unauthenticated, status.Code(err), "a wrong auth token is refused")
}

func TestUnimplementedRPCsAnswerAsUnknownMethods(t *testing.T) {
	c := newClient(t)
	sb := newSandbox(t, c, nil)
	ctx, taskID, rt, jwt := rawClients(t, sb.SandboxID)
	_, cp := rawControlPlane(t)
	check := func(err error, method, service string) {
		t.Helper()
		assert.Equal(t, codes.Unimplemented, status.Code(err), "%s: %v", method, err)
		assert.Equal(t, fmt.Sprintf("unknown method %s for service %s", method, service), status.Convert(err).Message())
	}
	_, err := cp.SandboxStdinWrite(ctx, pb.SandboxStdinWriteRequest_builder{SandboxId: sb.SandboxID}.Build())
	check(err, "SandboxStdinWrite", "modal.client.ModalClient")
	_, err = cp.SandboxCreateConnectToken(ctx, pb.SandboxCreateConnectTokenRequest_builder{SandboxId: sb.SandboxID}.Build())
	check(err, "SandboxCreateConnectToken", "modal.client.ModalClient")
	logs, err := cp.SandboxGetLogs(ctx, pb.SandboxGetLogsRequest_builder{SandboxId: sb.SandboxID}.Build())
	if err == nil {
		_, err = logs.Recv()
	}
	check(err, "SandboxGetLogs", "modal.client.ModalClient")
	_, err = rt.TaskMountDirectory(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+jwt),
		pb.TaskMountDirectoryRequest_builder{TaskId: taskID}.Build())
	check(err, "TaskMountDirectory", "modal.task_command_router.TaskCommandRouter")
}

func TestImageBuildStepsFailTheBuild(t *testing.T) {
	c := newClient(t)
	ctx := context.Background()
	app, err := c.Apps.FromName(ctx, "fake-test", &modal.AppFromNameParams{CreateIfMissing: true})
	require.NoError(t, err)
	img := c.Images.FromRegistry("alpine", nil).DockerfileCommands([]string{"RUN touch /built"}, nil)
	_, err = c.Sandboxes.Create(ctx, app, img, nil)
	require.Error(t, err, "a build step the fake cannot run must not be reported built")
	assert.Contains(t, err.Error(), "does not run image build steps")
}

func TestSandboxFilesStayInTheFakesTree(t *testing.T) {
	c := newClient(t)
	tag := fmt.Sprintf("modalfake-%d", time.Now().UnixNano())
	workdir := "/" + tag + "-w1"
	sb := newSandbox(t, c, &modal.SandboxCreateParams{Workdir: workdir})
	ctx := context.Background()
	p, err := sb.Exec(ctx, []string{"sh", "-c", "pwd; echo hi > f; mkdir -p /" + tag + "-top && touch /" + tag + "-top/x /tmp/" + tag + " && echo wrote"}, nil)
	require.NoError(t, err)
	out, err := io.ReadAll(p.Stdout)
	require.NoError(t, err)
	code, err := p.Wait(ctx)
	require.NoError(t, err)
	assert.Equal(t, 0, code)
	assert.Equal(t, workdir+"\nwrote\n", string(out))
	for _, host := range []string{workdir, "/" + tag + "-top", "/tmp/" + tag} {
		if _, err := os.Lstat(host); err == nil {
			t.Errorf("%s was created on the host", host)
			os.RemoveAll(host)
		}
	}
	got, ok := srv.Sandbox(sb.SandboxID)
	require.True(t, ok)
	data, err := os.ReadFile(filepath.Join(got.Dir, workdir, "f"))
	require.NoError(t, err, "the sandbox's files are in its root in the fake's tree")
	assert.Equal(t, "hi\n", string(data))

	// The host's directories are read-only inside.
	p, err = sb.Exec(ctx, []string{"touch", "/etc/" + tag}, nil)
	require.NoError(t, err)
	code, err = p.Wait(ctx)
	require.NoError(t, err)
	assert.NotEqual(t, 0, code)
	_, err = os.Lstat("/etc/" + tag)
	assert.True(t, os.IsNotExist(err), "/etc/%s on the host", tag)
}

// TestCommandsGetDefaultSignalDispositions starts commands while the test
// process (which runs the fake) ignores SIGINT: a container's processes do
// not inherit that, so a shell sending itself SIGINT dies of it.
func TestCommandsGetDefaultSignalDispositions(t *testing.T) {
	signal.Ignore(syscall.SIGINT)
	t.Cleanup(func() { signal.Reset(syscall.SIGINT) })
	c := newClient(t)
	sb := newSandbox(t, c, nil)
	ctx := context.Background()
	p, err := sb.Exec(ctx, []string{"sh", "-c", "kill -INT $$; echo survived"}, nil)
	require.NoError(t, err)
	out, err := io.ReadAll(p.Stdout)
	require.NoError(t, err)
	code, err := p.Wait(ctx)
	require.NoError(t, err)
	assert.Equal(t, 128+int(syscall.SIGINT), code, "stdout %q", out)
	assert.Empty(t, string(out))

	p, err = sb.Exec(ctx, []string{"grep", "SigIgn", "/proc/self/status"}, nil)
	require.NoError(t, err)
	out, err = io.ReadAll(p.Stdout)
	require.NoError(t, err)
	// Signals 32 and 33 are the C library's own: no program can reset them.
	mask, err := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(string(out), "SigIgn:")), 16, 64)
	require.NoError(t, err, "SigIgn line %q", out)
	assert.Zero(t, mask&^(1<<31|1<<32), "ignored signals of a command: %q", out)
}
