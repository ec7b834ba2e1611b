package modalfake_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
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

	"github.com/perimeter-sdk/perimeter/internal/hostview"
	"github.com/perimeter-sdk/perimeter/providers/modal/modalfake"
)

var srv *modalfake.Server

// TestMain points the unmodified SDK at the fake through its environment.
func TestMain(m *testing.M) {
	var err error
	srv, err = modalfake.Start(nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cfgDir, err := os.MkdirTemp("", "modalfake-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("MODAL_SERVER_URL", srv.URL)
	os.Setenv("MODAL_TOKEN_ID", srv.TokenID)
	os.Setenv("MODAL_TOKEN_SECRET", srv.TokenSecret)
	os.Setenv("MODAL_CONFIG_PATH", filepath.Join(cfgDir, "absent.toml"))
	os.Unsetenv("MODAL_PROFILE")
	os.Unsetenv("MODAL_ENVIRONMENT")
	code := m.Run()
	srv.Close()
	os.RemoveAll(cfgDir)
	// No sandbox view (a holder process with its mounts and namespaces)
	// is left open.
	os.Exit(hostview.ExitCode(code))
}

func newClient(t *testing.T) *modal.Client {
	t.Helper()
	c, err := modal.NewClientWithOptions(&modal.ClientParams{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

func newSandbox(t *testing.T, c *modal.Client, params *modal.SandboxCreateParams) *modal.Sandbox {
	t.Helper()
	ctx := context.Background()
	app, err := c.Apps.FromName(ctx, "fake-test", &modal.AppFromNameParams{CreateIfMissing: true})
	require.NoError(t, err)
	sb, err := c.Sandboxes.Create(ctx, app, c.Images.FromRegistry("debian:bookworm-slim", nil), params)
	require.NoError(t, err)
	t.Cleanup(func() { sb.Terminate(context.Background(), nil) })
	return sb
}

func TestCreateRecordsTheDefinition(t *testing.T) {
	c := newClient(t)
	sb := newSandbox(t, c, &modal.SandboxCreateParams{
		CPU: 1.5, MemoryMiB: 512, GPU: "t4:2", Timeout: 90 * time.Second,
		Env:            map[string]string{"GREETING": "hi"},
		CIDRAllowlist:  []string{"10.0.0.0/8"},
		EncryptedPorts: []int{8080},
	})
	got, ok := srv.Sandbox(sb.SandboxID)
	require.True(t, ok)
	d := got.Definition
	assert.Equal(t, uint32(1500), d.GetResources().GetMilliCpu())
	assert.Equal(t, uint32(512), d.GetResources().GetMemoryMb())
	assert.Equal(t, "T4", d.GetResources().GetGpuConfig().GetGpuType())
	assert.Equal(t, uint32(2), d.GetResources().GetGpuConfig().GetCount())
	assert.Equal(t, uint32(90), d.GetTimeoutSecs())
	assert.Equal(t, pb.NetworkAccess_ALLOWLIST, d.GetNetworkAccess().GetNetworkAccessType())
	assert.Equal(t, []string{"10.0.0.0/8"}, d.GetNetworkAccess().GetAllowedCidrs())
	require.Len(t, d.GetOpenPorts().GetPorts(), 1)
	assert.Equal(t, uint32(8080), d.GetOpenPorts().GetPorts()[0].GetPort())
	assert.Equal(t, "hi", got.Env["GREETING"], "the Env map arrives as an ephemeral secret")
}

func TestExecStreamsStdinStdoutStderrAndExitCode(t *testing.T) {
	c := newClient(t)
	sb := newSandbox(t, c, &modal.SandboxCreateParams{Env: map[string]string{"A": "from-sandbox"}})
	ctx := context.Background()
	p, err := sb.Exec(ctx, []string{"sh", "-c", `cat; echo "$A $B" >&2; exit 3`}, &modal.SandboxExecParams{Env: map[string]string{"B": "from-exec"}})
	require.NoError(t, err)
	_, err = p.Stdin.Write([]byte("hello "))
	require.NoError(t, err)
	_, err = p.Stdin.Write([]byte("world"))
	require.NoError(t, err)
	require.NoError(t, p.Stdin.Close())
	out, err := io.ReadAll(p.Stdout)
	require.NoError(t, err)
	errOut, err := io.ReadAll(p.Stderr)
	require.NoError(t, err)
	code, err := p.Wait(ctx)
	require.NoError(t, err)
	assert.Equal(t, "hello world", string(out))
	assert.Equal(t, "from-sandbox from-exec\n", string(errOut))
	assert.Equal(t, 3, code)
}

func TestExecReportsSignalAsSDKExitCode(t *testing.T) {
	c := newClient(t)
	sb := newSandbox(t, c, nil)
	p, err := sb.Exec(context.Background(), []string{"sh", "-c", "kill -TERM $$"}, nil)
	require.NoError(t, err)
	code, err := p.Wait(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 128+15, code)
}

func TestExecMissingProgramExits127(t *testing.T) {
	c := newClient(t)
	sb := newSandbox(t, c, nil)
	p, err := sb.Exec(context.Background(), []string{"no-such-program-xyz"}, nil)
	require.NoError(t, err)
	code, err := p.Wait(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 127, code)
}

func TestLargeOutputArrivesWhole(t *testing.T) {
	c := newClient(t)
	sb := newSandbox(t, c, nil)
	p, err := sb.Exec(context.Background(), []string{"head", "-c", "5000000", "/dev/zero"}, nil)
	require.NoError(t, err)
	out, err := io.ReadAll(p.Stdout)
	require.NoError(t, err)
	assert.Len(t, out, 5000000)
}

func TestFilesRoundTripThroughOpen(t *testing.T) {
	c := newClient(t)
	sb := newSandbox(t, c, nil)
	ctx := context.Background()
	data := bytes.Repeat([]byte{0, 1, 2, 255}, 1000)
	f, err := sb.Open(ctx, "blob.bin", "w")
	require.NoError(t, err)
	_, err = f.Write(data)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	got, _ := srv.Sandbox(sb.SandboxID)
	onHost, err := os.ReadFile(filepath.Join(got.Dir, got.Workdir, "blob.bin"))
	require.NoError(t, err)
	assert.Equal(t, data, onHost, "a relative path lands in the sandbox's working directory")

	f, err = sb.Open(ctx, filepath.Join(got.Workdir, "blob.bin"), "r")
	require.NoError(t, err)
	back, err := io.ReadAll(f)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	assert.Equal(t, data, back)

	_, err = sb.Open(ctx, "missing.txt", "r")
	var fsErr modal.SandboxFilesystemError
	require.ErrorAs(t, err, &fsErr)
	assert.Contains(t, fsErr.Exception, "no such file")
}

func TestUnknownIDsAreNotFound(t *testing.T) {
	c := newClient(t)
	_, err := c.Sandboxes.FromID(context.Background(), "sb-nonexistent")
	var nf modal.NotFoundError
	assert.ErrorAs(t, err, &nf)
	_, err = c.Images.FromID(context.Background(), "im-nonexistent")
	assert.ErrorAs(t, err, &nf)
}

func TestUnscheduledSandboxHasNoTaskYet(t *testing.T) {
	srv.SetUnscheduledPolls(2)
	defer srv.SetUnscheduledPolls(0)
	c := newClient(t)
	sb := newSandbox(t, c, nil)
	for i := 0; i < 2; i++ {
		_, err := sb.Exec(context.Background(), []string{"true"}, nil)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "does not have a task ID")
	}
	p, err := sb.Exec(context.Background(), []string{"true"}, nil)
	require.NoError(t, err)
	code, err := p.Wait(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 0, code)
}

func TestTerminateKillsProcessesAndReportsTerminated(t *testing.T) {
	c := newClient(t)
	sb := newSandbox(t, c, nil)
	ctx := context.Background()
	p, err := sb.Exec(ctx, []string{"sleep", "60"}, nil)
	require.NoError(t, err)
	id := sb.SandboxID
	code, err := sb.Terminate(ctx, &modal.SandboxTerminateParams{Wait: true})
	require.NoError(t, err)
	assert.Equal(t, 137, code)
	_, err = p.Wait(ctx)
	var closed modal.ClientClosedError
	assert.ErrorAs(t, err, &closed, "Terminate detaches the SDK's sandbox, and its processes with it")
	got, _ := srv.Sandbox(id)
	assert.True(t, got.Finished)
	assert.Zero(t, got.Processes)

	again, err := c.Sandboxes.FromID(ctx, id)
	require.NoError(t, err, "a finished sandbox is still found, as on Modal")
	_, err = again.Exec(ctx, []string{"true"}, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "has already completed")
}

func TestListFiltersByTagsAndPages(t *testing.T) {
	c := newClient(t)
	ctx := context.Background()
	tag := fmt.Sprintf("list-%d", time.Now().UnixNano())
	var want []string
	for i := 0; i < 12; i++ { // more than one page of 10
		sb := newSandbox(t, c, nil)
		require.NoError(t, sb.SetTags(ctx, map[string]string{"run": tag}))
		want = append(want, sb.SandboxID)
	}
	other := newSandbox(t, c, nil)
	require.NoError(t, other.SetTags(ctx, map[string]string{"run": "other"}))
	seq, err := c.Sandboxes.List(ctx, &modal.SandboxListParams{Tags: map[string]string{"run": tag}})
	require.NoError(t, err)
	var got []string
	for sb, err := range seq {
		require.NoError(t, err)
		got = append(got, sb.SandboxID)
	}
	assert.ElementsMatch(t, want, got)
	tags, err := other.GetTags(ctx)
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"run": "other"}, tags)
}

func TestSnapshotCopiesTheFilesystem(t *testing.T) {
	c := newClient(t)
	ctx := context.Background()
	sb := newSandbox(t, c, nil)
	p, err := sb.Exec(ctx, []string{"sh", "-c", "echo kept > state.txt"}, nil)
	require.NoError(t, err)
	_, err = p.Wait(ctx)
	require.NoError(t, err)
	img, err := sb.SnapshotFilesystem(ctx, 10*time.Second)
	require.NoError(t, err)

	img2, err := c.Images.FromID(ctx, img.ImageID)
	require.NoError(t, err)
	app, err := c.Apps.FromName(ctx, "fake-test", nil)
	require.NoError(t, err)
	sb2, err := c.Sandboxes.Create(ctx, app, img2, nil)
	require.NoError(t, err)
	t.Cleanup(func() { sb2.Terminate(context.Background(), nil) })
	p, err = sb2.Exec(ctx, []string{"cat", "state.txt"}, nil)
	require.NoError(t, err)
	out, err := io.ReadAll(p.Stdout)
	require.NoError(t, err)
	assert.Equal(t, "kept\n", string(out))

	// The base image is still the base image, without the snapshot's files.
	fresh := newSandbox(t, c, nil)
	p, err = fresh.Exec(ctx, []string{"cat", "state.txt"}, nil)
	require.NoError(t, err)
	code, err := p.Wait(ctx)
	require.NoError(t, err)
	assert.NotEqual(t, 0, code)
}

func TestTunnelForwardsOverTLS(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "through the tunnel") })}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	port := ln.Addr().(*net.TCPAddr).Port

	c := newClient(t)
	sb := newSandbox(t, c, &modal.SandboxCreateParams{EncryptedPorts: []int{port}})
	tunnels, err := sb.Tunnels(context.Background(), 10*time.Second)
	require.NoError(t, err)
	tun := tunnels[port]
	require.NotNil(t, tun)
	assert.True(t, strings.HasPrefix(tun.URL(), "https://127.0.0.1:"))
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: srv.TunnelClientTLS()}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(tun.URL())
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, "through the tunnel", string(body))

	_, err = (&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{}}}).Get(tun.URL())
	assert.Error(t, err, "the tunnel speaks TLS with its own certificate")
}

func TestCallsWithoutCredentialsAreUnauthenticated(t *testing.T) {
	conn, err := grpc.NewClient(strings.TrimPrefix(srv.URL, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	cl := pb.NewModalClientClient(conn)
	_, err = cl.SandboxList(context.Background(), pb.SandboxListRequest_builder{}.Build())
	assert.Equal(t, codes.Unauthenticated, status.Code(err))

	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-modal-token-id", srv.TokenID, "x-modal-token-secret", "wrong")
	_, err = cl.SandboxList(ctx, pb.SandboxListRequest_builder{}.Build())
	assert.Equal(t, codes.Unauthenticated, status.Code(err), "a wrong token secret")
	ctx = metadata.AppendToOutgoingContext(context.Background(), "x-modal-token-id", srv.TokenID, "x-modal-token-secret", srv.TokenSecret)
	tok, err := cl.AuthTokenGet(ctx, pb.AuthTokenGetRequest_builder{}.Build())
	require.NoError(t, err)
	_, err = cl.SandboxList(metadata.AppendToOutgoingContext(ctx, "x-modal-auth-token", tok.GetToken()), pb.SandboxListRequest_builder{}.Build())
	assert.NoError(t, err)
}

func TestNameIsUniquePerApp(t *testing.T) {
	c := newClient(t)
	name := fmt.Sprintf("n%d", time.Now().UnixNano())
	newSandbox(t, c, &modal.SandboxCreateParams{Name: name})
	app, err := c.Apps.FromName(context.Background(), "fake-test", nil)
	require.NoError(t, err)
	_, err = c.Sandboxes.Create(context.Background(), app, c.Images.FromRegistry("debian:bookworm-slim", nil), &modal.SandboxCreateParams{Name: name})
	var ae modal.AlreadyExistsError
	assert.ErrorAs(t, err, &ae)
}

func TestInjectedFailureCarriesItsCode(t *testing.T) {
	c := newClient(t)
	srv.FailNext("SandboxCreate", status.Error(codes.ResourceExhausted, "quota"))
	app, err := c.Apps.FromName(context.Background(), "fake-test", &modal.AppFromNameParams{CreateIfMissing: true})
	require.NoError(t, err)
	_, err = c.Sandboxes.Create(context.Background(), app, c.Images.FromRegistry("alpine", nil), nil)
	assert.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
}

func TestSandboxesHaveTheirOwnTmp(t *testing.T) {
	hostFile, err := os.CreateTemp("", "modalfake-host-canary-")
	require.NoError(t, err)
	hostFile.WriteString("host secret")
	hostFile.Close()
	t.Cleanup(func() { os.Remove(hostFile.Name()) })

	c := newClient(t)
	sb := newSandbox(t, c, nil)
	ctx := context.Background()
	p, err := sb.Exec(ctx, []string{"sh", "-c", "cat " + hostFile.Name() + "; ln -s " + hostFile.Name() + " link; echo mine > own"}, nil)
	require.NoError(t, err)
	out, _ := io.ReadAll(p.Stdout)
	_, err = p.Wait(ctx)
	require.NoError(t, err)
	assert.NotContains(t, string(out), "host secret", "the host's /tmp is not the sandbox's")
	_, err = sb.Open(ctx, "link", "r")
	assert.Error(t, err, "a link to the host's /tmp resolves inside the sandbox")

	f, err := sb.Open(ctx, "/tmp/own", "r")
	require.NoError(t, err, "commands and the file API share the sandbox's /tmp")
	mine, _ := io.ReadAll(f)
	f.Close()
	assert.Equal(t, "mine\n", string(mine))

	other := newSandbox(t, c, nil)
	_, err = other.Open(ctx, "/tmp/own", "r")
	assert.Error(t, err, "sandboxes do not share /tmp")
}

func TestBlockedNetworkCannotReachTheHost(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	probe := fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d", port)
	c := newClient(t)
	for _, tc := range []struct {
		params *modal.SandboxCreateParams
		reach  bool
	}{
		{&modal.SandboxCreateParams{}, true},
		{&modal.SandboxCreateParams{BlockNetwork: true}, false},
		{&modal.SandboxCreateParams{CIDRAllowlist: []string{"10.0.0.0/8"}}, false},
	} {
		sb := newSandbox(t, c, tc.params)
		p, err := sb.Exec(context.Background(), []string{"bash", "-c", probe}, nil)
		require.NoError(t, err)
		code, err := p.Wait(context.Background())
		require.NoError(t, err)
		assert.Equal(t, tc.reach, code == 0, "params %+v: exit code %d", tc.params, code)
	}
}

// rawClients returns gRPC clients for both services with the metadata the SDK
// sends, for checks the SDK does not expose.
func rawClients(t *testing.T, sandboxID string) (context.Context, string, pb.TaskCommandRouterClient, string) {
	t.Helper()
	conn, err := grpc.NewClient(strings.TrimPrefix(srv.URL, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	cp := pb.NewModalClientClient(conn)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-modal-token-id", srv.TokenID, "x-modal-token-secret", srv.TokenSecret)
	tok, err := cp.AuthTokenGet(ctx, pb.AuthTokenGetRequest_builder{}.Build())
	require.NoError(t, err)
	ctx = metadata.AppendToOutgoingContext(ctx, "x-modal-auth-token", tok.GetToken())
	task, err := cp.SandboxGetTaskId(ctx, pb.SandboxGetTaskIdRequest_builder{SandboxId: sandboxID}.Build())
	require.NoError(t, err)
	access, err := cp.TaskGetCommandRouterAccess(ctx, pb.TaskGetCommandRouterAccessRequest_builder{TaskId: task.GetTaskId()}.Build())
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(access.GetUrl(), "https://127.0.0.1:"), "the SDK insists on https for the router")
	rconn, err := grpc.NewClient(strings.TrimPrefix(access.GetUrl(), "https://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { rconn.Close() })
	return ctx, task.GetTaskId(), pb.NewTaskCommandRouterClient(rconn), access.GetJwt()
}

func TestRouterHonoursOffsetsAndBearer(t *testing.T) {
	c := newClient(t)
	sb := newSandbox(t, c, nil)
	_, taskID, rc, jwt := rawClients(t, sb.SandboxID)
	ctx := context.Background()

	start := pb.TaskExecStartRequest_builder{
		TaskId: taskID, ExecId: "exec-1", CommandArgs: []string{"printf", "0123456789"},
		StdoutConfig: pb.TaskExecStdoutConfig_TASK_EXEC_STDOUT_CONFIG_PIPE,
		StderrConfig: pb.TaskExecStderrConfig_TASK_EXEC_STDERR_CONFIG_PIPE,
	}.Build()
	_, err := rc.TaskExecStart(ctx, start)
	assert.Equal(t, codes.Unauthenticated, status.Code(err), "router calls need the Bearer JWT")

	auth := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+jwt)
	_, err = rc.TaskExecStart(auth, start)
	require.NoError(t, err)
	_, err = rc.TaskExecStart(auth, start)
	assert.NoError(t, err, "the exec id is the idempotency key: a retry answers with the same command")
	w, err := rc.TaskExecWait(auth, pb.TaskExecWaitRequest_builder{TaskId: taskID, ExecId: "exec-1"}.Build())
	require.NoError(t, err)
	assert.Equal(t, int32(0), w.GetCode())

	read := func(offset uint64) string {
		stream, err := rc.TaskExecStdioRead(auth, pb.TaskExecStdioReadRequest_builder{
			TaskId: taskID, ExecId: "exec-1", Offset: offset,
			FileDescriptor: pb.TaskExecStdioFileDescriptor_TASK_EXEC_STDIO_FILE_DESCRIPTOR_STDOUT,
		}.Build())
		require.NoError(t, err)
		var got []byte
		for {
			msg, err := stream.Recv()
			if err == io.EOF {
				return string(got)
			}
			require.NoError(t, err)
			got = append(got, msg.GetData()...)
		}
	}
	assert.Equal(t, "0123456789", read(0))
	assert.Equal(t, "3456789", read(3), "a re-read resumes at its offset")
	assert.Equal(t, "", read(10), "an offset at the end is an empty stream")

	_, err = rc.TaskExecWait(auth, pb.TaskExecWaitRequest_builder{TaskId: taskID, ExecId: "no-such-exec"}.Build())
	assert.Equal(t, codes.NotFound, status.Code(err))
}
