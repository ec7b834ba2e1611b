package kubernetes_test

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/perimeter-sdk/perimeter/conformance"
	"github.com/perimeter-sdk/perimeter/providers/kubernetes"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// harness is the battery's harness on the test cluster: busybox images, and
// open egress (the test cluster's bridge network enforces no NetworkPolicy,
// so none and allowlist are unclaimed and checked to be refused). Open
// gives the lifecycle/close-keeps-sandboxes check a second provider.
func harness(t *testing.T, mode kubernetes.Mode) *conformance.Harness {
	opts := &kubernetes.Options{Namespace: "default", Mode: mode, ImagePullPolicy: corev1.PullNever}
	return &conformance.Harness{
		Provider:   open(t, mode, ""),
		Spec:       func() *sandbox.Spec { return &sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}} },
		HTTPServer: httpd,
		Connect:    connect,
		Open:       func(ctx context.Context) (*sandbox.Provider, error) { return kubernetes.New(ctx, opts) },
	}
}

// TestConformancePods runs the whole battery with plain pods.
func TestConformancePods(t *testing.T) {
	conformance.Run(t, harness(t, kubernetes.ModePod), &conformance.Options{Timeout: 10 * time.Minute})
}

// TestConformanceAgentSandbox runs the whole battery with agent-sandbox
// Sandbox resources.
func TestConformanceAgentSandbox(t *testing.T) {
	conformance.Run(t, harness(t, kubernetes.ModeAgentSandbox), &conformance.Options{Timeout: 10 * time.Minute})
}
