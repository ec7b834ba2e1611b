package modal_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/perimeter-sdk/perimeter/providers/modal"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// Example creates a Modal sandbox, runs a command in it and terminates it.
// Credentials come from MODAL_TOKEN_ID and MODAL_TOKEN_SECRET (here, the
// test's fake Modal).
func Example() {
	ctx := context.Background()
	p, err := modal.New(ctx, &modal.Options{App: "my-agent-tools"})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	sb, err := p.Create(ctx, &sandbox.Spec{
		Image:   "python:3.12-slim",
		Timeout: 10 * time.Minute,
		Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkNone},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer sb.Terminate(ctx)

	res, err := sandbox.Run(ctx, sb, &sandbox.Cmd{Args: []string{"echo", "hello from Modal"}}, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(string(res.Stdout))
	fmt.Println(res.Status)
	// Output:
	// hello from Modal
	// exit status 0
}

// Example_url opens the provider from a URL, as a configuration-driven host
// does; the package's import registers the scheme.
func Example_url() {
	ctx := context.Background()
	p, err := sandbox.Open(ctx, "modal://my-agent-tools?image=alpine:3.20")
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	var d *modal.Provider // As reaches the driver, for its App
	if p.As(&d) {
		fmt.Println(d.App().Name)
	}
	// Output: my-agent-tools
}
