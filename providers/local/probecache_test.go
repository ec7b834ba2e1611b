package local

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestProbeCache checks the host-wide memory of a successful namespace
// probe: a key describes this process and its host, an entry is trusted
// only as a root-owned regular file closed to others in a root-owned 0700
// directory, and nothing is written through a planted link.
func TestProbeCache(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("the probe cache is used only when the provider runs as root")
	}
	t.Parallel()
	key := probeCacheKey()
	require.Len(t, key, 64)
	assert.Equal(t, key, probeCacheKey(), "the key is stable within a process")

	base := t.TempDir()
	dir := filepath.Join(base, "probe")
	assert.False(t, probeCacheHit(dir, key))
	probeCacheStore(dir, key)
	assert.True(t, probeCacheHit(dir, key))
	fi, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), fi.Mode().Perm())
	assert.False(t, probeCacheHit(dir, "another-key"))

	// An entry others could have written is not trusted.
	require.NoError(t, os.Chmod(filepath.Join(dir, key), 0o644))
	assert.False(t, probeCacheHit(dir, key))
	require.NoError(t, os.Remove(filepath.Join(dir, key)))
	require.NoError(t, os.Symlink("/etc/passwd", filepath.Join(dir, key)))
	assert.False(t, probeCacheHit(dir, key), "a link as an entry was trusted")

	// A loose directory, or a link as the directory, is refused.
	loose := filepath.Join(base, "loose")
	require.NoError(t, os.Mkdir(loose, 0o700))
	require.NoError(t, os.Chmod(loose, 0o1777))
	probeCacheStore(loose, key)
	entries, _ := os.ReadDir(loose)
	assert.Empty(t, entries, "an entry was written in a world-writable directory")
	elsewhere := filepath.Join(base, "elsewhere")
	require.NoError(t, os.Mkdir(elsewhere, 0o700))
	link := filepath.Join(base, "link")
	require.NoError(t, os.Symlink(elsewhere, link))
	probeCacheStore(link, key)
	entries, _ = os.ReadDir(elsewhere)
	assert.Empty(t, entries, "an entry was written through a linked directory")

	// The directory stays bounded.
	bounded := filepath.Join(base, "bounded")
	for i := range maxProbeCacheEntries + 3 {
		probeCacheStore(bounded, key+string(rune('a'+i%26))+string(rune('a'+i/26)))
	}
	entries, _ = os.ReadDir(bounded)
	assert.LessOrEqual(t, len(entries), maxProbeCacheEntries)
}
