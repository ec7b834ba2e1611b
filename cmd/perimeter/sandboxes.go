package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// The commands that use a sandbox kept by run --keep (or made by any other
// program on the same provider): exec, cp, ls and rm.

func init() {
	register(&command{
		name:    "exec",
		summary: "run a command in an existing sandbox (one kept by run --keep)",
		run:     execCmd,
	})
	register(&command{
		name:    "cp",
		summary: "copy a file between the host and a sandbox (ID:PATH)",
		run:     cpCmd,
	})
	register(&command{
		name:    "ls",
		aliases: []string{"list"},
		summary: "list a provider's sandboxes",
		run:     lsCmd,
	})
	register(&command{
		name:    "rm",
		aliases: []string{"terminate"},
		summary: "terminate sandboxes by ID",
		run:     rmCmd,
	})
}

// openProvider opens url, printing why it failed to stderr; code is the exit
// code on failure.
func openProvider(ctx context.Context, url, prefix string, stderr io.Writer) (p *sandbox.Provider, code int) {
	p, err := sandbox.Open(ctx, url)
	if err != nil {
		if interrupted(ctx) {
			return nil, 130
		}
		printErr(stderr, prefix, err)
		return nil, 1
	}
	return p, 0
}

// getSandbox opens url and gets the sandbox id from it; the caller closes p.
func getSandbox(ctx context.Context, url, id, prefix string, stderr io.Writer) (p *sandbox.Provider, sb *sandbox.Sandbox, code int) {
	p, code = openProvider(ctx, url, prefix, stderr)
	if p == nil {
		return nil, nil, code
	}
	sb, err := p.Get(ctx, id)
	if err != nil {
		p.Close()
		if interrupted(ctx) {
			return nil, nil, 130
		}
		if errors.Is(err, sandbox.ErrNotFound) {
			err = fmt.Errorf("no sandbox %q on %s (perimeter ls lists them): %w", id, url, err)
		}
		printErr(stderr, prefix, err)
		return nil, nil, 1
	}
	return p, sb, 0
}

func execCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("perimeter exec", flag.ContinueOnError)
	fs.SetOutput(stderr)
	provider := fs.String("provider", defaultProvider, "provider `URL` the sandbox belongs to")
	var cf cmdFlags
	cf.add(fs)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: perimeter exec [flags] ID [--] CMD [ARGS...]")
		fmt.Fprintln(fs.Output(), "\nRuns CMD in the existing sandbox ID and streams its output; the sandbox")
		fmt.Fprintln(fs.Output(), "keeps running. Flags go before CMD: what follows CMD is its own.")
		fs.PrintDefaults()
	}
	pos, code, ok := parseFlags(fs, args, 1)
	if !ok {
		return code
	}
	if len(pos) < 2 {
		fmt.Fprintln(stderr, "perimeter exec: want a sandbox ID and a command")
		fs.Usage()
		return 2
	}
	if err := cf.check(); err != nil {
		fmt.Fprintf(stderr, "perimeter exec: %v\n", err)
		return 2
	}
	p, sb, code := getSandbox(ctx, *provider, pos[0], "perimeter exec", stderr)
	if p == nil {
		return code
	}
	defer p.Close()
	return startAndWait(ctx, sb, pos[1:], &cf, stdin, stdout, stderr)
}

// sandboxPath splits an argument of cp of the form ID:PATH. A host path
// containing ':' is written with a '/' before it (./a:b).
func sandboxPath(arg string) (id, name string, ok bool) {
	id, name, ok = strings.Cut(arg, ":")
	if !ok || id == "" || strings.Contains(id, "/") {
		return "", "", false
	}
	return id, name, true
}

func cpCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("perimeter cp", flag.ContinueOnError)
	fs.SetOutput(stderr)
	provider := fs.String("provider", defaultProvider, "provider `URL` the sandbox belongs to")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: perimeter cp [flags] SRC DST")
		fmt.Fprintln(fs.Output(), "\nCopies one file between the host and a sandbox: one of SRC and DST is")
		fmt.Fprintln(fs.Output(), "ID:PATH (a path inside sandbox ID), the other a host path, or - for")
		fmt.Fprintln(fs.Output(), "standard input or output. A host path with ':' is written ./a:b.")
		fs.PrintDefaults()
	}
	pos, code, ok := parseFlags(fs, args, -1)
	if !ok {
		return code
	}
	if len(pos) != 2 {
		fmt.Fprintf(stderr, "perimeter cp: want SRC and DST, got %d arguments\n", len(pos))
		fs.Usage()
		return 2
	}
	srcID, srcName, srcIn := sandboxPath(pos[0])
	dstID, dstName, dstIn := sandboxPath(pos[1])
	switch {
	case srcIn == dstIn:
		fmt.Fprintln(stderr, "perimeter cp: one of SRC and DST must be ID:PATH in a sandbox, the other a host path")
		return 2
	case srcIn && srcName == "", dstIn && dstName == "":
		fmt.Fprintln(stderr, "perimeter cp: ID:PATH needs a path after the colon")
		return 2
	}
	id := srcID
	if dstIn {
		id = dstID
	}
	p, sb, code := getSandbox(ctx, *provider, id, "perimeter cp", stderr)
	if p == nil {
		return code
	}
	defer p.Close()
	var err error
	if dstIn {
		err = copyIn(ctx, sb, pos[0], dstName, stdin)
	} else {
		err = copyOut(ctx, sb, srcName, pos[1], stdout)
	}
	if err != nil {
		if interrupted(ctx) {
			return 130
		}
		printErr(stderr, "perimeter cp", err)
		return 1
	}
	return 0
}

// copyIn writes the host file src ("-": stdin) to name in sb, with src's
// permission bits.
func copyIn(ctx context.Context, sb *sandbox.Sandbox, src, name string, stdin io.Reader) error {
	r, perm := stdin, fs.FileMode(0o644)
	if src != "-" {
		f, err := os.Open(src)
		if err != nil {
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file (cp copies one file)", src)
		}
		r, perm = f, fi.Mode().Perm()
	}
	return sb.WriteFile(ctx, name, r, perm)
}

// copyOut writes name from sb to the host file dst ("-": stdout). A host
// file is written in full under a temporary name and then renamed, so an
// error leaves no half-written dst.
func copyOut(ctx context.Context, sb *sandbox.Sandbox, name, dst string, stdout io.Writer) error {
	fi, err := sb.Stat(ctx, name)
	if err != nil {
		return err
	}
	if fi.Mode.IsDir() {
		return fmt.Errorf("%s is a directory (cp copies one file)", name)
	}
	r, err := sb.ReadFile(ctx, name)
	if err != nil {
		return err
	}
	defer r.Close()
	if dst == "-" {
		_, err = io.Copy(stdout, r)
		return err
	}
	if st, err := os.Stat(dst); err == nil && st.IsDir() {
		dst = filepath.Join(dst, filepath.Base(filepath.FromSlash(name)))
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".perimeter-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	if _, err := io.Copy(tmp, r); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(fi.Mode.Perm()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}

func lsCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("perimeter ls", flag.ContinueOnError)
	fs.SetOutput(stderr)
	provider := fs.String("provider", defaultProvider, "provider `URL`")
	asJSON := fs.Bool("json", false, "print one JSON object per sandbox")
	labels := envFlags{}
	fs.Var(labels, "label", "only sandboxes with the label `K=V` (repeatable)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: perimeter ls [flags]")
		fmt.Fprintln(fs.Output(), "\nLists the provider's sandboxes: ID, state, creation and expiry time, isolation.")
		fs.PrintDefaults()
	}
	pos, code, ok := parseFlags(fs, args, -1)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "perimeter ls: unexpected argument %q (the provider is given with --provider)\n", pos[0])
		return 2
	}
	p, code := openProvider(ctx, *provider, "perimeter ls", stderr)
	if p == nil {
		return code
	}
	defer p.Close()
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	enc := json.NewEncoder(stdout)
	if !*asJSON {
		fmt.Fprintln(tw, "ID\tSTATE\tCREATED\tEXPIRES\tISOLATION")
	}
	var opts *sandbox.ListOptions
	if len(labels) > 0 {
		opts = &sandbox.ListOptions{Labels: labels}
	}
	for info, err := range p.List(ctx, opts) {
		if err != nil {
			tw.Flush()
			if interrupted(ctx) {
				return 130
			}
			printErr(stderr, "perimeter ls", err)
			return 1
		}
		if *asJSON {
			if err := enc.Encode(info); err != nil {
				printErr(stderr, "perimeter ls", err)
				return 1
			}
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", info.ID, info.State, when(info.Created), when(info.Expires), info.Isolation)
	}
	tw.Flush()
	return 0
}

// when formats t for a table; the zero time is "-".
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.DateTime)
}

func rmCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("perimeter rm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	provider := fs.String("provider", defaultProvider, "provider `URL` the sandboxes belong to")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: perimeter rm [flags] ID...")
		fmt.Fprintln(fs.Output(), "\nTerminates each sandbox: its processes end and its files are gone.")
		fs.PrintDefaults()
	}
	ids, code, ok := parseFlags(fs, args, -1)
	if !ok {
		return code
	}
	if len(ids) == 0 {
		fmt.Fprintln(stderr, "perimeter rm: no sandbox ID given")
		fs.Usage()
		return 2
	}
	p, code := openProvider(ctx, *provider, "perimeter rm", stderr)
	if p == nil {
		return code
	}
	defer p.Close()
	code = 0
	for _, id := range ids {
		sb, err := p.Get(ctx, id)
		if err == nil {
			err = sb.Terminate(ctx)
		}
		if err != nil {
			if interrupted(ctx) {
				return 130
			}
			if errors.Is(err, sandbox.ErrNotFound) {
				err = fmt.Errorf("no sandbox %q on %s: %w", id, *provider, err)
			}
			printErr(stderr, "perimeter rm", err)
			code = 1
			continue
		}
		fmt.Fprintln(stdout, id)
	}
	return code
}
