package main

// TestREADME keeps the repository's README.md true: every fenced code block
// is compiled, run or checked, according to its info string (the words
// after the opening ```):
//
//	```go            a complete program (package main): built in a module of
//	                 the workspace and run; it must exit 0. If the next block
//	                 is ```text output, the program's stdout must equal it.
//	```go test       a complete _test.go file: compiled (go vet), not run.
//	```sh            run with sh -e in an empty temporary directory against
//	                 the local provider, with TMPDIR private to the test;
//	                 "go run ./cmd/perimeter" runs the CLI built from this
//	                 tree. Every command must succeed.
//	```sh check      not run (it needs credentials, runs long, starts servers
//	                 or recurses into the test suite): each "go run
//	                 ./cmd/perimeter SUB ..." must name a command whose help
//	                 lists every flag used; each other "go run ./DIR ..."
//	                 must build, and its -h output list every flag used;
//	                 each "go test PKGS" must compile (go test -run '^$', from
//	                 the repository's root); each "make TARGET" must be a
//	                 target of the Makefile.
//	                 Other commands (curl, ...) are not checked.
//	```text ...      prose, output or layout; not code. A block without a
//	                 language is the same.
//
// Any other info string fails the test, so a new block picks one of these.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// readmeBlock is one fenced code block of the README.
type readmeBlock struct {
	line int      // of the opening fence, 1-based
	info []string // the info string's words
	text string
}

func (b readmeBlock) name() string {
	return fmt.Sprintf("README.md:%d(%s)", b.line, strings.Join(b.info, " "))
}

// readmeBlocks splits markdown into its fenced code blocks.
func readmeBlocks(t *testing.T, md string) []readmeBlock {
	t.Helper()
	var blocks []readmeBlock
	var cur *readmeBlock
	var body []string
	for i, line := range strings.Split(md, "\n") {
		if !strings.HasPrefix(line, "```") {
			if cur != nil {
				body = append(body, line)
			}
			continue
		}
		if cur == nil {
			cur = &readmeBlock{line: i + 1, info: strings.Fields(strings.TrimPrefix(line, "```"))}
			body = nil
			continue
		}
		require.Equal(t, "```", strings.TrimSpace(line), "README.md:%d: a closing fence carries no info string", i+1)
		cur.text = strings.Join(body, "\n") + "\n"
		blocks = append(blocks, *cur)
		cur = nil
	}
	require.Nil(t, cur, "README.md: a code block is not closed")
	return blocks
}

func TestREADME(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the README's programs (minutes); the full tier runs it")
	}
	md, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	require.NoError(t, err)
	blocks := readmeBlocks(t, string(md))
	require.NotEmpty(t, blocks)

	goTool, err := exec.LookPath("go")
	require.NoError(t, err, "the go command builds the README's programs")
	bin := filepath.Join(t.TempDir(), "perimeter")
	build := exec.Command(goTool, "build", "-o", bin, ".")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build ./cmd/perimeter: %s", out)

	for i, b := range blocks {
		lang := ""
		if len(b.info) > 0 {
			lang = b.info[0]
		}
		tag := strings.Join(b.info[min(1, len(b.info)):], " ")
		t.Run(fmt.Sprintf("line%d", b.line), func(t *testing.T) {
			switch {
			case lang == "go" && tag == "":
				var want *string
				if i+1 < len(blocks) && slices.Equal(blocks[i+1].info, []string{"text", "output"}) {
					want = &blocks[i+1].text
				}
				runGoBlock(t, goTool, b, want)
			case lang == "go" && tag == "test":
				vetGoTestBlock(t, goTool, b)
			case lang == "sh" && tag == "":
				runShBlock(t, bin, b)
			case lang == "sh" && tag == "check":
				checkShBlock(t, b)
			case lang == "" || lang == "text":
			default:
				t.Errorf("%s: unknown kind of block; see the conventions at the top of readme_test.go", b.name())
			}
		})
	}
}

// workspaceFor writes dir/go.work using the repository's workspace with
// absolute paths, plus dir itself, so that src, the block written in dir,
// builds against this tree without any module download. Of the repository's
// modules it uses the root and those src imports from: the others' module
// graphs (the Kubernetes provider's above all) would need go.mod files that
// no build of this tree downloads, and the module cache of a fresh machine
// does not hold.
func workspaceFor(t *testing.T, goTool, dir, src string) {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	cmd := exec.Command(goTool, "work", "edit", "-json", filepath.Join(root, "go.work"))
	out, err := cmd.Output()
	require.NoError(t, err, "go work edit -json")
	var w struct {
		Go  string
		Use []struct{ DiskPath string }
		// Replace lists the workspace's replacements.
		Replace []struct {
			Old struct{ Path, Version string }
			New struct{ Path, Version string }
		}
	}
	require.NoError(t, json.Unmarshal(out, &w))
	abs := func(p string) string {
		if filepath.IsAbs(p) || !strings.HasPrefix(p, ".") {
			return p
		}
		return filepath.Join(root, p)
	}
	f, err := parser.ParseFile(token.NewFileSet(), "block.go", src, parser.ImportsOnly)
	require.NoError(t, err, "the block's imports")
	imported := func(module string) bool {
		for _, spec := range f.Imports {
			p, _ := strconv.Unquote(spec.Path.Value)
			if p == module || strings.HasPrefix(p, module+"/") {
				return true
			}
		}
		return false
	}
	var b strings.Builder
	fmt.Fprintf(&b, "go %s\n\nuse (\n\t.\n", w.Go)
	for _, u := range w.Use {
		d := abs(u.DiskPath)
		gomod, err := os.ReadFile(filepath.Join(d, "go.mod"))
		require.NoError(t, err)
		if d == root || imported(modfileModule(gomod)) {
			fmt.Fprintf(&b, "\t%s\n", d)
		}
	}
	b.WriteString(")\n\nreplace (\n")
	for _, r := range w.Replace {
		fmt.Fprintf(&b, "\t%s %s => %s %s\n", r.Old.Path, r.Old.Version, abs(r.New.Path), r.New.Version)
	}
	b.WriteString(")\n")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.work"), []byte(b.String()), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module readme.example\n\ngo "+w.Go+"\n"), 0o644))
}

// modfileModule returns the module path a go.mod declares.
func modfileModule(gomod []byte) string {
	for _, line := range strings.Split(string(gomod), "\n") {
		if m, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
			return strings.Trim(strings.TrimSpace(m), `"`)
		}
	}
	return ""
}

// goCmd is the go command in dir, on that workspace, without the network.
func goCmd(goTool, dir string, args ...string) *exec.Cmd {
	cmd := exec.Command(goTool, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK="+filepath.Join(dir, "go.work"), "GOPROXY=off", "GOFLAGS=-mod=readonly")
	return cmd
}

func runGoBlock(t *testing.T, goTool string, b readmeBlock, want *string) {
	dir := t.TempDir()
	workspaceFor(t, goTool, dir, b.text)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "main.go"), []byte(b.text), 0o644))
	prog := filepath.Join(dir, "prog")
	out, err := goCmd(goTool, dir, "build", "-o", prog, ".").CombinedOutput()
	require.NoError(t, err, "%s does not build: %s", b.name(), out)

	cmd := exec.Command(prog)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "%s: %s", b.name(), stderr.String())
	if want != nil {
		assert.Equal(t, *want, stdout.String(), "%s: the output the README shows", b.name())
	}
}

func vetGoTestBlock(t *testing.T, goTool string, b readmeBlock) {
	dir := t.TempDir()
	workspaceFor(t, goTool, dir, b.text)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "readme_test.go"), []byte(b.text), 0o644))
	out, err := goCmd(goTool, dir, "vet", ".").CombinedOutput()
	require.NoError(t, err, "%s does not compile: %s", b.name(), out)
}

// perimeterCmd matches the CLI as the README invokes it.
var perimeterCmd = regexp.MustCompile(`go run \./cmd/perimeter\b`)

func runShBlock(t *testing.T, bin string, b readmeBlock) {
	script := perimeterCmd.ReplaceAllLiteralString(b.text, `"$PERIMETER"`)
	cmd := exec.Command("sh", "-e", "-c", script)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "PERIMETER="+bin, "TMPDIR="+t.TempDir())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Stdin = strings.NewReader("")
	err := cmd.Run()
	require.NoError(t, err, "%s failed:\nstdout:\n%s\nstderr:\n%s", b.name(), stdout.String(), stderr.String())
	assert.NotEmpty(t, stdout.String(), "%s printed nothing", b.name())
}

func checkShBlock(t *testing.T, b readmeBlock) {
	makefile, err := os.ReadFile(filepath.Join("..", "..", "Makefile"))
	require.NoError(t, err)
	checked := 0
	for _, line := range strings.Split(b.text, "\n") {
		words := shellWords(line)
		for i := 0; i < len(words); i++ {
			switch {
			case i+2 < len(words) && words[i] == "go" && words[i+1] == "run" && words[i+2] == "./cmd/perimeter":
				args := words[i+3:]
				if j := slices.IndexFunc(args, func(w string) bool { return w == "|" || w == "&&" || w == ";" }); j >= 0 {
					args = args[:j]
				}
				checkInvocation(t, b, args)
				checked++
			case i+2 < len(words) && words[i] == "go" && words[i+1] == "run" && strings.HasPrefix(words[i+2], "./"):
				args := words[i+3:]
				if j := slices.IndexFunc(args, func(w string) bool { return w == "|" || w == "&&" || w == ";" }); j >= 0 {
					args = args[:j]
				}
				checkProgram(t, b, words[i+2], args)
				checked++
			case i+2 < len(words) && words[i] == "go" && words[i+1] == "test":
				var pkgs []string
				for _, w := range words[i+2:] {
					if w == "|" || w == "&&" || w == ";" {
						break
					}
					if !strings.HasPrefix(w, "-") {
						pkgs = append(pkgs, w)
					}
				}
				goTool, err := exec.LookPath("go")
				require.NoError(t, err)
				cmd := exec.Command(goTool, append([]string{"test", "-count=1", "-run", "^$"}, pkgs...)...)
				cmd.Dir = filepath.Join("..", "..")
				out, err := cmd.CombinedOutput()
				assert.NoError(t, err, "%s: go test %v does not compile: %s", b.name(), pkgs, out)
				checked++
			case words[i] == "make" && i+1 < len(words):
				target := words[i+1]
				assert.Regexp(t, `(?m)^`+regexp.QuoteMeta(target)+`:`, string(makefile), "%s: make %s: no such target", b.name(), target)
				checked++
			}
		}
	}
	assert.NotZero(t, checked, "%s: a check block with nothing to check", b.name())
}

// checkInvocation checks that args name a command whose help lists every
// flag args use before "--".
func checkInvocation(t *testing.T, b readmeBlock, args []string) {
	require.NotEmpty(t, args, "%s: perimeter without a command", b.name())
	var help, errb bytes.Buffer
	code := dispatch(context.Background(), []string{"help", args[0]}, strings.NewReader(""), &help, &errb)
	require.Equal(t, 0, code, "%s: perimeter help %s: %s", b.name(), args[0], errb.String())
	for _, a := range args[1:] {
		if a == "--" {
			break
		}
		if len(a) < 2 || a[0] != '-' {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		assert.Regexp(t, `(^|[\s\[])--?`+regexp.QuoteMeta(name)+`\b`, help.String(), "%s: perimeter %s has no flag %s", b.name(), args[0], a)
	}
}

// checkProgram builds the program in the repository directory dir and
// checks that its -h output lists every flag args use before "--".
func checkProgram(t *testing.T, b readmeBlock, dir string, args []string) {
	goTool, err := exec.LookPath("go")
	require.NoError(t, err)
	bin := filepath.Join(t.TempDir(), "prog")
	build := exec.Command(goTool, "build", "-o", bin, dir)
	build.Dir = filepath.Join("..", "..")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s: go build %s: %s", b.name(), dir, out)
	help, _ := exec.Command(bin, "-h").CombinedOutput() // -h's exit code is the program's choice
	for _, a := range args {
		if a == "--" {
			break
		}
		if len(a) < 2 || a[0] != '-' {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		assert.Regexp(t, `(^|[\s\[])--?`+regexp.QuoteMeta(name)+`\b`, string(help), "%s: %s has no flag %s", b.name(), dir, a)
	}
}

// shellWords splits a line of shell into words: quotes group, a word that
// starts with # ends the line, and |, ; and && are words of their own.
func shellWords(line string) []string {
	var words []string
	var w strings.Builder
	inWord := false
	var quote rune
	flush := func() {
		if inWord {
			words = append(words, w.String())
		}
		w.Reset()
		inWord = false
	}
	rs := []rune(line)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				w.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			flush()
		case r == '#' && !inWord:
			flush()
			return words
		case r == '|' || r == ';':
			flush()
			words = append(words, string(r))
		case r == '&' && i+1 < len(rs) && rs[i+1] == '&':
			flush()
			words = append(words, "&&")
			i++
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	flush()
	return words
}

func TestShellWords(t *testing.T) {
	t.Parallel()
	assert.Equal(t, []string{"go", "run", "./cmd/perimeter", "run", "--", "sh", "-c", "echo $X; ls"},
		shellWords(`go run ./cmd/perimeter run -- sh -c 'echo $X; ls'   # a comment`))
	assert.Equal(t, []string{"echo", "{}", "|", "x", "&&", "y", ";", "z"}, shellWords(`echo "{}" | x && y; z`))
}
