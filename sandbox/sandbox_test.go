package sandbox_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

func TestErrorMatchesKindAndCause(t *testing.T) {
	cause := &fs.PathError{Op: "open", Path: "x", Err: fs.ErrNotExist}
	err := sandbox.NewError("demo", "sb-1", "read file", sandbox.ErrNotFound, cause)
	assert.ErrorIs(t, err, sandbox.ErrNotFound)
	assert.NotErrorIs(t, err, sandbox.ErrTerminated)
	var pe *fs.PathError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "x", pe.Path)
	assert.Equal(t, "demo: sandbox sb-1: read file: not found: open x: file does not exist", err.Error())
	assert.Equal(t, sandbox.ErrNotFound, sandbox.KindOf(err))
}

func TestNewErrorPassesContextErrorsAndEOF(t *testing.T) {
	for _, e := range []error{context.Canceled, context.DeadlineExceeded, io.EOF} {
		assert.Equal(t, e, sandbox.NewError("demo", "sb", "op", sandbox.ErrUnavailable, e))
	}
}

func TestNewErrorTakesKindFromCause(t *testing.T) {
	_, cause := sandbox.CleanName("/", "../x")
	err := sandbox.NewError("demo", "sb-2", "stat", nil, cause)
	assert.ErrorIs(t, err, sandbox.ErrInvalidArgument)
	assert.Contains(t, err.Error(), "demo: sandbox sb-2: stat: invalid argument")
	// A cause with no kind is reported as unavailable, never without one.
	err = sandbox.NewError("demo", "", "list", nil, errors.New("boom"))
	assert.ErrorIs(t, err, sandbox.ErrUnavailable)
}

func TestCleanName(t *testing.T) {
	for _, tc := range []struct{ dir, name, want string }{
		{"/", "a/b", "/a/b"},
		{"/work", "a//b/./c", "/work/a/b/c"},
		{"/work", "/abs", "/abs"},
		{"", "x", "/x"},
		{"/work", ".", "/work"},
	} {
		got, err := sandbox.CleanName(tc.dir, tc.name)
		require.NoError(t, err, tc.name)
		assert.Equal(t, tc.want, got, "%q in %q", tc.name, tc.dir)
	}
	for _, bad := range []string{"", "..", "../x", "a/../b", "/..", "a/..", "x\x00y"} {
		_, err := sandbox.CleanName("/work", bad)
		assert.ErrorIs(t, err, sandbox.ErrInvalidArgument, "%q", bad)
	}
}

func TestCappedBufferHead(t *testing.T) {
	b := sandbox.NewCappedBuffer(5, false)
	for _, s := range []string{"ab", "cdef", "gh"} {
		n, err := b.Write([]byte(s))
		require.NoError(t, err)
		assert.Equal(t, len(s), n)
	}
	assert.Equal(t, "abcde", string(b.Bytes()))
	assert.EqualValues(t, 3, b.Omitted())
	assert.Equal(t, "abcde\n[perimeter: 3 bytes of stdout omitted]\n", string(b.BytesWithMarker("stdout")))
}

func TestCappedBufferTail(t *testing.T) {
	b := sandbox.NewCappedBuffer(4, true)
	b.Write([]byte("abc"))
	b.Write([]byte("de"))
	assert.Equal(t, "bcde", string(b.Bytes()))
	b.Write([]byte("0123456789"))
	assert.Equal(t, "6789", string(b.Bytes()))
	assert.EqualValues(t, 11, b.Omitted())
	assert.Equal(t, "[perimeter: 11 bytes of stderr omitted]\n6789", string(b.BytesWithMarker("stderr")))
}

func TestCappedBufferUnlimitedAndExact(t *testing.T) {
	b := sandbox.NewCappedBuffer(-1, false)
	b.Write([]byte(strings.Repeat("x", 10000)))
	assert.Len(t, b.Bytes(), 10000)
	assert.Zero(t, b.Omitted())
	e := sandbox.NewCappedBuffer(3, false)
	e.Write([]byte("abc"))
	assert.Equal(t, "abc", string(e.BytesWithMarker("stdout")), "no marker when nothing was dropped")
}

func TestRunCapturesWithCapAndTees(t *testing.T) {
	d := newFake(sandbox.Capabilities{})
	d.out, d.errOut = "0123456789", "e"
	sb := newSandbox(t, d)
	var whole strings.Builder
	res, err := sandbox.Run(context.Background(), sb,
		&sandbox.Cmd{Args: []string{"x"}, Stdout: &whole}, &sandbox.RunOptions{OutputLimit: 4})
	require.NoError(t, err)
	assert.Equal(t, 3, res.Status.Code)
	assert.Equal(t, "0123\n[perimeter: 6 bytes of stdout omitted]\n", string(res.Stdout))
	assert.EqualValues(t, 6, res.StdoutOmitted)
	assert.Equal(t, "e", string(res.Stderr))
	assert.Equal(t, "0123456789", whole.String(), "the caller's writer gets everything")

	_, err = sandbox.Run(context.Background(), sb, &sandbox.Cmd{}, nil)
	assert.ErrorIs(t, err, sandbox.ErrInvalidArgument)
}

func TestExitStatusString(t *testing.T) {
	assert.Equal(t, "exit status 0", sandbox.ExitStatus{}.String())
	assert.True(t, sandbox.ExitStatus{}.Success())
	assert.Equal(t, "killed by SIGTERM", sandbox.ExitStatus{Code: -1, Signal: sandbox.SIGTERM}.String())
	assert.Equal(t, "timed out", sandbox.ExitStatus{Code: -1, TimedOut: true}.String())
	assert.False(t, sandbox.ExitStatus{TimedOut: true}.Success())
	assert.Equal(t, "killed: out of memory", sandbox.ExitStatus{Code: -1, OOMKilled: true}.String())
}

func TestRegistry(t *testing.T) {
	var gotURL *url.URL
	sandbox.Register("registrytest", func(ctx context.Context, u *url.URL) (driver.Provider, error) {
		gotURL = u
		return newFake(sandbox.Capabilities{}), nil
	})
	assert.Contains(t, sandbox.Schemes(), "registrytest")
	p, err := sandbox.Open(context.Background(), "registrytest://host/path")
	require.NoError(t, err)
	assert.Equal(t, "fake", p.Name())
	assert.Equal(t, "host", gotURL.Host)

	_, err = sandbox.Open(context.Background(), "nosuch://x")
	assert.ErrorIs(t, err, sandbox.ErrInvalidArgument)
	assert.ErrorContains(t, err, `unknown provider scheme "nosuch"`)
	assert.ErrorContains(t, err, "registrytest")
	assert.ErrorContains(t, err, "forgotten import")

	_, err = sandbox.Open(context.Background(), "no-scheme")
	assert.ErrorContains(t, err, "has no scheme")

	assert.Panics(t, func() {
		sandbox.Register("registrytest", func(context.Context, *url.URL) (driver.Provider, error) { return nil, nil })
	})
}

// naiveTail keeps the last limit bytes the obvious way, as the reference.
func naiveTail(writes [][]byte, limit int) ([]byte, int64) {
	var all []byte
	for _, w := range writes {
		all = append(all, w...)
	}
	if len(all) <= limit {
		return all, 0
	}
	return all[len(all)-limit:], int64(len(all) - limit)
}

func TestCappedBufferTailMatchesTheReference(t *testing.T) {
	sizes := []int{0, 1, 2, 3, 5, 7, 8, 9, 13, 30}
	for _, limit := range []int{0, 1, 7, 8, 64} {
		var writes [][]byte
		b := sandbox.NewCappedBuffer(limit, true)
		n := 0
		for i := range 200 {
			w := bytes.Repeat([]byte{byte('a' + i%26)}, sizes[(i*7)%len(sizes)])
			for j := range w {
				w[j] += byte(j % 3)
			}
			writes = append(writes, w)
			b.Write(w)
			n++
			want, omitted := naiveTail(writes, limit)
			require.Equal(t, string(want), string(b.Bytes()), "limit %d after %d writes", limit, n)
			require.Equal(t, omitted, b.Omitted(), "limit %d after %d writes", limit, n)
		}
	}
}

// BenchmarkCappedBufferTail writes 64 MiB in 100-byte writes into a 1 MiB
// tail; the cost per byte must not depend on the limit.
func BenchmarkCappedBufferTail(b *testing.B) {
	chunk := bytes.Repeat([]byte("x"), 100)
	b.SetBytes(64 << 20)
	for b.Loop() {
		buf := sandbox.NewCappedBuffer(sandbox.DefaultOutputLimit, true)
		for range (64 << 20) / 100 {
			buf.Write(chunk)
		}
	}
}

func TestErrorfIsPrintfStyleAndWraps(t *testing.T) {
	cause := &fs.PathError{Op: "open", Path: "x", Err: fs.ErrNotExist}
	err := sandbox.Errorf("demo", "sb-1", "read file", sandbox.ErrNotFound, "reading %q: %w", "x", cause)
	assert.EqualError(t, err, `demo: sandbox sb-1: read file: not found: reading "x": open x: file does not exist`)
	assert.ErrorIs(t, err, sandbox.ErrNotFound)
	var pe *fs.PathError
	assert.ErrorAs(t, err, &pe, "%w keeps the cause reachable")
	assert.ErrorIs(t, sandbox.Errorf("demo", "", "op", nil, "no kind"), sandbox.ErrUnavailable)
}

func TestNewErrorPassesAnErrorThroughOnlyWithoutAKind(t *testing.T) {
	inner := sandbox.NewError("demo", "sb-1", "stat", sandbox.ErrNotFound, nil)
	assert.Same(t, inner, sandbox.NewError("other", "", "op", nil, inner), "an *Error with a nil kind is returned as it is")
	outer := sandbox.NewError("other", "", "op", sandbox.ErrPermissionDenied, inner)
	assert.NotSame(t, inner, outer)
	assert.Equal(t, sandbox.ErrPermissionDenied, outer.(*sandbox.Error).Kind, "a kind given is the kind returned")
}
