package vercel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/perimeter-sdk/perimeter/providers/vercel/vercelfake"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

func TestCreateMapsTheSpec(t *testing.T) {
	_, p := newFake(t, nil)
	ctx := ctxT(t)
	for name, spec := range map[string]*sandbox.Spec{
		"memory": {Resources: sandbox.Resources{Memory: 1 << 30}},
		"gpu":    {Resources: sandbox.Resources{GPU: "A100"}},
		"rootfs": {RootFS: "/"},
	} {
		if _, err := p.Create(ctx, spec); !errors.Is(err, sandbox.ErrNotSupported) {
			t.Errorf("%s: %v, want ErrNotSupported", name, err)
		}
	}
	for name, spec := range map[string]*sandbox.Spec{
		"fractional cpu": {Resources: sandbox.Resources{CPU: 1.5}},
		"bad port":       {Ports: []int{70000}},
		"bad network":    {Network: &sandbox.NetworkPolicy{Mode: "sometimes"}},
		"workdir ..":     {Workdir: "../x"},
	} {
		if _, err := p.Create(ctx, spec); !errors.Is(err, sandbox.ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", name, err)
		}
	}
	sb := newSandbox(t, p, &sandbox.Spec{
		Resources: sandbox.Resources{CPU: 4}, Timeout: 10 * time.Minute, Labels: map[string]string{"team": "a"},
		Ports: []int{3000}, Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkAllowlist, Allow: []string{"example.com", "10.0.0.0/8"}},
	})
	var raw struct {
		Sandbox map[string]any `json:"sandbox"`
	}
	resp, err := drv(p).Client().Do(ctx, http.MethodGet, "/v2/sandboxes/"+sb.ID(), url.Values{"projectId": {drv(p).Client().ProjectID()}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&raw)
	resp.Body.Close()
	got, _ := json.Marshal(raw.Sandbox)
	for _, want := range []string{`"vcpus":4`, `"timeout":600000`, `"tags":{"team":"a"}`, `"persistent":true`,
		`"allowedDomains":["example.com"]`, `"allowedCIDRs":["10.0.0.0/8"]`} {
		if !strings.Contains(string(got), want) {
			t.Errorf("sandbox %s lacks %s", got, want)
		}
	}
	info, err := sb.Info(ctx)
	if err != nil || info.State != sandbox.StateRunning || info.Labels["team"] != "a" || info.Isolation == "" ||
		info.Expires.Sub(info.Created) < 9*time.Minute {
		t.Errorf("Info = %+v, %v", info, err)
	}
}

func TestGetListAndTerminate(t *testing.T) {
	_, p := newFake(t, &vercelfake.Options{PageSize: 2})
	ctx := ctxT(t)
	var all []testSandbox
	for i := range 5 {
		all = append(all, newSandbox(t, p, &sandbox.Spec{Labels: map[string]string{"i": fmt.Sprint(i % 2), "k": "v"}}))
	}
	ids := func(labels map[string]string) map[string]bool {
		got := map[string]bool{}
		for info, err := range p.List(ctx, &sandbox.ListOptions{Labels: labels}) {
			if err != nil {
				t.Fatal(err)
			}
			got[info.ID] = true
		}
		return got
	}
	if got := ids(nil); len(got) != 5 {
		t.Errorf("List over pages of 2 found %d of 5", len(got))
	}
	if got := ids(map[string]string{"i": "1", "k": "v"}); len(got) != 2 || !got[all[1].ID()] || !got[all[3].ID()] {
		t.Errorf("List by two labels = %v", got)
	}
	got, err := p.Get(ctx, all[0].ID())
	if err != nil || got.ID() != all[0].ID() {
		t.Fatalf("Get: %v", err)
	}
	if _, err := p.Get(ctx, "no-such-sandbox"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("Get unknown: %v", err)
	}
	if _, err := p.Get(ctx, "a/b"); !errors.Is(err, sandbox.ErrInvalidArgument) {
		t.Errorf("Get a/b: %v", err)
	}
	sb := all[0]
	if err := sb.Terminate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sb.Terminate(ctx); err != nil {
		t.Errorf("second Terminate: %v", err)
	}
	if err := got.Terminate(ctx); err != nil {
		t.Errorf("Terminate through another handle of a deleted sandbox: %v", err)
	}
	if _, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"true"}}); !errors.Is(err, sandbox.ErrTerminated) {
		t.Errorf("Start after Terminate: %v", err)
	}
	if _, err := p.Get(ctx, sb.ID()); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("Get after Terminate: %v", err)
	}
}

// A stopped session is resumed by the next call, which then succeeds; a
// persistent sandbox keeps its files.
func TestResumeAfterStop(t *testing.T) {
	f, p := newFake(t, nil)
	sb := newSandbox(t, p, nil)
	ctx := ctxT(t)
	if err := sb.WriteFile(ctx, "kept", strings.NewReader("yes"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := sb.SessionID()
	if err := sb.d.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if info, err := sb.Info(ctx); err != nil || info.State != sandbox.StateStopped {
		t.Errorf("Info after Stop = %+v, %v", info, err)
	}
	got, err := readAll(t, sb, "kept")
	if err != nil || string(got) != "yes" {
		t.Fatalf("ReadFile after stop: %q, %v", got, err)
	}
	if sb.SessionID() == before {
		t.Error("the session id did not change on resume")
	}
	if n := f.Hits("GET", "/v2/sandboxes/"+sb.ID()); n < 1 {
		t.Errorf("no resume request")
	}
	// A 422 while stopping also resumes.
	f.Fail(vercelfake.Fault{Path: "/cmd", Status: 422, Code: "sandbox_stopping"})
	if res := run(t, sb, "echo", "ok"); string(res.Stdout) != "ok\n" {
		t.Errorf("after 422: %q", res.Stdout)
	}
}

func TestSnapshotRestoresAndStopsTheSession(t *testing.T) {
	_, p := newFake(t, nil)
	sb := newSandbox(t, p, nil)
	ctx := ctxT(t)
	if err := sb.WriteFile(ctx, "snap.txt", strings.NewReader("snapped"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := sb.SessionID()
	id, err := sb.Snapshot(ctx)
	if err != nil || !strings.HasPrefix(id, "snap_") {
		t.Fatalf("Snapshot = %q, %v", id, err)
	}
	restored := newSandbox(t, p, &sandbox.Spec{Snapshot: id})
	if got, err := readAll(t, restored, "snap.txt"); err != nil || string(got) != "snapped" {
		t.Errorf("restored file: %q, %v", got, err)
	}
	if res := run(t, sb, "cat", "snap.txt"); string(res.Stdout) != "snapped" || sb.SessionID() == before {
		t.Errorf("the snapshotted sandbox did not resume with its files: %q", res.Stdout)
	}
	if _, err := p.Create(ctx, &sandbox.Spec{Snapshot: "snap_missing"}); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("Create from a missing snapshot: %v", err)
	}
}

func TestExposeExtendAndNetwork(t *testing.T) {
	_, p := newFake(t, nil)
	sb := newSandbox(t, p, &sandbox.Spec{Ports: []int{3000}})
	ctx := ctxT(t)
	tun, err := sb.Expose(ctx, 3000, nil)
	if err != nil || tun.URL() != "https://"+sb.ID()+"-3000.vercel.run" {
		t.Fatalf("Expose(3000) = %v, %v", tun, err)
	}
	tun2, err := sb.Expose(ctx, 4000, &sandbox.ExposeOptions{Protocol: "http"})
	if err != nil || !strings.HasSuffix(tun2.URL(), "-4000.vercel.run") {
		t.Fatalf("Expose(4000), not declared at creation: %v", err)
	}
	if r := sb.Routes(); len(r) != 2 {
		t.Errorf("routes after adding a port: %+v", r)
	}
	if err := tun2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tun2.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if r := sb.Routes(); len(r) != 1 || r[0].Port != 3000 {
		t.Errorf("routes after closing the tunnel of 4000: %+v", r)
	}
	if _, err := sb.Expose(ctx, 22, &sandbox.ExposeOptions{Protocol: "tcp"}); !errors.Is(err, sandbox.ErrNotSupported) {
		t.Errorf("tcp: %v", err)
	}
	before, _ := sb.Info(ctx)
	if err := sb.ExtendTimeout(ctx, 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	after, _ := sb.Info(ctx)
	if d := after.Expires.Sub(before.Expires); d != 5*time.Minute {
		t.Errorf("expiry moved by %v, want 5m", d)
	}
	if err := sb.UpdateNetwork(ctx, &sandbox.NetworkPolicy{Mode: sandbox.NetworkNone}); err != nil {
		t.Fatal(err)
	}
	resp, err := drv(p).Client().Do(ctx, http.MethodGet, "/v2/sandboxes/sessions/"+sb.SessionID(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Session struct {
			NetworkPolicy map[string]any `json:"networkPolicy"`
		} `json:"session"`
	}
	json.NewDecoder(resp.Body).Decode(&s)
	resp.Body.Close()
	if s.Session.NetworkPolicy["mode"] != "deny-all" {
		t.Errorf("session policy after UpdateNetwork(none) = %v", s.Session.NetworkPolicy)
	}
	if err := sb.UpdateNetwork(ctx, nil); err != nil {
		t.Errorf("nil policy (none, as a nil Spec.Network): %v", err)
	}
	if err := sb.UpdateNetwork(ctx, &sandbox.NetworkPolicy{Mode: "host"}); !errors.Is(err, sandbox.ErrInvalidArgument) {
		t.Errorf("unknown mode: %v", err)
	}
}

func TestRetries(t *testing.T) {
	f, p := newFake(t, nil)
	ctx := ctxT(t)
	get := func() error {
		_, err := p.Get(ctx, "nope")
		return err
	}
	count := func() int { return f.Hits("GET", "/v2/sandboxes/nope") }

	f.Fail(vercelfake.Fault{Method: "GET", Path: "/nope", Status: 503, Code: "internal", Times: 2})
	if err := get(); !errors.Is(err, sandbox.ErrNotFound) || count() != 3 {
		t.Errorf("two 503s then 404: %v after %d requests, want ErrNotFound after 3", err, count())
	}
	f.Fail(vercelfake.Fault{Method: "GET", Path: "/nope", Status: 503, Code: "internal", Times: 3})
	if err := get(); !errors.Is(err, sandbox.ErrUnavailable) || count() != 6 {
		t.Errorf("three 503s: %v after %d requests, want ErrUnavailable after 3 more", err, count())
	}
	f.Fail(vercelfake.Fault{Method: "GET", Path: "/nope", Status: 400, Code: "bad_request"})
	if err := get(); !errors.Is(err, sandbox.ErrInvalidArgument) || count() != 7 {
		t.Errorf("a 400 is not retried: %v after %d", err, count())
	}
	f.Fail(vercelfake.Fault{Method: "GET", Path: "/nope", Status: 429, Code: "rate_limited", RetryAfter: "0"})
	if err := get(); !errors.Is(err, sandbox.ErrNotFound) || count() != 9 {
		t.Errorf("429 with Retry-After 0 is retried: %v after %d", err, count())
	}
	f.Fail(vercelfake.Fault{Method: "GET", Path: "/nope", Status: 429, Code: "rate_limited", RetryAfter: "60"})
	start := time.Now()
	if err := get(); !errors.Is(err, sandbox.ErrResourceExhausted) || count() != 10 || time.Since(start) > 5*time.Second {
		t.Errorf("429 with Retry-After 60 gives up at once: %v after %d", err, count())
	}
	f.Fail(vercelfake.Fault{Method: "GET", Path: "/nope", Drop: true})
	if err := get(); !errors.Is(err, sandbox.ErrNotFound) || count() != 12 {
		t.Errorf("a dropped connection is retried: %v after %d", err, count())
	}
}

// A request that is not idempotent is sent once: a lost answer to a command
// start or a sandbox creation must not make it happen twice.
func TestNonIdempotentRequestsAreNeverRetried(t *testing.T) {
	f, p := newFake(t, nil)
	ctx := ctxT(t)
	sb := newSandbox(t, p, nil)
	starts := func() int { return f.Hits("POST", "/cmd") }

	before := starts()
	f.Fail(vercelfake.Fault{Method: "POST", Path: "/cmd", Status: 503, Code: "internal"})
	if _, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"true"}}); !errors.Is(err, sandbox.ErrUnavailable) {
		t.Errorf("a command start answered 503: %v, want ErrUnavailable", err)
	}
	if n := starts() - before; n != 1 {
		t.Errorf("a command start answered 503 was sent %d times, want once", n)
	}
	before = starts()
	f.Fail(vercelfake.Fault{Method: "POST", Path: "/cmd", Drop: true})
	if _, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"true"}}); err == nil {
		t.Error("a command start whose connection dropped succeeded")
	}
	if n := starts() - before; n != 1 {
		t.Errorf("a command start whose connection dropped was sent %d times, want once", n)
	}

	creates := func() int { return f.Hits("POST", "/v2/sandboxes") }
	before = creates()
	f.Fail(vercelfake.Fault{Method: "POST", Path: "/v2/sandboxes", Status: 502, Code: "internal"})
	if _, err := p.Create(ctx, nil); err == nil {
		t.Error("a creation answered 502 succeeded")
	}
	if n := creates() - before; n != 1 {
		t.Errorf("a creation answered 502 was sent %d times, want once", n)
	}

	// An idempotent POST (a read) is still retried.
	reads := func() int { return f.Hits("POST", "/fs/read") }
	require := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	require(sb.WriteFile(ctx, "f", strings.NewReader("x"), 0))
	before = reads()
	f.Fail(vercelfake.Fault{Method: "POST", Path: "/fs/read", Status: 503, Code: "internal"})
	rc, err := sb.ReadFile(ctx, "f")
	require(err)
	rc.Close()
	if n := reads() - before; n != 2 {
		t.Errorf("a read answered 503 once was sent %d times, want twice", n)
	}
	for _, tc := range []struct {
		method, path string
		want         bool
	}{
		{"GET", "/v2/sandboxes/x", true},
		{"PATCH", "/v2/sandboxes/x", true},
		{"POST", "/v2/sandboxes", false},
		{"POST", "/v2/sandboxes/sessions/s/cmd", false},
		{"POST", "/v2/sandboxes/sessions/s/snapshot", false},
		{"POST", "/v2/sandboxes/sessions/s/extend-timeout", false},
		{"POST", "/v2/sandboxes/sessions/s/cmd/c/kill", true},
		{"POST", "/v2/sandboxes/sessions/s/fs/write", true},
	} {
		if got := Idempotent(tc.method, tc.path); got != tc.want {
			t.Errorf("Idempotent(%s %s) = %v, want %v", tc.method, tc.path, got, tc.want)
		}
	}
}

func TestCreateWithTakesVercelsSettings(t *testing.T) {
	_, p := newFake(t, nil)
	ctx := ctxT(t)
	sb, err := CreateWith(ctx, p, nil, &CreateOptions{Name: "perimeter-named"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Terminate(context.Background()) })
	if sb.ID() != "perimeter-named" {
		t.Errorf("ID = %q, want the name asked for", sb.ID())
	}
	if _, err := CreateWith(ctx, p, &sandbox.Spec{Timeout: -1}, nil); !errors.Is(err, sandbox.ErrInvalidArgument) {
		t.Errorf("CreateWith with a bad spec: %v, want the layer's ErrInvalidArgument", err)
	}
}

func TestRetryHonoursContext(t *testing.T) {
	f := vercelfake.New(nil)
	t.Cleanup(f.Close)
	p, err := New(&Options{TeamID: f.TeamID(), ProjectID: f.ProjectID(), Token: StaticToken(f.Token()),
		BaseURL: f.URL(), RetryBackoff: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	f.Fail(vercelfake.Fault{Status: 500, Code: "internal"})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := p.Get(ctx, "x"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Get during an hour's backoff: %v, want the ctx's error", err)
	}
}

func TestDeadServerIsUnavailable(t *testing.T) {
	f, p := newFake(t, nil)
	f.Close()
	if _, err := p.Create(ctxT(t), nil); !errors.Is(err, sandbox.ErrUnavailable) {
		t.Errorf("Create against a closed server: %v", err)
	}
}

func TestBadCredentials(t *testing.T) {
	f, _ := newFake(t, nil)
	p, err := New(&Options{TeamID: f.TeamID(), ProjectID: f.ProjectID(), Token: StaticToken("wrong"), BaseURL: f.URL()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Create(ctxT(t), nil); !errors.Is(err, sandbox.ErrPermissionDenied) {
		t.Errorf("wrong token: %v", err)
	}
	p, _ = New(&Options{TeamID: "other", ProjectID: f.ProjectID(), Token: StaticToken(f.Token()), BaseURL: f.URL()})
	if _, err := p.Create(ctxT(t), nil); !errors.Is(err, sandbox.ErrPermissionDenied) {
		t.Errorf("wrong team: %v", err)
	}
}

// The token source is asked on every request, so a refreshed token is used.
func TestTokenSourceIsAskedPerRequest(t *testing.T) {
	f, _ := newFake(t, nil)
	calls := 0
	p, err := New(&Options{TeamID: f.TeamID(), ProjectID: f.ProjectID(), BaseURL: f.URL(),
		Token: TokenFunc(func(context.Context) (string, error) { calls++; return f.Token(), nil })})
	if err != nil {
		t.Fatal(err)
	}
	sb := newSandbox(t, p, nil)
	run(t, sb, "true")
	if calls < 2 {
		t.Errorf("token source asked %d times", calls)
	}
}
