package cloudflare

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strings"

	"github.com/cloudflare/cloudflare-go/v6/durable_objects"
	"github.com/cloudflare/cloudflare-go/v6/option"
	"github.com/cloudflare/cloudflare-go/v6/workers"
)

// DeploymentOptions says where the bridge Worker should be deployed. Empty
// fields take defaults.
type DeploymentOptions struct {
	// APIToken is a Cloudflare API token with Workers Scripts Read (and
	// Durable Objects read) on the account; empty means
	// $CLOUDFLARE_API_TOKEN.
	APIToken string
	// AccountID is the account holding the Worker; empty means
	// $CLOUDFLARE_ACCOUNT_ID.
	AccountID string
	// ScriptName is the Worker's name; empty means "sandbox-bridge", the
	// template's name.
	ScriptName string
	// SandboxClass and PoolClass are the Durable Object classes the bridge
	// exports; empty means "Sandbox" and "WarmPool".
	SandboxClass, PoolClass string
	// BaseURL is the Cloudflare API's base URL; empty means the SDK's
	// default (the public API). Tests point it at a local fake.
	BaseURL string
	// HTTPClient sends the requests; nil means http.DefaultClient.
	HTTPClient *http.Client
}

// DeploymentReport is what [CheckDeployment] found.
type DeploymentReport struct {
	Script  string   // the Worker checked
	Version string   // the deployed version whose containers were checked, if any
	Missing []string // each thing the bridge needs that is absent, in words
}

// OK reports whether nothing is missing.
func (r *DeploymentReport) OK() bool { return len(r.Missing) == 0 }

// Err returns nil when nothing is missing, else an error listing it.
func (r *DeploymentReport) Err() error {
	if r.OK() {
		return nil
	}
	return fmt.Errorf("the Sandbox bridge Worker %q is not deployed as it needs to be: %s", r.Script, strings.Join(r.Missing, "; "))
}

// CheckDeployment verifies, through the Cloudflare API (cloudflare-go), that
// the bridge Worker is deployed in the account with what it needs: the
// Worker script; a Durable Object namespace binding for the sandbox class
// and one for the warm-pool class; both classes migrated, the sandbox class
// SQLite-backed (containers require it); a container attached to the
// sandbox class in every version the current deployment serves; and the
// SANDBOX_API_KEY secret (without it the bridge skips authentication). It
// returns a report naming exactly what is missing; the error is for the
// checks that could not run (a wrong token, the API unreachable). A host
// calls it at start-up, before [New].
//
// The Cloudflare API cannot deploy the bridge (it has no API for container
// applications and images): use the template's "Deploy to Cloudflare"
// button or wrangler deploy.
func CheckDeployment(ctx context.Context, o *DeploymentOptions) (*DeploymentReport, error) {
	var opts DeploymentOptions
	if o != nil {
		opts = *o
	}
	if opts.APIToken == "" {
		opts.APIToken = os.Getenv("CLOUDFLARE_API_TOKEN")
	}
	if opts.AccountID == "" {
		opts.AccountID = os.Getenv("CLOUDFLARE_ACCOUNT_ID")
	}
	if opts.ScriptName == "" {
		opts.ScriptName = "sandbox-bridge"
	}
	if opts.SandboxClass == "" {
		opts.SandboxClass = "Sandbox"
	}
	if opts.PoolClass == "" {
		opts.PoolClass = "WarmPool"
	}
	switch {
	case opts.APIToken == "":
		return nil, errors.New("check deployment: no API token (DeploymentOptions.APIToken or CLOUDFLARE_API_TOKEN)")
	case opts.AccountID == "":
		return nil, errors.New("check deployment: no account id (DeploymentOptions.AccountID or CLOUDFLARE_ACCOUNT_ID)")
	}
	// The SDK's NewClient reads credentials from the environment; build the
	// services with these options only, so nothing else is sent.
	ro := []option.RequestOption{option.WithEnvironmentProduction(), option.WithAPIToken(opts.APIToken), option.WithMaxRetries(2)}
	if opts.BaseURL != "" {
		ro = append(ro, option.WithBaseURL(opts.BaseURL))
	}
	if opts.HTTPClient != nil {
		ro = append(ro, option.WithHTTPClient(opts.HTTPClient))
	}
	script := opts.ScriptName
	rep := &DeploymentReport{Script: script}
	missing := func(format string, a ...any) { rep.Missing = append(rep.Missing, fmt.Sprintf(format, a...)) }
	fail := func(what string, err error) (*DeploymentReport, error) {
		return rep, fmt.Errorf("check deployment: %s: %w", what, err)
	}

	// The script and its bindings.
	settings, err := workers.NewScriptScriptAndVersionSettingService(ro...).Get(ctx, script,
		account(&workers.ScriptScriptAndVersionSettingGetParams{}, opts.AccountID))
	if err != nil {
		var ae *workers.Error
		if errors.As(err, &ae) && ae.StatusCode == http.StatusNotFound {
			missing("the Worker script %q in account %s (deploy the bridge template)", script, opts.AccountID)
			return rep, nil
		}
		return fail("reading the Worker's settings", err)
	}
	for _, class := range []string{opts.SandboxClass, opts.PoolClass} {
		found := slices.ContainsFunc(settings.Bindings, func(b workers.ScriptScriptAndVersionSettingGetResponseBinding) bool {
			return b.Type == workers.ScriptScriptAndVersionSettingGetResponseBindingsTypeDurableObjectNamespace &&
				b.ClassName == class && (b.ScriptName == "" || b.ScriptName == script)
		})
		if !found {
			missing("a Durable Object binding (durable_object_namespace) for class %q on the Worker", class)
		}
	}

	// The Durable Object namespaces (the classes' migrations).
	want := map[string]*durable_objects.Namespace{opts.SandboxClass: nil, opts.PoolClass: nil}
	pager := durable_objects.NewNamespaceService(ro...).ListAutoPaging(ctx, account(&durable_objects.NamespaceListParams{}, opts.AccountID))
	for pager.Next() {
		ns := pager.Current()
		if _, ok := want[ns.Class]; ok && ns.Script == script {
			want[ns.Class] = &ns
		}
	}
	if err := pager.Err(); err != nil {
		return fail("listing Durable Object namespaces", err)
	}
	for _, class := range []string{opts.SandboxClass, opts.PoolClass} {
		switch ns := want[class]; {
		case ns == nil:
			missing("a Durable Object namespace for class %q of the Worker (a migration listing it in new_sqlite_classes)", class)
		case class == opts.SandboxClass && !ns.UseSqlite:
			missing("SQLite storage for the Durable Object class %q (containers need a class migrated with new_sqlite_classes)", class)
		}
	}

	// The container on the sandbox class, in what the current deployment
	// serves.
	deps, err := workers.NewScriptDeploymentService(ro...).List(ctx, script, account(&workers.ScriptDeploymentListParams{}, opts.AccountID))
	if err != nil {
		return fail("listing the Worker's deployments", err)
	}
	if len(deps.Deployments) == 0 {
		missing("a deployment of the Worker")
	} else {
		versions := workers.NewBetaWorkerVersionService(ro...)
		for _, dv := range deps.Deployments[0].Versions {
			if dv.Percentage <= 0 {
				continue
			}
			v, err := versions.Get(ctx, script, dv.VersionID, account(&workers.BetaWorkerVersionGetParams{}, opts.AccountID))
			if err != nil {
				return fail("reading deployed version "+dv.VersionID, err)
			}
			if rep.Version == "" {
				rep.Version = v.ID
			}
			if !slices.ContainsFunc(v.Containers, func(c workers.VersionContainer) bool { return c.ClassName == opts.SandboxClass }) {
				missing("a container attached to the Durable Object class %q in deployed version %s (wrangler's containers: [{class_name: %q, image: …}])",
					opts.SandboxClass, dv.VersionID, opts.SandboxClass)
			}
		}
	}

	// The API key secret.
	secrets := workers.NewScriptSecretService(ro...).ListAutoPaging(ctx, script, account(&workers.ScriptSecretListParams{}, opts.AccountID))
	hasKey := false
	for secrets.Next() {
		if secrets.Current().Name == "SANDBOX_API_KEY" {
			hasKey = true
		}
	}
	if err := secrets.Err(); err != nil {
		return fail("listing the Worker's secrets", err)
	}
	if !hasKey {
		missing("the secret SANDBOX_API_KEY (without it the bridge accepts requests from anyone; wrangler secret put SANDBOX_API_KEY)")
	}
	return rep, nil
}

// account sets the AccountID field of an SDK parameter struct and returns
// the struct. The field's type (param.Field) is internal to the SDK, which
// offers only cloudflare.F to fill it; that function's package imports every
// service of the SDK, so it is filled by reflection instead, keeping this
// module's build to the three packages it uses.
func account[P any](params *P, id string) P {
	f := reflect.ValueOf(params).Elem().FieldByName("AccountID")
	f.FieldByName("Value").SetString(id)
	f.FieldByName("Present").SetBool(true)
	return *params
}
