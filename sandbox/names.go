package sandbox

import (
	"path"
	"strconv"
	"strings"
)

// CleanName resolves a file name given to a Sandbox's file methods against dir
// (the sandbox's working directory, an absolute slash path) and returns the
// absolute, clean path. It refuses an empty name, a name containing a NUL byte,
// and a name with a ".." element, with an error that matches ErrInvalidArgument
// (wrap it with [NewError] to name the provider). Providers call it so that
// every one of them reads names the same way.
func CleanName(dir, name string) (string, error) {
	switch {
	case name == "":
		return "", invalidName("empty file name")
	case strings.IndexByte(name, 0) >= 0:
		return "", invalidName("file name " + shortQuote(name) + " contains a NUL byte")
	}
	for _, el := range strings.Split(name, "/") {
		if el == ".." {
			return "", invalidName("file name " + shortQuote(name) + ` has a ".." element`)
		}
	}
	if !path.IsAbs(name) {
		if dir == "" {
			dir = "/"
		}
		name = path.Join(dir, name)
	}
	return path.Clean(name), nil
}

// invalidName is a refused file name; it matches ErrInvalidArgument.
type invalidName string

func (e invalidName) Error() string        { return string(e) }
func (e invalidName) Is(target error) bool { return target == ErrInvalidArgument }

func shortQuote(s string) string {
	const max = 200
	if len(s) > max {
		s = s[:max] + "..."
	}
	return strconv.Quote(s)
}
