package vercel

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

func jwt(t *testing.T, claims map[string]any) string {
	t.Helper()
	b, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString(b) + ".c2ln"
}

func clearEnv(t *testing.T) {
	for _, k := range []string{"VERCEL_TOKEN", "VERCEL_TEAM_ID", "VERCEL_PROJECT_ID", "VERCEL_OIDC_TOKEN"} {
		t.Setenv(k, "")
	}
}

func TestCredentialsFromEnvironment(t *testing.T) {
	clearEnv(t)
	if _, err := New(nil); !errors.Is(err, sandbox.ErrInvalidArgument) || !strings.Contains(err.Error(), "VERCEL_TOKEN") {
		t.Errorf("no credentials: %v", err)
	}
	t.Setenv("VERCEL_TOKEN", "tok")
	if _, err := New(nil); err == nil || !strings.Contains(err.Error(), "VERCEL_TEAM_ID") {
		t.Errorf("token without team and project: %v", err)
	}
	t.Setenv("VERCEL_TEAM_ID", "team_1")
	t.Setenv("VERCEL_PROJECT_ID", "prj_1")
	p, err := New(nil)
	if err != nil || drv(p).c.team != "team_1" || drv(p).c.project != "prj_1" {
		t.Fatalf("access token: %v", err)
	}
	if tok, _ := drv(p).c.tokens.Token(context.Background()); tok != "tok" {
		t.Errorf("token %q", tok)
	}

	clearEnv(t)
	t.Setenv("VERCEL_OIDC_TOKEN", jwt(t, map[string]any{"owner_id": "team_o", "project_id": "prj_o", "exp": time.Now().Add(time.Hour).Unix()}))
	p, err = New(nil)
	if err != nil || drv(p).c.team != "team_o" || drv(p).c.project != "prj_o" {
		t.Fatalf("OIDC: %v %+v", err, p)
	}
	// A refreshed variable is picked up; an expired one is refused.
	fresh := jwt(t, map[string]any{"owner_id": "team_o", "project_id": "prj_o", "exp": time.Now().Add(2 * time.Hour).Unix()})
	t.Setenv("VERCEL_OIDC_TOKEN", fresh)
	if tok, err := drv(p).c.tokens.Token(context.Background()); err != nil || tok != fresh {
		t.Errorf("refreshed OIDC token not used: %v", err)
	}
	t.Setenv("VERCEL_OIDC_TOKEN", jwt(t, map[string]any{"owner_id": "team_o", "project_id": "prj_o", "exp": time.Now().Add(-time.Minute).Unix()}))
	if _, err := drv(p).c.tokens.Token(context.Background()); !errors.Is(err, sandbox.ErrPermissionDenied) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired OIDC token: %v", err)
	}
	t.Setenv("VERCEL_OIDC_TOKEN", "not-a-jwt")
	if _, err := New(nil); err == nil || !strings.Contains(err.Error(), "JWT") {
		t.Errorf("bad OIDC token: %v", err)
	}
}

func TestOpenURL(t *testing.T) {
	clearEnv(t)
	t.Setenv("VERCEL_TOKEN", "tok")
	f, _ := newFake(t, nil)
	t.Setenv("VERCEL_TOKEN", f.Token())
	p, err := sandbox.Open(context.Background(), "vercel://"+f.TeamID()+"/"+f.ProjectID()+"?endpoint="+f.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	sb, err := p.Create(ctxT(t), nil)
	if err != nil {
		t.Fatalf("Create through an opened URL: %v", err)
	}
	defer sb.Terminate(context.Background())
	for _, bad := range []string{"vercel://user:pw@team/prj", "vercel://team/prj/extra", "vercel://team/prj?endpoint=ftp://x", "vercel://team/prj?endpont=http://x"} {
		if _, err := sandbox.Open(context.Background(), bad); !errors.Is(err, sandbox.ErrInvalidArgument) {
			t.Errorf("Open(%q): %v", bad, err)
		}
	}
}
