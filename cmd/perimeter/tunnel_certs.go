package main

import (
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/perimeter-sdk/perimeter/toolexec/anthropic/tunnels"
	"github.com/perimeter-sdk/perimeter/tunnel"
)

// `perimeter tunnel certs`: the CA, certificates and tokens an edge and its
// connectors need, so nobody has to get openssl's flags right.

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func tunnelCerts(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("perimeter tunnel certs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "`DIR` for the files (created with mode 0700; an existing ca.pem and ca-key.pem there are reused)")
	edgeNames := fs.String("edge-name", "", "comma-separated DNS `NAMES` or IPs connectors dial the edge at (makes edge.pem)")
	var connectors, clients listFlag
	fs.Var(&connectors, "connector", "connector `ID`: a client certificate and a token for it (repeatable)")
	fs.Var(&clients, "client", "MCP client `NAME`: a client certificate and a bearer token for it (repeatable)")
	validity := fs.Duration("validity", 365*24*time.Hour, "how long a new CA and the certificates are valid")
	usage := "usage: perimeter tunnel certs --dir DIR [--edge-name NAME[,NAME]] [--connector ID]... [--client NAME]... [--validity D]"
	if err := fs.Parse(args); err != nil {
		return flagErrCode(err)
	}
	if *dir == "" || fs.NArg() > 0 || (*edgeNames == "" && len(connectors) == 0 && len(clients) == 0) {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	for _, n := range append(append([]string{}, connectors...), clients...) {
		if !tunnel.ValidName(n) {
			fmt.Fprintf(stderr, "perimeter tunnel certs: %q: a connector ID or client name is 1-63 letters, digits, '-' or '_'\n", n)
			return 2
		}
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "perimeter tunnel certs: %v\n", err)
		return 1
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return fail(err)
	}
	caFile, caKey := filepath.Join(*dir, "ca.pem"), filepath.Join(*dir, "ca-key.pem")
	ca, err := tunnels.LoadCA(caFile, caKey)
	switch {
	case err == nil:
		fmt.Fprintf(stdout, "using the CA in %s\n", caFile)
	case errors.Is(err, os.ErrNotExist):
		if ca, err = tunnels.GenerateCA("Perimeter tunnel CA", *validity); err != nil {
			return fail(err)
		}
		if err := ca.WriteFiles(caFile, caKey); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "wrote %s and %s (0600)\n", caFile, caKey)
	default:
		return fail(err)
	}
	issue := func(usage tunnels.Usage, base string, names []string) error {
		cert, key, err := ca.Issue(usage, names, *validity)
		if err != nil {
			return err
		}
		cf, kf := filepath.Join(*dir, base+".pem"), filepath.Join(*dir, base+"-key.pem")
		if err := tunnels.WriteNewPair(cf, cert, kf, key); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s and %s (0600) for %s\n", cf, kf, strings.Join(names, ", "))
		return nil
	}
	token := func(base string) error {
		f := filepath.Join(*dir, base+".token")
		w, err := os.OpenFile(f, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			if errors.Is(err, os.ErrExist) {
				return fmt.Errorf("%s already exists: refusing to replace it", f)
			}
			return err
		}
		_, err = fmt.Fprintln(w, rand.Text()+rand.Text())
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(f)
			return err
		}
		fmt.Fprintf(stdout, "wrote %s (0600)\n", f)
		return nil
	}
	if *edgeNames != "" {
		var names []string
		for _, n := range strings.Split(*edgeNames, ",") {
			if n = strings.TrimSpace(n); n != "" {
				names = append(names, n)
			}
		}
		if len(names) == 0 {
			fmt.Fprintln(stderr, "perimeter tunnel certs: --edge-name: no name given")
			return 2
		}
		if err := issue(tunnels.ServerAuth, "edge", names); err != nil {
			return fail(err)
		}
	}
	for _, id := range connectors {
		if err := issue(tunnels.ClientAuth, "connector-"+id, []string{id}); err != nil {
			return fail(err)
		}
		if err := token("connector-" + id); err != nil {
			return fail(err)
		}
	}
	for _, name := range clients {
		if err := issue(tunnels.ClientAuth, "client-"+name, []string{name}); err != nil {
			return fail(err)
		}
		if err := token("client-" + name); err != nil {
			return fail(err)
		}
	}
	return 0
}
