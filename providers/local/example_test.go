package local_test

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/perimeter-sdk/perimeter/providers/local"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// Run a command in an isolated sandbox with no network and a memory limit,
// after writing a file into its workspace.
func ExampleNew() {
	ctx := context.Background()
	root, err := os.MkdirTemp("", "perimeter-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(root)
	p, err := local.New(&local.Options{Root: root, RequireLevel: local.LevelLandlock})
	if err != nil {
		fmt.Println(err) // names the missing layer
		return
	}
	defer p.Close()
	sb, err := p.Create(ctx, &sandbox.Spec{
		Network:   &sandbox.NetworkPolicy{Mode: sandbox.NetworkNone},
		Resources: sandbox.Resources{Memory: 256 << 20, PIDs: 64},
	})
	if err != nil {
		panic(err)
	}
	defer sb.Terminate(ctx)
	if err := sb.WriteFile(ctx, "greeting.txt", strings.NewReader("hello from the workspace\n"), 0o644); err != nil {
		panic(err)
	}
	res, err := sandbox.Run(ctx, sb, &sandbox.Cmd{Args: []string{"cat", "greeting.txt"}}, nil)
	if err != nil {
		panic(err)
	}
	fmt.Print(string(res.Stdout))
	fmt.Println(res.Status)
	// Output:
	// hello from the workspace
	// exit status 0
}
