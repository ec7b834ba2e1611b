package posixfs

import (
	"io/fs"
	"testing"
)

func TestMode(t *testing.T) {
	for _, tc := range []struct {
		raw  uint32
		want fs.FileMode
	}{
		{0o100644, 0o644},
		{0o040755, fs.ModeDir | 0o755},
		{0o120777, fs.ModeSymlink | 0o777},
		{0o010600, fs.ModeNamedPipe | 0o600},
		{0o140700, fs.ModeSocket | 0o700},
		{0o020666, fs.ModeDevice | fs.ModeCharDevice | 0o666},
		{0o060660, fs.ModeDevice | 0o660},
		{0o104755, fs.ModeSetuid | 0o755},
		{0o042755, fs.ModeDir | fs.ModeSetgid | 0o755},
		{0o041777, fs.ModeDir | fs.ModeSticky | 0o777},
	} {
		if got := Mode(tc.raw); got != tc.want {
			t.Errorf("Mode(%o) = %v, want %v", tc.raw, got, tc.want)
		}
	}
}
