package local

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver/driverutil"
)

// prepareRootFS returns the directory to use as the lower layer of an image
// sandbox's root: spec.RootFS itself when it is a directory, or a tarball
// (.tar, .tar.gz, .tgz) unpacked into the sandbox's directory. Unpacking goes
// through an os.Root, so entries cannot land outside it; device nodes and
// set-id bits are dropped.
func (p *Provider) prepareRootFS(src, dir string) (string, error) {
	if !filepath.IsAbs(src) {
		return "", fmt.Errorf("%w: Spec.RootFS %q is not an absolute path", sandbox.ErrInvalidArgument, src)
	}
	fi, err := os.Stat(src)
	if err != nil {
		if k := driverutil.KindOf(err); k != nil {
			return "", fmt.Errorf("%w: Spec.RootFS: %w", k, err)
		}
		return "", fmt.Errorf("Spec.RootFS: %w", err)
	}
	if fi.IsDir() {
		return src, nil
	}
	dst := filepath.Join(dir, "rootfs")
	if err := os.Mkdir(dst, 0o755); err != nil {
		return "", err
	}
	if err := untar(src, dst); err != nil {
		return "", fmt.Errorf("Spec.RootFS %s: %w", src, err)
	}
	return dst, nil
}

func untar(src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(src, ".gz") || strings.HasSuffix(src, ".tgz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			return err
		}
		defer zr.Close()
		r = zr
	} else if !strings.HasSuffix(src, ".tar") {
		return errors.New("not a directory, .tar, .tar.gz or .tgz")
	}
	root, err := os.OpenRoot(dst)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "/"))
		if name == "." || name == ".." || strings.HasPrefix(name, "../") {
			continue
		}
		mode := fs.FileMode(h.Mode) & fs.ModePerm
		if d := path.Dir(name); d != "." {
			if err := root.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, mode|0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			w, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
			if err != nil {
				return err
			}
			_, err = io.Copy(w, tr)
			if cerr := w.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			root.Remove(name)
			if err := root.Symlink(h.Linkname, name); err != nil {
				return err
			}
		case tar.TypeLink:
			target := path.Clean(strings.TrimPrefix(h.Linkname, "/"))
			root.Remove(name)
			if err := root.Link(target, name); err != nil {
				return err
			}
		}
	}
}
