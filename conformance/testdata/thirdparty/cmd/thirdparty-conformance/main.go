// Command thirdparty-conformance runs the conformance suite against the
// example provider, with the flags, output and exit codes of
// "perimeter conformance".
package main

import (
	"context"

	"example.com/thirdparty"
	"github.com/perimeter-sdk/perimeter/conformance"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

func main() {
	conformance.Main(func(ctx context.Context, args []string) (*conformance.Harness, error) {
		d, err := thirdparty.New("")
		if err != nil {
			return nil, err
		}
		return thirdparty.Harness(sandbox.NewProvider(d, nil)), nil
	})
}
