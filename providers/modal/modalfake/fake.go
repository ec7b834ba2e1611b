// Package modalfake is a fake of Modal's sandbox API for tests: two gRPC
// servers on 127.0.0.1 (the control plane, modal.client.ModalClient, and the
// per-task command router, modal.task_command_router.TaskCommandRouter) built
// from the official modal-go SDK's own generated server stubs, so the
// unmodified SDKs (modal-go, and Modal's JavaScript SDK) talk to it when
// MODAL_SERVER_URL points at [Server.URL].
//
// It runs commands for real, each in its own process group with default
// signal dispositions, each sandbox confined to a root directory in the
// fake's temporary tree: in its own mount namespace, chrooted, with the
// host's top-level directories bind-mounted read-only, so whatever its
// commands write (/, /tmp, a workdir such as /w1) lands in that tree and
// nothing outside it. A sandbox whose egress is blocked or allowlisted runs
// its commands in its own network namespace, which has only loopback. It needs unshare(1) and nsenter(1) and
// root or unprivileged user namespaces. As on Modal, SandboxCreate answers
// at once and the sandbox gets its task (SandboxGetTaskId waits for it) once
// it is set up; one the fake cannot confine (or whose workdir it cannot
// make) ends at once as a failure saying why, rather than run on the host.
// Errors are gRPC status codes as the service returns them (NotFound for
// unknown ids, AlreadyExists for a taken sandbox name, InvalidArgument for
// malformed requests, Unauthenticated for missing or wrong credentials; the
// x-modal-auth-token from AuthTokenGet is optional, as on the service, but
// checked when sent).
//
// The RPCs it serves: AuthTokenGet, AppGetOrCreate, ImageGetOrCreate,
// ImageFromId, SecretGetOrCreate, SandboxCreate (with its entrypoint
// command: the sandbox ends with it, SUCCESS or FAILURE with its exit code),
// SandboxGetTaskId, TaskGetCommandRouterAccess, SandboxWait,
// SandboxTerminate, SandboxTagsSet, SandboxTagsGet, SandboxList,
// SandboxGetFromName, SandboxSnapshotFs, SandboxGetTunnels,
// ContainerFilesystemExec and ContainerFilesystemExecGetOutput on the control
// plane; TaskExecStart (the exec id is the idempotency key), TaskExecStdinWrite,
// TaskExecStdioRead, TaskExecWait and TaskExecPoll on the router. Every other
// RPC answers codes.Unimplemented with "unknown method M for service S", as
// a gRPC server answers a method it does not have; among them the sandbox's
// own output and input (SandboxGetLogs, SandboxStdinWrite), connect tokens
// (SandboxCreateConnectToken), TaskMountDirectory, TaskSnapshotDirectory,
// volumes, functions, queues and the rest of Modal's API.
//
// What it does not implement within those RPCs: PTY execs, unencrypted
// ports and filesystem requests other than open, read, write, flush and
// close (codes.Unimplemented, naming the fake); image build steps (an image
// with any Dockerfile command beyond FROM fails to build, since the fake
// runs every sandbox on the host's own files whatever the image says);
// resources, GPUs, regions, volumes and idle timeouts (recorded in
// [Sandbox.Definition] so a test can assert what was asked, not enforced);
// routing to an allowlist's ranges (an allowlist reaches nothing, stricter
// than Modal); and writes to the host's directories inside a sandbox (they
// are read-only, where a Modal image is writable).
//
// A fake is process-global in practice: the SDK reads MODAL_SERVER_URL once per
// client, so tests start one Server in TestMain and set the environment there:
//
//	srv, err := modalfake.Start(nil)
//	...
//	os.Setenv("MODAL_SERVER_URL", srv.URL)
//	os.Setenv("MODAL_TOKEN_ID", srv.TokenID)
//	os.Setenv("MODAL_TOKEN_SECRET", srv.TokenSecret)
//	os.Setenv("MODAL_CONFIG_PATH", filepath.Join(dir, "absent.toml"))
package modalfake

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/modal-labs/libmodal/modal-go/proto/modal_proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Options configures [Start]. Nil means defaults.
type Options struct {
	// TokenID and TokenSecret are the credentials the fake accepts in the
	// x-modal-token-id and x-modal-token-secret metadata. Empty means
	// "ak-fake" and "as-fake".
	TokenID, TokenSecret string
	// UnscheduledPolls is how many SandboxGetTaskId calls per sandbox are
	// answered without a task ID, as Modal does until the sandbox is
	// scheduled on a worker.
	UnscheduledPolls int
	// ListPageSize is how many sandboxes one SandboxList reply carries; zero
	// means 10.
	ListPageSize int
}

// Server is a running fake. Its methods are safe for concurrent use.
type Server struct {
	// URL is the control plane's address for MODAL_SERVER_URL, such as
	// "http://127.0.0.1:40123".
	URL string
	// TokenID and TokenSecret are the accepted credentials.
	TokenID, TokenSecret string

	opts       Options
	dir        string
	cp, router *grpc.Server
	routerURL  string
	tlsConfig  *tls.Config // the tunnels' server certificate
	clientTLS  *tls.Config // trusts tlsConfig's certificate

	authToken string // issued by AuthTokenGet
	routerJWT string // issued by TaskGetCommandRouterAccess

	mu        sync.Mutex
	closed    bool
	seq       int
	lastTime  float64
	apps      map[string]string            // name -> id
	secrets   map[string]map[string]string // id -> env
	named     map[string]string            // secret name -> id
	images    map[string]*image
	sandboxes map[string]*sandbox // by id; finished ones are kept, as Modal does
	tasks     map[string]*sandbox
	fsOps     map[string]*fsResult
	calls     map[string]int

	wg sync.WaitGroup // serving goroutines

	failNext atomic.Pointer[injectedFailure]
}

type image struct {
	id       string
	commands []string
	snapshot string // directory holding a filesystem snapshot, if any
}

type injectedFailure struct {
	method string
	err    error
}

// Start starts both servers on 127.0.0.1 and returns once they accept
// connections. Call Close to stop them and end every sandbox.
func Start(opts *Options) (*Server, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.TokenID == "" {
		o.TokenID = "ak-fake"
	}
	if o.TokenSecret == "" {
		o.TokenSecret = "as-fake"
	}
	if o.ListPageSize <= 0 {
		o.ListPageSize = 10
	}
	dir, err := os.MkdirTemp("", "modalfake-")
	if err != nil {
		return nil, err
	}
	srvTLS, cliTLS, err := selfSignedTLS()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s := &Server{
		TokenID:     o.TokenID,
		TokenSecret: o.TokenSecret,
		opts:        o,
		dir:         dir,
		tlsConfig:   srvTLS,
		clientTLS:   cliTLS,
		authToken:   fakeJWT("auth"),
		routerJWT:   fakeJWT("router"),
		apps:        map[string]string{},
		secrets:     map[string]map[string]string{},
		named:       map[string]string{},
		images:      map[string]*image{},
		sandboxes:   map[string]*sandbox{},
		tasks:       map[string]*sandbox{},
		fsOps:       map[string]*fsResult{},
		calls:       map[string]int{},
	}
	cpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	rtLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cpLn.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	s.URL = "http://" + cpLn.Addr().String()
	// The SDK insists on https for the router, and dials it in plaintext
	// when the control plane is on localhost.
	s.routerURL = "https://" + rtLn.Addr().String()

	s.cp = grpc.NewServer(
		grpc.ChainUnaryInterceptor(s.cpUnaryAuth),
		grpc.ChainStreamInterceptor(s.cpStreamAuth),
	)
	pb.RegisterModalClientServer(s.cp, &controlPlane{s: s})
	s.router = grpc.NewServer(
		grpc.ChainUnaryInterceptor(s.routerUnaryAuth),
		grpc.ChainStreamInterceptor(s.routerStreamAuth),
	)
	pb.RegisterTaskCommandRouterServer(s.router, &router{s: s})
	s.wg.Add(2)
	go func() { defer s.wg.Done(); s.cp.Serve(cpLn) }()
	go func() { defer s.wg.Done(); s.router.Serve(rtLn) }()
	return s, nil
}

// Close stops both servers, kills every process of every sandbox, closes the
// tunnels and removes the fake's files. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	sbs := make([]*sandbox, 0, len(s.sandboxes))
	for _, sb := range s.sandboxes {
		sbs = append(sbs, sb)
	}
	s.mu.Unlock()
	for _, sb := range sbs {
		sb.finish(pb.GenericResult_GENERIC_STATUS_TERMINATED, 0, "fake server closed")
	}
	for _, sb := range sbs {
		sb.wait()
	}
	s.cp.Stop()
	s.router.Stop()
	s.wg.Wait()
	return os.RemoveAll(s.dir)
}

// Partition stops serving, as when the network to Modal fails: both
// servers end their connections and refuse new ones, while the sandboxes
// and their processes go on (until Close).
func (s *Server) Partition() {
	s.cp.Stop()
	s.router.Stop()
}

// TunnelClientTLS returns a TLS configuration that trusts the certificate of
// the fake's tunnels (what Modal serves with a public certificate).
func (s *Server) TunnelClientTLS() *tls.Config { return s.clientTLS.Clone() }

// Calls returns how many times the named RPC (such as "SandboxCreate" or
// "TaskExecStart") was called.
func (s *Server) Calls(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[method]
}

// FailNext makes the next call of the named RPC fail with err (build it with
// status.Error to choose the code). It is for testing error paths.
func (s *Server) FailNext(method string, err error) {
	s.failNext.Store(&injectedFailure{method: method, err: err})
}

// SetUnscheduledPolls changes Options.UnscheduledPolls for sandboxes created
// from now on.
func (s *Server) SetUnscheduledPolls(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.UnscheduledPolls = n
}

// AddSecret registers a named Modal Secret holding env, as "modal secret
// create" would, and returns its id.
func (s *Server) AddSecret(name string, env map[string]string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.newID("st")
	s.secrets[id] = cloneMap(env)
	s.named[name] = id
	return id
}

// Sandbox describes a sandbox the fake holds, for assertions.
type Sandbox struct {
	ID, AppID, TaskID string
	// Definition is the definition the SDK sent in SandboxCreate.
	Definition *pb.Sandbox
	// Dir is the sandbox's root directory on the host, in the fake's
	// temporary tree: what its commands see as / (beside the host's
	// directories, mounted read-only) and what a filesystem snapshot copies.
	Dir string
	// Workdir is its default working directory as its commands see it:
	// the definition's workdir, else /tmp.
	Workdir string
	// Env is the environment its secrets gave it.
	Env map[string]string
	// Finished reports that the sandbox has ended.
	Finished bool
	// Processes counts the commands still running.
	Processes int
}

// Sandbox returns what the fake knows of the sandbox id.
func (s *Server) Sandbox(id string) (Sandbox, bool) {
	s.mu.Lock()
	sb := s.sandboxes[id]
	s.mu.Unlock()
	if sb == nil {
		return Sandbox{}, false
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	running := 0
	for _, e := range sb.execs {
		if !e.exited() {
			running++
		}
	}
	return Sandbox{
		ID: sb.id, AppID: sb.appID, TaskID: sb.taskID,
		Definition: proto.Clone(sb.def).(*pb.Sandbox),
		Dir:        sb.dir, Workdir: sb.workdir, Env: cloneMap(sb.env),
		Finished: sb.result != nil, Processes: running,
	}, true
}

// newID returns a fresh id with Modal's prefix style ("sb-", "ta-", ...).
// s.mu must be held.
func (s *Server) newID(prefix string) string {
	s.seq++
	return fmt.Sprintf("%s-fake%06d", prefix, s.seq)
}

// now returns a strictly increasing timestamp in seconds. s.mu must be held.
func (s *Server) now() float64 {
	t := float64(time.Now().UnixNano()) / 1e9
	if t <= s.lastTime {
		t = s.lastTime + 1e-6
	}
	s.lastTime = t
	return t
}

func (s *Server) count(method string) error {
	if f := s.failNext.Load(); f != nil && f.method == method && s.failNext.CompareAndSwap(f, nil) {
		s.mu.Lock()
		s.calls[method]++
		s.mu.Unlock()
		return f.err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[method]++
	if s.closed {
		return status.Error(codes.Unavailable, "server shutting down")
	}
	return nil
}

func shortMethod(full string) string {
	return full[strings.LastIndexByte(full, '/')+1:]
}

func (s *Server) checkTokens(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if first(md, "x-modal-token-id") != s.TokenID || first(md, "x-modal-token-secret") != s.TokenSecret {
		return status.Error(codes.Unauthenticated, "Token missing. Could not authenticate client. If you have token credentials, see modal.com/docs/reference/modal.config for setup help.")
	}
	// The auth token from AuthTokenGet is optional (the clients send it once
	// they have one, on unary and streaming calls alike); one that is sent
	// must be the one the fake issued.
	if tok := md.Get("x-modal-auth-token"); len(tok) > 0 && tok[0] != s.authToken {
		return status.Error(codes.Unauthenticated, "invalid x-modal-auth-token")
	}
	return nil
}

// implemented lists the RPCs the fake serves, by service. Every other RPC
// answers as a gRPC server answers a method it does not have.
var implemented = map[string]map[string]bool{
	"modal.client.ModalClient": set("AuthTokenGet", "AppGetOrCreate", "ImageGetOrCreate", "ImageFromId",
		"SecretGetOrCreate", "SandboxCreate", "SandboxGetTaskId", "TaskGetCommandRouterAccess", "SandboxWait",
		"SandboxTerminate", "SandboxTagsSet", "SandboxTagsGet", "SandboxList", "SandboxGetFromName",
		"SandboxSnapshotFs", "SandboxGetTunnels", "ContainerFilesystemExec", "ContainerFilesystemExecGetOutput"),
	"modal.task_command_router.TaskCommandRouter": set("TaskExecStart", "TaskExecStdinWrite", "TaskExecStdioRead",
		"TaskExecWait", "TaskExecPoll"),
}

func set(names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

// unknownMethod is the answer to an RPC the fake does not implement: what a
// gRPC server answers for a method it does not register.
func unknownMethod(fullMethod string) error {
	svc, m, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if implemented[svc][m] {
		return nil
	}
	return status.Errorf(codes.Unimplemented, "unknown method %s for service %s", m, svc)
}

func (s *Server) cpUnaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	m := shortMethod(info.FullMethod)
	if err := unknownMethod(info.FullMethod); err != nil {
		return nil, err
	}
	if err := s.checkTokens(ctx); err != nil {
		return nil, err
	}
	if err := s.count(m); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (s *Server) cpStreamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	m := shortMethod(info.FullMethod)
	if err := unknownMethod(info.FullMethod); err != nil {
		return err
	}
	if err := s.checkTokens(ss.Context()); err != nil {
		return err
	}
	if err := s.count(m); err != nil {
		return err
	}
	return h(srv, ss)
}

func (s *Server) checkBearer(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if first(md, "authorization") != "Bearer "+s.routerJWT {
		return status.Error(codes.Unauthenticated, "missing or invalid bearer token")
	}
	return nil
}

func (s *Server) routerUnaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := unknownMethod(info.FullMethod); err != nil {
		return nil, err
	}
	if err := s.checkBearer(ctx); err != nil {
		return nil, err
	}
	if err := s.count(shortMethod(info.FullMethod)); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (s *Server) routerStreamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := unknownMethod(info.FullMethod); err != nil {
		return err
	}
	if err := s.checkBearer(ss.Context()); err != nil {
		return err
	}
	if err := s.count(shortMethod(info.FullMethod)); err != nil {
		return err
	}
	return h(srv, ss)
}

func first(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

// fakeJWT returns an unsigned three-part JWT whose payload carries an exp an
// hour ahead, which is all the SDK reads of it.
func fakeJWT(sub string) string {
	enc := base64.RawURLEncoding
	head, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT"})
	body, _ := json.Marshal(map[string]any{"sub": sub, "exp": time.Now().Add(time.Hour).Unix()})
	return enc.EncodeToString(head) + "." + enc.EncodeToString(body) + ".fake"
}

func cloneMap(m map[string]string) map[string]string {
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}
