package vercel

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

func readAll(t *testing.T, sb testSandbox, name string) ([]byte, error) {
	t.Helper()
	rc, err := sb.ReadFile(ctxT(t), name)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func TestFilesRoundTripBinaryAndLarge(t *testing.T) {
	_, p := newFake(t, nil)
	sb := newSandbox(t, p, nil)
	ctx := ctxT(t)
	bin := make([]byte, 0, 512)
	for b := range 256 {
		bin = append(bin, byte(b), 0)
	}
	large := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	for name, data := range map[string][]byte{"bin": bin, "large": large, "empty": {}} {
		if err := sb.WriteFile(ctx, name, bytes.NewReader(data), 0o600); err != nil {
			t.Fatalf("WriteFile %s: %v", name, err)
		}
		got, err := readAll(t, sb, name)
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s: read %d bytes (%v), want the %d written", name, len(got), err, len(data))
		}
	}
	fi, err := sb.Stat(ctx, "bin")
	if err != nil || fi.Mode.Perm() != 0o600 || fi.Size != int64(len(bin)) || fi.Name != "bin" {
		t.Errorf("Stat(bin) = %+v, %v", fi, err)
	}
}

func TestFilesErrors(t *testing.T) {
	_, p := newFake(t, nil)
	sb := newSandbox(t, p, nil)
	ctx := ctxT(t)
	if _, err := readAll(t, sb, "missing"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("ReadFile missing: %v", err)
	}
	if _, err := readAll(t, sb, "."); !errors.Is(err, sandbox.ErrInvalidArgument) {
		t.Errorf("ReadFile of a directory: %v", err)
	}
	if err := sb.WriteFile(ctx, "no/such/dir/f", strings.NewReader("x"), 0o644); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("WriteFile into a missing directory: %v", err)
	}
	for _, name := range []string{"../etc/passwd", "a/../../b", "", "nul\x00"} {
		if _, err := sb.ReadFile(ctx, name); !errors.Is(err, sandbox.ErrInvalidArgument) {
			t.Errorf("ReadFile(%q): %v, want ErrInvalidArgument", name, err)
		}
	}
	if _, err := sb.ReadDir(ctx, "missing"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("ReadDir missing: %v", err)
	}
	if err := sb.WriteFile(ctx, "file", strings.NewReader("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.ReadDir(ctx, "file"); !errors.Is(err, sandbox.ErrInvalidArgument) {
		t.Errorf("ReadDir of a file: %v", err)
	}
	var e *sandbox.Error
	_, err := sb.ReadFile(ctx, "missing")
	if !errors.As(err, &e) || e.Sandbox != sb.ID() || e.Provider != "vercel" || e.Op != "read file" {
		t.Errorf("error %v does not name provider, sandbox and op", err)
	}
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 404 {
		t.Errorf("error %v does not reach the API's 404", err)
	}
}

// A reader that fails sends nothing: the old content stays.
func TestWriteFileWithAFailingReaderKeepsTheOldFile(t *testing.T) {
	f, p := newFake(t, nil)
	sb := newSandbox(t, p, nil)
	ctx := ctxT(t)
	if err := sb.WriteFile(ctx, "keep", strings.NewReader("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	writes := f.Hits("POST", "/fs/write")
	broken := io.MultiReader(strings.NewReader("new new new"), errReader{})
	if err := sb.WriteFile(ctx, "keep", broken, 0o644); err == nil {
		t.Fatal("WriteFile with a failing reader succeeded")
	}
	if got, _ := readAll(t, sb, "keep"); string(got) != "old" {
		t.Errorf("after a failed write: %q", got)
	}
	if n := f.Hits("POST", "/fs/write"); n != writes {
		t.Errorf("a failed read still sent %d uploads", n-writes)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("reader broke") }

func TestFileOpsThroughCommands(t *testing.T) {
	_, p := newFake(t, nil)
	sb := newSandbox(t, p, nil)
	ctx := ctxT(t)
	if err := sb.MkdirAll(ctx, "a/b/c", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := sb.MkdirAll(ctx, "a/b/c", 0o700); err != nil {
		t.Errorf("MkdirAll of an existing directory: %v", err)
	}
	if fi, err := sb.Stat(ctx, "a/b/c"); err != nil || !fi.IsDir() || fi.Mode.Perm() != 0o700 {
		t.Errorf("Stat a/b/c = %+v, %v", fi, err)
	}
	for _, n := range []string{"a/z", "a/y y", "a/x\nnewline"} {
		if err := sb.WriteFile(ctx, n, strings.NewReader(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	list, err := sb.ReadDir(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, fi := range list {
		names = append(names, fi.Name)
	}
	if got := strings.Join(names, "|"); got != "b|x\nnewline|y y|z" {
		t.Errorf("ReadDir(a) = %q", got)
	}
	if err := sb.Rename(ctx, "a/z", "a/y y"); err != nil {
		t.Fatal(err)
	}
	if got, _ := readAll(t, sb, "a/y y"); string(got) != "a/z" {
		t.Errorf("after Rename onto a file: %q", got)
	}
	if err := sb.Rename(ctx, "a/missing", "a/q"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("Rename of a missing file: %v", err)
	}
	if err := sb.Remove(ctx, "a/b"); err == nil {
		t.Error("Remove of a non-empty directory succeeded")
	}
	if err := sb.Remove(ctx, "a/b/c"); err != nil {
		t.Errorf("Remove of an empty directory: %v", err)
	}
	if err := sb.Remove(ctx, "a/missing"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("Remove of a missing file: %v", err)
	}
	if err := sb.RemoveAll(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Stat(ctx, "a"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("Stat after RemoveAll: %v", err)
	}
	if err := sb.RemoveAll(ctx, "a"); err != nil {
		t.Errorf("RemoveAll of nothing: %v", err)
	}
	if err := sb.RemoveAll(ctx, "/"); !errors.Is(err, sandbox.ErrInvalidArgument) {
		t.Errorf("RemoveAll(/): %v", err)
	}
}
