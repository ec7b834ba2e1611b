package cloudflare

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perimeter-sdk/perimeter/providers/cloudflare/cloudflarefake"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

func TestDecodeExecKeepsStreamsApartAndDecodesAsItArrives(t *testing.T) {
	stream := "event: stdout\ndata: aGVs\n\n" + // "hel"
		": a comment\n\n" +
		"event: stderr\r\ndata: ZXJy\r\n\r\n" + // "err", CRLF lines
		"event: stdout\ndata: bG8K\n\n" + // "lo\n"
		"event: exit\ndata: {\"exit_code\":3}\n\n"
	var out, errb bytes.Buffer
	code, err := decodeExec(strings.NewReader(stream), &out, &errb)
	require.NoError(t, err)
	assert.Equal(t, 3, code)
	assert.Equal(t, "hello\n", out.String())
	assert.Equal(t, "err", errb.String())
}

func TestDecodeExecWritesBeforeTheStreamEnds(t *testing.T) {
	pr, pw := io.Pipe()
	out := make(chan string, 1)
	go func() {
		var sink writerFunc = func(b []byte) (int, error) { out <- string(b); return len(b), nil }
		decodeExec(pr, sink, nil)
	}()
	io.WriteString(pw, "event: stdout\ndata: Zmlyc3Q=\n\n")
	assert.Equal(t, "first", <-out) // delivered while the stream is still open
	pw.Close()
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

func TestDecodeExecEOFWithoutTerminalEventIsAnError(t *testing.T) {
	for name, stream := range map[string]string{
		"empty":          "",
		"output only":    "event: stdout\ndata: aGk=\n\n",
		"cut mid-event":  "event: exit\ndata: {\"exit_code\":0}",
		"no blank line":  "event: exit\ndata: {\"exit_code\":0}\n",
		"exit without n": "event: exit\ndata: {}\n\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := decodeExec(strings.NewReader(stream), io.Discard, io.Discard)
			require.Error(t, err, "a stream without a complete exit event must not succeed")
		})
	}
	_, err := decodeExec(strings.NewReader("event: stdout\ndata: aGk=\n\n"), io.Discard, io.Discard)
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
}

func TestDecodeExecErrorEventIsAnAPIError(t *testing.T) {
	_, err := decodeExec(strings.NewReader("event: error\ndata: {\"error\":\"boom\",\"code\":\"exec_transport_error\"}\n\n"), nil, nil)
	var ae *APIError
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, CodeExecTransportError, ae.Code)
	assert.Equal(t, "boom", ae.Message)
	assert.ErrorIs(t, wrap("sb", "exec", err), sandbox.ErrUnavailable)
}

func TestDecodeExecMultiLineData(t *testing.T) {
	// One data: line per line of payload; the lines are joined with "\n".
	_, err := decodeExec(strings.NewReader("event: error\ndata: {\"error\":\"a\",\ndata: \"code\":\"exec_error\"}\n\n"), nil, nil)
	var ae *APIError
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, CodeExecError, ae.Code)
}

func TestErrorKinds(t *testing.T) {
	for _, tc := range []struct {
		err  *APIError
		kind error
	}{
		{&APIError{Status: 404, Code: CodeWorkspaceReadNotFound}, sandbox.ErrNotFound},
		{&APIError{Status: 403, Code: CodeInvalidRequest}, sandbox.ErrPermissionDenied},
		{&APIError{Status: 400, Code: CodeInvalidRequest}, sandbox.ErrInvalidArgument},
		{&APIError{Status: 401, Code: CodeUnauthorized}, sandbox.ErrPermissionDenied},
		{&APIError{Status: 413, Code: CodePayloadTooLarge}, sandbox.ErrResourceExhausted},
		{&APIError{Status: 503, Code: CodeCapacityExceeded}, sandbox.ErrResourceExhausted},
		{&APIError{Status: 502, Code: CodePoolError}, sandbox.ErrUnavailable},
		{&APIError{Status: 502, Code: CodeTunnelError}, sandbox.ErrUnavailable},
	} {
		err := wrap("sb", "op", tc.err)
		assert.ErrorIs(t, err, tc.kind, "%v", tc.err)
		var ae *APIError
		require.ErrorAs(t, err, &ae)
		assert.Equal(t, tc.err.Code, ae.Code)
	}
}

func TestNewIDIsInTheBridgeFormat(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := NewID()
		require.Len(t, id, 26)
		require.True(t, ValidID(id), id)
		require.False(t, seen[id])
		seen[id] = true
	}
}

func TestWriteFileOverTheLimitIsRefusedBeforeUpload(t *testing.T) {
	requests := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { requests++ }))
	defer srv.Close()
	c, err := NewClient(srv.URL, "k", nil)
	require.NoError(t, err)
	err = c.WriteFile(context.Background(), "abc", "", "/workspace/big", strings.NewReader(""), MaxFileSize+1)
	require.ErrorIs(t, err, ErrTooLarge)
	assert.Contains(t, err.Error(), "32 MiB")
	assert.ErrorIs(t, wrap("abc", "write file", err), sandbox.ErrResourceExhausted)
	err = c.Hydrate(context.Background(), "abc", strings.NewReader(""), MaxFileSize+1)
	require.ErrorIs(t, err, ErrTooLarge)
	assert.Zero(t, requests, "nothing may be sent")
}

func TestVersionCheck(t *testing.T) {
	f := cloudflarefake.New(&cloudflarefake.Options{Version: "2.0.0"})
	defer f.Close()
	_, err := New(context.Background(), &Options{BridgeURL: f.URL(), APIKey: f.APIKey()})
	require.ErrorIs(t, err, sandbox.ErrNotSupported)
	var ve *VersionError
	require.ErrorAs(t, err, &ve)
	assert.Equal(t, "2.0.0", ve.Found)
	assert.Contains(t, err.Error(), `reports version "2.0.0"`)
	assert.Contains(t, err.Error(), `targets "`+TargetVersion+`"`)
}

func TestVersionCheckNamesMissingRoutes(t *testing.T) {
	doc := `{"openapi":"3.1.0","info":{"version":"` + TargetVersion + `"},"paths":{"/v1/sandbox/{id}/exec":{"post":{}}}}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, doc)
	}))
	defer srv.Close()
	_, err := New(context.Background(), &Options{BridgeURL: srv.URL})
	require.ErrorIs(t, err, sandbox.ErrNotSupported)
	assert.Contains(t, err.Error(), "GET /v1/sandbox/{id}/pty")
	assert.NotContains(t, err.Error(), "POST /v1/sandbox/{id}/exec")
}

func TestWrongKeyIsPermissionDenied(t *testing.T) {
	f := cloudflarefake.New(nil)
	defer f.Close()
	_, err := New(context.Background(), &Options{BridgeURL: f.URL(), APIKey: "wrong"})
	require.ErrorIs(t, err, sandbox.ErrPermissionDenied)
	var ae *APIError
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, CodeUnauthorized, ae.Code)
}

func TestOpenURL(t *testing.T) {
	f := cloudflarefake.New(nil)
	defer f.Close()
	u, _ := url.Parse(f.URL())
	t.Setenv(EnvAPIKey, f.APIKey())
	t.Setenv(EnvBridgeURL, "")

	p, err := sandbox.Open(context.Background(), "cloudflare://"+u.Host+"?scheme=http")
	require.NoError(t, err)
	var d *Provider
	require.True(t, p.As(&d))
	assert.Equal(t, f.URL(), d.Client().BaseURL())
	var c *Client
	require.True(t, p.As(&c))
	assert.Same(t, d.Client(), c)
	p.Close()

	_, err = sandbox.Open(context.Background(), "cloudflare://"+u.Host+"?schem=http")
	require.ErrorIs(t, err, sandbox.ErrInvalidArgument)
	assert.Contains(t, err.Error(), `unknown query parameter "schem" (known: scheme)`)

	_, err = sandbox.Open(context.Background(), "cloudflare://user:secret@"+u.Host)
	require.ErrorIs(t, err, sandbox.ErrInvalidArgument)
	assert.NotContains(t, err.Error(), "secret")

	_, err = sandbox.Open(context.Background(), "cloudflare://")
	require.ErrorIs(t, err, sandbox.ErrInvalidArgument)
	assert.Contains(t, err.Error(), EnvBridgeURL)

	t.Setenv(EnvBridgeURL, f.URL())
	p, err = sandbox.Open(context.Background(), "cloudflare://")
	require.NoError(t, err)
	p.Close()
}

func TestUnsupportedAbilitiesSayWhy(t *testing.T) {
	_, p := newFake(t, nil)
	ctx := ctxT(t)
	for name, tc := range map[string]struct {
		spec *sandbox.Spec
		why  string
	}{
		"default network": {&sandbox.Spec{}, `mode "none"`},
		"no network":      {&sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkNone}}, "cannot restrict"},
		"allowlist": {&sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkAllowlist, Allow: []string{"example.com"}}},
			"cannot restrict"},
		"image":     {openEgress(&sandbox.Spec{Image: "python"}), "Spec.Image"},
		"resources": {openEgress(&sandbox.Spec{Resources: sandbox.Resources{Memory: 1 << 30}}), "Spec.Resources"},
		"snapshot":  {openEgress(&sandbox.Spec{Snapshot: "x"}), "Spec.Snapshot"},
		"workdir":   {openEgress(&sandbox.Spec{Workdir: "/tmp"}), "/workspace only"},
	} {
		_, err := p.Create(ctx, tc.spec)
		require.ErrorIs(t, err, sandbox.ErrNotSupported, name)
		assert.Contains(t, err.Error(), tc.why, name)
	}
	for info, err := range p.List(ctx, nil) {
		t.Fatalf("List after failed creates yielded %v %v", info, err)
	}
	sb := newSandbox(t, p, nil)
	info, err := sb.Info(ctx)
	require.NoError(t, err)
	assert.Contains(t, info.Isolation, "egress: open")
	_, err = sb.Start(ctx, &sandbox.Cmd{Args: []string{"cat"}, Stdin: strings.NewReader("x")})
	require.ErrorIs(t, err, sandbox.ErrNotSupported)
	_, err = sb.ReadFile(ctx, "/etc/passwd")
	require.ErrorIs(t, err, sandbox.ErrNotSupported)
	assert.Contains(t, err.Error(), "under /workspace only")
	_, err = sb.Expose(ctx, 80, nil)
	require.ErrorIs(t, err, sandbox.ErrNotSupported)
	assert.Contains(t, err.Error(), "1024")
	_, err = sb.Expose(ctx, 8080, &sandbox.ExposeOptions{Protocol: "tcp"})
	require.ErrorIs(t, err, sandbox.ErrNotSupported)
	_, err = sb.Snapshot(ctx)
	require.ErrorIs(t, err, sandbox.ErrNotSupported)
}

func TestEnvAndWorkdirThroughTheBridgeSession(t *testing.T) {
	_, p := newFake(t, nil)
	sb := newSandbox(t, p, &sandbox.Spec{Env: map[string]string{"A": "spec", "B": "spec"}, Workdir: "proj/src"})
	assert.Equal(t, sessionName, drv(t, sb).Session())
	res, err := sandbox.Run(ctxT(t), sb, &sandbox.Cmd{Args: []string{"sh", "-c", `echo "$A $B $(pwd)"`}, Env: map[string]string{"B": "cmd"}}, nil)
	require.NoError(t, err)
	assert.Equal(t, "spec cmd /workspace/proj/src\n", string(res.Stdout))

	// A handle from Get finds the session again.
	var d *Provider
	require.True(t, p.As(&d))
	again := sandbox.NewProvider(&Provider{c: d.c, boxes: map[string]*Sandbox{}, gone: map[string]bool{}}, nil)
	got, err := again.Get(ctxT(t), sb.ID())
	require.NoError(t, err)
	assert.Equal(t, "/workspace/proj/src", drv(t, got).workdir)
	res = run(t, got, "sh", "-c", `echo "$A"`)
	assert.Equal(t, "spec\n", string(res.Stdout))
}

func TestArgvIsNotReadByAShell(t *testing.T) {
	_, p := newFake(t, nil)
	sb := newSandbox(t, p, nil)
	weird := "it's $HOME; `id` \"q\" \\ \n\t*"
	res := run(t, sb, "printf", "%s", weird)
	assert.Equal(t, weird, string(res.Stdout))
	res = run(t, sb, "exit", "3") // a shell builtin is not a program
	assert.Equal(t, 127, res.Status.Code)
	_, err := sb.Start(ctxT(t), &sandbox.Cmd{Args: []string{"A=1"}})
	assert.ErrorIs(t, err, sandbox.ErrInvalidArgument)
}

func TestLargeWriteGoesInParts(t *testing.T) {
	_, p := newFake(t, nil)
	sb := newSandbox(t, p, nil)
	data := bytes.Repeat([]byte("0123456789abcdef"), (MaxFileSize+MaxFileSize/2)/16)
	require.NoError(t, sb.WriteFile(ctxT(t), "big.bin", bytes.NewReader(data), 0o600))
	fi, err := sb.Stat(ctxT(t), "big.bin")
	require.NoError(t, err)
	assert.Equal(t, int64(len(data)), fi.Size)
	assert.Equal(t, "-rw-------", fi.Mode.String())
	list, err := sb.ReadDir(ctxT(t), ".")
	require.NoError(t, err)
	require.Len(t, list, 1, "no upload part may be left: %v", list)
}

func TestPersistAndHydrate(t *testing.T) {
	_, p := newFake(t, nil)
	a := newSandbox(t, p, nil)
	ctx := ctxT(t)
	require.NoError(t, a.MkdirAll(ctx, "d/e", 0))
	require.NoError(t, a.WriteFile(ctx, "d/e/f.txt", strings.NewReader("kept"), 0))
	require.NoError(t, a.WriteFile(ctx, "skip.txt", strings.NewReader("left out"), 0))
	var tarball bytes.Buffer
	require.NoError(t, Persist(ctx, a, &tarball, "skip.txt"))
	err := Persist(ctx, a, io.Discard, "../etc")
	require.ErrorIs(t, err, sandbox.ErrInvalidArgument)

	b := newSandbox(t, p, nil)
	require.NoError(t, Hydrate(ctx, b, &tarball))
	rc, err := b.ReadFile(ctx, "d/e/f.txt")
	require.NoError(t, err)
	got, _ := io.ReadAll(rc)
	rc.Close()
	assert.Equal(t, "kept", string(got))
	_, err = b.Stat(ctx, "skip.txt")
	assert.ErrorIs(t, err, sandbox.ErrNotFound)

	err = Hydrate(ctx, b, io.LimitReader(zeros{}, MaxFileSize+1))
	assert.ErrorIs(t, err, sandbox.ErrResourceExhausted)
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) { clear(b); return len(b), nil }

func TestTerminatedIDIsNotFound(t *testing.T) {
	f, p := newFake(t, nil)
	sb := newSandbox(t, p, &sandbox.Spec{Labels: map[string]string{"k": "v"}})
	n := 0
	for info, err := range p.List(ctxT(t), &sandbox.ListOptions{Labels: map[string]string{"k": "v"}}) {
		require.NoError(t, err)
		assert.Equal(t, sb.ID(), info.ID)
		n++
	}
	assert.Equal(t, 1, n)
	require.NoError(t, sb.Terminate(ctxT(t)))
	assert.NotContains(t, f.Sandboxes(), sb.ID(), "the container must be destroyed")
	_, err := p.Get(ctxT(t), sb.ID())
	assert.ErrorIs(t, err, sandbox.ErrNotFound)
	_, err = sb.Start(ctxT(t), &sandbox.Cmd{Args: []string{"true"}})
	assert.ErrorIs(t, err, sandbox.ErrTerminated)
	for info := range p.List(ctxT(t), nil) {
		t.Errorf("List yielded terminated %s", info.ID)
	}
}

func TestExecStreamCutIsATransportError(t *testing.T) {
	// A bridge whose exec stream stops after the pid line, without an exit
	// event: Wait must fail, not report success.
	f := cloudflarefake.New(nil)
	defer f.Close()
	var cut bool
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/exec") && !cut {
			var body bytes.Buffer
			io.Copy(&body, r.Body)
			if strings.Contains(body.String(), "setsid") {
				cut = true
				w.Header().Set("Content-Type", "text/event-stream")
				fmt.Fprintf(w, "event: stdout\ndata: cGVyaW1ldGVyLXBpZCA0MgpoZWxsbwo=\n\n") // "perimeter-pid 42\nhello\n"
				return
			}
			r.Body = io.NopCloser(&body)
		}
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, f.URL()+r.URL.RequestURI(), r.Body)
		req.Header = r.Header
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			w.WriteHeader(502)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	defer proxy.Close()
	p, err := New(context.Background(), &Options{BridgeURL: proxy.URL, APIKey: f.APIKey()})
	require.NoError(t, err)
	defer p.Close()
	sb := newSandbox(t, p, nil)
	var out bytes.Buffer
	res, err := sandbox.Run(ctxT(t), sb, &sandbox.Cmd{Args: []string{"echo", "hello"}, Stdout: &out}, nil)
	require.Error(t, err, "a cut stream must not be a success (status %v)", res)
	assert.ErrorIs(t, err, sandbox.ErrUnavailable)
	assert.True(t, errors.Is(err, io.ErrUnexpectedEOF), "%v", err)
}

func TestExposeNamedAndTunnelAs(t *testing.T) {
	_, p := newFake(t, &cloudflarefake.Options{
		TunnelURL: func(_ string, port int, name string) string {
			return fmt.Sprintf("https://%s-%d.example.test", name, port)
		},
	})
	sb := newSandbox(t, p, nil)
	ctx := ctxT(t)
	tun, err := ExposeNamed(ctx, sb, 8080, "app")
	require.NoError(t, err)
	assert.Equal(t, "https://app-8080.example.test", tun.URL())
	var ti TunnelInfo
	require.True(t, tun.As(&ti))
	assert.Equal(t, 8080, ti.Port)
	require.NoError(t, tun.Close())

	_, err = ExposeNamed(ctx, sb, 0, "app")
	require.ErrorIs(t, err, sandbox.ErrInvalidArgument)
	_, err = ExposeNamed(ctx, sb, 80, "app")
	require.ErrorIs(t, err, sandbox.ErrNotSupported)

	// The portable Expose's tunnel reaches the same type.
	pt, err := sb.Expose(ctx, 8081, nil)
	require.NoError(t, err)
	require.True(t, pt.As(&ti))
	assert.Equal(t, 8081, ti.Port)
	require.NoError(t, pt.Close())
}

func TestValidID(t *testing.T) {
	for id, want := range map[string]bool{
		"":                       false,
		"a":                      true,
		"abcxyz234567":           true,
		strings.Repeat("a", 128): true,
		strings.Repeat("a", 129): false,
		"ABC":                    false,
		"ab1":                    false,
		"ab8":                    false,
		"ab-c":                   false,
		"../x":                   false,
		"ab\x00":                 false,
		"\u00e9":                 false,
	} {
		assert.Equal(t, want, ValidID(id), "%q", id)
	}
}
