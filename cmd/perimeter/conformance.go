package main

import (
	"context"
	"fmt"
	"io"

	"github.com/perimeter-sdk/perimeter/conformance"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

func init() {
	register(&command{
		name:    "conformance",
		summary: "run the conformance suite against a provider URL",
		run:     conformanceCmd,
	})
}

// conformanceCmd is conformance.Command, the same command a third-party
// provider's own main gets from conformance.Main, opening a provider URL.
func conformanceCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return conformance.Command(ctx, args, stdout, stderr, &conformance.CommandOptions{
		Name:      "perimeter conformance",
		ArgsUsage: "PROVIDER-URL",
		Open: func(ctx context.Context, args []string) (*conformance.Harness, error) {
			if len(args) != 1 {
				return nil, fmt.Errorf("%w: want one provider URL, got %d arguments", conformance.ErrUsage, len(args))
			}
			p, err := sandbox.Open(ctx, args[0])
			if err != nil {
				return nil, err
			}
			return &conformance.Harness{Provider: p}, nil
		},
	})
}
