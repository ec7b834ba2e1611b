package kubernetes

import (
	"context"
	"net/http"
	"sync"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
)

// The provider talks to the API server through two REST clients (core/v1
// for pods and their exec and portforward subresources, networking/v1 for
// NetworkPolicies) and the dynamic client (agent-sandbox resources), not
// client-go's typed Clientset: that one links all of k8s.io/api, whose
// packages register every API type at program start, in every program
// importing the provider. The scheme below holds only the types the
// provider sends and reads, and is built on the first NewDriver.

// apiCodecs is the scheme's serializers and its parameter codec (for
// ListOptions, PodExecOptions and friends in the query string).
type apiCodecs struct {
	serializers runtime.NegotiatedSerializer
	params      runtime.ParameterCodec
}

var loadCodecs = sync.OnceValues(func() (apiCodecs, error) {
	s := runtime.NewScheme()
	// Each AddToScheme also registers metav1's options, Status and
	// APIResourceList for its group version.
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, networkingv1.AddToScheme} {
		if err := add(s); err != nil {
			return apiCodecs{}, err
		}
	}
	return apiCodecs{
		serializers: serializer.NewCodecFactory(s).WithoutConversion(),
		params:      runtime.NewParameterCodec(s),
	}, nil
})

// restClient returns a client of the group version gv, served under
// apiPath ("/api" for the core group, "/apis" for the others), speaking
// JSON over hc.
func restClient(cfg *rest.Config, hc *http.Client, c apiCodecs, apiPath string, gv schema.GroupVersion) (*rest.RESTClient, error) {
	cc := rest.CopyConfig(cfg)
	cc.APIPath = apiPath
	cc.GroupVersion = &gv
	cc.ContentType = runtime.ContentTypeJSON
	cc.AcceptContentTypes = runtime.ContentTypeJSON
	cc.NegotiatedSerializer = c.serializers
	return rest.RESTClientForConfigAndClient(cc, hc)
}

// The typed calls the provider makes: the requests client-go's typed
// clients make (empty options add no parameters), in JSON.

func (p *Provider) getPod(ctx context.Context, podName string) (*corev1.Pod, error) {
	pod := &corev1.Pod{}
	err := p.core.Get().Namespace(p.namespace).Resource("pods").Name(podName).Do(ctx).Into(pod)
	return pod, err
}

func (p *Provider) listPods(ctx context.Context, opts metav1.ListOptions) (*corev1.PodList, error) {
	l := &corev1.PodList{}
	err := p.core.Get().Namespace(p.namespace).Resource("pods").VersionedParams(&opts, p.codecs.params).Do(ctx).Into(l)
	return l, err
}

func (p *Provider) createPod(ctx context.Context, pod *corev1.Pod) error {
	return p.core.Post().Namespace(p.namespace).Resource("pods").Body(pod).Do(ctx).Error()
}

func (p *Provider) patchPod(ctx context.Context, podName string, pt types.PatchType, data []byte) (*corev1.Pod, error) {
	pod := &corev1.Pod{}
	err := p.core.Patch(pt).Namespace(p.namespace).Resource("pods").Name(podName).Body(data).Do(ctx).Into(pod)
	return pod, err
}

func (p *Provider) deletePod(ctx context.Context, podName string, opts metav1.DeleteOptions) error {
	return p.core.Delete().Namespace(p.namespace).Resource("pods").Name(podName).Body(&opts).Do(ctx).Error()
}

func (p *Provider) createNetworkPolicy(ctx context.Context, np *networkingv1.NetworkPolicy) error {
	return p.networking.Post().Namespace(p.namespace).Resource("networkpolicies").Body(np).Do(ctx).Error()
}

func (p *Provider) deleteNetworkPolicy(ctx context.Context, npName string) error {
	return p.networking.Delete().Namespace(p.namespace).Resource("networkpolicies").Name(npName).Body(&metav1.DeleteOptions{}).Do(ctx).Error()
}

// serverResources reads the resources the API server serves in gv, as
// client-go's discovery client does.
func (p *Provider) serverResources(ctx context.Context, gv schema.GroupVersion) (*metav1.APIResourceList, error) {
	l := &metav1.APIResourceList{GroupVersion: gv.String()}
	err := p.core.Get().AbsPath("/apis", gv.Group, gv.Version).Do(ctx).Into(l)
	return l, err
}

// podRequest starts a request to a subresource of a pod (exec,
// portforward).
func (p *Provider) podRequest(podName, subresource string) *rest.Request {
	return p.core.Post().Namespace(p.namespace).Resource("pods").Name(podName).SubResource(subresource)
}
