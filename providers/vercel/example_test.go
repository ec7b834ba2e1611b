package vercel_test

import (
	"context"
	"fmt"
	"log"

	"github.com/perimeter-sdk/perimeter/providers/vercel"
	"github.com/perimeter-sdk/perimeter/providers/vercel/vercelfake"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// Example runs a command in a Vercel sandbox. It talks to the fake here; with
// vercel.New(nil) and VERCEL_TOKEN (or VERCEL_OIDC_TOKEN) set, the same code
// runs on Vercel.
func Example() {
	fake := vercelfake.New(nil)
	defer fake.Close()

	ctx := context.Background()
	p, err := vercel.New(&vercel.Options{
		TeamID:    fake.TeamID(),
		ProjectID: fake.ProjectID(),
		Token:     vercel.StaticToken(fake.Token()),
		BaseURL:   fake.URL(),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	sb, err := p.Create(ctx, &sandbox.Spec{Env: map[string]string{"GREETING": "hello"}})
	if err != nil {
		log.Fatal(err)
	}
	defer sb.Terminate(ctx)

	res, err := sandbox.Run(ctx, sb, &sandbox.Cmd{Args: []string{"sh", "-c", `echo "$GREETING from a sandbox"`}}, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s%v\n", res.Stdout, res.Status)
	// Output:
	// hello from a sandbox
	// exit status 0
}
