package cloudflare

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// cfAPI is a fake of the Cloudflare API endpoints CheckDeployment calls,
// answering in the API's envelope.
type cfAPI struct {
	token, account, script string
	bindings               []map[string]any
	namespaces             []map[string]any
	containers             []map[string]any
	secrets                []string
}

func fullDeployment() *cfAPI {
	return &cfAPI{
		token: "tok", account: "acc123", script: "sandbox-bridge",
		bindings: []map[string]any{
			{"name": "Sandbox", "type": "durable_object_namespace", "class_name": "Sandbox"},
			{"name": "WARM_POOL", "type": "durable_object_namespace", "class_name": "WarmPool"},
			{"name": "SANDBOX_TRANSPORT", "type": "plain_text", "text": "rpc"},
		},
		namespaces: []map[string]any{
			{"id": "ns1", "class": "Sandbox", "name": "sandbox-bridge_Sandbox", "script": "sandbox-bridge", "use_sqlite": true},
			{"id": "ns2", "class": "WarmPool", "name": "sandbox-bridge_WarmPool", "script": "sandbox-bridge", "use_sqlite": true},
			{"id": "ns3", "class": "Sandbox", "name": "other_Sandbox", "script": "other", "use_sqlite": true},
		},
		containers: []map[string]any{{"class_name": "Sandbox"}},
		secrets:    []string{"SANDBOX_API_KEY"},
	}
}

func (a *cfAPI) serve(t *testing.T) *httptest.Server {
	ok := func(w http.ResponseWriter, result any, extra map[string]any) {
		body := map[string]any{"success": true, "errors": []any{}, "messages": []any{}, "result": result}
		for k, v := range extra {
			body[k] = v
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(body)
	}
	fail := func(w http.ResponseWriter, status, code int, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]any{"success": false, "result": nil, "messages": []any{},
			"errors": []any{map[string]any{"code": code, "message": msg}}})
	}
	mux := http.NewServeMux()
	pre := "/client/v4/accounts/{acct}/workers"
	scriptOK := func(w http.ResponseWriter, r *http.Request) bool {
		if r.PathValue("acct") != a.account || r.PathValue("script") != a.script {
			fail(w, 404, 10007, "This Worker does not exist on your account.")
			return false
		}
		return true
	}
	mux.HandleFunc("GET "+pre+"/scripts/{script}/settings", func(w http.ResponseWriter, r *http.Request) {
		if scriptOK(w, r) {
			ok(w, map[string]any{"bindings": a.bindings, "compatibility_date": "2026-01-01"}, nil)
		}
	})
	mux.HandleFunc("GET "+pre+"/durable_objects/namespaces", func(w http.ResponseWriter, r *http.Request) {
		res := a.namespaces
		if p := r.URL.Query().Get("page"); p != "" && p != "1" {
			res = nil
		}
		ok(w, res, map[string]any{"result_info": map[string]any{"page": 1, "per_page": 20, "count": len(a.namespaces), "total_count": len(a.namespaces)}})
	})
	mux.HandleFunc("GET "+pre+"/scripts/{script}/deployments", func(w http.ResponseWriter, r *http.Request) {
		if scriptOK(w, r) {
			ok(w, map[string]any{"deployments": []any{map[string]any{
				"id": "dep1", "created_on": "2026-11-30T10:00:00Z", "source": "wrangler", "strategy": "percentage",
				"versions": []any{map[string]any{"percentage": 100, "version_id": "ver-2"}},
			}}}, nil)
		}
	})
	mux.HandleFunc("GET "+pre+"/workers/{script}/versions/{vid}", func(w http.ResponseWriter, r *http.Request) {
		if !scriptOK(w, r) {
			return
		}
		if r.PathValue("vid") != "ver-2" {
			fail(w, 404, 10000, "version not found")
			return
		}
		ok(w, map[string]any{"id": "ver-2", "number": 2, "created_on": "2026-11-30T10:00:00Z", "urls": []string{},
			"containers": a.containers}, nil)
	})
	mux.HandleFunc("GET "+pre+"/scripts/{script}/secrets", func(w http.ResponseWriter, r *http.Request) {
		if !scriptOK(w, r) {
			return
		}
		var res []any
		for _, s := range a.secrets {
			res = append(res, map[string]any{"name": s, "type": "secret_text"})
		}
		ok(w, res, nil)
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+a.token {
			fail(w, 403, 10000, "Authentication error")
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func checkAgainst(t *testing.T, a *cfAPI, token string) (*DeploymentReport, error) {
	srv := a.serve(t)
	return CheckDeployment(context.Background(), &DeploymentOptions{
		APIToken: token, AccountID: "acc123", BaseURL: srv.URL + "/client/v4/", HTTPClient: srv.Client(),
	})
}

func TestCheckDeploymentComplete(t *testing.T) {
	rep, err := checkAgainst(t, fullDeployment(), "tok")
	require.NoError(t, err)
	assert.Empty(t, rep.Missing)
	assert.True(t, rep.OK())
	assert.NoError(t, rep.Err())
	assert.Equal(t, "ver-2", rep.Version)
}

func TestCheckDeploymentNamesExactlyWhatIsMissing(t *testing.T) {
	cases := map[string]struct {
		mutate func(*cfAPI)
		want   string
	}{
		"container binding": {func(a *cfAPI) { a.containers = nil },
			`a container attached to the Durable Object class "Sandbox" in deployed version ver-2`},
		"warm pool binding": {func(a *cfAPI) { a.bindings = a.bindings[:1] },
			`a Durable Object binding (durable_object_namespace) for class "WarmPool" on the Worker`},
		"sandbox namespace": {func(a *cfAPI) { a.namespaces = a.namespaces[1:] },
			`a Durable Object namespace for class "Sandbox" of the Worker`},
		"sqlite": {func(a *cfAPI) { a.namespaces[0]["use_sqlite"] = false },
			`SQLite storage for the Durable Object class "Sandbox"`},
		"api key": {func(a *cfAPI) { a.secrets = nil }, "the secret SANDBOX_API_KEY"},
		"script":  {func(a *cfAPI) { a.script = "another" }, `the Worker script "sandbox-bridge" in account acc123`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			a := fullDeployment()
			tc.mutate(a)
			rep, err := checkAgainst(t, a, "tok")
			require.NoError(t, err)
			require.Len(t, rep.Missing, 1, "missing: %q", rep.Missing)
			assert.Contains(t, rep.Missing[0], tc.want)
			assert.ErrorContains(t, rep.Err(), tc.want)
		})
	}
}

func TestCheckDeploymentWrongTokenIsAnError(t *testing.T) {
	_, err := checkAgainst(t, fullDeployment(), "wrong")
	require.Error(t, err)
	assert.True(t, strings.Contains(err.Error(), "403"), "%v", err)
}

func TestCheckDeploymentNeedsCredentials(t *testing.T) {
	t.Setenv("CLOUDFLARE_API_TOKEN", "")
	t.Setenv("CLOUDFLARE_ACCOUNT_ID", "")
	_, err := CheckDeployment(context.Background(), &DeploymentOptions{AccountID: "a"})
	assert.ErrorContains(t, err, "no API token")
	_, err = CheckDeployment(context.Background(), &DeploymentOptions{APIToken: "t"})
	assert.ErrorContains(t, err, "no account id")
}
