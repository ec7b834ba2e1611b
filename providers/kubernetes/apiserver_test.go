package kubernetes_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/perimeter-sdk/perimeter/providers/kubernetes"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// fakeAPI is an API server on the loopback that knows pods and
// NetworkPolicies of the namespace "ns" (any other namespace is forbidden)
// and serves agent-sandbox's extensions group, not its core group. It checks what the provider's REST clients
// send without a cluster: paths, content types, bodies. Pods it is given
// run at once.
type fakeAPI struct {
	srv *httptest.Server

	mu       sync.Mutex
	pods     map[string]*corev1.Pod
	policies map[string]*networkingv1.NetworkPolicy
	requests []string // "METHOD PATH?QUERY"
	deletes  []metav1.DeleteOptions
}

func newFakeAPI(t *testing.T) *fakeAPI {
	f := &fakeAPI{pods: map[string]*corev1.Pod{}, policies: map[string]*networkingv1.NetworkPolicy{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) config() *rest.Config { return &rest.Config{Host: f.srv.URL} }

// status writes a metav1.Status error as the API server does.
func status(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(&metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status: metav1.StatusFailure, Message: msg, Reason: reason, Code: int32(code)})
}

func reply(w http.ResponseWriter, code int, obj any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(obj)
}

func (f *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	body, _ := io.ReadAll(r.Body)
	f.requests = append(f.requests, r.Method+" "+r.URL.RequestURI())
	// Every request speaks JSON.
	if r.Header.Get("Accept") != "application/json" || r.Header.Get("User-Agent") != "perimeter" {
		status(w, http.StatusNotAcceptable, metav1.StatusReasonNotAcceptable, "Accept "+r.Header.Get("Accept")+", User-Agent "+r.Header.Get("User-Agent"))
		return
	}
	if len(body) > 0 {
		want := "application/json"
		if r.Method == http.MethodPatch {
			want = "application/strategic-merge-patch+json"
		}
		if ct := r.Header.Get("Content-Type"); ct != want {
			status(w, http.StatusUnsupportedMediaType, metav1.StatusReasonUnsupportedMediaType, "Content-Type "+ct)
			return
		}
	}
	const pods, policies = "/api/v1/namespaces/ns/pods", "/apis/networking.k8s.io/v1/namespaces/ns/networkpolicies"
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/api/v1/namespaces/") && !strings.HasPrefix(p, "/api/v1/namespaces/ns/"):
		status(w, http.StatusForbidden, metav1.StatusReasonForbidden, `pods is forbidden: User "x" cannot list resource "pods"`)
	case p == pods && r.Method == http.MethodGet:
		l := corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}}
		for _, pod := range f.pods {
			l.Items = append(l.Items, *pod)
		}
		reply(w, http.StatusOK, &l)
	case p == pods && r.Method == http.MethodPost:
		pod := &corev1.Pod{}
		if err := json.Unmarshal(body, pod); err != nil || pod.APIVersion != "v1" || pod.Kind != "Pod" || len(pod.Spec.Containers) == 0 {
			status(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, "not a v1 Pod: "+string(body))
			return
		}
		now := metav1.Now()
		pod.CreationTimestamp, pod.Status.StartTime = now, &now
		pod.Status.Phase = corev1.PodRunning
		pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: pod.Spec.Containers[0].Name,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}}
		f.pods[pod.Name] = pod
		reply(w, http.StatusCreated, pod)
	case strings.HasPrefix(p, pods+"/"):
		name := strings.TrimPrefix(p, pods+"/")
		pod, ok := f.pods[name]
		if !ok {
			status(w, http.StatusNotFound, metav1.StatusReasonNotFound, `pods "`+name+`" not found`)
			return
		}
		switch r.Method {
		case http.MethodGet:
		case http.MethodPatch:
			// Enough of a strategic merge for maps and scalars.
			if err := json.Unmarshal(body, pod); err != nil {
				status(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
				return
			}
		case http.MethodDelete:
			var do metav1.DeleteOptions
			if err := json.Unmarshal(body, &do); err != nil || do.APIVersion != "v1" || do.Kind != "DeleteOptions" {
				status(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, "not v1 DeleteOptions: "+string(body))
				return
			}
			f.deletes = append(f.deletes, do)
			delete(f.pods, name)
		}
		reply(w, http.StatusOK, pod)
	case p == policies && r.Method == http.MethodPost:
		np := &networkingv1.NetworkPolicy{}
		if err := json.Unmarshal(body, np); err != nil || np.APIVersion != "networking.k8s.io/v1" || np.Kind != "NetworkPolicy" {
			status(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, "not a networking.k8s.io/v1 NetworkPolicy: "+string(body))
			return
		}
		f.policies[np.Name] = np
		reply(w, http.StatusCreated, np)
	case strings.HasPrefix(p, policies+"/") && r.Method == http.MethodDelete:
		name := strings.TrimPrefix(p, policies+"/")
		if _, ok := f.policies[name]; !ok {
			status(w, http.StatusNotFound, metav1.StatusReasonNotFound, `networkpolicies.networking.k8s.io "`+name+`" not found`)
			return
		}
		delete(f.policies, name)
		reply(w, http.StatusOK, &metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusSuccess})
	case p == "/apis/extensions.agents.x-k8s.io/v1alpha1" && r.Method == http.MethodGet:
		reply(w, http.StatusOK, &metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
			GroupVersion: "extensions.agents.x-k8s.io/v1alpha1", APIResources: []metav1.APIResource{{Name: "sandboxclaims", Namespaced: true, Kind: "SandboxClaim"}}})
	default:
		status(w, http.StatusNotFound, metav1.StatusReasonNotFound, "the server could not find the requested resource")
	}
}

// The provider's REST clients against a fake API server: the requests they
// make, the objects they send, and the kinds of the errors they get.
func TestAPIRequests(t *testing.T) {
	f := newFakeAPI(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	cfg := f.config()
	cfg.QPS = 5
	_, err := kubernetes.New(ctx, &kubernetes.Options{Config: cfg, Namespace: "ns"})
	require.ErrorIs(t, err, sandbox.ErrInvalidArgument)
	require.ErrorContains(t, err, "burst is required", "QPS without Burst, refused as client-go's Clientset refuses it")
	_, err = kubernetes.New(ctx, &kubernetes.Options{Config: f.config(), Namespace: "other"})
	require.ErrorIs(t, err, sandbox.ErrPermissionDenied)
	require.ErrorContains(t, err, `listing pods in namespace other: pods is forbidden`)
	_, err = kubernetes.New(ctx, &kubernetes.Options{Config: f.config(), Namespace: "ns", Mode: kubernetes.ModeAgentSandbox})
	require.ErrorIs(t, err, sandbox.ErrNotSupported)
	require.ErrorContains(t, err, "the cluster serves no agents.x-k8s.io/v1alpha1 (is agent-sandbox installed?): the server could not find the requested resource")
	claims, err := kubernetes.New(ctx, &kubernetes.Options{Config: f.config(), Namespace: "ns", Mode: kubernetes.ModeAgentSandbox, Template: "t"})
	require.NoError(t, err, "the group of SandboxClaims is served")
	claims.Close()

	p, err := kubernetes.New(ctx, &kubernetes.Options{Config: f.config(), Namespace: "ns", EnforcesNetworkPolicy: true})
	require.NoError(t, err)
	defer p.Close()
	cfg = nil
	require.True(t, p.As(&cfg))
	require.Equal(t, f.srv.URL, cfg.Host)
	var dyn dynamic.Interface
	require.True(t, p.As(&dyn))
	require.NotNil(t, dyn)
	var other *http.Client
	require.False(t, p.As(&other))

	_, err = p.Get(ctx, "missing")
	require.ErrorIs(t, err, sandbox.ErrNotFound)
	require.ErrorContains(t, err, `pods "missing" not found`)

	sb, err := p.Create(ctx, &sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkNone}, Timeout: time.Hour,
		Labels: map[string]string{"team": "a"}})
	require.NoError(t, err)
	var pod *corev1.Pod
	require.True(t, sb.As(&pod))
	require.Equal(t, sb.ID(), pod.Name)
	require.NotEmpty(t, pod.Annotations[kubernetes.AnnotationExpires], "the deadline patch reached the pod")
	var ids []string
	for info, err := range p.List(ctx, &sandbox.ListOptions{Labels: map[string]string{"team": "a"}}) {
		require.NoError(t, err)
		ids = append(ids, info.ID)
	}
	require.Equal(t, []string{sb.ID()}, ids)
	require.NoError(t, sb.Terminate(ctx))

	f.mu.Lock()
	defer f.mu.Unlock()
	require.Empty(t, f.pods)
	require.Empty(t, f.policies)
	require.Len(t, f.deletes, 1)
	require.Equal(t, int64(0), *f.deletes[0].GracePeriodSeconds)
	require.Equal(t, metav1.DeletePropagationBackground, *f.deletes[0].PropagationPolicy)
	require.Contains(t, f.requests, "GET /api/v1/namespaces/ns/pods?labelSelector=app.kubernetes.io%2Fmanaged-by%3Dperimeter&limit=1")
	require.Contains(t, f.requests, "GET /api/v1/namespaces/ns/pods?labelSelector=app.kubernetes.io%2Fmanaged-by%3Dperimeter%2Cteam%3Da")
	require.Contains(t, f.requests, "GET /apis/agents.x-k8s.io/v1alpha1")
	require.Contains(t, f.requests, "POST /apis/networking.k8s.io/v1/namespaces/ns/networkpolicies")
	require.Contains(t, f.requests, "PATCH /api/v1/namespaces/ns/pods/"+sb.ID())
	require.Contains(t, f.requests, "DELETE /apis/networking.k8s.io/v1/namespaces/ns/networkpolicies/"+sb.ID())
}
