package cloudflare_test

import (
	"context"
	"fmt"
	"log"

	"github.com/perimeter-sdk/perimeter/providers/cloudflare"
	"github.com/perimeter-sdk/perimeter/providers/cloudflare/cloudflarefake"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// Example runs a command in a Cloudflare sandbox. It talks to the fake
// bridge here; with cloudflare.New(ctx, nil) and
// CLOUDFLARE_SANDBOX_BRIDGE_URL and CLOUDFLARE_SANDBOX_API_KEY set, the same
// code runs on a bridge Worker deployed in your account.
func Example() {
	fake := cloudflarefake.New(nil)
	defer fake.Close()

	ctx := context.Background()
	p, err := cloudflare.New(ctx, &cloudflare.Options{BridgeURL: fake.URL(), APIKey: fake.APIKey()})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	// The bridge cannot restrict egress per sandbox: ask for open, or
	// Create refuses (the default is no egress).
	sb, err := p.Create(ctx, &sandbox.Spec{
		Env:     map[string]string{"GREETING": "hello"},
		Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer sb.Terminate(ctx)

	res, err := sandbox.Run(ctx, sb, &sandbox.Cmd{Args: []string{"sh", "-c", `echo "$GREETING from $(pwd)"`}}, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s%v\n", res.Stdout, res.Status)
	// Output:
	// hello from /workspace
	// exit status 0
}

// ExampleCheckDeployment checks at start-up that the bridge Worker is
// deployed with what it needs, before opening the provider.
func ExampleCheckDeployment() {
	ctx := context.Background()
	rep, err := cloudflare.CheckDeployment(ctx, &cloudflare.DeploymentOptions{
		ScriptName: "sandbox-bridge", // APIToken and AccountID from CLOUDFLARE_API_TOKEN, CLOUDFLARE_ACCOUNT_ID
	})
	if err != nil {
		log.Fatal(err) // the check could not run
	}
	if err := rep.Err(); err != nil {
		log.Fatal(err) // names each missing binding, class, container or secret
	}
}
