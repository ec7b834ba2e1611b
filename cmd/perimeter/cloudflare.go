package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/perimeter-sdk/perimeter/providers/cloudflare"
)

func init() {
	register(&command{
		name:    "cloudflare",
		summary: "check a Cloudflare Sandbox bridge deployment (cloudflare doctor)",
		run:     cloudflareCmd,
	})
}

func cloudflareCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("perimeter cloudflare doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	account := fs.String("account", "", "Cloudflare account `ID` (default $CLOUDFLARE_ACCOUNT_ID)")
	script := fs.String("script", "", "the bridge Worker's `name` (default sandbox-bridge)")
	apiURL := fs.String("api-url", "", "Cloudflare API base `URL` (default the public API)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: perimeter cloudflare doctor [flags]")
		fmt.Fprintln(fs.Output(), "\nChecks that the Sandbox bridge Worker is deployed with its Durable Object")
		fmt.Fprintln(fs.Output(), "bindings, container and API key secret, and names what is missing. The API")
		fmt.Fprintln(fs.Output(), "token is read from CLOUDFLARE_API_TOKEN (never from a flag).")
		fs.PrintDefaults()
	}
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
		fs.Usage()
		return 0
	}
	if len(args) == 0 || args[0] != "doctor" {
		fs.Usage()
		return 2
	}
	pos, code, ok := parseFlags(fs, args[1:], -1)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "perimeter cloudflare doctor: unexpected argument %q\n", pos[0])
		return 2
	}
	rep, err := cloudflare.CheckDeployment(ctx, &cloudflare.DeploymentOptions{
		AccountID: *account, ScriptName: *script, BaseURL: *apiURL,
	})
	if err != nil {
		printErr(stderr, "perimeter", err)
		return 1
	}
	if rep.OK() {
		fmt.Fprintf(stdout, "ok: the Sandbox bridge Worker %q has everything it needs (version %s)\n", rep.Script, rep.Version)
		return 0
	}
	fmt.Fprintf(stdout, "the Sandbox bridge Worker %q is missing:\n", rep.Script)
	for _, m := range rep.Missing {
		fmt.Fprintf(stdout, "  - %s\n", m)
	}
	return 1
}
