package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

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

func conformanceCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("perimeter conformance", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	run := fs.String("run", "", "run only the checks whose ID matches this `regexp`")
	timeout := fs.Duration("check-timeout", 3*time.Minute, "time limit of each check")
	list := fs.Bool("list", false, "list the checks and exit")
	network := fs.String("network", "none", "egress of the sandboxes the checks create where a check sets none itself: `none` or open (for a provider whose port tunnels reach the sandbox from outside its network, as the Modal fake's do)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: perimeter conformance [flags] PROVIDER-URL")
		fs.PrintDefaults()
	}
	pos, code, ok := parseFlags(fs, args, -1)
	if !ok {
		return code
	}
	if *list {
		for _, ch := range conformance.Checks() {
			fmt.Fprintf(stdout, "%-32s %-6s %s\n", ch.ID, ch.Level, ch.Title)
		}
		return 0
	}
	if len(pos) != 1 {
		if len(pos) == 0 {
			fmt.Fprintln(stderr, "perimeter conformance: no provider URL given")
		} else {
			fmt.Fprintf(stderr, "perimeter conformance: one provider URL, not %d: %q\n", len(pos), pos)
		}
		fs.Usage()
		return 2
	}
	h := &conformance.Harness{}
	switch *network {
	case "none":
		// A nil Spec.Network means no egress on every provider.
	case "open":
		h.Spec = func() *sandbox.Spec {
			return &sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}}
		}
	default:
		fmt.Fprintf(stderr, "perimeter conformance: --network %q: want none or open\n", *network)
		return 2
	}
	p, err := sandbox.Open(ctx, pos[0])
	if err != nil {
		if interrupted(ctx) {
			return 130
		}
		printErr(stderr, "perimeter conformance", err)
		return 1
	}
	defer p.Close()
	h.Provider = p

	total := len(conformance.Checks())
	n := 0
	tty := isTerminal(stderr)
	opts := &conformance.Options{
		Run:     *run,
		Timeout: *timeout,
		OnStart: func(ci conformance.CheckInfo) {
			n++
			if tty {
				fmt.Fprintf(stderr, "\r\033[K[%d/%d] %s", n, total, ci.ID)
			}
		},
		OnResult: func(r conformance.Result) {
			if !tty {
				verdict := "pass"
				if !r.Passed {
					verdict = "FAIL"
				}
				fmt.Fprintf(stderr, "%s %s (%v)\n", verdict, r.ID, r.Duration.Round(time.Millisecond))
			}
		},
	}
	rep, err := conformance.RunChecks(ctx, h, opts)
	if tty {
		fmt.Fprint(stderr, "\r\033[K")
	}
	if rep == nil {
		if interrupted(ctx) {
			return 130
		}
		printErr(stderr, "perimeter conformance", err)
		return 2
	}
	if *asJSON {
		rep.WriteJSON(stdout)
	} else {
		rep.WriteTable(stdout)
	}
	if err != nil {
		if interrupted(ctx) {
			return 130
		}
		printErr(stderr, "perimeter conformance", err)
		return 1
	}
	if !rep.OK() {
		return 1
	}
	return 0
}
