package sandbox_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"

	_ "github.com/perimeter-sdk/perimeter/providers/local"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// The whole flow: open a provider by URL, create a sandbox, run a command,
// use its files, terminate it.
func Example() {
	ctx := context.Background()
	root, err := os.MkdirTemp("", "perimeter-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(root)

	p, err := sandbox.Open(ctx, "local://"+root)
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	sb, err := p.Create(ctx, &sandbox.Spec{Env: map[string]string{"GREETING": "hello"}})
	if err != nil {
		log.Fatal(err)
	}
	defer sb.Terminate(ctx)

	err = sb.WriteFile(ctx, "name.txt", strings.NewReader("world"), 0o644)
	if err != nil {
		log.Fatal(err)
	}
	res, err := sandbox.Run(ctx, sb, &sandbox.Cmd{
		Args: []string{"sh", "-c", `echo "$GREETING, $(cat name.txt)"; exit 3`},
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(string(res.Stdout))
	fmt.Println(res.Status)
	// Output:
	// hello, world
	// exit status 3
}

// Errors carry a kind for errors.Is and name the provider, sandbox and
// operation.
func ExampleError() {
	ctx := context.Background()
	root, _ := os.MkdirTemp("", "perimeter-example-")
	defer os.RemoveAll(root)
	p, _ := sandbox.Open(ctx, "local://"+root)
	sb, _ := p.Create(ctx, nil)
	defer sb.Terminate(ctx)

	_, err := sb.ReadFile(ctx, "../../etc/passwd")
	fmt.Println(errors.Is(err, sandbox.ErrInvalidArgument))
	_, err = sb.ReadFile(ctx, "missing.txt")
	fmt.Println(errors.Is(err, sandbox.ErrNotFound))
	// Output:
	// true
	// true
}

// Run keeps a bounded amount of output and marks what it dropped.
func ExampleRun() {
	ctx := context.Background()
	root, _ := os.MkdirTemp("", "perimeter-example-")
	defer os.RemoveAll(root)
	p, _ := sandbox.Open(ctx, "local://"+root)
	sb, _ := p.Create(ctx, nil)
	defer sb.Terminate(ctx)

	res, err := sandbox.Run(ctx, sb, &sandbox.Cmd{Args: []string{"seq", "1", "1000"}},
		&sandbox.RunOptions{OutputLimit: 8})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(string(res.Stdout))
	// Output:
	// 1
	// 2
	// 3
	// 4
	// [perimeter: 3885 bytes of stdout omitted]
}
