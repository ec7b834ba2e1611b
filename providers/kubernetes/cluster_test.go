package kubernetes_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/perimeter-sdk/perimeter/providers/kubernetes"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// The tests run against a real cluster that testcluster/cluster.sh starts
// inside a network namespace of its own. TestMain starts it (when the test
// binary is not already inside one), runs the tests again inside that
// namespace, and takes it down, failing when the host is not restored.
//
// Environment:
//   - PERIMETER_K8S_DIR: set inside the cluster's namespace (by TestMain or
//     by `cluster.sh test`); the cluster's state directory.
//   - PERIMETER_K8S_REQUIRE=1: a cluster that cannot start fails the run
//     instead of skipping, and Kubernetes is built first if it is not
//     cached (CI sets it). Without it, the cluster tests skip when the
//     binaries are not cached yet: building them takes up to an hour, longer
//     than go test's default timeout (run testcluster/build.sh once).

// clusterSkip is why the cluster tests cannot run, or "".
var clusterSkip string

func TestMain(m *testing.M) {
	if os.Getenv("PERIMETER_K8S_DIR") != "" {
		os.Exit(m.Run())
	}
	if reason := cannotStart(); reason != "" {
		if os.Getenv("PERIMETER_K8S_REQUIRE") == "1" {
			fmt.Fprintln(os.Stderr, "kubernetes tests: PERIMETER_K8S_REQUIRE=1 but", reason)
			os.Exit(1)
		}
		clusterSkip = reason
		os.Exit(m.Run())
	}
	os.Exit(withCluster())
}

// cannotStart says why this process cannot start a cluster.
func cannotStart() string {
	for _, a := range os.Args {
		if a == "-test.short=true" || a == "-test.short" {
			return "-short: the test cluster takes minutes to start"
		}
	}
	if os.Geteuid() != 0 {
		return "not root: the test cluster needs root (network namespace, containerd, kubelet)"
	}
	if os.Getenv("PERIMETER_K8S_REQUIRE") != "1" {
		if err := exec.Command(filepath.Join("testcluster", "build.sh"), "--check").Run(); err != nil {
			return "the Kubernetes binaries are not built yet: run providers/kubernetes/testcluster/build.sh once (up to an hour; cached), or set PERIMETER_K8S_REQUIRE=1"
		}
	}
	return ""
}

// withCluster starts the cluster, reruns the test binary inside its
// network namespace and stops the cluster.
func withCluster() int {
	dir, err := os.MkdirTemp("", "perimeter-k8s-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	script, _ := filepath.Abs(filepath.Join("testcluster", "cluster.sh"))
	up := exec.Command(script, "up", dir)
	up.Stdout, up.Stderr = os.Stderr, os.Stderr
	if err := up.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "kubernetes tests: the test cluster did not start (%v); logs in %s/logs\n", err, dir)
		if os.Getenv("PERIMETER_K8S_REQUIRE") != "1" && buildFailed(dir) {
			// The binaries could not be built here: nothing to test against.
			clusterSkip = "the Kubernetes binaries could not be built (see testcluster/build.sh)"
			os.RemoveAll(dir)
			return 0
		}
		return 1
	}
	ns, _ := os.ReadFile(filepath.Join(dir, "ns"))
	args := append([]string{"netns", "exec", strings.TrimSpace(string(ns)), os.Args[0]}, os.Args[1:]...)
	run := exec.Command("ip", args...)
	run.Env = append(os.Environ(), "PERIMETER_K8S_DIR="+dir, "KUBECONFIG="+filepath.Join(dir, "admin.kubeconfig"))
	run.Stdin, run.Stdout, run.Stderr = os.Stdin, os.Stdout, os.Stderr
	rc := 0
	if err := run.Run(); err != nil {
		rc = 1
		if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() > 0 {
			rc = ee.ExitCode()
		}
	}
	down := exec.Command(script, "down", dir)
	down.Stdout, down.Stderr = os.Stderr, os.Stderr
	if err := down.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "kubernetes tests: teardown failed: %v (state in %s)\n", err, dir)
		return 1
	}
	if err := os.RemoveAll(dir); err != nil {
		fmt.Fprintf(os.Stderr, "kubernetes tests: removing %s: %v\n", dir, err)
		return 1
	}
	return rc
}

// buildFailed reports whether the cluster failed for want of binaries.
func buildFailed(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "bin"))
	return err != nil
}

// needCluster skips a test that needs the cluster when there is none.
func needCluster(t testing.TB) {
	t.Helper()
	if clusterSkip != "" {
		t.Skip("no test cluster: " + clusterSkip)
	}
}

// open returns a provider on the test cluster.
func open(t testing.TB, mode kubernetes.Mode, template string) *sandbox.Provider {
	t.Helper()
	needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := kubernetes.New(ctx, &kubernetes.Options{
		Namespace: "default", Mode: mode, Template: template, ImagePullPolicy: corev1.PullNever,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

var (
	templateGVR = schema.GroupVersionResource{Group: "extensions.agents.x-k8s.io", Version: "v1alpha1", Resource: "sandboxtemplates"}
	poolGVR     = schema.GroupVersionResource{Group: "extensions.agents.x-k8s.io", Version: "v1alpha1", Resource: "sandboxwarmpools"}
)

// warmPool makes a SandboxTemplate of busybox and a SandboxWarmPool of
// replicas of it, waits for the pool to be ready and returns the
// template's name; both go at cleanup.
func warmPool(t testing.TB, replicas int) string {
	t.Helper()
	needCluster(t)
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	name := fmt.Sprintf("perimeter-test-%d", time.Now().UnixNano()%1e9)
	tmpl := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "extensions.agents.x-k8s.io/v1alpha1",
		"kind":       "SandboxTemplate",
		"metadata":   map[string]any{"name": name},
		"spec": map[string]any{
			"podTemplate": map[string]any{
				"spec": map[string]any{
					"terminationGracePeriodSeconds": int64(1),
					"automountServiceAccountToken":  false,
					"containers": []any{map[string]any{
						"name": "sandbox", "image": kubernetes.DefaultImage, "imagePullPolicy": "Never",
						"command": []any{"sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"},
					}},
				},
			},
		},
	}}
	if _, err := dyn.Resource(templateGVR).Namespace("default").Create(ctx, tmpl, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pool := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "extensions.agents.x-k8s.io/v1alpha1",
		"kind":       "SandboxWarmPool",
		"metadata":   map[string]any{"name": name},
		"spec":       map[string]any{"replicas": int64(replicas), "sandboxTemplateRef": map[string]any{"name": name}},
	}}
	if _, err := dyn.Resource(poolGVR).Namespace("default").Create(ctx, pool, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dyn.Resource(poolGVR).Namespace("default").Delete(context.Background(), name, metav1.DeleteOptions{})
		dyn.Resource(templateGVR).Namespace("default").Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	deadline := time.Now().Add(5 * time.Minute)
	for {
		u, err := dyn.Resource(poolGVR).Namespace("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n, _, _ := unstructured.NestedInt64(u.Object, "status", "readyReplicas")
		if n >= int64(replicas) {
			return name
		}
		if time.Now().After(deadline) {
			t.Fatalf("warm pool %s: %d of %d replicas ready after 5 minutes", name, n, replicas)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// httpd serves a directory with busybox's httpd.
func httpd(port int) []string {
	return []string{"httpd", "-f", "-p", strconv.Itoa(port), "-h", "."}
}

// connect exits 0 when a TCP connection succeeds.
func connect(host string, port int) []string {
	return []string{"nc", "-z", "-w", "5", host, strconv.Itoa(port)}
}
