package daytona

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/perimeter-sdk/perimeter/providers/daytona/daytonafake"
	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func clearEnv(t *testing.T) {
	for _, k := range []string{"DAYTONA_API_KEY", "DAYTONA_JWT_TOKEN", "DAYTONA_ORGANIZATION_ID",
		"DAYTONA_API_URL", "DAYTONA_SERVER_URL", "DAYTONA_TARGET"} {
		t.Setenv(k, "")
	}
}

func TestOpenReadsDaytonasEnvironment(t *testing.T) {
	clearEnv(t)
	_, err := sandbox.Open(context.Background(), "daytona://")
	assert.ErrorIs(t, err, sandbox.ErrInvalidArgument)
	assert.ErrorContains(t, err, "DAYTONA_API_KEY")

	t.Setenv("DAYTONA_API_KEY", "k")
	t.Setenv("DAYTONA_SERVER_URL", "https://daytona.example/api")
	t.Setenv("DAYTONA_TARGET", "eu")
	pv, err := sandbox.Open(context.Background(), "daytona://")
	require.NoError(t, err)
	p := driverOf(t, pv)
	assert.Equal(t, "https://daytona.example/api", p.Client().APIURL())
	assert.Equal(t, "eu", p.opts.Target)

	t.Setenv("DAYTONA_API_URL", "https://api.example/api")
	pv, err = sandbox.Open(context.Background(), "daytona://us")
	require.NoError(t, err)
	assert.Equal(t, "https://api.example/api", driverOf(t, pv).Client().APIURL(), "DAYTONA_API_URL wins over DAYTONA_SERVER_URL")
	assert.Equal(t, "us", driverOf(t, pv).opts.Target, "the URL's target wins over DAYTONA_TARGET")
}

func TestOpenRefusesWhatDoesNotBelongInTheURL(t *testing.T) {
	clearEnv(t)
	t.Setenv("DAYTONA_API_KEY", "k")
	for raw, want := range map[string]string{
		"daytona://us?region=eu":      `unknown URL query parameter "region" (known: endpoint)`,
		"daytona://key@us":            "credentials do not belong in the URL",
		"daytona://us/extra":          "has a path",
		"daytona://?endpoint=ftp://x": "is not an http(s) URL",
	} {
		_, err := sandbox.Open(context.Background(), raw)
		assert.ErrorIs(t, err, sandbox.ErrInvalidArgument, raw)
		assert.ErrorContains(t, err, want, raw)
	}
}

func TestJWTNeedsAnOrganizationAndSendsIt(t *testing.T) {
	clearEnv(t)
	t.Setenv("DAYTONA_JWT_TOKEN", "jwt")
	_, err := New(nil)
	assert.ErrorContains(t, err, "DAYTONA_ORGANIZATION_ID")

	var got http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		io.WriteString(w, `{"items":[],"nextCursor":null}`)
	}))
	defer srv.Close()
	t.Setenv("DAYTONA_ORGANIZATION_ID", "org-1")
	p, err := New(&Options{APIURL: srv.URL})
	require.NoError(t, err)
	for _, err := range p.List(context.Background(), nil) {
		require.NoError(t, err)
	}
	assert.Equal(t, "Bearer jwt", got.Get("Authorization"))
	assert.Equal(t, "org-1", got.Get("X-Daytona-Organization-ID"))
	assert.Equal(t, SDKVersion, got.Get("X-Daytona-SDK-Version"))

	// An API key is organization-scoped: no organization header.
	clearEnv(t)
	p, err = New(&Options{APIKey: "k", OrganizationID: "org-1", APIURL: srv.URL})
	require.NoError(t, err)
	for _, err := range p.List(context.Background(), nil) {
		require.NoError(t, err)
	}
	assert.Empty(t, got.Get("X-Daytona-Organization-ID"))
}

func TestCreateRequestMapsTheSpec(t *testing.T) {
	p, err := NewDriver(&Options{APIKey: "k", Target: "eu"})
	require.NoError(t, err)
	r, err := p.createRequest(&sandbox.Spec{
		Image:     "python:3.12",
		Resources: sandbox.Resources{CPU: 2, Memory: 3<<30 + 1, Disk: 10 << 30, GPU: "H100:2"},
		Timeout:   90 * time.Second,
		Network:   &sandbox.NetworkPolicy{Mode: sandbox.NetworkAllowlist, Allow: []string{"10.0.0.0/8", "1.2.3.4", "pypi.org", "*.example.com"}},
		Labels:    map[string]string{"a": "b"},
	}, &CreateOptions{AutoArchive: ptr(time.Hour)})
	require.NoError(t, err)
	assert.Equal(t, "FROM python:3.12\n", r.BuildInfo.DockerfileContent)
	assert.Equal(t, 2, r.CPU)
	assert.Equal(t, 4, r.Memory, "memory is rounded up to whole GiB")
	assert.Equal(t, 10, r.Disk)
	assert.Equal(t, 2, r.GPU)
	assert.Equal(t, []string{"H100"}, r.GPUType)
	assert.Equal(t, 2, *r.AutoStopInterval, "90s of idle time is 2 minutes")
	assert.Equal(t, 0, *r.AutoDeleteInterval, "deleted when it stops")
	assert.Equal(t, 60, *r.AutoArchiveInterval)
	assert.Equal(t, "10.0.0.0/8,1.2.3.4/32", r.NetworkAllowList)
	assert.Equal(t, "pypi.org,*.example.com", r.DomainAllowList)
	assert.False(t, r.NetworkBlockAll)
	assert.Equal(t, "eu", r.Target)

	for _, tc := range []struct {
		spec sandbox.Spec
		kind error
	}{
		{sandbox.Spec{RootFS: "/x"}, sandbox.ErrNotSupported},
		{sandbox.Spec{Resources: sandbox.Resources{CPU: 1.5}}, sandbox.ErrNotSupported},
		{sandbox.Spec{Resources: sandbox.Resources{PIDs: 10}}, sandbox.ErrNotSupported},
		{sandbox.Spec{Image: "a", Snapshot: "b"}, sandbox.ErrInvalidArgument},
		{sandbox.Spec{Resources: sandbox.Resources{GPU: "A100:x"}}, sandbox.ErrInvalidArgument},
		{sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkAllowlist, Allow: []string{"not a host"}}}, sandbox.ErrInvalidArgument},
		{sandbox.Spec{Env: map[string]string{"A-B": "x"}}, sandbox.ErrInvalidArgument},
	} {
		_, err := p.createRequest(&tc.spec, &CreateOptions{})
		assert.ErrorIs(t, err, tc.kind, "%+v", tc.spec)
	}
	r, err = p.createRequest(&sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkAllowlist}}, &CreateOptions{})
	require.NoError(t, err)
	assert.True(t, r.NetworkBlockAll, "an empty allow-list allows nothing")

	r, err = p.createRequest(&sandbox.Spec{}, &CreateOptions{})
	require.NoError(t, err)
	assert.True(t, r.NetworkBlockAll, "a nil Spec.Network is no egress")
	r, err = p.createRequest(&sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}}, &CreateOptions{})
	require.NoError(t, err)
	assert.False(t, r.NetworkBlockAll, "open egress is asked for")
	assert.Empty(t, r.NetworkAllowList+r.DomainAllowList)
}

func TestTransientFailuresAreRetriedAndCreateIsNot(t *testing.T) {
	f, p := newFake(t, &daytonafake.Options{NoIsolation: true})
	sb := newSandbox(t, p, nil)
	ctx := context.Background()

	f.Fail(daytonafake.Fault{Method: "GET", Path: "/sandbox/" + sb.ID(), Status: 503, Times: 2})
	before := f.Hits("GET", "/sandbox/"+sb.ID())
	_, err := sb.Info(ctx)
	require.NoError(t, err)
	assert.Equal(t, 3, f.Hits("GET", "/sandbox/"+sb.ID())-before, "two 503s, then the answer")

	f.Fail(daytonafake.Fault{Method: "POST", Path: "/api/sandbox", Status: 500})
	before = f.Hits("POST", "/api/sandbox")
	_, err = p.Create(ctx, nil)
	assert.ErrorIs(t, err, sandbox.ErrUnavailable)
	var ae *APIError
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, 500, ae.Status)
	assert.Equal(t, 1, f.Hits("POST", "/api/sandbox")-before, "a POST that may have run is not sent again")

	f.Fail(daytonafake.Fault{Method: "POST", Path: "/api/sandbox", Status: 429, RetryAfter: "0"})
	created, err := p.Create(ctx, nil)
	require.NoError(t, err, "a 429 means the request did not run: retried")
	created.Terminate(ctx)

	f.Fail(daytonafake.Fault{Method: "GET", Path: "/sandbox/" + sb.ID(), Status: 429, RetryAfter: "3600"})
	before = f.Hits("GET", "/sandbox/"+sb.ID())
	_, err = sb.Info(ctx)
	assert.ErrorIs(t, err, sandbox.ErrResourceExhausted)
	assert.Equal(t, 1, f.Hits("GET", "/sandbox/"+sb.ID())-before, "a Retry-After beyond MaxRetryAfter fails at once")
}

func TestErrorsCarryTheDaemonsAnswer(t *testing.T) {
	_, p := newFake(t, &daytonafake.Options{NoIsolation: true})
	sb := newSandbox(t, p, nil)
	_, err := sb.ReadFile(context.Background(), "missing")
	assert.ErrorIs(t, err, sandbox.ErrNotFound)
	var ae *APIError
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, 404, ae.Status)
	assert.True(t, ae.Daemon)
	assert.Contains(t, err.Error(), sb.ID())
	assert.Contains(t, err.Error(), "read file")
}

func TestPauseStopsAndResumeKeepsTheFiles(t *testing.T) {
	f, p := newFake(t, nil)
	ctx := context.Background()
	sb := newSandbox(t, p, &sandbox.Spec{Timeout: time.Hour})
	require.NoError(t, sb.WriteFile(ctx, "kept.txt", strings.NewReader("before the pause"), 0o644))

	require.NoError(t, sb.Pause(ctx))
	assert.Equal(t, "stopped", f.State(sb.ID()))
	info, err := sb.Info(ctx)
	require.NoError(t, err)
	assert.Equal(t, sandbox.StatePaused, info.State)

	require.NoError(t, sb.Resume(ctx))
	assert.Equal(t, "started", f.State(sb.ID()))
	res, err := sandbox.Run(ctx, sb, &sandbox.Cmd{Args: []string{"cat", "kept.txt"}}, nil)
	require.NoError(t, err)
	assert.Equal(t, "before the pause", string(res.Stdout))
}

func TestStoppedOrArchivedSandboxIsResumedOnFirstUse(t *testing.T) {
	f, p := newFake(t, &daytonafake.Options{NoIsolation: true})
	ctx := context.Background()
	for _, idle := range []func(string) bool{f.Stop, f.Archive} {
		sb := newSandbox(t, p, nil)
		require.NoError(t, sb.WriteFile(ctx, "f", strings.NewReader("x"), 0o644))
		require.True(t, idle(sb.ID()))

		got, err := p.Get(ctx, sb.ID())
		require.NoError(t, err)
		info, err := got.Info(ctx)
		require.NoError(t, err)
		assert.Equal(t, sandbox.StatePaused, info.State, "Get reports the state; it does not fail")
		state, err := sandboxOf(t, got).State(ctx)
		require.NoError(t, err)
		assert.Contains(t, []string{"stopped", "archived"}, state)

		res, err := sandbox.Run(ctx, got, &sandbox.Cmd{Args: []string{"cat", "f"}}, nil)
		require.NoError(t, err)
		assert.Equal(t, "x", string(res.Stdout))
		assert.Equal(t, "started", f.State(sb.ID()))
	}
}

func TestHeldHandleResumesAfterAutoStop(t *testing.T) {
	f, p := newFake(t, &daytonafake.Options{NoIsolation: true})
	ctx := context.Background()
	sb := newSandbox(t, p, nil)
	require.NoError(t, sb.WriteFile(ctx, "f", strings.NewReader("still here"), 0o644))
	require.True(t, f.Stop(sb.ID()), "as Daytona's auto-stop would")
	rc, err := sb.ReadFile(ctx, "f")
	require.NoError(t, err)
	b, _ := io.ReadAll(rc)
	rc.Close()
	assert.Equal(t, "still here", string(b))
}

func TestListPaginates(t *testing.T) {
	_, p := newFake(t, &daytonafake.Options{NoIsolation: true})
	driverOf(t, p).pageSize = 2
	want := map[string]bool{}
	for range 5 {
		sb := newSandbox(t, p, &sandbox.Spec{Labels: map[string]string{"batch": "x"}})
		want[sb.ID()] = true
	}
	newSandbox(t, p, &sandbox.Spec{Labels: map[string]string{"batch": "y"}})
	got := map[string]bool{}
	for info, err := range p.List(context.Background(), &sandbox.ListOptions{Labels: map[string]string{"batch": "x"}}) {
		require.NoError(t, err)
		got[info.ID] = true
	}
	assert.Equal(t, want, got)
}

func TestLongCommandOutlivesTheSyncLimitAndStreamsSplit(t *testing.T) {
	_, p := newFake(t, &daytonafake.Options{NoIsolation: true})
	sb := newSandbox(t, p, nil)
	var out, errb syncBuf
	proc, err := sb.Start(context.Background(), &sandbox.Cmd{
		Args:   []string{"sh", "-c", `echo first; echo oops >&2; while [ ! -e go ]; do sleep 0.05; done; echo last`},
		Stdout: &out, Stderr: &errb,
	})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return out.String() == "first\n" }, time.Minute, 10*time.Millisecond,
		"output arrives while the command runs")
	require.NoError(t, sb.WriteFile(context.Background(), "go", strings.NewReader(""), 0o644))
	st, err := proc.Wait(context.Background())
	require.NoError(t, err)
	assert.True(t, st.Success())
	assert.Equal(t, "first\nlast\n", out.String())
	assert.Equal(t, "oops\n", errb.String(), "the process-group line is not part of stderr")
}

func TestExposeTunnelCarriesThePreviewToken(t *testing.T) {
	_, p := newFake(t, &daytonafake.Options{NoIsolation: true})
	sb := newSandbox(t, p, nil)
	tun, err := sb.Expose(context.Background(), 8080, nil)
	require.NoError(t, err)
	var tt *Tunnel
	require.True(t, tun.As(&tt))
	assert.NotEmpty(t, tt.Header().Get("X-Daytona-Preview-Token"))
	assert.NotEqual(t, tt.URL(), tt.PreviewURL())
	assert.WithinDuration(t, time.Now().Add(time.Hour), tt.Expires(), time.Minute)
	require.NoError(t, tun.Close())
	require.NoError(t, tun.Close())
	_, err = sb.Expose(context.Background(), 8080, &sandbox.ExposeOptions{Protocol: "tcp"})
	assert.ErrorIs(t, err, sandbox.ErrNotSupported)
}

func TestDemuxHandlesMarkersSplitAcrossMessages(t *testing.T) {
	stream := []byte("\x01\x01\x01out-1\x02\x02\x02\x1eperimeter-pgid 42\x1e\nerr-1\x01\x01\x01out\x012\x02\x02\x02err-2\x01")
	for cut1 := 0; cut1 <= len(stream); cut1++ {
		for cut2 := cut1; cut2 <= len(stream); cut2 += 3 {
			var out, errb bytes.Buffer
			p := &process{stdout: &out, stderr: &errb, pgidKnown: make(chan struct{})}
			d := &demux{p: p}
			for _, part := range [][]byte{stream[:cut1], stream[cut1:cut2], stream[cut2:]} {
				require.NoError(t, d.write(part))
			}
			d.flush()
			require.Equal(t, "out-1out\x012", out.String(), "cuts %d %d", cut1, cut2)
			require.Equal(t, "err-1err-2\x01", errb.String(), "cuts %d %d", cut1, cut2)
			require.Equal(t, 42, p.pgid)
		}
	}
}

func TestCommandTextQuotesEverything(t *testing.T) {
	got := commandText(&sandbox.Cmd{Args: []string{"printf", "%s", "it's $HOME"}, Env: map[string]string{"B": "a'b", "A": "x\ny"}}, "/home/it's")
	assert.True(t, strings.HasPrefix(got, `A='x`+"\n"+`y' B='a'\''b' sh -c `), got)
	assert.True(t, strings.HasSuffix(got, ` 0 '/home/it'\''s' 'printf' '%s' 'it'\''s $HOME'`), got)
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestPTYTimeoutAndCancel(t *testing.T) {
	_, p := newFake(t, &daytonafake.Options{NoIsolation: true})
	sb := newSandbox(t, p, nil)
	ctx := context.Background()
	proc, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"sleep", "60"}, TTY: &sandbox.TTY{Rows: 10, Cols: 40}, Timeout: time.Second})
	require.NoError(t, err)
	st, err := proc.Wait(ctx)
	require.NoError(t, err)
	assert.True(t, st.TimedOut, "%+v", st)

	cctx, cancel := context.WithCancel(ctx)
	proc, err = sb.Start(cctx, &sandbox.Cmd{Args: []string{"sleep", "60"}, TTY: &sandbox.TTY{Rows: 10, Cols: 40}})
	require.NoError(t, err)
	cancel()
	_, err = proc.Wait(ctx)
	assert.ErrorIs(t, err, context.Canceled)

	res, err := sandbox.Run(ctx, sb, &sandbox.Cmd{Args: []string{"sh", "-c", "exit 7"}, TTY: &sandbox.TTY{Rows: 10, Cols: 40}}, nil)
	require.NoError(t, err)
	assert.Equal(t, 7, res.Status.Code)
	res, err = sandbox.Run(ctx, sb, &sandbox.Cmd{Args: []string{"no-such-program-here"}, TTY: &sandbox.TTY{Rows: 10, Cols: 40}}, nil)
	require.NoError(t, err)
	assert.Equal(t, 127, res.Status.Code)
}

func TestGetByNameAndUnknown(t *testing.T) {
	_, p := newFake(t, &daytonafake.Options{NoIsolation: true})
	ctx := context.Background()
	sb, err := CreateWith(ctx, p, &sandbox.Spec{Workdir: "project"}, &CreateOptions{Name: "perimeter-named"})
	require.NoError(t, err)
	t.Cleanup(func() { sb.Terminate(context.Background()) })
	got, err := p.Get(ctx, "perimeter-named")
	require.NoError(t, err)
	assert.Equal(t, sb.ID(), got.ID(), "Get by name returns the sandbox's ID")
	assert.Equal(t, "perimeter-named", sandboxOf(t, got).Name())

	res, err := sandbox.Run(ctx, sb, &sandbox.Cmd{Args: []string{"sh", "-c", "basename $(pwd)"}}, nil)
	require.NoError(t, err)
	assert.Equal(t, "project\n", string(res.Stdout), "a relative Spec.Workdir is made in the daemon's directory")

	_, err = p.Get(ctx, "no-such-sandbox")
	assert.ErrorIs(t, err, sandbox.ErrNotFound)
	require.NoError(t, sb.Terminate(ctx))
	_, err = p.Get(ctx, sb.ID())
	assert.ErrorIs(t, err, sandbox.ErrNotFound)
}

func TestBrokenLogStreamIsCompletedFromTheLogs(t *testing.T) {
	f, p := newFake(t, &daytonafake.Options{NoIsolation: true})
	sb := newSandbox(t, p, nil)
	f.Fail(daytonafake.Fault{Method: "GET", Path: "/logs", Drop: true})
	res, err := sandbox.Run(context.Background(), sb, &sandbox.Cmd{Args: []string{"sh", "-c", "echo out; echo err >&2; exit 5"}}, nil)
	require.NoError(t, err)
	assert.Equal(t, 5, res.Status.Code)
	assert.Equal(t, "out\n", string(res.Stdout))
	assert.Equal(t, "err\n", string(res.Stderr))
	assert.Equal(t, 2, f.Hits("GET", "/logs"), "the dropped stream, then the logs")
}

func TestPauseEndsRunningCommandsWithAClearError(t *testing.T) {
	_, p := newFake(t, &daytonafake.Options{NoIsolation: true})
	sb := newSandbox(t, p, nil)
	ctx := context.Background()
	var out syncBuf
	proc, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"sh", "-c", "echo up; sleep 60"}, Stdout: &out})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return out.String() == "up\n" }, time.Minute, 10*time.Millisecond)
	require.NoError(t, sb.Pause(ctx))
	_, err = proc.Wait(ctx)
	assert.ErrorIs(t, err, sandbox.ErrUnavailable)
	assert.ErrorContains(t, err, "stopped")
	res, err := sandbox.Run(ctx, sb, &sandbox.Cmd{Args: []string{"echo", "again"}}, nil)
	require.NoError(t, err, "the next command starts the sandbox again")
	assert.Equal(t, "again\n", string(res.Stdout))
}

func TestAsReachesTheDriversTypes(t *testing.T) {
	_, p := newFake(t, &daytonafake.Options{NoIsolation: true})
	var d *Provider
	require.True(t, p.As(&d))
	var c *Client
	require.True(t, p.As(&c))
	assert.Same(t, d.Client(), c)
	var wrong *Sandbox
	assert.False(t, p.As(&wrong))

	sb := newSandbox(t, p, nil)
	var ds *Sandbox
	require.True(t, sb.As(&ds))
	assert.Equal(t, sb.ID(), ds.ID())
	assert.False(t, sb.As(&d))

	_, err := CreateWith(context.Background(), sandbox.NewProvider(notDaytona{}, nil), nil, nil)
	assert.ErrorIs(t, err, sandbox.ErrInvalidArgument)
	assert.ErrorContains(t, err, "not a Daytona provider")
}

// notDaytona is a provider of another kind, for CreateWith's refusal.
type notDaytona struct{ driver.Provider }

func (notDaytona) Name() string       { return "other" }
func (notDaytona) As(target any) bool { return false }

func TestNilNetworkIsNoEgressAndInfoSaysSo(t *testing.T) {
	_, p := newFake(t, &daytonafake.Options{NoIsolation: true})
	ctx := context.Background()
	sb := newSandbox(t, p, nil)
	info, err := sb.Info(ctx) // from Daytona's record: networkBlockAll was sent
	require.NoError(t, err)
	assert.True(t, strings.HasSuffix(info.Isolation, "network: none"), info.Isolation)

	open := newSandbox(t, p, &sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}})
	info, err = open.Info(ctx)
	require.NoError(t, err)
	assert.True(t, strings.HasSuffix(info.Isolation, "network: open"), info.Isolation)
}

func TestSpecialPermissionBitsAreRefused(t *testing.T) {
	_, p := newFake(t, &daytonafake.Options{NoIsolation: true})
	ctx := context.Background()
	sb := newSandbox(t, p, nil)
	err := sb.WriteFile(ctx, "suid", strings.NewReader("x"), fs.ModeSetuid|0o755)
	assert.ErrorIs(t, err, sandbox.ErrNotSupported)
	_, err = sb.Stat(ctx, "suid")
	assert.ErrorIs(t, err, sandbox.ErrNotFound, "nothing was written")
	assert.ErrorIs(t, sb.MkdirAll(ctx, "sticky", fs.ModeSticky|0o777), sandbox.ErrNotSupported)
	require.NoError(t, sb.WriteFile(ctx, "plain", strings.NewReader("x"), 0o700))
	fi, err := sb.Stat(ctx, "plain")
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o700), fi.Mode.Perm())
}
