package daytona_test

import (
	"context"
	"fmt"
	"log"

	"github.com/perimeter-sdk/perimeter/providers/daytona"
	"github.com/perimeter-sdk/perimeter/providers/daytona/daytonafake"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// Example runs a command in a Daytona sandbox. It talks to the fake here;
// with daytona.New(nil) and DAYTONA_API_KEY set, the same code runs on
// Daytona.
func Example() {
	fake := daytonafake.New(nil)
	defer fake.Close()

	ctx := context.Background()
	p, err := daytona.New(&daytona.Options{APIKey: fake.Token(), APIURL: fake.APIURL()})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	sb, err := p.Create(ctx, &sandbox.Spec{Env: map[string]string{"GREETING": "hello"}})
	if err != nil {
		log.Fatal(err)
	}
	defer sb.Terminate(ctx)

	res, err := sandbox.Run(ctx, sb, &sandbox.Cmd{Args: []string{"sh", "-c", `echo "$GREETING from a sandbox"; echo note >&2`}}, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s%s%v\n", res.Stdout, res.Stderr, res.Status)
	// Output:
	// hello from a sandbox
	// note
	// exit status 0
}
