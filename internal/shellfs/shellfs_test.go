package shellfs

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// hostFS runs the scripts with the host's sh, as a sandbox would.
func hostFS(t *testing.T) (*FS, string) {
	t.Helper()
	return &FS{Run: func(ctx context.Context, argv []string) ([]byte, []byte, int, error) {
		c := exec.CommandContext(ctx, argv[0], argv[1:]...)
		var out, errOut bytes.Buffer
		c.Stdout, c.Stderr = &out, &errOut
		err := c.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return out.Bytes(), errOut.Bytes(), ee.ExitCode(), nil
		}
		return out.Bytes(), errOut.Bytes(), 0, err
	}}, t.TempDir()
}

func TestMkdirAllGivesEveryNewDirectoryItsPerm(t *testing.T) {
	f, dir := hostFS(t)
	ctx := context.Background()
	require.NoError(t, f.MkdirAll(ctx, dir+"/a/b/c", 0o711))
	for _, d := range []string{"a", "a/b", "a/b/c"} {
		fi, err := os.Stat(filepath.Join(dir, d))
		require.NoError(t, err)
		assert.Equal(t, fs.FileMode(0o711), fi.Mode().Perm(), d)
	}
	require.NoError(t, f.MkdirAll(ctx, dir+"/a/b", 0o700), "an existing directory is not an error")
	fi, _ := os.Stat(filepath.Join(dir, "a/b"))
	assert.Equal(t, fs.FileMode(0o711), fi.Mode().Perm(), "and keeps its mode")

	require.NoError(t, os.WriteFile(filepath.Join(dir, "file"), nil, 0o644))
	assert.ErrorIs(t, f.MkdirAll(ctx, dir+"/file", 0o755), sandbox.ErrAlreadyExists)
	assert.ErrorIs(t, f.MkdirAll(ctx, dir+"/file/sub", 0o755), sandbox.ErrInvalidArgument)
	require.NoError(t, f.MkdirAll(ctx, dir+"/sticky", fs.ModeSticky|0o777))
	fi, _ = os.Stat(filepath.Join(dir, "sticky"))
	assert.Equal(t, fs.ModeSticky|fs.ModeDir|0o777, fi.Mode())
}

func TestStatAndReadDir(t *testing.T) {
	f, dir := hostFS(t)
	ctx := context.Background()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "b"), []byte("hello"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "new\nline"), nil, 0o644))
	require.NoError(t, os.Mkdir(filepath.Join(dir, ".hidden"), 0o755))
	require.NoError(t, os.Symlink("/nowhere", filepath.Join(dir, "dangling")))

	fi, err := f.Stat(ctx, dir+"/b")
	require.NoError(t, err)
	assert.Equal(t, "b", fi.Name)
	assert.EqualValues(t, 5, fi.Size)
	assert.Equal(t, fs.FileMode(0o600), fi.Mode)
	fi, err = f.Stat(ctx, dir+"/dangling")
	require.NoError(t, err)
	assert.Equal(t, fs.ModeSymlink, fi.Mode.Type(), "a final symbolic link is not followed")
	_, err = f.Stat(ctx, dir+"/missing")
	assert.ErrorIs(t, err, sandbox.ErrNotFound)

	list, err := f.ReadDir(ctx, dir)
	require.NoError(t, err)
	var names []string
	for _, e := range list {
		names = append(names, e.Name)
	}
	assert.Equal(t, []string{".hidden", "b", "dangling", "new\nline"}, names)
	_, err = f.ReadDir(ctx, dir+"/b")
	assert.ErrorIs(t, err, sandbox.ErrInvalidArgument, "not a directory")
}

func TestRemoveRenameCommit(t *testing.T) {
	f, dir := hostFS(t)
	ctx := context.Background()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "full/x"), 0o755))
	assert.ErrorIs(t, f.Remove(ctx, dir+"/full"), sandbox.ErrInvalidArgument, "not empty")
	assert.ErrorIs(t, f.Remove(ctx, dir+"/missing"), sandbox.ErrNotFound)
	require.NoError(t, f.RemoveAll(ctx, dir+"/full"))
	require.NoError(t, f.RemoveAll(ctx, dir+"/missing"))
	assert.ErrorIs(t, f.RemoveAll(ctx, "/"), sandbox.ErrInvalidArgument)

	require.NoError(t, os.WriteFile(filepath.Join(dir, "a"), []byte("a"), 0o644))
	require.NoError(t, f.Rename(ctx, dir+"/a", dir+"/b"))
	assert.NoFileExists(t, filepath.Join(dir, "a"))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "d"), 0o755))
	assert.ErrorIs(t, f.Rename(ctx, dir+"/b", dir+"/d"), sandbox.ErrInvalidArgument, "a file does not replace a directory")

	require.NoError(t, os.WriteFile(filepath.Join(dir, ".tmp"), []byte("new"), 0o600))
	require.NoError(t, f.Commit(ctx, dir+"/.tmp", dir+"/b", fs.ModeSetgid|0o750))
	fi, err := os.Stat(filepath.Join(dir, "b"))
	require.NoError(t, err)
	assert.Equal(t, fs.ModeSetgid|0o750, fi.Mode())
	assert.NoFileExists(t, filepath.Join(dir, ".tmp"))

	assert.ErrorIs(t, f.ProbeRead(ctx, dir+"/d"), sandbox.ErrInvalidArgument)
	assert.ErrorIs(t, f.ProbeDir(ctx, dir+"/nope"), sandbox.ErrNotFound)
	assert.NoError(t, f.ProbeRead(ctx, dir+"/b"))
}

func TestParseReadDirRefusesGarbage(t *testing.T) {
	for _, out := range []string{"41ed 4096 1700000000 5:ab\n", "41ed 4096 x 1:a\n", "zz 1 1 1:a\n", "41ed 1 1 nope\n"} {
		_, err := parseReadDir([]byte(out))
		assert.ErrorIs(t, err, sandbox.ErrUnavailable, out)
	}
	list, err := parseReadDir([]byte("81a4 3 1700000000 3:a\nb\n41ed 4096 1700000000 1:c\n"))
	require.NoError(t, err)
	require.Len(t, list, 2)
	assert.Equal(t, "a\nb", list[0].Name)
	assert.True(t, list[1].IsDir())
}

func TestOctal(t *testing.T) {
	assert.Equal(t, "4755", Octal(fs.ModeSetuid|0o755))
	assert.Equal(t, "644", Octal(0o644))
}
