package kubernetes_test

import (
	"context"
	"errors"
	"io"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/perimeter-sdk/perimeter/providers/kubernetes"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

func TestParseURL(t *testing.T) {
	u, _ := url.Parse("k8s://prod/agents?mode=agent-sandbox&template=py&runtimeClass=gvisor&pull=Never&networkPolicy=enforced")
	o, err := kubernetes.ParseURL(u)
	require.NoError(t, err)
	require.Equal(t, kubernetes.Options{Context: "prod", Namespace: "agents", Mode: kubernetes.ModeAgentSandbox,
		Template: "py", RuntimeClass: "gvisor", ImagePullPolicy: "Never", EnforcesNetworkPolicy: true}, *o)

	u, _ = url.Parse("k8s:///default?template=warm")
	o, err = kubernetes.ParseURL(u)
	require.NoError(t, err)
	require.Equal(t, kubernetes.ModeAgentSandbox, o.Mode, "a template implies agent-sandbox")
	require.Equal(t, "", o.Context)

	for _, bad := range []string{"k8s://c/a/b", "k8s:///ns?mode=vm", "k8s:///ns?color=red", "k8s://user:pw@c/ns", "k8s:///ns?networkPolicy=maybe", "k8s:///ns?pull=Sometimes"} {
		u, _ := url.Parse(bad)
		_, err := kubernetes.ParseURL(u)
		require.ErrorIs(t, err, sandbox.ErrInvalidArgument, bad)
	}
}

func TestOpenBadConfig(t *testing.T) {
	_, err := kubernetes.New(context.Background(), &kubernetes.Options{Kubeconfig: "/nonexistent/kubeconfig"})
	require.ErrorIs(t, err, sandbox.ErrInvalidArgument)
	_, err = kubernetes.New(context.Background(), &kubernetes.Options{Mode: "vm"})
	require.ErrorIs(t, err, sandbox.ErrInvalidArgument)
}

// Spec fields a pod cannot honour are refused, and nothing is made.
func TestCreateRefuses(t *testing.T) {
	p := open(t, kubernetes.ModePod, "")
	ctx := context.Background()
	for name, spec := range map[string]*sandbox.Spec{
		"network none":   {},
		"pids":           {Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}, Resources: sandbox.Resources{PIDs: 10}},
		"gpu model":      {Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}, Resources: sandbox.Resources{GPU: "A100"}},
		"rootfs":         {Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}, RootFS: "/srv/root"},
		"snapshot":       {Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}, Snapshot: "s1"},
		"provider label": {Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}, Labels: map[string]string{kubernetes.LabelSandbox: "x"}},
	} {
		_, err := p.Create(ctx, spec)
		require.Error(t, err, name)
		require.True(t, errors.Is(err, sandbox.ErrNotSupported) || errors.Is(err, sandbox.ErrInvalidArgument), "%s: %v", name, err)
	}
	requireNothingLeft(t, p)
}

// An image that does not exist fails Create with a message naming it, and
// the pod is deleted.
func TestCreateBadImage(t *testing.T) {
	p := open(t, kubernetes.ModePod, "")
	_, err := p.Create(context.Background(), &sandbox.Spec{Image: "perimeter.local/no-such-image:1", Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}})
	require.ErrorIs(t, err, sandbox.ErrInvalidArgument)
	require.Contains(t, err.Error(), "ErrImageNeverPull")
	requireNothingLeft(t, p)
}

// Spec maps onto the pod: resources, labels, the provider's deadline.
func TestSpecToPod(t *testing.T) {
	p := open(t, kubernetes.ModePod, "")
	ctx := context.Background()
	sb, err := p.Create(ctx, &sandbox.Spec{
		Network:   &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen},
		Resources: sandbox.Resources{CPU: 0.5, Memory: 64 << 20, Disk: 100 << 20},
		Labels:    map[string]string{"team": "a", "not a label value": "with spaces"},
		Timeout:   10 * time.Minute,
		Workdir:   "/srv/work",
		Env:       map[string]string{"A": "1"},
	})
	require.NoError(t, err)
	defer sb.Terminate(ctx)
	var pod *corev1.Pod
	require.True(t, sb.As(&pod))
	c := pod.Spec.Containers[0]
	require.Equal(t, "500m", c.Resources.Limits.Cpu().String())
	require.Equal(t, "64Mi", c.Resources.Limits.Memory().String())
	require.Equal(t, "100Mi", c.Resources.Limits.StorageEphemeral().String())
	require.Equal(t, "/srv/work", c.WorkingDir)
	require.Equal(t, "a", pod.Labels["team"])
	info, err := sb.Info(ctx)
	require.NoError(t, err)
	// The kubelet's deadline (from the pod's start) is the reported expiry,
	// 10 minutes from when the pod ran, not from when it was asked for.
	require.NotNil(t, pod.Spec.ActiveDeadlineSeconds)
	require.NotNil(t, pod.Status.StartTime)
	kubeletEnd := pod.Status.StartTime.Add(time.Duration(*pod.Spec.ActiveDeadlineSeconds) * time.Second)
	require.WithinDuration(t, info.Expires, kubeletEnd, time.Second)
	require.WithinDuration(t, time.Now().Add(10*time.Minute), info.Expires, time.Minute)
	require.Equal(t, "with spaces", info.Labels["not a label value"], "labels Kubernetes cannot carry live in an annotation")
	res, err := sandbox.Run(ctx, sb, &sandbox.Cmd{Args: []string{"sh", "-c", "pwd; echo $A"}}, nil)
	require.NoError(t, err)
	require.Equal(t, "/srv/work\n1\n", string(res.Stdout))
	// List finds it by the label Kubernetes cannot carry.
	n := 0
	for info, err := range p.List(ctx, &sandbox.ListOptions{Labels: map[string]string{"not a label value": "with spaces"}}) {
		require.NoError(t, err)
		require.Equal(t, sb.ID(), info.ID)
		n++
	}
	require.Equal(t, 1, n)
	require.NoError(t, sb.Terminate(ctx))
	requireNothingLeft(t, p)
}

// A claim against a warm pool gets a ready pod and runs commands; its
// Terminate deletes the claim and waits for the pod.
func TestWarmPoolClaim(t *testing.T) {
	needCluster(t)
	tmpl := warmPool(t, 1)
	p := open(t, kubernetes.ModeAgentSandbox, tmpl)
	ctx := context.Background()
	sb, err := p.Create(ctx, &sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}, Env: map[string]string{"K": "v"}})
	require.NoError(t, err)
	res, err := sandbox.Run(ctx, sb, &sandbox.Cmd{Args: []string{"sh", "-c", "echo $K; pwd"}, Stdin: strings.NewReader("")}, nil)
	require.NoError(t, err)
	require.Equal(t, "v\n/workspace\n", string(res.Stdout))
	require.NoError(t, sb.WriteFile(ctx, "f", strings.NewReader("claimed"), 0o644))
	got, err := p.Get(ctx, sb.ID())
	require.NoError(t, err)
	r, err := got.ReadFile(ctx, "f")
	require.NoError(t, err)
	b, _ := io.ReadAll(r)
	r.Close()
	require.Equal(t, "claimed", string(b))
	_, err = p.Create(ctx, &sandbox.Spec{Image: "other", Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}})
	require.ErrorIs(t, err, sandbox.ErrNotSupported)
	require.NoError(t, sb.Terminate(ctx))
	_, err = p.Get(ctx, sb.ID())
	require.ErrorIs(t, err, sandbox.ErrNotFound)
}

// requireNothingLeft checks that no pod or NetworkPolicy of the provider's
// remains in the namespace (other than warm pools' pods).
func requireNothingLeft(t *testing.T, p *sandbox.Provider) {
	t.Helper()
	// The provider holds no clientset: build one from its configuration,
	// as its As documentation says.
	var cfg *rest.Config
	require.True(t, p.As(&cfg))
	c, err := k8s.NewForConfig(cfg)
	require.NoError(t, err)
	sel := metav1.ListOptions{LabelSelector: kubernetes.LabelManaged + "=perimeter"}
	pods, err := c.CoreV1().Pods("default").List(context.Background(), sel)
	require.NoError(t, err)
	for _, pod := range pods.Items {
		require.NotNil(t, pod.DeletionTimestamp, "pod %s is left", pod.Name)
	}
	nps, err := c.NetworkingV1().NetworkPolicies("default").List(context.Background(), sel)
	require.NoError(t, err)
	require.Empty(t, nps.Items)
}

// A large standard input reaches a command whole, whether the command reads
// it itself or hands it to a child (on containerd 1.6 an exec session's first
// process could see its input end after a few 32 KiB reads, silently).
func TestLargeStdin(t *testing.T) {
	p := open(t, kubernetes.ModePod, "")
	ctx := context.Background()
	sb, err := p.Create(ctx, &sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}})
	require.NoError(t, err)
	defer sb.Terminate(ctx)
	const size = 32 << 20
	data := strings.Repeat("perimeter", size/9+1)[:size]
	for _, args := range [][]string{
		{"dd", "of=direct", "bs=65536"},
		{"sh", "-c", "cat > child"},
	} {
		res, err := sandbox.Run(ctx, sb, &sandbox.Cmd{Args: args, Stdin: strings.NewReader(data)}, nil)
		require.NoError(t, err, args)
		require.True(t, res.Status.Success(), "%v: %v %s", args, res.Status, res.Stderr)
	}
	for _, f := range []string{"direct", "child"} {
		fi, err := sb.Stat(ctx, f)
		require.NoError(t, err)
		require.Equal(t, int64(size), fi.Size, f)
	}
}
