package kubernetes

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/perimeter-sdk/perimeter/internal/shellfs"
	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

// Sandbox is one sandbox: a pod, made directly or through an agent-sandbox
// Sandbox or SandboxClaim. Its As sets a *corev1.Pod (the pod as last read).
type Sandbox struct {
	p       *Provider
	id      string
	kind    string // "pod", "Sandbox" or "SandboxClaim"
	workdir string
	env     map[string]string
	labels  map[string]string
	created time.Time
	expires time.Time
	network string

	mu        sync.Mutex
	pod       *corev1.Pod
	podName   string
	container string
}

var _ driver.Sandbox = (*Sandbox)(nil)
var _ driver.Dialer = (*Sandbox)(nil)

// ID returns the name of the sandbox's object.
func (s *Sandbox) ID() string { return s.id }

// Capabilities: stdin, signals (through a shell in the container), PTY with
// resize, expose (a loopback listener, which Tunnel.Close closes with its
// connections) and dial (port-forward), and the network modes the
// cluster's policy enforcement allows.
func (s *Sandbox) Capabilities() sandbox.Capabilities {
	return sandbox.Capabilities{
		Stdin: true, Signal: true, PTY: true, Expose: true, CloseTunnel: true, Dial: true,
		NetworkModes: s.p.networkModes(),
	}
}

// As sets a **corev1.Pod to a copy of the pod as last read.
func (s *Sandbox) As(target any) bool {
	if t, ok := target.(**corev1.Pod); ok {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.pod == nil {
			return false
		}
		*t = s.pod.DeepCopy()
		return true
	}
	return false
}

func (s *Sandbox) setPod(pod *corev1.Pod) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pod = pod
	s.podName = pod.Name
	s.container = pod.Spec.Containers[0].Name
}

func (s *Sandbox) target() (pod, container string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.podName, s.container
}

func (s *Sandbox) expired() bool { return !s.expires.IsZero() && time.Now().After(s.expires) }

func (s *Sandbox) info() sandbox.Info {
	iso := "Kubernetes pod (container namespaces and cgroups of the node's runtime"
	if rc := s.p.opts.RuntimeClass; rc != "" {
		iso += ", RuntimeClass " + rc
	}
	iso += ")"
	if s.kind != "pod" {
		iso += " through agent-sandbox " + s.kind
	}
	if s.network != "" {
		iso += "; " + s.network
	}
	return sandbox.Info{ID: s.id, Provider: name, State: sandbox.StateRunning, Labels: maps.Clone(s.labels),
		Created: s.created, Expires: s.expires, Isolation: iso}
}

// Info reads the pod's state.
func (s *Sandbox) Info(ctx context.Context) (sandbox.Info, error) {
	if s.expired() {
		return sandbox.Info{}, sandbox.Errorf(name, s.id, "info", sandbox.ErrTerminated, "sandbox expired at %s", s.expires.Format(time.RFC3339))
	}
	if _, _, err := s.p.primary(ctx, s.id); err != nil {
		return sandbox.Info{}, s.p.apiErr(s.id, "info", err)
	}
	podName, _ := s.target()
	pod, err := s.p.getPod(ctx, podName)
	if err != nil {
		return sandbox.Info{}, s.p.apiErr(s.id, "info", err)
	}
	info := s.info()
	info.State = podState(pod)
	return info, nil
}

// podName finds the sandbox's pod: the pod itself, the Sandbox's pod, or
// the pod of the Sandbox a claim was bound to.
func (s *Sandbox) findPod(ctx context.Context) (string, error) {
	switch s.kind {
	case "pod":
		return s.id, nil
	case "Sandbox":
		u, err := s.p.dynamic.Resource(sandboxGVR).Namespace(s.p.namespace).Get(ctx, s.id, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		if n := u.GetAnnotations()[podNameAnnotation]; n != "" {
			return n, nil
		}
		return s.id, nil
	default:
		u, err := s.p.dynamic.Resource(claimGVR).Namespace(s.p.namespace).Get(ctx, s.id, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		sbName, _, _ := unstructured.NestedString(u.Object, "status", "sandbox", "Name")
		if sbName == "" {
			return "", nil // not bound yet
		}
		sb, err := s.p.dynamic.Resource(sandboxGVR).Namespace(s.p.namespace).Get(ctx, sbName, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		if n := sb.GetAnnotations()[podNameAnnotation]; n != "" {
			return n, nil
		}
		return sbName, nil
	}
}

// waitRunning waits until the sandbox's pod runs and its container is
// ready to exec into.
func (s *Sandbox) waitRunning(ctx context.Context) (*corev1.Pod, error) {
	var pod *corev1.Pod
	var last error
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		podName, err := s.findPod(ctx)
		if err != nil {
			if apierrors.IsNotFound(err) {
				return false, err
			}
			last = err
			return false, nil
		}
		if podName == "" {
			last = fmt.Errorf("%s %s is not bound to a Sandbox yet", s.kind, s.id)
			return false, nil
		}
		p, err := s.p.getPod(ctx, podName)
		if apierrors.IsNotFound(err) && s.kind != "pod" {
			last = fmt.Errorf("pod %s not made yet", podName)
			return false, nil // the controller has yet to make it
		}
		if err != nil {
			return false, err
		}
		switch {
		case p.DeletionTimestamp != nil:
			return false, sandbox.Errorf(name, s.id, "get", sandbox.ErrNotFound, "pod %s is being deleted", podName)
		case p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed:
			for _, cs := range p.Status.ContainerStatuses {
				if t := cs.State.Terminated; t != nil && t.Reason == "StartError" {
					return false, &startError{sandbox.Errorf(name, s.id, "create", sandbox.ErrUnavailable, "pod %s: container %s did not start: %s", podName, cs.Name, t.Message)}
				}
			}
			return false, sandbox.Errorf(name, s.id, "get", sandbox.ErrNotFound, "pod %s has ended (%s: %s)", podName, p.Status.Phase, p.Status.Message)
		}
		for _, cs := range p.Status.ContainerStatuses {
			if w := cs.State.Waiting; w != nil {
				switch w.Reason {
				case "RunContainerError":
					return false, &startError{sandbox.Errorf(name, s.id, "create", sandbox.ErrInvalidArgument, "pod %s: container %s: %s: %s", podName, cs.Name, w.Reason, w.Message)}
				case "ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError", "CrashLoopBackOff":
					return false, sandbox.Errorf(name, s.id, "create", sandbox.ErrInvalidArgument, "pod %s: container %s: %s: %s", podName, cs.Name, w.Reason, w.Message)
				}
			}
		}
		if p.Status.Phase == corev1.PodRunning && len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].State.Running != nil {
			pod = p
			return true, nil
		}
		last = fmt.Errorf("pod %s is %s", podName, p.Status.Phase)
		return false, nil
	})
	if err != nil {
		if ctx.Err() != nil {
			if last != nil {
				return nil, sandbox.NewError(name, s.id, "create", sandbox.ErrTimeout, fmt.Errorf("%w (last: %v)", ctx.Err(), last))
			}
			return nil, ctx.Err()
		}
		return nil, s.p.apiErr(s.id, "get", err)
	}
	return pod, nil
}

// startError is a container that the runtime failed to start: Create tries
// once more with a new pod, since nothing of the sandbox existed yet (a
// loaded node's runc now and then fails with "can't get final child's PID
// from pipe").
type startError struct{ err error }

func (e *startError) Error() string { return e.err.Error() }
func (e *startError) Unwrap() error { return e.err }

// Terminate deletes the sandbox's object (and its NetworkPolicy) and waits
// until its pod is gone.
func (s *Sandbox) Terminate(ctx context.Context) error {
	podName, _ := s.target()
	if podName == "" && s.kind != "SandboxClaim" {
		podName = s.id
	}
	if podName == "" {
		if n, err := s.findPod(ctx); err == nil {
			podName = n
		}
	}
	if err := s.delete(ctx); err != nil {
		return err
	}
	if podName == "" {
		return nil
	}
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		_, err := s.p.getPod(ctx, podName)
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return s.p.apiErr(s.id, "terminate", fmt.Errorf("waiting for pod %s to go: %w", podName, err))
	}
	return nil
}

// delete deletes the sandbox's objects; missing ones are not an error.
func (s *Sandbox) delete(ctx context.Context) error {
	grace := int64(0)
	bg := metav1.DeletePropagationBackground
	do := metav1.DeleteOptions{GracePeriodSeconds: &grace, PropagationPolicy: &bg}
	var err error
	switch s.kind {
	case "pod":
		err = s.p.deletePod(ctx, s.id, do)
	case "Sandbox":
		err = s.p.dynamic.Resource(sandboxGVR).Namespace(s.p.namespace).Delete(ctx, s.id, do)
	default:
		err = s.p.dynamic.Resource(claimGVR).Namespace(s.p.namespace).Delete(ctx, s.id, do)
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return s.p.apiErr(s.id, "terminate", err)
	}
	err = s.p.deleteNetworkPolicy(ctx, s.id)
	if err != nil && !apierrors.IsNotFound(err) {
		return s.p.apiErr(s.id, "terminate", err)
	}
	return nil
}

// abs resolves a name against the working directory.
func (s *Sandbox) abs(n string) string {
	if path.IsAbs(n) {
		return n
	}
	return path.Join(s.workdir, n)
}

func (s *Sandbox) fs() *shellfs.FS {
	return &shellfs.FS{Run: func(ctx context.Context, argv []string) ([]byte, []byte, int, error) {
		var out, errOut strings.Builder
		code, err := s.exec(ctx, argv, nil, &out, &errOut)
		return []byte(out.String()), []byte(errOut.String()), code, err
	}}
}

func (s *Sandbox) fileErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(*sandbox.Error); ok {
		return err
	}
	if se, ok := err.(*shellfs.Error); ok {
		return sandbox.NewError(name, s.id, op, se.Kind, err)
	}
	return s.p.apiErr(s.id, op, err)
}

// ReadFile streams the file out with cat.
func (s *Sandbox) ReadFile(ctx context.Context, n string) (io.ReadCloser, error) {
	abs := s.abs(n)
	if err := s.fs().ProbeRead(ctx, abs); err != nil {
		return nil, s.fileErr("read", err)
	}
	pr, pw := io.Pipe()
	rctx, cancel := context.WithCancel(ctx)
	go func() {
		var errOut strings.Builder
		code, err := s.exec(rctx, []string{"cat", "--", abs}, nil, pw, &errOut)
		if err == nil && code != 0 {
			err = sandbox.Errorf(name, s.id, "read", sandbox.ErrUnavailable, "cat %s: exit status %d: %s", abs, code, strings.TrimSpace(errOut.String()))
		} else if err != nil {
			err = s.fileErr("read", err)
		}
		pw.CloseWithError(err)
	}()
	return &readCloser{PipeReader: pr, cancel: cancel}, nil
}

type readCloser struct {
	*io.PipeReader
	cancel context.CancelFunc
}

func (r *readCloser) Close() error {
	r.cancel()
	return r.PipeReader.Close()
}

// errReader records the first error of a reader other than io.EOF, and
// counts the bytes read.
type errReader struct {
	r   io.Reader
	n   int64
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	e.n += int64(n)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

// WriteFile streams r into a temporary file beside the target with cat,
// checks that the file holds every byte sent, then gives it perm and renames
// it over the target. (client-go's exec streams drop a failed standard-input
// copy silently, so the count is what proves the upload whole.)
func (s *Sandbox) WriteFile(ctx context.Context, n string, r io.Reader, perm fs.FileMode) error {
	abs := s.abs(n)
	f := s.fs()
	if err := f.ProbeDir(ctx, path.Dir(abs)); err != nil {
		return s.fileErr("write", err)
	}
	tmp := path.Join(path.Dir(abs), ".perimeter-"+newID()[len("perimeter-"):]+".tmp")
	er := &errReader{r: r}
	var out, errOut strings.Builder
	// cat runs as the shell's child: see wrapper.
	code, err := s.exec(ctx, []string{"sh", "-c", `umask 077; cat > "$1" || exit; wc -c < "$1"`, "perimeter", tmp}, er, &out, &errOut)
	if err == nil && er.err != nil {
		err = er.err
	}
	if err == nil && code == 0 {
		got, perr := strconv.ParseInt(strings.TrimSpace(out.String()), 10, 64)
		if perr != nil || got != er.n {
			err = sandbox.Errorf(name, s.id, "write", sandbox.ErrUnavailable, "writing %s: %d bytes sent, the file holds %q", tmp, er.n, strings.TrimSpace(out.String()))
		}
	}
	if err == nil && code != 0 {
		err = sandbox.Errorf(name, s.id, "write", sandbox.ErrUnavailable, "writing %s: exit status %d: %s", tmp, code, strings.TrimSpace(errOut.String()))
		if strings.Contains(errOut.String(), "o space left") {
			err = sandbox.Errorf(name, s.id, "write", sandbox.ErrResourceExhausted, "writing %s: %s", tmp, strings.TrimSpace(errOut.String()))
		}
	}
	if err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		s.exec(cctx, []string{"rm", "-f", "--", tmp}, nil, nil, nil)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return s.fileErr("write", err)
	}
	return s.fileErr("write", f.Commit(ctx, tmp, abs, perm))
}

// Stat describes a file without following a final symbolic link.
func (s *Sandbox) Stat(ctx context.Context, n string) (sandbox.FileInfo, error) {
	fi, err := s.fs().Stat(ctx, s.abs(n))
	return fi, s.fileErr("stat", err)
}

// ReadDir lists a directory, sorted by name.
func (s *Sandbox) ReadDir(ctx context.Context, n string) ([]sandbox.FileInfo, error) {
	l, err := s.fs().ReadDir(ctx, s.abs(n))
	return l, s.fileErr("readdir", err)
}

// MkdirAll makes a directory and its missing parents with perm.
func (s *Sandbox) MkdirAll(ctx context.Context, n string, perm fs.FileMode) error {
	return s.fileErr("mkdir", s.fs().MkdirAll(ctx, s.abs(n), perm))
}

// Remove removes a file or empty directory.
func (s *Sandbox) Remove(ctx context.Context, n string) error {
	return s.fileErr("remove", s.fs().Remove(ctx, s.abs(n)))
}

// RemoveAll removes a tree.
func (s *Sandbox) RemoveAll(ctx context.Context, n string) error {
	return s.fileErr("removeall", s.fs().RemoveAll(ctx, s.abs(n)))
}

// Rename moves a file.
func (s *Sandbox) Rename(ctx context.Context, from, to string) error {
	return s.fileErr("rename", s.fs().Rename(ctx, s.abs(from), s.abs(to)))
}
