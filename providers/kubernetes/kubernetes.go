package kubernetes

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"maps"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/flowcontrol"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

const name = "kubernetes"

// Scheme is the URL scheme the package registers.
const Scheme = "k8s"

// Mode selects what a sandbox is made of.
type Mode string

// Modes.
const (
	// ModePod runs each sandbox as a plain Pod: it needs no custom
	// resources in the cluster.
	ModePod Mode = "pod"
	// ModeAgentSandbox runs each sandbox as a kubernetes-sigs/agent-sandbox
	// Sandbox resource (agents.x-k8s.io/v1alpha1), or, when
	// Options.Template names a SandboxTemplate, as a SandboxClaim against
	// it (extensions.agents.x-k8s.io/v1alpha1), which a SandboxWarmPool of
	// that template answers from ready pods.
	ModeAgentSandbox Mode = "agent-sandbox"
)

// DefaultImage is the image of a sandbox whose Spec and Options name none.
const DefaultImage = "busybox:stable"

// Labels and annotations the provider puts on the objects it creates.
const (
	// LabelManaged marks every object the provider creates.
	LabelManaged = "app.kubernetes.io/managed-by"
	// LabelSandbox carries the sandbox's ID on its pod, for NetworkPolicy
	// selectors.
	LabelSandbox = "perimeter.dev/sandbox"
	// AnnotationLabels holds the sandbox's Spec.Labels as JSON (Kubernetes
	// labels cannot carry every value a Spec may).
	AnnotationLabels = "perimeter.dev/labels"
	// AnnotationExpires holds the sandbox's expiry (RFC 3339) when it has
	// a Spec.Timeout.
	AnnotationExpires = "perimeter.dev/expires"
	// AnnotationWorkdir and AnnotationEnv hold Spec.Workdir and Spec.Env,
	// applied to every command (a claimed pod comes from its template).
	AnnotationWorkdir = "perimeter.dev/workdir"
	AnnotationEnv     = "perimeter.dev/env"
	// AnnotationNetwork holds the egress the sandbox has, in words.
	AnnotationNetwork = "perimeter.dev/network"
)

const managedValue = "perimeter"

// The agent-sandbox resources.
var (
	sandboxGVR = schema.GroupVersionResource{Group: "agents.x-k8s.io", Version: "v1alpha1", Resource: "sandboxes"}
	claimGVR   = schema.GroupVersionResource{Group: "extensions.agents.x-k8s.io", Version: "v1alpha1", Resource: "sandboxclaims"}
)

// podNameAnnotation is where agent-sandbox records a Sandbox's pod when it
// is not named after the Sandbox (a pod adopted from a warm pool).
const podNameAnnotation = "agents.x-k8s.io/pod-name"

// Options configures a Provider.
type Options struct {
	// Config is the client configuration. Nil loads one as kubectl does:
	// Kubeconfig (or $KUBECONFIG, or ~/.kube/config) at Context, falling
	// back to the in-cluster configuration.
	Config *rest.Config
	// Kubeconfig is the kubeconfig file to load when Config is nil.
	Kubeconfig string
	// Context is the kubeconfig context; empty means the current one.
	Context string
	// Namespace is where sandboxes live; empty means the context's
	// namespace, or "default".
	Namespace string
	// Mode is ModePod (the default) or ModeAgentSandbox.
	Mode Mode
	// Template names a SandboxTemplate; with ModeAgentSandbox, Create makes
	// a SandboxClaim against it instead of a Sandbox. The pod then comes
	// from the template, so a Spec may not set Image or Resources (Ports
	// need no declaring: Expose and Dial use port-forward).
	Template string
	// Image is the image of sandboxes whose Spec names none; empty means
	// DefaultImage. The image needs a POSIX sh and the usual tools (cat,
	// stat, mkdir, mv, rm, kill, sleep) for files and process control.
	Image string
	// ImagePullPolicy is the pods' pull policy; empty means the cluster's
	// default. Clusters without a registry use corev1.PullNever.
	ImagePullPolicy corev1.PullPolicy
	// RuntimeClass is the RuntimeClass of the pods (gvisor, kata, ...), for
	// isolation stronger than the cluster's default runtime.
	RuntimeClass string
	// EnforcesNetworkPolicy tells the provider that the cluster's network
	// plugin enforces NetworkPolicy objects. Only then are the network
	// modes none and allowlist (CIDR ranges) offered; otherwise a sandbox
	// has the pod network's egress and only NetworkOpen is accepted.
	EnforcesNetworkPolicy bool
}

// Provider is the Kubernetes driver. Use it through sandbox.NewProvider, or
// New.
type Provider struct {
	opts      Options
	namespace string
	config    *rest.Config
	// The clients (see client.go) share one HTTP client: core is core/v1
	// (pods and their exec and portforward subresources), networking is
	// networking.k8s.io/v1 (NetworkPolicies), dynamic serves agent-sandbox's
	// resources.
	http       *http.Client
	core       *rest.RESTClient
	networking *rest.RESTClient
	dynamic    dynamic.Interface
	codecs     apiCodecs
	closeOnce  sync.Once
}

// newProvider builds the provider's clients (see client.go).
func newProvider(o Options, ns string, cfg *rest.Config) (*Provider, error) {
	c, err := loadCodecs()
	if err != nil {
		return nil, err
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	p := &Provider{opts: o, namespace: ns, config: cfg, http: hc, codecs: c}
	typed := cfg
	if cfg.RateLimiter == nil && cfg.QPS > 0 {
		// With a QPS set, the two clients share one rate limiter, as the
		// groups of client-go's Clientset do.
		if cfg.Burst <= 0 {
			return nil, fmt.Errorf("burst is required to be greater than 0 when RateLimiter is not set and QPS is set to greater than 0")
		}
		typed = rest.CopyConfig(cfg)
		typed.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(cfg.QPS, cfg.Burst)
	}
	if p.core, err = restClient(typed, hc, c, "/api", corev1.SchemeGroupVersion); err != nil {
		return nil, err
	}
	if p.networking, err = restClient(typed, hc, c, "/apis", networkingv1.SchemeGroupVersion); err != nil {
		return nil, err
	}
	if p.dynamic, err = dynamic.NewForConfigAndClient(cfg, hc); err != nil {
		return nil, err
	}
	return p, nil
}

func init() {
	sandbox.Register(Scheme, func(ctx context.Context, u *url.URL) (driver.Provider, error) {
		opts, err := ParseURL(u)
		if err != nil {
			return nil, err
		}
		d, err := NewDriver(ctx, opts)
		if err != nil {
			return nil, err
		}
		return d, nil
	})
}

// ParseURL reads Options from k8s://[CONTEXT]/NAMESPACE?mode=pod|agent-sandbox
// &template=NAME&image=IMAGE&pull=Never&runtimeClass=NAME&networkPolicy=enforced
// &kubeconfig=PATH. An empty host is the current context.
func ParseURL(u *url.URL) (*Options, error) {
	bad := func(format string, args ...any) error {
		return sandbox.Errorf(name, "", "open", sandbox.ErrInvalidArgument, "URL %q: "+format, append([]any{u.Redacted()}, args...)...)
	}
	if u.Scheme != Scheme {
		return nil, bad("scheme is not %s", Scheme)
	}
	if u.User != nil {
		return nil, bad("credentials do not go in the URL: use a kubeconfig")
	}
	ns := strings.Trim(u.Path, "/")
	if strings.Contains(ns, "/") {
		return nil, bad("the path is one namespace, not %q", ns)
	}
	o := &Options{Context: u.Host, Namespace: ns}
	for k, v := range u.Query() {
		if len(v) != 1 {
			return nil, bad("parameter %q given %d times", k, len(v))
		}
		switch val := v[0]; k {
		case "mode":
			switch Mode(val) {
			case ModePod, ModeAgentSandbox:
				o.Mode = Mode(val)
			case "sandbox":
				o.Mode = ModeAgentSandbox
			default:
				return nil, bad("mode %q: want pod or agent-sandbox", val)
			}
		case "template":
			o.Template = val
		case "image":
			o.Image = val
		case "pull":
			switch p := corev1.PullPolicy(val); p {
			case corev1.PullAlways, corev1.PullNever, corev1.PullIfNotPresent:
				o.ImagePullPolicy = p
			default:
				return nil, bad("pull %q: want Always, IfNotPresent or Never", val)
			}
		case "runtimeClass":
			o.RuntimeClass = val
		case "networkPolicy":
			if val != "enforced" {
				return nil, bad("networkPolicy %q: the only value is enforced", val)
			}
			o.EnforcesNetworkPolicy = true
		case "kubeconfig":
			o.Kubeconfig = val
		default:
			return nil, bad("unknown parameter %q", k)
		}
	}
	if o.Template != "" && o.Mode == "" {
		o.Mode = ModeAgentSandbox
	}
	return o, nil
}

// New returns a provider for host code.
func New(ctx context.Context, opts *Options) (*sandbox.Provider, error) {
	d, err := NewDriver(ctx, opts)
	if err != nil {
		return nil, err
	}
	return sandbox.NewProvider(d, nil), nil
}

// NewDriver returns the driver, for sandbox.NewProvider with
// ProviderOptions. It checks that the API server answers and, in
// ModeAgentSandbox, that the agent-sandbox resources are installed.
func NewDriver(ctx context.Context, opts *Options) (*Provider, error) {
	o := Options{}
	if opts != nil {
		o = *opts
	}
	switch o.Mode {
	case "":
		o.Mode = ModePod
	case ModePod, ModeAgentSandbox:
	default:
		return nil, sandbox.Errorf(name, "", "open", sandbox.ErrInvalidArgument, "Options.Mode %q: want %q or %q", o.Mode, ModePod, ModeAgentSandbox)
	}
	if o.Template != "" && o.Mode != ModeAgentSandbox {
		return nil, sandbox.Errorf(name, "", "open", sandbox.ErrInvalidArgument, "Options.Template needs Mode %q", ModeAgentSandbox)
	}
	if o.Image == "" {
		o.Image = DefaultImage
	}
	cfg := o.Config
	ns := o.Namespace
	if cfg == nil {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		if o.Kubeconfig != "" {
			rules.ExplicitPath = o.Kubeconfig
		}
		cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: o.Context})
		c, err := cc.ClientConfig()
		if err != nil {
			return nil, sandbox.NewError(name, "", "open", sandbox.ErrInvalidArgument, fmt.Errorf("loading the client configuration: %w", err))
		}
		cfg = c
		if ns == "" {
			if n, _, err := cc.Namespace(); err == nil {
				ns = n
			}
		}
	} else {
		cfg = rest.CopyConfig(cfg)
	}
	if ns == "" {
		ns = "default"
	}
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return nil, sandbox.Errorf(name, "", "open", sandbox.ErrInvalidArgument, "namespace %q: %s", ns, strings.Join(errs, "; "))
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "perimeter"
	}
	p, err := newProvider(o, ns, cfg)
	if err != nil {
		return nil, sandbox.NewError(name, "", "open", sandbox.ErrInvalidArgument, err)
	}
	// A namespaced call: the provider needs no cluster-wide permission.
	if _, err := p.listPods(ctx, metav1.ListOptions{Limit: 1, LabelSelector: LabelManaged + "=" + managedValue}); err != nil {
		p.Close()
		return nil, p.apiErr("", "open", fmt.Errorf("listing pods in namespace %s: %w", ns, err))
	}
	if o.Mode == ModeAgentSandbox {
		gv := sandboxGVR.GroupVersion()
		if o.Template != "" {
			gv = claimGVR.GroupVersion()
		}
		if _, err := p.serverResources(ctx, gv); err != nil {
			p.Close()
			return nil, sandbox.NewError(name, "", "open", sandbox.ErrNotSupported,
				fmt.Errorf("the cluster serves no %s (is agent-sandbox installed?): %w", gv, err))
		}
	}
	return p, nil
}

// Name returns "kubernetes".
func (p *Provider) Name() string { return name }

// Namespace returns the namespace the provider's sandboxes live in.
func (p *Provider) Namespace() string { return p.namespace }

// Close releases idle connections; sandboxes keep running.
func (p *Provider) Close() error {
	p.closeOnce.Do(func() {
		p.http.CloseIdleConnections()
	})
	return nil
}

// As sets a **rest.Config (a copy of the provider's) or a
// *dynamic.Interface. The provider holds no typed clientset (client-go's
// kubernetes package links every API group, see client.go); build one from
// the configuration when needed:
//
//	var cfg *rest.Config
//	p.As(&cfg)
//	cs, err := kubernetes.NewForConfig(cfg) // k8s.io/client-go/kubernetes
func (p *Provider) As(target any) bool {
	switch t := target.(type) {
	case **rest.Config:
		*t = rest.CopyConfig(p.config)
	case *dynamic.Interface:
		*t = p.dynamic
	default:
		return false
	}
	return true
}

// networkModes lists the modes the provider can honour.
func (p *Provider) networkModes() []sandbox.NetworkMode {
	if p.opts.EnforcesNetworkPolicy && p.opts.Template == "" {
		return []sandbox.NetworkMode{sandbox.NetworkNone, sandbox.NetworkAllowlist, sandbox.NetworkOpen}
	}
	return []sandbox.NetworkMode{sandbox.NetworkOpen}
}

// newID returns a fresh sandbox name: "perimeter-" and 10 hex digits.
func newID() string {
	var b [5]byte
	rand.Read(b[:])
	return "perimeter-" + hex.EncodeToString(b[:])
}

// Create makes the sandbox's object and waits until its pod runs. A pod
// whose container the runtime failed to start is deleted and made again,
// once.
func (p *Provider) Create(ctx context.Context, spec *sandbox.Spec) (driver.Sandbox, error) {
	s, err := p.createOnce(ctx, spec)
	var se *startError
	if errors.As(err, &se) && ctx.Err() == nil {
		s, err = p.createOnce(ctx, spec)
	}
	if errors.As(err, &se) {
		err = se.err
	}
	return s, err
}

// createOnce makes one sandbox object and waits until its pod runs.
func (p *Provider) createOnce(ctx context.Context, spec *sandbox.Spec) (driver.Sandbox, error) {
	fail := func(kind error, format string, args ...any) (driver.Sandbox, error) {
		return nil, sandbox.Errorf(name, "", "create", kind, format, args...)
	}
	switch {
	case spec.RootFS != "":
		return fail(sandbox.ErrNotSupported, "Spec.RootFS: a pod starts from an image (Spec.Image)")
	case spec.Snapshot != "":
		return fail(sandbox.ErrNotSupported, "Spec.Snapshot: the kubernetes provider takes no snapshots")
	case spec.Resources.PIDs > 0:
		return fail(sandbox.ErrNotSupported, "Resources.PIDs: a pod has no process limit of its own (the kubelet's podPidsLimit applies)")
	}
	if !slicesContains(p.networkModes(), spec.Network.Mode) {
		why := "the cluster's NetworkPolicy enforcement is not declared (Options.EnforcesNetworkPolicy)"
		if p.opts.Template != "" {
			why = "a claimed sandbox's network policy comes from its SandboxTemplate"
		}
		return fail(sandbox.ErrNotSupported, "network mode %q: %s; only %q is available", spec.Network.Mode, why, sandbox.NetworkOpen)
	}
	if p.opts.Template != "" && (spec.Image != "" || spec.Resources != (sandbox.Resources{})) {
		return fail(sandbox.ErrNotSupported, "Spec.Image and Resources: a claimed sandbox's pod comes from SandboxTemplate %q", p.opts.Template)
	}
	workdir := spec.Workdir
	if workdir == "" {
		workdir = "/workspace"
	} else if !path.IsAbs(workdir) {
		workdir = path.Join("/", workdir)
	}
	id := newID()
	meta, err := p.objectMeta(id, spec, workdir)
	if err != nil {
		return nil, err
	}
	// Until the pod runs, the deadline is a backstop startSlack later than
	// Spec.Timeout asks: the pod's time to live counts from when it runs
	// (setDeadline moves it there), so that a slow start does not use it up.
	var expires time.Time
	if spec.Timeout > 0 {
		expires = deadlineAt(time.Now().Add(spec.Timeout + startSlack))
		meta.Annotations[AnnotationExpires] = expires.Format(time.RFC3339)
	}

	kind := "pod"
	switch {
	case p.opts.Mode == ModePod:
		pod, err := p.podSpec(spec, workdir, expires)
		if err != nil {
			return nil, err
		}
		pod.ObjectMeta = meta
		pod.Labels[LabelSandbox] = id
		if err := p.createPod(ctx, pod); err != nil {
			return nil, p.apiErr("", "create", err)
		}
	case p.opts.Template == "":
		kind = "Sandbox"
		pod, err := p.podSpec(spec, workdir, expires)
		if err != nil {
			return nil, err
		}
		podLabels := map[string]string{LabelManaged: managedValue, LabelSandbox: id}
		obj := map[string]any{
			"apiVersion": sandboxGVR.GroupVersion().String(),
			"kind":       "Sandbox",
			"spec": map[string]any{
				"podTemplate": map[string]any{
					"metadata": map[string]any{"labels": podLabels},
					"spec":     pod.Spec,
				},
			},
		}
		if !expires.IsZero() {
			obj["spec"].(map[string]any)["shutdownTime"] = expires.Format(time.RFC3339)
			obj["spec"].(map[string]any)["shutdownPolicy"] = "Delete"
		}
		u, err := toUnstructured(obj, meta)
		if err != nil {
			return nil, sandbox.NewError(name, "", "create", sandbox.ErrInvalidArgument, err)
		}
		if _, err := p.dynamic.Resource(sandboxGVR).Namespace(p.namespace).Create(ctx, u, metav1.CreateOptions{}); err != nil {
			return nil, p.apiErr("", "create", err)
		}
	default:
		kind = "SandboxClaim"
		specObj := map[string]any{"sandboxTemplateRef": map[string]any{"name": p.opts.Template}}
		if !expires.IsZero() {
			specObj["lifecycle"] = map[string]any{"shutdownTime": expires.Format(time.RFC3339), "shutdownPolicy": "Delete"}
		}
		u, err := toUnstructured(map[string]any{
			"apiVersion": claimGVR.GroupVersion().String(),
			"kind":       "SandboxClaim",
			"spec":       specObj,
		}, meta)
		if err != nil {
			return nil, sandbox.NewError(name, "", "create", sandbox.ErrInvalidArgument, err)
		}
		if _, err := p.dynamic.Resource(claimGVR).Namespace(p.namespace).Create(ctx, u, metav1.CreateOptions{}); err != nil {
			return nil, p.apiErr("", "create", err)
		}
	}
	s := &Sandbox{p: p, id: id, kind: kind, workdir: workdir, env: spec.Env, labels: maps.Clone(spec.Labels),
		created: time.Now(), expires: expires, network: describeNetwork(spec.Network, p.opts.EnforcesNetworkPolicy)}
	if err := p.afterCreate(ctx, s, spec); err != nil {
		// Nothing half-made stays behind.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		s.Terminate(dctx)
		return nil, err
	}
	return s, nil
}

// afterCreate adds the NetworkPolicy, waits for the pod to run and makes
// the working directory.
func (p *Provider) afterCreate(ctx context.Context, s *Sandbox, spec *sandbox.Spec) error {
	if spec.Network.Mode != sandbox.NetworkOpen {
		np, err := networkPolicy(s.id, spec.Network)
		if err != nil {
			return err
		}
		if err := p.createNetworkPolicy(ctx, np); err != nil {
			return p.apiErr(s.id, "create", err)
		}
	}
	pod, err := s.waitRunning(ctx)
	if err != nil {
		return err
	}
	s.setPod(pod)
	if spec.Timeout > 0 {
		if err := s.setDeadline(ctx, pod, deadlineAt(time.Now().Add(spec.Timeout))); err != nil {
			return err
		}
	}
	if p.opts.Template != "" {
		// The pod comes from a template: make the working directory here.
		if _, err := s.run(ctx, []string{"mkdir", "-p", "--", s.workdir}, nil, "create"); err != nil {
			return err
		}
	}
	return nil
}

// startSlack is how much longer than Spec.Timeout a sandbox may live while
// its pod starts: the backstop deadline Create gives the objects before
// setDeadline sets the real one.
const startSlack = 2 * time.Minute

// deadlineAt rounds a deadline up to the next whole second (the resolution
// of RFC 3339 timestamps and activeDeadlineSeconds).
func deadlineAt(t time.Time) time.Time {
	return t.UTC().Truncate(time.Second).Add(time.Second)
}

// setDeadline moves the sandbox's deadline, once its pod runs, to expires:
// the expiry annotation and the agent-sandbox shutdownTime of its primary
// object, and the pod's activeDeadlineSeconds (which counts from the pod's
// start and may only shrink).
func (s *Sandbox) setDeadline(ctx context.Context, pod *corev1.Pod, expires time.Time) error {
	p := s.p
	at := expires.Format(time.RFC3339)
	meta := map[string]any{"annotations": map[string]any{AnnotationExpires: at}}
	var err error
	switch s.kind {
	case "Sandbox":
		b, _ := json.Marshal(map[string]any{"metadata": meta, "spec": map[string]any{"shutdownTime": at}})
		_, err = p.dynamic.Resource(sandboxGVR).Namespace(p.namespace).Patch(ctx, s.id, types.MergePatchType, b, metav1.PatchOptions{})
	case "SandboxClaim":
		b, _ := json.Marshal(map[string]any{"metadata": meta, "spec": map[string]any{"lifecycle": map[string]any{"shutdownTime": at}}})
		_, err = p.dynamic.Resource(claimGVR).Namespace(p.namespace).Patch(ctx, s.id, types.MergePatchType, b, metav1.PatchOptions{})
	}
	if err != nil {
		return p.apiErr(s.id, "create", fmt.Errorf("setting the deadline: %w", err))
	}
	patch := map[string]any{}
	if s.kind == "pod" {
		patch["metadata"] = meta
	}
	if pod.Spec.ActiveDeadlineSeconds != nil && pod.Status.StartTime != nil {
		secs := int64(expires.Sub(pod.Status.StartTime.Time)+time.Second-1) / int64(time.Second)
		if secs < *pod.Spec.ActiveDeadlineSeconds {
			patch["spec"] = map[string]any{"activeDeadlineSeconds": max(secs, 1)}
		}
	}
	if len(patch) > 0 {
		b, _ := json.Marshal(patch)
		np, err := p.patchPod(ctx, pod.Name, types.StrategicMergePatchType, b)
		if err != nil {
			return p.apiErr(s.id, "create", fmt.Errorf("setting the pod's deadline: %w", err))
		}
		s.setPod(np)
	}
	s.expires = expires
	return nil
}

// objectMeta returns the metadata of the sandbox's primary object.
func (p *Provider) objectMeta(id string, spec *sandbox.Spec, workdir string) (metav1.ObjectMeta, error) {
	lbl := map[string]string{LabelManaged: managedValue}
	for k, v := range spec.Labels {
		if k == LabelManaged || k == LabelSandbox {
			return metav1.ObjectMeta{}, sandbox.Errorf(name, "", "create", sandbox.ErrInvalidArgument, "label %q is the provider's own", k)
		}
		if validLabel(k, v) {
			lbl[k] = v
		}
	}
	ann := map[string]string{AnnotationWorkdir: workdir, AnnotationNetwork: describeNetwork(spec.Network, p.opts.EnforcesNetworkPolicy)}
	if len(spec.Labels) > 0 {
		b, _ := json.Marshal(spec.Labels)
		ann[AnnotationLabels] = string(b)
	}
	if len(spec.Env) > 0 {
		b, _ := json.Marshal(spec.Env)
		ann[AnnotationEnv] = string(b)
	}
	return metav1.ObjectMeta{Name: id, Namespace: p.namespace, Labels: lbl, Annotations: ann}, nil
}

// validLabel reports whether k=v is a valid Kubernetes label.
func validLabel(k, v string) bool {
	return len(validation.IsQualifiedName(k)) == 0 && len(validation.IsValidLabelValue(v)) == 0
}

// keepAlive is the container's command: it waits for TERM and exits at
// once (a shell as PID 1 would ignore it).
var keepAlive = []string{"sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"}

// podSpec maps a Spec to a pod.
func (p *Provider) podSpec(spec *sandbox.Spec, workdir string, expires time.Time) (*corev1.Pod, error) {
	image := spec.Image
	if image == "" {
		image = p.opts.Image
	}
	c := corev1.Container{
		Name:            "sandbox",
		Image:           image,
		ImagePullPolicy: p.opts.ImagePullPolicy,
		Command:         keepAlive,
		WorkingDir:      workdir,
	}
	for _, k := range sortedKeys(spec.Env) {
		c.Env = append(c.Env, corev1.EnvVar{Name: k, Value: spec.Env[k]})
	}
	for _, port := range spec.Ports {
		c.Ports = append(c.Ports, corev1.ContainerPort{ContainerPort: int32(port), Protocol: corev1.ProtocolTCP})
	}
	res := corev1.ResourceList{}
	if r := spec.Resources; r.CPU > 0 {
		res[corev1.ResourceCPU] = *resource.NewMilliQuantity(int64(r.CPU*1000+0.5), resource.DecimalSI)
	}
	if r := spec.Resources; r.Memory > 0 {
		res[corev1.ResourceMemory] = *resource.NewQuantity(r.Memory, resource.BinarySI)
	}
	if r := spec.Resources; r.Disk > 0 {
		res[corev1.ResourceEphemeralStorage] = *resource.NewQuantity(r.Disk, resource.BinarySI)
	}
	if g := spec.Resources.GPU; g != "" {
		rname, count, err := parseGPU(g)
		if err != nil {
			return nil, err
		}
		res[corev1.ResourceName(rname)] = *resource.NewQuantity(count, resource.DecimalSI)
	}
	if len(res) > 0 {
		c.Resources = corev1.ResourceRequirements{Limits: res, Requests: res}
	}
	grace := int64(1)
	pod := &corev1.Pod{
		Spec: corev1.PodSpec{
			Containers:                    []corev1.Container{c},
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: &grace,
			AutomountServiceAccountToken:  ptr(false),
			EnableServiceLinks:            ptr(false),
		},
	}
	if p.opts.RuntimeClass != "" {
		pod.Spec.RuntimeClassName = ptr(p.opts.RuntimeClass)
	}
	if !expires.IsZero() {
		// The kubelet ends the pod at its deadline even when no client
		// is left to delete it.
		secs := int64(time.Until(expires).Round(time.Second) / time.Second)
		pod.Spec.ActiveDeadlineSeconds = ptr(max(secs, 1))
	}
	return pod, nil
}

// parseGPU reads Resources.GPU as an extended resource: "nvidia.com/gpu" or
// "nvidia.com/gpu:2".
func parseGPU(g string) (string, int64, error) {
	rname, n, _ := strings.Cut(g, ":")
	count := int64(1)
	if n != "" {
		c, err := strconv.ParseInt(n, 10, 64)
		if err != nil || c < 1 {
			return "", 0, sandbox.Errorf(name, "", "create", sandbox.ErrInvalidArgument, "Resources.GPU %q: the count after ':' must be a positive integer", g)
		}
		count = c
	}
	if !strings.Contains(rname, "/") || len(validation.IsQualifiedName(rname)) > 0 {
		return "", 0, sandbox.Errorf(name, "", "create", sandbox.ErrNotSupported,
			"Resources.GPU %q: name an extended resource such as nvidia.com/gpu (with :COUNT); accelerator models are chosen by node selectors, which this provider does not set", g)
	}
	return rname, count, nil
}

// networkPolicy returns the NetworkPolicy of a sandbox under a none or
// allowlist policy: egress only to the allowed CIDR ranges.
func networkPolicy(id string, pol *sandbox.NetworkPolicy) (*networkingv1.NetworkPolicy, error) {
	var peers []networkingv1.NetworkPolicyPeer
	for _, a := range pol.Allow {
		if !strings.Contains(a, "/") {
			return nil, sandbox.Errorf(name, "", "create", sandbox.ErrNotSupported,
				"allowlist entry %q: a NetworkPolicy allows CIDR ranges only, not domain names", a)
		}
		peers = append(peers, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: a}})
	}
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: id, Labels: map[string]string{LabelManaged: managedValue, LabelSandbox: id}},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{LabelSandbox: id}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
		},
	}
	if len(peers) > 0 {
		np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{To: peers}}
	}
	return np, nil
}

// describeNetwork says which egress a sandbox has.
func describeNetwork(pol *sandbox.NetworkPolicy, enforced bool) string {
	switch {
	case pol.Mode == sandbox.NetworkOpen && enforced:
		return "network: open"
	case pol.Mode == sandbox.NetworkOpen:
		return "network: open (the pod network's egress; NetworkPolicy enforcement not declared)"
	case pol.Mode == sandbox.NetworkNone:
		return "network: none (NetworkPolicy denying all egress)"
	default:
		return "network: allowlist " + strings.Join(pol.Allow, ",") + " (NetworkPolicy)"
	}
}

func toUnstructured(obj map[string]any, meta metav1.ObjectMeta) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&meta)
	if err != nil {
		return nil, err
	}
	obj["metadata"] = m
	// The pod spec inside is a typed value: round-trip through JSON.
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(b); err != nil {
		return nil, err
	}
	return u, nil
}

// Get returns a handle to a sandbox the provider made.
func (p *Provider) Get(ctx context.Context, id string) (driver.Sandbox, error) {
	if len(validation.IsDNS1123Subdomain(id)) > 0 {
		return nil, sandbox.Errorf(name, id, "get", sandbox.ErrNotFound, "no sandbox %q: not a Kubernetes object name", id)
	}
	meta, kind, err := p.primary(ctx, id)
	if err != nil {
		return nil, p.apiErr(id, "get", err)
	}
	s, err := p.fromMeta(meta, kind)
	if err != nil {
		return nil, err
	}
	if s.expired() {
		return nil, sandbox.Errorf(name, id, "get", sandbox.ErrNotFound, "sandbox %s expired at %s", id, s.expires.Format(time.RFC3339))
	}
	pod, err := s.waitRunning(ctx)
	if err != nil {
		return nil, err
	}
	s.setPod(pod)
	return s, nil
}

// primary reads the metadata of the sandbox's own object.
func (p *Provider) primary(ctx context.Context, id string) (metav1.Object, string, error) {
	switch {
	case p.opts.Mode == ModePod:
		pod, err := p.getPod(ctx, id)
		if err != nil {
			return nil, "", err
		}
		return pod, "pod", nil
	case p.opts.Template == "":
		u, err := p.dynamic.Resource(sandboxGVR).Namespace(p.namespace).Get(ctx, id, metav1.GetOptions{})
		if err != nil {
			return nil, "", err
		}
		return u, "Sandbox", nil
	default:
		u, err := p.dynamic.Resource(claimGVR).Namespace(p.namespace).Get(ctx, id, metav1.GetOptions{})
		if err != nil {
			return nil, "", err
		}
		return u, "SandboxClaim", nil
	}
}

// fromMeta rebuilds a handle from an object's labels and annotations.
func (p *Provider) fromMeta(m metav1.Object, kind string) (*Sandbox, error) {
	id := m.GetName()
	if m.GetLabels()[LabelManaged] != managedValue {
		return nil, sandbox.Errorf(name, id, "get", sandbox.ErrNotFound, "%s %s is not a perimeter sandbox", kind, id)
	}
	if m.GetDeletionTimestamp() != nil {
		return nil, sandbox.Errorf(name, id, "get", sandbox.ErrNotFound, "sandbox %s is being deleted", id)
	}
	ann := m.GetAnnotations()
	s := &Sandbox{p: p, id: id, kind: kind, workdir: ann[AnnotationWorkdir], created: m.GetCreationTimestamp().Time,
		network: ann[AnnotationNetwork]}
	if s.workdir == "" {
		s.workdir = "/"
	}
	if v := ann[AnnotationLabels]; v != "" {
		if err := json.Unmarshal([]byte(v), &s.labels); err != nil {
			return nil, sandbox.Errorf(name, id, "get", sandbox.ErrInvalidArgument, "annotation %s: %v", AnnotationLabels, err)
		}
	}
	if v := ann[AnnotationEnv]; v != "" {
		if err := json.Unmarshal([]byte(v), &s.env); err != nil {
			return nil, sandbox.Errorf(name, id, "get", sandbox.ErrInvalidArgument, "annotation %s: %v", AnnotationEnv, err)
		}
	}
	if v := ann[AnnotationExpires]; v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return nil, sandbox.Errorf(name, id, "get", sandbox.ErrInvalidArgument, "annotation %s: %v", AnnotationExpires, err)
		}
		s.expires = t
	}
	return s, nil
}

// List yields the provider's sandboxes carrying opts.Labels. A sandbox past
// its expiry is deleted, not listed.
func (p *Provider) List(ctx context.Context, opts *sandbox.ListOptions) iter.Seq2[sandbox.Info, error] {
	return func(yield func(sandbox.Info, error) bool) {
		sel := labels.Set{LabelManaged: managedValue}
		for k, v := range opts.Labels {
			if validLabel(k, v) {
				sel[k] = v
			}
		}
		lo := metav1.ListOptions{LabelSelector: sel.String()}
		var objs []metav1.Object
		kind := "pod"
		switch {
		case p.opts.Mode == ModePod:
			l, err := p.listPods(ctx, lo)
			if err != nil {
				yield(sandbox.Info{}, p.apiErr("", "list", err))
				return
			}
			for i := range l.Items {
				objs = append(objs, &l.Items[i])
			}
		default:
			gvr := sandboxGVR
			kind = "Sandbox"
			if p.opts.Template != "" {
				gvr, kind = claimGVR, "SandboxClaim"
			}
			l, err := p.dynamic.Resource(gvr).Namespace(p.namespace).List(ctx, lo)
			if err != nil {
				yield(sandbox.Info{}, p.apiErr("", "list", err))
				return
			}
			for i := range l.Items {
				objs = append(objs, &l.Items[i])
			}
		}
		for _, o := range objs {
			s, err := p.fromMeta(o, kind)
			if err != nil {
				continue // being deleted
			}
			if s.expired() {
				s.delete(ctx)
				continue
			}
			match := true
			for k, v := range opts.Labels {
				if got, ok := s.labels[k]; !ok || got != v {
					match = false
					break
				}
			}
			if !match {
				continue
			}
			info := s.info()
			if pod, ok := o.(*corev1.Pod); ok {
				info.State = podState(pod)
			} else {
				info.State = sandbox.StateUnknown
				if ready(o.(*unstructured.Unstructured)) {
					info.State = sandbox.StateRunning
				}
			}
			if !yield(info, nil) {
				return
			}
		}
	}
}

// ready reports whether an agent-sandbox object's Ready condition is true.
func ready(u *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Ready" && m["status"] == "True" {
			return true
		}
	}
	return false
}

// podState maps a pod's phase to a sandbox state.
func podState(pod *corev1.Pod) sandbox.State {
	if pod.DeletionTimestamp != nil {
		return sandbox.StateStopped
	}
	switch pod.Status.Phase {
	case corev1.PodPending:
		return sandbox.StateStarting
	case corev1.PodRunning:
		return sandbox.StateRunning
	case corev1.PodSucceeded, corev1.PodFailed:
		return sandbox.StateStopped
	}
	return sandbox.StateUnknown
}

// apiErr gives an API error its kind.
func (p *Provider) apiErr(id, op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var se *sandbox.Error
	if errors.As(err, &se) {
		return err
	}
	kind := sandbox.ErrUnavailable
	switch {
	case apierrors.IsNotFound(err), apierrors.IsGone(err):
		kind = sandbox.ErrNotFound
	case apierrors.IsAlreadyExists(err):
		kind = sandbox.ErrAlreadyExists
	case apierrors.IsForbidden(err), apierrors.IsUnauthorized(err):
		kind = sandbox.ErrPermissionDenied
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err):
		kind = sandbox.ErrInvalidArgument
	case apierrors.IsTimeout(err), apierrors.IsServerTimeout(err):
		kind = sandbox.ErrTimeout
	case apierrors.IsTooManyRequests(err):
		kind = sandbox.ErrResourceExhausted
	}
	return sandbox.NewError(name, id, op, kind, err)
}

func ptr[T any](v T) *T { return &v }

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}

func slicesContains(s []sandbox.NetworkMode, m sandbox.NetworkMode) bool {
	for _, x := range s {
		if x == m {
			return true
		}
	}
	return false
}
