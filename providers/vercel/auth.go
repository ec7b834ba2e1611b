package vercel

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"time"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// TokenSource supplies the bearer token for each request, so a long-lived
// host can refresh it (Vercel's OIDC tokens expire; the SDK refreshes them
// five minutes before expiry). Token is called once per HTTP attempt.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}

// StaticToken is a TokenSource that never changes, such as an access token.
type StaticToken string

// Token returns the token.
func (t StaticToken) Token(context.Context) (string, error) { return string(t), nil }

// TokenFunc adapts a function to TokenSource.
type TokenFunc func(ctx context.Context) (string, error)

// Token calls f.
func (f TokenFunc) Token(ctx context.Context) (string, error) { return f(ctx) }

// OIDCClaims are the claims of a Vercel OIDC token this package reads. The
// token's signature is not verified: Vercel's API does that.
type OIDCClaims struct {
	OwnerID   string `json:"owner_id"`   // the team
	ProjectID string `json:"project_id"` // the project
	Expiry    int64  `json:"exp"`        // Unix seconds
}

// ParseOIDCClaims decodes the payload of a Vercel OIDC token (a JWT).
func ParseOIDCClaims(token string) (OIDCClaims, error) {
	var c OIDCClaims
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return c, errors.New("OIDC token is not a JWT (want three dot-separated parts)")
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return c, errors.New("OIDC token payload is not base64url: " + err.Error())
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return c, errors.New("OIDC token payload is not JSON: " + err.Error())
	}
	return c, nil
}

// envOIDC reads VERCEL_OIDC_TOKEN on every request, so a host that refreshes
// the variable (as `vercel env pull` or a platform does) is picked up, and
// refuses an expired token with a clear error instead of sending it.
type envOIDC struct{}

func (envOIDC) Token(context.Context) (string, error) {
	tok := os.Getenv("VERCEL_OIDC_TOKEN")
	if tok == "" {
		return "", sandbox.Errorf(providerName, "", "token", sandbox.ErrPermissionDenied, "VERCEL_OIDC_TOKEN is no longer set")
	}
	c, err := ParseOIDCClaims(tok)
	if err != nil {
		return "", sandbox.NewError(providerName, "", "token", sandbox.ErrPermissionDenied, err)
	}
	if c.Expiry != 0 && time.Now().After(time.Unix(c.Expiry, 0)) {
		return "", sandbox.Errorf(providerName, "", "token", sandbox.ErrPermissionDenied, "%s",
			"VERCEL_OIDC_TOKEN expired at "+time.Unix(c.Expiry, 0).UTC().Format(time.RFC3339)+"; refresh it (vercel env pull) or give Options.Token a TokenSource that refreshes")
	}
	return tok, nil
}

// credentialsFromEnv fills what o lacks from the environment: VERCEL_TOKEN
// with VERCEL_TEAM_ID and VERCEL_PROJECT_ID, or else VERCEL_OIDC_TOKEN with
// team and project from its claims.
func credentialsFromEnv(o *Options) error {
	if o.Token != nil {
		if o.TeamID == "" || o.ProjectID == "" {
			return errors.New("Options.Token is set but TeamID or ProjectID is missing")
		}
		return nil
	}
	if tok := os.Getenv("VERCEL_TOKEN"); tok != "" {
		if o.TeamID == "" {
			o.TeamID = os.Getenv("VERCEL_TEAM_ID")
		}
		if o.ProjectID == "" {
			o.ProjectID = os.Getenv("VERCEL_PROJECT_ID")
		}
		if o.TeamID == "" || o.ProjectID == "" {
			return errors.New("VERCEL_TOKEN is set but the team or project is missing: set VERCEL_TEAM_ID and VERCEL_PROJECT_ID, or use vercel://TEAM/PROJECT")
		}
		o.Token = StaticToken(tok)
		return nil
	}
	if tok := os.Getenv("VERCEL_OIDC_TOKEN"); tok != "" {
		c, err := ParseOIDCClaims(tok)
		if err != nil {
			return errors.New("VERCEL_OIDC_TOKEN: " + err.Error())
		}
		if o.TeamID == "" {
			o.TeamID = c.OwnerID
		}
		if o.ProjectID == "" {
			o.ProjectID = c.ProjectID
		}
		if o.TeamID == "" || o.ProjectID == "" {
			return errors.New("VERCEL_OIDC_TOKEN has no owner_id or project_id claim; give the team and project in vercel://TEAM/PROJECT")
		}
		o.Token = envOIDC{}
		return nil
	}
	return errors.New("no credentials: set VERCEL_TOKEN (with VERCEL_TEAM_ID and VERCEL_PROJECT_ID) or VERCEL_OIDC_TOKEN")
}
