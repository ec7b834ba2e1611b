package modal_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	sdk "github.com/modal-labs/libmodal/modal-go"
	pb "github.com/modal-labs/libmodal/modal-go/proto/modal_proto"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/perimeter-sdk/perimeter/providers/modal"
	"github.com/perimeter-sdk/perimeter/providers/modal/modalfake"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

func TestCreateMapsTheSpecOntoModal(t *testing.T) {
	p := newProvider(t)
	sb := create(t, p, &sandbox.Spec{
		Image:     "python:3.12-slim",
		Resources: sandbox.Resources{CPU: 1.5, Memory: 300<<20 + 1, GPU: "a10g:2"},
		Timeout:   1500 * time.Millisecond * 100, // 150 s
		Env:       map[string]string{"K": "v"},
		Labels:    map[string]string{"team": "infra"},
		Ports:     []int{8080},
		Network:   &sandbox.NetworkPolicy{Mode: sandbox.NetworkAllowlist, Allow: []string{"10.1.2.0/24", "192.0.2.7"}},
	})
	got, ok := fake.Sandbox(sb.ID())
	require.True(t, ok)
	d := got.Definition
	assert.Equal(t, uint32(1500), d.GetResources().GetMilliCpu())
	assert.Equal(t, uint32(301), d.GetResources().GetMemoryMb(), "bytes round up to MiB")
	assert.Equal(t, "A10G", d.GetResources().GetGpuConfig().GetGpuType())
	assert.Equal(t, uint32(2), d.GetResources().GetGpuConfig().GetCount())
	assert.Equal(t, uint32(150), d.GetTimeoutSecs())
	assert.Equal(t, pb.NetworkAccess_ALLOWLIST, d.GetNetworkAccess().GetNetworkAccessType())
	assert.Equal(t, []string{"10.1.2.0/24", "192.0.2.7/32"}, d.GetNetworkAccess().GetAllowedCidrs())
	require.Len(t, d.GetOpenPorts().GetPorts(), 1)
	assert.Equal(t, uint32(8080), d.GetOpenPorts().GetPorts()[0].GetPort())
	assert.False(t, d.GetOpenPorts().GetPorts()[0].GetUnencrypted())
	assert.Equal(t, "v", got.Env["K"])

	info, err := sb.Info(context.Background())
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"team": "infra"}, info.Labels)
	assert.Equal(t, sandbox.StateRunning, info.State)
	assert.Equal(t, modal.Name, info.Provider)
	assert.WithinDuration(t, info.Created.Add(150*time.Second), info.Expires, time.Second)
}

func TestCreateRoundsTimeoutUpAndBlocksEmptyAllowlist(t *testing.T) {
	p := newProvider(t)
	sb := create(t, p, &sandbox.Spec{
		Timeout: 1500 * time.Millisecond,
		Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkAllowlist},
	})
	got, _ := fake.Sandbox(sb.ID())
	assert.Equal(t, uint32(2), got.Definition.GetTimeoutSecs())
	assert.Equal(t, pb.NetworkAccess_BLOCKED, got.Definition.GetNetworkAccess().GetNetworkAccessType(),
		"an allowlist with nothing on it allows nothing")
}

func TestCreateRefusesWhatModalLacksBeforeCallingIt(t *testing.T) {
	p := newProvider(t)
	before := fake.Calls("SandboxCreate")
	for _, tc := range []struct {
		spec sandbox.Spec
		kind error
	}{
		{sandbox.Spec{RootFS: "/srv/rootfs"}, sandbox.ErrNotSupported},
		{sandbox.Spec{Resources: sandbox.Resources{Disk: 1 << 30}}, sandbox.ErrNotSupported},
		{sandbox.Spec{Resources: sandbox.Resources{PIDs: 100}}, sandbox.ErrNotSupported},
		{sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkAllowlist, Allow: []string{"example.com"}}}, sandbox.ErrNotSupported},
		{sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: "sometimes"}}, sandbox.ErrInvalidArgument},
		{sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkNone, Allow: []string{"10.0.0.0/8"}}}, sandbox.ErrInvalidArgument},
		{sandbox.Spec{Workdir: "relative/dir"}, sandbox.ErrInvalidArgument},
		{sandbox.Spec{Timeout: -time.Second}, sandbox.ErrInvalidArgument},
		{sandbox.Spec{Resources: sandbox.Resources{CPU: -1}}, sandbox.ErrInvalidArgument},
		{sandbox.Spec{Ports: []int{0}}, sandbox.ErrInvalidArgument},
		{sandbox.Spec{Labels: map[string]string{"": "x"}}, sandbox.ErrInvalidArgument},
	} {
		_, err := p.Create(context.Background(), &tc.spec)
		assert.ErrorIs(t, err, tc.kind, "%+v", tc.spec)
		var pe *sandbox.Error
		if assert.ErrorAs(t, err, &pe) {
			assert.Equal(t, "create", pe.Op)
		}
	}
	assert.Equal(t, before, fake.Calls("SandboxCreate"), "nothing reached Modal")
}

func TestCreateWaitsUntilModalSchedulesTheSandbox(t *testing.T) {
	fake.SetUnscheduledPolls(3)
	defer fake.SetUnscheduledPolls(0)
	p := newProvider(t)
	before := fake.Calls("SandboxGetTaskId")
	sb := create(t, p, nil)
	assert.GreaterOrEqual(t, fake.Calls("SandboxGetTaskId")-before, 4, "three unanswered polls, then the task")
	res := run(t, sb, &sandbox.Cmd{Args: []string{"echo", "scheduled"}})
	assert.Equal(t, "scheduled\n", string(res.Stdout))
}

func TestCreateGivesUpWithItsContextAndLeavesNothingBehind(t *testing.T) {
	fake.SetUnscheduledPolls(1 << 30)
	defer fake.SetUnscheduledPolls(0)
	p := newProvider(t)
	terminated := fake.Calls("SandboxTerminate")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	// Open egress: the fake then makes no network namespace, so the
	// deadline passes while the sandbox waits to be scheduled.
	_, err := p.Create(ctx, &sandbox.Spec{Network: openNetwork})
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 5*time.Second)
	assert.Equal(t, terminated+1, fake.Calls("SandboxTerminate"), "the unscheduled sandbox is terminated")
}

func TestSpecWorkdirIsTheDefaultDirectory(t *testing.T) {
	sb := create(t, newProvider(t), &sandbox.Spec{Workdir: "/tmp/work"})
	res := run(t, sb, &sandbox.Cmd{Args: []string{"pwd"}})
	assert.Equal(t, "/tmp/work\n", string(res.Stdout))
	require.NoError(t, sb.WriteFile(context.Background(), "rel.txt", strings.NewReader("x"), 0o644))
	fi, err := sb.Stat(context.Background(), "/tmp/work/rel.txt")
	require.NoError(t, err)
	assert.Equal(t, int64(1), fi.Size)
}

func TestSnapshotRestoresFilesIntoANewSandbox(t *testing.T) {
	p := newProvider(t)
	ctx := context.Background()
	sb := create(t, p, nil)
	require.NoError(t, sb.WriteFile(ctx, "state.txt", strings.NewReader("kept"), 0o600))
	id, err := sb.Snapshot(ctx)
	require.NoError(t, err)
	sb2 := create(t, p, &sandbox.Spec{Snapshot: id})
	r, err := sb2.ReadFile(ctx, "state.txt")
	require.NoError(t, err)
	b, _ := io.ReadAll(r)
	r.Close()
	assert.Equal(t, "kept", string(b))

	_, err = p.Create(ctx, &sandbox.Spec{Snapshot: "im-no-such-snapshot"})
	assert.ErrorIs(t, err, sandbox.ErrNotFound)
}

func TestGetListAndTerminate(t *testing.T) {
	p := newProvider(t)
	ctx := context.Background()
	run := fmt.Sprintf("r%d", time.Now().UnixNano())
	a := create(t, p, &sandbox.Spec{Labels: map[string]string{"run": run, "n": "a"}})
	b := create(t, p, &sandbox.Spec{Labels: map[string]string{"run": run, "n": "b"}})
	create(t, p, &sandbox.Spec{Labels: map[string]string{"run": "other"}})

	got, err := p.Get(ctx, a.ID())
	require.NoError(t, err)
	assert.Equal(t, a.ID(), got.ID())
	require.NoError(t, got.WriteFile(ctx, "from-get", strings.NewReader("hi"), 0o644), "a handle from Get learns its working directory")

	ids := map[string]map[string]string{}
	for info, err := range p.List(ctx, &sandbox.ListOptions{Labels: map[string]string{"run": run}}) {
		require.NoError(t, err)
		ids[info.ID] = info.Labels
	}
	assert.Equal(t, map[string]map[string]string{
		a.ID(): {"run": run, "n": "a"},
		b.ID(): {"run": run, "n": "b"},
	}, ids)

	require.NoError(t, b.Terminate(ctx))
	require.NoError(t, b.Terminate(ctx))
	_, err = b.Info(ctx)
	assert.ErrorIs(t, err, sandbox.ErrTerminated)
	_, err = b.ReadFile(ctx, "x")
	assert.ErrorIs(t, err, sandbox.ErrTerminated)
	_, err = p.Get(ctx, b.ID())
	assert.ErrorIs(t, err, sandbox.ErrNotFound, "a terminated sandbox is not found")
	for info, err := range p.List(ctx, &sandbox.ListOptions{Labels: map[string]string{"run": run}}) {
		require.NoError(t, err)
		assert.NotEqual(t, b.ID(), info.ID)
	}

	// A sandbox ended elsewhere: operations report it terminated.
	require.NoError(t, got.Terminate(ctx))
	_, err = a.Start(ctx, &sandbox.Cmd{Args: []string{"true"}})
	assert.ErrorIs(t, err, sandbox.ErrTerminated)

	_, err = p.Get(ctx, "sb-no-such-sandbox")
	assert.ErrorIs(t, err, sandbox.ErrNotFound)
	var nf sdk.NotFoundError
	assert.ErrorAs(t, err, &nf, "the SDK's error is reachable")
}

func TestExposeThroughEncryptedTunnel(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	p := newProvider(t)
	ctx := context.Background()
	sb := create(t, p, &sandbox.Spec{Ports: []int{port}, Network: openNetwork})
	require.NoError(t, sb.WriteFile(ctx, "index.html", strings.NewReader("served"), 0o644))
	srv, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"python3", "-m", "http.server", fmt.Sprint(port), "--bind", "127.0.0.1"}})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Signal(ctx, sandbox.SIGKILL); srv.Wait(ctx) })

	tun, err := sb.Expose(ctx, port, nil)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(tun.URL(), "https://"), tun.URL())
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: fake.TunnelClientTLS()}}
	defer hc.CloseIdleConnections()
	require.Eventually(t, func() bool {
		resp, err := hc.Get(tun.URL() + "/index.html")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b) == "served"
	}, 20*time.Second, 50*time.Millisecond)
	var native *sdk.Tunnel
	require.True(t, tun.(interface{ As(any) bool }).As(&native))
	host, _ := native.TLSSocket()
	assert.Equal(t, "127.0.0.1", host)

	_, err = sb.Expose(ctx, port+1, nil)
	assert.ErrorIs(t, err, sandbox.ErrInvalidArgument, "only ports declared at creation have tunnels")
	_, err = sb.Expose(ctx, port, &sandbox.ExposeOptions{Protocol: "tcp"})
	assert.ErrorIs(t, err, sandbox.ErrNotSupported)
}

func TestUnclaimedAbilitiesAreNotSupported(t *testing.T) {
	sb := create(t, newProvider(t), nil)
	ctx := context.Background()
	caps := sb.Capabilities()
	assert.False(t, caps.PTY || caps.Dial || caps.Pause || caps.ExtendTimeout || caps.UpdateNetwork)
	assert.True(t, caps.Signal && caps.Stdin && caps.Expose && caps.Snapshot)
	assert.ErrorIs(t, sb.Pause(ctx), sandbox.ErrNotSupported)
	assert.ErrorIs(t, sb.ExtendTimeout(ctx, time.Minute), sandbox.ErrNotSupported)
	assert.ErrorIs(t, sb.UpdateNetwork(ctx, &sandbox.NetworkPolicy{Mode: sandbox.NetworkNone}), sandbox.ErrNotSupported)
	_, err := sb.Dial(ctx, 80)
	assert.ErrorIs(t, err, sandbox.ErrNotSupported)
}

func TestServiceErrorsKeepTheirKindAndCause(t *testing.T) {
	p := newProvider(t)
	for _, tc := range []struct {
		code codes.Code
		kind error
	}{
		{codes.ResourceExhausted, sandbox.ErrResourceExhausted},
		{codes.PermissionDenied, sandbox.ErrPermissionDenied},
		{codes.InvalidArgument, sandbox.ErrInvalidArgument},
		{codes.AlreadyExists, sandbox.ErrAlreadyExists},
		{codes.Unimplemented, sandbox.ErrNotSupported},
	} {
		fake.FailNext("SandboxCreate", status.Error(tc.code, "injected "+tc.code.String()))
		_, err := p.Create(context.Background(), nil)
		assert.ErrorIs(t, err, tc.kind, "%v", err)
		assert.Contains(t, err.Error(), "modal: create: ")
		var grpcErr interface{ GRPCStatus() *status.Status }
		var exists sdk.AlreadyExistsError
		if tc.code == codes.AlreadyExists {
			assert.ErrorAs(t, err, &exists)
		} else if assert.ErrorAs(t, err, &grpcErr) {
			assert.Equal(t, tc.code, grpcErr.GRPCStatus().Code())
		}
	}
}

func TestFileErrorsAndEdgeCases(t *testing.T) {
	sb := create(t, newProvider(t), nil)
	ctx := context.Background()

	_, err := sb.ReadFile(ctx, "missing")
	assert.ErrorIs(t, err, sandbox.ErrNotFound)
	var fsErr sdk.SandboxFilesystemError
	assert.ErrorAs(t, err, &fsErr)

	require.NoError(t, sb.MkdirAll(ctx, "d/e", 0o750))
	_, err = sb.ReadFile(ctx, "d")
	assert.ErrorIs(t, err, sandbox.ErrInvalidArgument)
	assert.ErrorIs(t, sb.WriteFile(ctx, "nodir/f", strings.NewReader("x"), 0o644), sandbox.ErrNotFound)
	assert.ErrorIs(t, sb.WriteFile(ctx, "d", strings.NewReader("x"), 0o644), sandbox.ErrInvalidArgument)
	assert.ErrorIs(t, sb.WriteFile(ctx, "f", strings.NewReader("x"), fs.ModeDir|0o755), sandbox.ErrInvalidArgument)
	_, err = sb.ReadFile(ctx, "../etc/passwd")
	assert.ErrorIs(t, err, sandbox.ErrInvalidArgument)

	fi, err := sb.Stat(ctx, "d/e")
	require.NoError(t, err)
	assert.True(t, fi.IsDir())
	assert.Equal(t, fs.FileMode(0o750), fi.Mode.Perm())
	assert.Equal(t, "e", fi.Name)

	odd := []string{"with space", "new\nline", "ünïcode", ".hidden", "-dash"}
	for _, n := range odd {
		require.NoError(t, sb.WriteFile(ctx, "d/"+n, strings.NewReader(n), 0o640), n)
	}
	require.NoError(t, sb.Rename(ctx, "d/with space", "d/renamed"))
	_, err = sb.Stat(ctx, "d/with space")
	assert.ErrorIs(t, err, sandbox.ErrNotFound)
	run(t, sb, &sandbox.Cmd{Args: []string{"ln", "-s", "renamed", "d/link"}})
	fi, err = sb.Stat(ctx, "d/link")
	require.NoError(t, err)
	assert.Equal(t, fs.ModeSymlink, fi.Mode.Type(), "Stat does not follow a final link")

	list, err := sb.ReadDir(ctx, "d")
	require.NoError(t, err)
	var names []string
	for _, fi := range list {
		names = append(names, fi.Name)
	}
	assert.Equal(t, []string{"-dash", ".hidden", "e", "link", "new\nline", "renamed", "ünïcode"}, names)
	_, err = sb.ReadDir(ctx, "d/renamed")
	assert.ErrorIs(t, err, sandbox.ErrInvalidArgument)
	_, err = sb.ReadDir(ctx, "nowhere")
	assert.ErrorIs(t, err, sandbox.ErrNotFound)

	assert.ErrorIs(t, sb.Remove(ctx, "d"), sandbox.ErrInvalidArgument, "a directory that is not empty")
	assert.ErrorIs(t, sb.Remove(ctx, "nowhere"), sandbox.ErrNotFound)
	assert.ErrorIs(t, sb.MkdirAll(ctx, "d/renamed", 0o755), sandbox.ErrAlreadyExists)
	assert.ErrorIs(t, sb.Rename(ctx, "nowhere", "x"), sandbox.ErrNotFound)
	assert.ErrorIs(t, sb.Rename(ctx, "d/renamed", "d/e"), sandbox.ErrInvalidArgument, "a file does not replace a directory")
	require.NoError(t, sb.RemoveAll(ctx, "d"))
	require.NoError(t, sb.RemoveAll(ctx, "d"), "RemoveAll of nothing is not an error")
	assert.ErrorIs(t, sb.RemoveAll(ctx, "/"), sandbox.ErrInvalidArgument)
}

func TestWriteFileIsWholeOrNothing(t *testing.T) {
	sb := create(t, newProvider(t), nil)
	ctx := context.Background()
	require.NoError(t, sb.WriteFile(ctx, "f", strings.NewReader("old"), 0o644))
	err := sb.WriteFile(ctx, "f", io.MultiReader(bytes.NewReader(make([]byte, 3<<20)), errReader{}), 0o644)
	assert.Error(t, err)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	assert.ErrorIs(t, sb.WriteFile(cctx, "f", strings.NewReader("new"), 0o644), context.Canceled)
	r, err := sb.ReadFile(ctx, "f")
	require.NoError(t, err)
	b, _ := io.ReadAll(r)
	r.Close()
	assert.Equal(t, "old", string(b))
	list, err := sb.ReadDir(ctx, ".")
	require.NoError(t, err)
	assert.Len(t, list, 1, "no temporary file is left behind: %v", list)
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("source broke") }

func TestReadFileStopsWithItsContext(t *testing.T) {
	sb := create(t, newProvider(t), nil)
	require.NoError(t, sb.WriteFile(context.Background(), "big", bytes.NewReader(make([]byte, 9<<20)), 0o644))
	ctx, cancel := context.WithCancel(context.Background())
	r, err := sb.ReadFile(ctx, "big")
	require.NoError(t, err)
	defer r.Close()
	buf := make([]byte, 1<<20)
	_, err = io.ReadFull(r, buf)
	require.NoError(t, err)
	cancel()
	_, err = r.Read(buf)
	assert.ErrorIs(t, err, context.Canceled)
	assert.NoError(t, r.Close())
	assert.NoError(t, r.Close(), "Close is idempotent")
}

func TestNewAndOpen(t *testing.T) {
	ctx := context.Background()
	_, err := modal.New(ctx, nil)
	assert.ErrorIs(t, err, sandbox.ErrInvalidArgument)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = modal.New(cctx, &modal.Options{App: "x", Logger: quiet})
	assert.ErrorIs(t, err, context.Canceled)

	for _, u := range []string{"modal://user:secret@app", "modal://app/path", "modal://app?colour=red", "modal:///"} {
		_, err := sandbox.Open(ctx, u)
		assert.ErrorIs(t, err, sandbox.ErrInvalidArgument, u)
		assert.NotContains(t, fmt.Sprint(err), "secret")
	}
	p, err := sandbox.Open(ctx, "modal://perimeter-url-test?image=alpine:3")
	require.NoError(t, err)
	defer p.Close()
	var c *sdk.Client
	require.True(t, p.As(&c))
	assert.NotNil(t, c)
	assert.Equal(t, "perimeter-url-test", modalDriver(p).App().Name)
	require.NoError(t, p.Close())
	require.NoError(t, p.Close(), "Close is idempotent")
	_, err = p.Create(ctx, nil)
	assert.ErrorIs(t, err, sandbox.ErrClosed)
}

func TestUnreachableModalIsUnavailable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	t.Setenv("MODAL_SERVER_URL", "http://"+addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = modal.New(ctx, &modal.Options{App: "x", Logger: quiet})
	assert.ErrorIs(t, err, sandbox.ErrUnavailable, "%v", err)
}

func TestSandboxAsReachesTheSDK(t *testing.T) {
	sb := create(t, newProvider(t), nil)
	var native *sdk.Sandbox
	require.True(t, sb.As(&native))
	assert.Equal(t, sb.ID(), native.SandboxID)
	var wrong *sdk.Client
	assert.False(t, sb.As(&wrong))
}

func TestDeadConnection(t *testing.T) {
	other, err := modalfake.Start(nil)
	require.NoError(t, err)
	t.Cleanup(func() { other.Close() })
	t.Setenv("MODAL_SERVER_URL", other.URL)
	t.Setenv("MODAL_TOKEN_ID", other.TokenID)
	t.Setenv("MODAL_TOKEN_SECRET", other.TokenSecret)
	ctx := context.Background()
	p, err := modal.New(ctx, &modal.Options{App: "dead", Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	sb, err := p.Create(ctx, nil)
	require.NoError(t, err)
	pr, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"sleep", "30"}})
	require.NoError(t, err)

	// Modal becomes unreachable while the command runs on (closing the
	// fake would end the command first, and Wait could rightly report it).
	other.Partition()

	_, err = sb.ReadFile(ctx, "x")
	assert.ErrorIs(t, err, sandbox.ErrUnavailable, "%v", err)
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = sb.Start(short, &sandbox.Cmd{Args: []string{"true"}})
	assert.True(t, errors.Is(err, sandbox.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded), "%v", err)
	wctx, wcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer wcancel()
	_, err = pr.Wait(wctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded, "Wait is bounded by its ctx while the connection is down")

	require.NoError(t, p.Close())
	wctx2, wcancel2 := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel2()
	_, err = pr.Wait(wctx2)
	assert.ErrorIs(t, err, sandbox.ErrClosed, "closing the provider ends the wait: %v", err)
}

func TestTerminateThroughADetachedHandleStillTerminates(t *testing.T) {
	p := newProvider(t)
	sb := create(t, p, nil)
	var native *sdk.Sandbox
	require.True(t, sb.As(&native))
	require.NoError(t, native.Detach())
	require.NoError(t, sb.Terminate(context.Background()))
	got, _ := fake.Sandbox(sb.ID())
	assert.True(t, got.Finished)
}

func TestSandboxesAreUnusableAfterProviderClose(t *testing.T) {
	p, err := modal.New(context.Background(), &modal.Options{App: "perimeter-test", Logger: quiet})
	require.NoError(t, err)
	sb, err := p.Create(context.Background(), nil)
	require.NoError(t, err)
	id := sb.ID()
	require.NoError(t, p.Close())
	_, err = sb.Start(context.Background(), &sandbox.Cmd{Args: []string{"true"}})
	assert.ErrorIs(t, err, sandbox.ErrClosed)
	assert.ErrorIs(t, sb.Terminate(context.Background()), sandbox.ErrClosed, "a closed provider cannot terminate; it must not pretend to")
	got, _ := fake.Sandbox(id)
	assert.False(t, got.Finished, "Close does not terminate sandboxes")

	p2 := newProvider(t)
	again, err := p2.Get(context.Background(), id)
	require.NoError(t, err)
	require.NoError(t, again.Terminate(context.Background()))
}

func TestNamedSecretsAndConfigureReachTheSandbox(t *testing.T) {
	fake.AddSecret("perimeter-team", map[string]string{"TEAM_TOKEN": "t0k"})
	p, err := modal.New(context.Background(), &modal.Options{
		App: "perimeter-test", Logger: quiet,
		Secrets: []string{"perimeter-team"},
		Configure: func(spec *sandbox.Spec, params *sdk.SandboxCreateParams) error {
			if spec.Labels["refuse"] != "" {
				return errors.New("refused by the host")
			}
			params.IdleTimeout = 90 * time.Second
			params.Name = "configured-" + fmt.Sprint(time.Now().UnixNano())
			return nil
		},
	})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	sb := create(t, p, nil)
	res := run(t, sb, &sandbox.Cmd{Args: []string{"sh", "-c", "echo $TEAM_TOKEN"}})
	assert.Equal(t, "t0k\n", string(res.Stdout))
	got, _ := fake.Sandbox(sb.ID())
	assert.Equal(t, uint32(90), got.Definition.GetIdleTimeoutSecs())
	assert.True(t, strings.HasPrefix(got.Definition.GetName(), "configured-"))

	_, err = p.Create(context.Background(), &sandbox.Spec{Labels: map[string]string{"refuse": "1"}})
	assert.ErrorIs(t, err, sandbox.ErrInvalidArgument)
	assert.Contains(t, err.Error(), "refused by the host")

	missing, err := modal.New(context.Background(), &modal.Options{App: "perimeter-test", Logger: quiet, Secrets: []string{"no-such-secret"}})
	require.NoError(t, err)
	defer missing.Close()
	_, err = missing.Create(context.Background(), nil)
	assert.ErrorIs(t, err, sandbox.ErrNotFound)
	assert.Contains(t, err.Error(), "no-such-secret")
}
