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
// personError shows an error as printErr does, with the SDK's Go API names
// turned into what a person types.
type personError struct{ err error }

func (e personError) Error() string { return errText(e.err) }
func (e personError) Unwrap() error { return e.err }

func conformanceCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return conformance.Command(ctx, args, stdout, stderr, &conformance.CommandOptions{
		Name:      "perimeter conformance",
		ArgsUsage: "PROVIDER-URL",
		Open: func(ctx context.Context, args []string) (*conformance.Harness, error) {
			switch len(args) {
			case 0:
				return nil, fmt.Errorf("%w: no provider URL given", conformance.ErrUsage)
			case 1:
			default:
				return nil, fmt.Errorf("%w: one provider URL, not %d: %q", conformance.ErrUsage, len(args), args)
			}
			p, err := sandbox.Open(ctx, args[0])
			if err != nil {
				return nil, personError{err}
			}
			return &conformance.Harness{Provider: p}, nil
		},
	})
}
