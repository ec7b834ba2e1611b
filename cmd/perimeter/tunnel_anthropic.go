package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	sdk "github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"

	"github.com/perimeter-sdk/perimeter/toolexec/anthropic/tunnels"
)

// The platform side of Anthropic's MCP tunnels: `perimeter tunnel anthropic`.

func tunnelAnthropicUsage(w io.Writer) {
	fmt.Fprint(w, `usage: perimeter tunnel anthropic SUBCOMMAND [FLAGS] [ARGS]

Manages Anthropic MCP tunnels (research preview) through the tunnels API.
The API key comes from ANTHROPIC_API_KEY (or the SDK's other credential
sources); it is never taken as a flag. Every subcommand also takes
--workspace ID (for keys that reach several workspaces) and --base-url URL.

  create [--name NAME]                        create a tunnel; prints its ID and domain
  list [--all]                                list tunnels (--all: archived ones too)
  get TUNNEL                                  show one tunnel
  archive --yes TUNNEL                        archive a tunnel (irreversible)
  token reveal --tunnel ID --out FILE         write the connector token to FILE (0600)
  token rotate --tunnel ID --out FILE [--reason TEXT]
                                              replace the token, write the new one to FILE
  ca create --tunnel ID --dir DIR [--validity D]
                                              generate a CA and the proxy's server
                                              certificate in DIR, register the CA
  ca rotate --tunnel ID --dir DIR [--archive-old] [--validity D]
                                              as create, alongside the active CA; with
                                              --archive-old the old CA is archived after
                                              the new one is registered
  ca list --tunnel ID [--all]                 list the tunnel's CA certificates
  ca archive --tunnel ID CERTIFICATE          archive one CA certificate

Tokens are written to files, never printed. Keys are written with mode 0600
to new files only: an existing file is never replaced.
`)
}

// anthropicFlags are the flags every subcommand takes.
type anthropicFlags struct {
	workspace, baseURL string
}

func newAnthropicFlagSet(name string, stderr io.Writer) (*flag.FlagSet, *anthropicFlags) {
	fs := flag.NewFlagSet("perimeter tunnel anthropic "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	af := &anthropicFlags{}
	fs.StringVar(&af.workspace, "workspace", "", "workspace `ID` (only for keys that reach several workspaces)")
	fs.StringVar(&af.baseURL, "base-url", "", "API base `URL` (default: ANTHROPIC_BASE_URL or the public API)")
	return fs, af
}

func (af *anthropicFlags) manager() *tunnels.Manager {
	var opts []option.RequestOption
	if af.baseURL != "" {
		opts = append(opts, option.WithBaseURL(af.baseURL))
	}
	c := sdk.NewClient(opts...)
	return tunnels.NewManager(&c, af.workspace)
}

func tunnelAnthropic(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		tunnelAnthropicUsage(stderr)
		return 2
	}
	sub, rest := args[0], args[1:]
	if (sub == "token" || sub == "ca") && len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		sub, rest = sub+" "+rest[0], rest[1:]
	}
	run, ok := map[string]func(context.Context, string, []string, io.Writer, io.Writer) int{
		"create":       anthropicCreate,
		"list":         anthropicList,
		"get":          anthropicGet,
		"archive":      anthropicArchive,
		"token reveal": anthropicToken,
		"token rotate": anthropicToken,
		"ca create":    anthropicCA,
		"ca rotate":    anthropicCA,
		"ca list":      anthropicCAList,
		"ca archive":   anthropicCAArchive,
	}[sub]
	switch {
	case ok:
		return run(ctx, sub, rest, stdout, stderr)
	case sub == "-h" || sub == "--help" || sub == "help":
		tunnelAnthropicUsage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "perimeter tunnel anthropic: unknown subcommand %q\n\n", sub)
	tunnelAnthropicUsage(stderr)
	return 2
}

// fail prints err for the subcommand and returns exit code 1.
func anthropicFail(stderr io.Writer, sub string, err error) int {
	fmt.Fprintf(stderr, "perimeter tunnel anthropic %s: %v\n", sub, err)
	return 1
}

// anthropicParse parses a subcommand's flags and checks its number of
// positional arguments. When !ok, the subcommand returns code: 0 after -h,
// 2 for a bad command line.
func anthropicParse(fs *flag.FlagSet, args []string, nargs int, usage string, stderr io.Writer) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		return flagErrCode(err), false
	}
	if fs.NArg() != nargs {
		fmt.Fprintln(stderr, "usage: perimeter tunnel anthropic "+usage)
		return 2, false
	}
	return 0, true
}

func printTunnel(w io.Writer, t *sdk.BetaTunnel) {
	state := "active"
	if !t.ArchivedAt.IsZero() {
		state = "archived " + t.ArchivedAt.UTC().Format(time.RFC3339)
	}
	name := t.DisplayName
	if name == "" {
		name = "-"
	}
	fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", t.ID, t.Domain, name, state)
}

func anthropicCreate(ctx context.Context, sub string, args []string, stdout, stderr io.Writer) int {
	fs, af := newAnthropicFlagSet(sub, stderr)
	name := fs.String("name", "", "display `NAME` (1-255 characters)")
	if code, ok := anthropicParse(fs, args, 0, "create [--name NAME]", stderr); !ok {
		return code
	}
	t, err := af.manager().Create(ctx, *name)
	if err != nil {
		return anthropicFail(stderr, sub, err)
	}
	printTunnel(stdout, t)
	fmt.Fprintf(stderr, "next: perimeter tunnel anthropic ca create --tunnel %s --dir DIR; perimeter tunnel anthropic token reveal --tunnel %s --out FILE\n", t.ID, t.ID)
	return 0
}

func anthropicList(ctx context.Context, sub string, args []string, stdout, stderr io.Writer) int {
	fs, af := newAnthropicFlagSet(sub, stderr)
	all := fs.Bool("all", false, "include archived tunnels")
	if code, ok := anthropicParse(fs, args, 0, "list [--all]", stderr); !ok {
		return code
	}
	ts, err := af.manager().List(ctx, *all)
	if err != nil {
		return anthropicFail(stderr, sub, err)
	}
	for i := range ts {
		printTunnel(stdout, &ts[i])
	}
	return 0
}

func anthropicGet(ctx context.Context, sub string, args []string, stdout, stderr io.Writer) int {
	fs, af := newAnthropicFlagSet(sub, stderr)
	if code, ok := anthropicParse(fs, args, 1, "get TUNNEL", stderr); !ok {
		return code
	}
	t, err := af.manager().Get(ctx, fs.Arg(0))
	if err != nil {
		return anthropicFail(stderr, sub, err)
	}
	printTunnel(stdout, t)
	return 0
}

func anthropicArchive(ctx context.Context, sub string, args []string, stdout, stderr io.Writer) int {
	fs, af := newAnthropicFlagSet(sub, stderr)
	yes := fs.Bool("yes", false, "confirm: archiving retires the hostname, the token and every CA for good")
	if code, ok := anthropicParse(fs, args, 1, "archive --yes TUNNEL", stderr); !ok {
		return code
	}
	if !*yes {
		fmt.Fprintf(stderr, "perimeter tunnel anthropic archive: archiving %s cannot be undone (its hostname, token and CAs are retired); add --yes to do it\n", fs.Arg(0))
		return 2
	}
	t, err := af.manager().Archive(ctx, fs.Arg(0))
	if err != nil {
		return anthropicFail(stderr, sub, err)
	}
	printTunnel(stdout, t)
	return 0
}

func anthropicToken(ctx context.Context, sub string, args []string, stdout, stderr io.Writer) int {
	fs, af := newAnthropicFlagSet(sub, stderr)
	id := fs.String("tunnel", "", "tunnel `ID`")
	out := fs.String("out", "", "`FILE` to write the token to (mode 0600, replaced atomically)")
	reason := ""
	usage := sub + " --tunnel ID --out FILE"
	if sub == "token rotate" {
		fs.StringVar(&reason, "reason", "", "free-text `REASON`, recorded by the API")
		usage += " [--reason TEXT]"
	}
	if code, ok := anthropicParse(fs, args, 0, usage, stderr); !ok {
		return code
	}
	if *id == "" || *out == "" {
		fmt.Fprintln(stderr, "usage: perimeter tunnel anthropic "+usage)
		return 2
	}
	m := af.manager()
	var tokID string
	var err error
	if sub == "token rotate" {
		tokID, err = m.RotateToken(ctx, *id, reason, *out)
	} else {
		tokID, err = m.RevealToken(ctx, *id, *out)
	}
	if err != nil {
		return anthropicFail(stderr, sub, err)
	}
	fmt.Fprintf(stdout, "token %s of %s written to %s (mode 0600)\n", tokID, *id, *out)
	return 0
}

// Files `ca create` and `ca rotate` write in --dir.
const (
	anthropicCAFile        = "ca.pem"
	anthropicCAKeyFile     = "ca-key.pem"
	anthropicServerFile    = "proxy.pem"
	anthropicServerKeyFile = "proxy-key.pem"
)

func anthropicCA(ctx context.Context, sub string, args []string, stdout, stderr io.Writer) int {
	fs, af := newAnthropicFlagSet(sub, stderr)
	id := fs.String("tunnel", "", "tunnel `ID`")
	dir := fs.String("dir", "", "new or empty `DIR` for the CA and the proxy's certificate")
	validity := fs.Duration("validity", 365*24*time.Hour, "how long the CA and the proxy certificate are valid")
	archiveOld := false
	usage := sub + " --tunnel ID --dir DIR [--validity D]"
	if sub == "ca rotate" {
		fs.BoolVar(&archiveOld, "archive-old", false, "archive the previously active CA once the new one is registered")
		usage = sub + " --tunnel ID --dir DIR [--archive-old] [--validity D]"
	}
	if code, ok := anthropicParse(fs, args, 0, usage, stderr); !ok {
		return code
	}
	if *id == "" || *dir == "" {
		fmt.Fprintln(stderr, "usage: perimeter tunnel anthropic "+usage)
		return 2
	}
	m := af.manager()
	t, err := m.Get(ctx, *id)
	if err != nil {
		return anthropicFail(stderr, sub, err)
	}
	if !t.ArchivedAt.IsZero() {
		return anthropicFail(stderr, sub, fmt.Errorf("tunnel %s is archived", t.ID))
	}
	if t.Domain == "" {
		return anthropicFail(stderr, sub, fmt.Errorf("tunnel %s has no domain", t.ID))
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return anthropicFail(stderr, sub, err)
	}
	ca, err := tunnels.GenerateCA("Perimeter MCP tunnel CA "+t.ID, *validity)
	if err != nil {
		return anthropicFail(stderr, sub, err)
	}
	// The proxy terminates the inner TLS for every route's subdomain.
	srvPEM, srvKey, err := ca.Issue(tunnels.ServerAuth, []string{"*." + t.Domain, t.Domain}, *validity)
	if err != nil {
		return anthropicFail(stderr, sub, err)
	}
	files := []string{filepath.Join(*dir, anthropicCAFile), filepath.Join(*dir, anthropicCAKeyFile), filepath.Join(*dir, anthropicServerFile), filepath.Join(*dir, anthropicServerKeyFile)}
	if err := ca.WriteFiles(files[0], files[1]); err != nil {
		return anthropicFail(stderr, sub, err)
	}
	if err := tunnels.WriteNewPair(files[2], srvPEM, files[3], srvKey); err != nil {
		os.Remove(files[0])
		os.Remove(files[1])
		return anthropicFail(stderr, sub, err)
	}
	removeAll := func() {
		for _, f := range files {
			os.Remove(f)
		}
	}
	if sub == "ca create" {
		c, err := m.AddCA(ctx, t.ID, ca.CertPEM())
		if err != nil {
			removeAll()
			return anthropicFail(stderr, sub, err)
		}
		fmt.Fprintf(stdout, "CA %s registered with %s (expires %s)\n", c.ID, t.ID, c.ExpiresAt.UTC().Format(time.RFC3339))
	} else {
		added, archived, err := m.RotateCA(ctx, t.ID, ca.CertPEM(), archiveOld)
		if added == nil {
			removeAll()
		}
		if err != nil {
			return anthropicFail(stderr, sub, err)
		}
		fmt.Fprintf(stdout, "CA %s registered with %s (expires %s)\n", added.ID, t.ID, added.ExpiresAt.UTC().Format(time.RFC3339))
		for _, c := range archived {
			fmt.Fprintf(stdout, "CA %s archived\n", c.ID)
		}
		if !archiveOld {
			fmt.Fprintf(stderr, "both CAs are active: once the proxy serves %s, archive the old one with: perimeter tunnel anthropic ca archive --tunnel %s CERTIFICATE (see ca list)\n", files[2], t.ID)
		}
	}
	fmt.Fprintf(stdout, "wrote %s, %s (0600), %s and %s (0600) for *.%s\n", files[0], files[1], files[2], files[3], t.Domain)
	return 0
}

func anthropicCAList(ctx context.Context, sub string, args []string, stdout, stderr io.Writer) int {
	fs, af := newAnthropicFlagSet(sub, stderr)
	id := fs.String("tunnel", "", "tunnel `ID`")
	all := fs.Bool("all", false, "include archived certificates")
	if code, ok := anthropicParse(fs, args, 0, "ca list --tunnel ID [--all]", stderr); !ok {
		return code
	}
	if *id == "" {
		fmt.Fprintln(stderr, "usage: perimeter tunnel anthropic ca list --tunnel ID [--all]")
		return 2
	}
	cs, err := af.manager().Certificates(ctx, *id, *all)
	if err != nil {
		return anthropicFail(stderr, sub, err)
	}
	for _, c := range cs {
		state := "active"
		if !c.ArchivedAt.IsZero() {
			state = "archived " + c.ArchivedAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(stdout, "%s\t%s\texpires %s\t%s\n", c.ID, c.Fingerprint, c.ExpiresAt.UTC().Format(time.RFC3339), state)
	}
	return 0
}

func anthropicCAArchive(ctx context.Context, sub string, args []string, stdout, stderr io.Writer) int {
	fs, af := newAnthropicFlagSet(sub, stderr)
	id := fs.String("tunnel", "", "tunnel `ID`")
	if code, ok := anthropicParse(fs, args, 1, "ca archive --tunnel ID CERTIFICATE", stderr); !ok {
		return code
	}
	if *id == "" {
		fmt.Fprintln(stderr, "usage: perimeter tunnel anthropic ca archive --tunnel ID CERTIFICATE")
		return 2
	}
	m := af.manager()
	active, err := m.Certificates(ctx, *id, false)
	if err != nil {
		return anthropicFail(stderr, sub, err)
	}
	if len(active) == 1 && active[0].ID == fs.Arg(0) {
		fmt.Fprintf(stderr, "perimeter tunnel anthropic ca archive: warning: %s is the tunnel's last active CA; the tunnel refuses MCP traffic until another is registered\n", fs.Arg(0))
	}
	c, err := m.ArchiveCA(ctx, *id, fs.Arg(0))
	if err != nil {
		return anthropicFail(stderr, sub, err)
	}
	fmt.Fprintf(stdout, "CA %s archived\n", c.ID)
	return 0
}
