// Package kubernetes is the Perimeter provider for Kubernetes clusters:
// each sandbox is a pod, made directly (ModePod, for any cluster) or through
// kubernetes-sigs/agent-sandbox (ModeAgentSandbox: a Sandbox resource, or a
// SandboxClaim against a SandboxTemplate, which a SandboxWarmPool answers
// with a pod that is already running).
//
// Importing the package registers the URL scheme k8s:
//
//	k8s://[CONTEXT]/NAMESPACE[?mode=pod|agent-sandbox][&template=NAME][&image=IMAGE]
//	    [&pull=Always|IfNotPresent|Never][&runtimeClass=NAME][&networkPolicy=enforced][&kubeconfig=PATH]
//
// An empty CONTEXT is the kubeconfig's current context; the configuration is
// loaded as kubectl loads it ($KUBECONFIG, ~/.kube/config), falling back to
// the in-cluster configuration.
//
// What maps where:
//   - Spec.Image, Env, Workdir, Labels, Ports → the pod's container; CPU,
//     Memory and Disk → requests and limits (cpu, memory,
//     ephemeral-storage); GPU → an extended resource ("nvidia.com/gpu:2");
//     Options.RuntimeClass → the pod's RuntimeClass (gVisor, Kata).
//     Resources.PIDs, RootFS and Snapshot are ErrNotSupported. Labels that
//     are not valid Kubernetes labels are kept in an annotation and matched
//     by List on the client.
//   - Spec.Timeout → the pod's activeDeadlineSeconds (the kubelet ends it) or
//     the agent-sandbox shutdownTime (the controller deletes it), and an
//     annotation by which Get, List and Start treat it as gone at once. The
//     time counts from when the pod runs: Create gives the objects a
//     deadline two minutes later first and moves it there once the pod runs.
//   - Commands → the pods/exec subresource (WebSocket, falling back to
//     SPDY): stdout and stderr apart, stdin, the exit code from the status
//     channel, TTY with resize. Each command runs under a small sh wrapper
//     that records its PID; Signal, cancellation and Cmd.Timeout send the
//     signal to that process and its descendants with a second exec (so the
//     image needs a POSIX sh, kill and /proc). A signalled command's status
//     is the runtime's 128+N, named as the signal when the provider sent it.
//   - Files → exec of sh, cat, stat, mv and friends (streamed both ways;
//     WriteFile writes a temporary file and renames it). The files are the
//     container's own, so symbolic links cannot reach the host.
//   - Expose → a listener on the host's 127.0.0.1 whose connections are
//     port-forwarded; Dial → one port-forward stream.
//   - Network → NetworkModes is only open unless Options.EnforcesNetworkPolicy
//     says the cluster's network plugin enforces NetworkPolicy; then none
//     and allowlist (CIDR ranges only) are a NetworkPolicy object selecting
//     the pod. A claimed sandbox's policy is its template's.
//   - Terminate → delete (grace 0) of the pod, Sandbox or SandboxClaim and of
//     its NetworkPolicy, then wait until the pod is gone.
//
// Not offered: Pause, Snapshot, ExtendTimeout, UpdateNetwork.
//
// As: a *Provider sets **rest.Config and *dynamic.Interface; a *Sandbox
// sets **corev1.Pod; a Tunnel sets *net.Listener. The provider holds no
// typed clientset: k8s.io/client-go/kubernetes links all of k8s.io/api,
// whose types register themselves when a program starts, so the provider
// talks to core/v1 and networking/v1 through REST clients of its own. A
// program that wants a clientset builds one from the configuration with
// kubernetes.NewForConfig(cfg) (k8s.io/client-go/kubernetes).
//
// The tests run against a real cluster that testcluster/cluster.sh builds and
// starts inside a network namespace of its own; see docs/kubernetes.md.
package kubernetes
