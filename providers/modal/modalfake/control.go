package modalfake

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	pb "github.com/modal-labs/libmodal/modal-go/proto/modal_proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// controlPlane implements the modal.client.ModalClient RPCs on the sandbox
// paths; the rest answer Unimplemented (see implemented).
type controlPlane struct {
	pb.UnimplementedModalClientServer
	s *Server
}

// sandbox is one fake sandbox: a directory, its processes and its state.
type sandbox struct {
	s       *Server
	id      string
	appID   string
	taskID  string
	name    string
	def     *pb.Sandbox
	created float64
	dir     string
	workdir string
	env     map[string]string

	mu          sync.Mutex
	tags        map[string]string
	polls       int               // SandboxGetTaskId calls so far
	unscheduled int               // how many of them go unanswered
	result      *pb.GenericResult // nil while running
	done        chan struct{}     // closed when result is set
	execs       map[string]*execProc
	files       map[string]*os.File
	tunnels     map[uint32]*tunnel
	fsOps       []string // its file requests' ids in Server.fsOps
	timer       *time.Timer
	ready       chan struct{} // closed when setUp has finished
	h           *holder       // the sandbox's namespaces and root; set by setUp
}

// entrypointExec is the key of a sandbox's own command in its execs.
const entrypointExec = "entrypoint"

func (sb *sandbox) finished() bool {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return sb.result != nil
}

// finish ends the sandbox with st: every process group is killed, files are
// closed and tunnels withdrawn. Only the first call has an effect.
func (sb *sandbox) finish(st pb.GenericResult_GenericStatus, code int32, msg string) {
	sb.mu.Lock()
	if sb.result != nil {
		sb.mu.Unlock()
		return
	}
	sb.result = pb.GenericResult_builder{Status: st, Exitcode: code, Exception: msg}.Build()
	if sb.timer != nil {
		sb.timer.Stop()
	}
	execs := make([]*execProc, 0, len(sb.execs))
	for _, e := range sb.execs {
		execs = append(execs, e)
	}
	for fd, f := range sb.files {
		f.Close()
		delete(sb.files, fd)
	}
	tunnels := sb.tunnels
	sb.tunnels = nil
	fsOps := sb.fsOps
	sb.fsOps = nil
	h := sb.h
	close(sb.done)
	sb.mu.Unlock()
	sb.s.mu.Lock()
	for _, id := range fsOps {
		delete(sb.s.fsOps, id)
	}
	sb.s.mu.Unlock()
	for _, e := range execs {
		e.kill()
	}
	for _, t := range tunnels {
		t.close()
	}
	if h != nil {
		h.stop()
	}
}

// wait waits for a finished sandbox's set-up to end and every one of its
// processes to be reaped.
func (sb *sandbox) wait() {
	<-sb.ready
	sb.mu.Lock()
	execs := make([]*execProc, 0, len(sb.execs))
	for _, e := range sb.execs {
		execs = append(execs, e)
	}
	sb.mu.Unlock()
	for _, e := range execs {
		<-e.done
	}
}

func (s *Server) lookup(id string) (*sandbox, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb := s.sandboxes[id]
	if sb == nil {
		return nil, status.Errorf(codes.NotFound, "Sandbox with id '%s' not found", id)
	}
	return sb, nil
}

func (s *Server) lookupTask(id string) (*sandbox, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb := s.tasks[id]
	if sb == nil {
		return nil, status.Errorf(codes.NotFound, "Task '%s' not found", id)
	}
	return sb, nil
}

// runningTask is lookupTask for operations that need the task alive.
func (s *Server) runningTask(id string) (*sandbox, error) {
	sb, err := s.lookupTask(id)
	if err != nil {
		return nil, err
	}
	if sb.finished() {
		return nil, status.Errorf(codes.FailedPrecondition, "Task '%s' has already finished", id)
	}
	if !sb.isReady() {
		return nil, status.Errorf(codes.FailedPrecondition, "Task '%s' is not running yet", id)
	}
	return sb, nil
}

// AuthTokenGet issues the JWT the SDK sends as x-modal-auth-token; its payload carries exp.
func (c *controlPlane) AuthTokenGet(ctx context.Context, req *pb.AuthTokenGetRequest) (*pb.AuthTokenGetResponse, error) {
	return pb.AuthTokenGetResponse_builder{Token: c.s.authToken}.Build(), nil
}

// AppGetOrCreate finds an App by name, creating it when asked to.
func (c *controlPlane) AppGetOrCreate(ctx context.Context, req *pb.AppGetOrCreateRequest) (*pb.AppGetOrCreateResponse, error) {
	s := c.s
	if req.GetAppName() == "" {
		return nil, status.Error(codes.InvalidArgument, "App name is required")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id, ok := s.apps[req.GetAppName()]
	if !ok {
		if req.GetObjectCreationType() != pb.ObjectCreationType_OBJECT_CREATION_TYPE_CREATE_IF_MISSING {
			return nil, status.Errorf(codes.NotFound, "App '%s' not found", req.GetAppName())
		}
		id = s.newID("ap")
		s.apps[req.GetAppName()] = id
	}
	return pb.AppGetOrCreateResponse_builder{AppId: id}.Build(), nil
}

// ImageGetOrCreate records a registry image (its Dockerfile commands) and reports it built.
func (c *controlPlane) ImageGetOrCreate(ctx context.Context, req *pb.ImageGetOrCreateRequest) (*pb.ImageGetOrCreateResponse, error) {
	s := c.s
	cmds := req.GetImage().GetDockerfileCommands()
	if len(cmds) == 0 || !strings.HasPrefix(cmds[0], "FROM ") || strings.TrimSpace(cmds[0][5:]) == "" {
		return nil, status.Error(codes.InvalidArgument, "Image definition must start with a FROM command")
	}
	if len(cmds) > 1 {
		// The fake runs commands on the host's own files, whatever the
		// base image; it cannot apply build steps, so it fails the build
		// rather than report one that had no effect.
		return pb.ImageGetOrCreateResponse_builder{
			Result: pb.GenericResult_builder{
				Status:    pb.GenericResult_GENERIC_STATUS_FAILURE,
				Exception: "modalfake does not run image build steps: " + strings.Join(cmds[1:], "; "),
			}.Build(),
		}.Build(), nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, im := range s.images {
		if im.snapshot == "" && slices.Equal(im.commands, cmds) {
			return imageOK(im.id), nil
		}
	}
	im := &image{id: s.newID("im"), commands: slices.Clone(cmds)}
	s.images[im.id] = im
	return imageOK(im.id), nil
}

func imageOK(id string) *pb.ImageGetOrCreateResponse {
	return pb.ImageGetOrCreateResponse_builder{
		ImageId: id,
		Result:  pb.GenericResult_builder{Status: pb.GenericResult_GENERIC_STATUS_SUCCESS}.Build(),
	}.Build()
}

// ImageFromId finds an image, such as a filesystem snapshot, by id.
func (c *controlPlane) ImageFromId(ctx context.Context, req *pb.ImageFromIdRequest) (*pb.ImageFromIdResponse, error) {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.images[req.GetImageId()] == nil {
		return nil, status.Errorf(codes.NotFound, "Image '%s' not found", req.GetImageId())
	}
	return pb.ImageFromIdResponse_builder{ImageId: req.GetImageId()}.Build(), nil
}

// SecretGetOrCreate makes an ephemeral Secret from an env map, or finds a named one.
func (c *controlPlane) SecretGetOrCreate(ctx context.Context, req *pb.SecretGetOrCreateRequest) (*pb.SecretGetOrCreateResponse, error) {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if req.GetObjectCreationType() == pb.ObjectCreationType_OBJECT_CREATION_TYPE_EPHEMERAL {
		id := s.newID("st")
		s.secrets[id] = cloneMap(req.GetEnvDict())
		return pb.SecretGetOrCreateResponse_builder{SecretId: id}.Build(), nil
	}
	id, ok := s.named[req.GetDeploymentName()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "Secret '%s' not found", req.GetDeploymentName())
	}
	for _, k := range req.GetRequiredKeys() {
		if _, ok := s.secrets[id][k]; !ok {
			return nil, status.Errorf(codes.NotFound, "Secret '%s' is missing required key '%s'", req.GetDeploymentName(), k)
		}
	}
	return pb.SecretGetOrCreateResponse_builder{SecretId: id}.Build(), nil
}

// secretEnv merges the secrets' variables in order. s.mu must be held.
func (s *Server) secretEnv(ids []string) (map[string]string, error) {
	env := map[string]string{}
	for _, id := range ids {
		vars, ok := s.secrets[id]
		if !ok {
			return nil, status.Errorf(codes.NotFound, "Secret '%s' not found", id)
		}
		for k, v := range vars {
			env[k] = v
		}
	}
	return env, nil
}

// gpuTypes are the GPU types Modal offers, as the SDK sends them (upper case);
// the server refuses any other.
var gpuTypes = []string{"T4", "L4", "A10", "A10G", "A100", "A100-40GB", "A100-80GB", "L40S", "H100", "H100!", "H200", "B200", "B200+"}

// SandboxCreate validates the definition and starts a sandbox: its directory, namespaces and timeout.
func (c *controlPlane) SandboxCreate(ctx context.Context, req *pb.SandboxCreateRequest) (*pb.SandboxCreateResponse, error) {
	s := c.s
	def := req.GetDefinition()
	if def == nil {
		return nil, status.Error(codes.InvalidArgument, "Sandbox definition is required")
	}
	if w := def.GetWorkdir(); def.HasWorkdir() && !strings.HasPrefix(w, "/") {
		return nil, status.Errorf(codes.InvalidArgument, "workdir must be an absolute path, got: %s", w)
	}
	if g := def.GetResources().GetGpuConfig().GetGpuType(); g != "" && !slices.Contains(gpuTypes, g) {
		return nil, status.Errorf(codes.InvalidArgument, "GPU type %q is not available; choose one of %s", g, strings.Join(gpuTypes, ", "))
	}
	na := def.GetNetworkAccess()
	if na.GetNetworkAccessType() == pb.NetworkAccess_ALLOWLIST {
		for _, cidr := range na.GetAllowedCidrs() {
			if _, err := netip.ParsePrefix(cidr); err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "invalid CIDR in allowlist: %q", cidr)
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !slices.Contains(mapValues(s.apps), req.GetAppId()) {
		return nil, status.Errorf(codes.NotFound, "App '%s' not found", req.GetAppId())
	}
	im := s.images[def.GetImageId()]
	if im == nil {
		return nil, status.Errorf(codes.NotFound, "Image '%s' not found", def.GetImageId())
	}
	if name := def.GetName(); name != "" {
		for _, o := range s.sandboxes {
			if o.appID == req.GetAppId() && o.name == name && !o.finished() {
				return nil, status.Errorf(codes.AlreadyExists, "Sandbox with name '%s' already exists in this app", name)
			}
		}
	}
	env, err := s.secretEnv(def.GetSecretIds())
	if err != nil {
		return nil, err
	}
	id := s.newID("sb")
	dir := filepath.Join(s.dir, id)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, status.Errorf(codes.Internal, "preparing sandbox filesystem: %v", err)
	}
	if im.snapshot != "" {
		if err := copyTree(im.snapshot, dir); err != nil {
			os.RemoveAll(dir)
			return nil, status.Errorf(codes.Internal, "restoring snapshot: %v", err)
		}
	}
	blocked := na.GetNetworkAccessType() == pb.NetworkAccess_BLOCKED || na.GetNetworkAccessType() == pb.NetworkAccess_ALLOWLIST
	workdir := "/tmp"
	if def.HasWorkdir() {
		workdir = def.GetWorkdir()
	}
	sb := &sandbox{
		s: s, id: id, appID: req.GetAppId(), taskID: s.newID("ta"), name: def.GetName(),
		def: def, created: s.now(), unscheduled: s.opts.UnscheduledPolls, dir: dir, workdir: workdir, env: env,
		tags: map[string]string{}, done: make(chan struct{}), ready: make(chan struct{}),
		execs: map[string]*execProc{}, files: map[string]*os.File{}, tunnels: map[uint32]*tunnel{},
	}
	// As on Modal, the sandbox exists at once and gets its task when it
	// has been set up (SandboxGetTaskId waits for that); its timeout runs
	// from then.
	go sb.setUp(blocked)
	s.sandboxes[id] = sb
	s.tasks[sb.taskID] = sb
	return pb.SandboxCreateResponse_builder{SandboxId: id}.Build(), nil
}

// setUp confines the sandbox (its namespaces and root, see holder), makes
// its workdir and starts its entrypoint command, then marks it ready. A
// sandbox that cannot be set up ends as a failure saying why; nothing runs
// outside a confined root.
func (sb *sandbox) setUp(isolateNet bool) {
	defer close(sb.ready)
	h, err := startHolder(sb.dir, isolateNet)
	if err == nil && sb.def.HasWorkdir() {
		if out, merr := h.command("/", []string{"PATH=/usr/bin:/bin"}, "mkdir", "-p", "--", sb.workdir).CombinedOutput(); merr != nil {
			err = fmt.Errorf("cannot create workdir %s: %s", sb.workdir, strings.TrimSpace(string(out)))
		}
	}
	if err != nil {
		if h != nil {
			h.stop()
		}
		sb.finish(pb.GenericResult_GENERIC_STATUS_FAILURE, 0, "modalfake cannot set up the sandbox: "+err.Error())
		return
	}
	sb.mu.Lock()
	if sb.result != nil {
		// Terminated (or timed out) while it was being set up.
		sb.mu.Unlock()
		h.stop()
		return
	}
	sb.h = h
	if t := sb.def.GetTimeoutSecs(); t > 0 {
		sb.timer = time.AfterFunc(time.Duration(t)*time.Second, func() {
			sb.finish(pb.GenericResult_GENERIC_STATUS_TIMEOUT, 0, "Sandbox timed out")
		})
	}
	var entry *execProc
	if args := sb.def.GetEntrypointArgs(); len(args) > 0 {
		// The sandbox runs its command and ends with it.
		entry, err = sb.startProcess(args, sb.workdir, sb.commandEnv(nil), false, false)
		if err == nil {
			sb.execs[entrypointExec] = entry
		}
	}
	sb.mu.Unlock()
	switch {
	case err != nil:
		sb.finish(pb.GenericResult_GENERIC_STATUS_FAILURE, 0, "modalfake cannot start the sandbox's command: "+err.Error())
	case entry != nil:
		go func() {
			<-entry.done
			st := entry.status()
			code := st.GetCode()
			if st.HasSignal() {
				code = 128 + st.GetSignal()
			}
			result := pb.GenericResult_GENERIC_STATUS_SUCCESS
			if code != 0 {
				result = pb.GenericResult_GENERIC_STATUS_FAILURE
			}
			sb.finish(result, code, "")
		}()
	}
}

// isReady reports whether setUp has finished.
func (sb *sandbox) isReady() bool {
	select {
	case <-sb.ready:
		return true
	default:
		return false
	}
}

func mapValues(m map[string]string) []string {
	v := make([]string, 0, len(m))
	for _, x := range m {
		v = append(v, x)
	}
	return v
}

// SandboxGetTaskId reports the sandbox's task, withholding it for the first UnscheduledPolls calls.
func (c *controlPlane) SandboxGetTaskId(ctx context.Context, req *pb.SandboxGetTaskIdRequest) (*pb.SandboxGetTaskIdResponse, error) {
	sb, err := c.s.lookup(req.GetSandboxId())
	if err != nil {
		return nil, err
	}
	select {
	case <-sb.ready:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	sb.polls++
	if sb.polls <= sb.unscheduled && sb.result == nil {
		return pb.SandboxGetTaskIdResponse_builder{}.Build(), nil
	}
	return pb.SandboxGetTaskIdResponse_builder{TaskId: &sb.taskID, TaskResult: sb.result}.Build(), nil
}

// TaskGetCommandRouterAccess returns the router's https URL and the JWT for its Bearer header.
func (c *controlPlane) TaskGetCommandRouterAccess(ctx context.Context, req *pb.TaskGetCommandRouterAccessRequest) (*pb.TaskGetCommandRouterAccessResponse, error) {
	if _, err := c.s.runningTask(req.GetTaskId()); err != nil {
		return nil, err
	}
	return pb.TaskGetCommandRouterAccessResponse_builder{Jwt: c.s.routerJWT, Url: c.s.routerURL}.Build(), nil
}

// SandboxWait waits up to the request's timeout for the sandbox to finish and reports its result, if any.
func (c *controlPlane) SandboxWait(ctx context.Context, req *pb.SandboxWaitRequest) (*pb.SandboxWaitResponse, error) {
	sb, err := c.s.lookup(req.GetSandboxId())
	if err != nil {
		return nil, err
	}
	if t := req.GetTimeout(); t > 0 {
		timer := time.NewTimer(time.Duration(float64(t) * float64(time.Second)))
		defer timer.Stop()
		select {
		case <-sb.done:
		case <-timer.C:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return pb.SandboxWaitResponse_builder{Result: sb.result}.Build(), nil
}

// SandboxTerminate ends the sandbox (idempotently) and kills its processes.
func (c *controlPlane) SandboxTerminate(ctx context.Context, req *pb.SandboxTerminateRequest) (*pb.SandboxTerminateResponse, error) {
	sb, err := c.s.lookup(req.GetSandboxId())
	if err != nil {
		return nil, err
	}
	sb.mu.Lock()
	existing := sb.result
	sb.mu.Unlock()
	if existing != nil {
		return pb.SandboxTerminateResponse_builder{ExistingResult: existing}.Build(), nil
	}
	sb.finish(pb.GenericResult_GENERIC_STATUS_TERMINATED, 0, "Sandbox terminated")
	sb.wait()
	return pb.SandboxTerminateResponse_builder{}.Build(), nil
}

// SandboxTagsSet replaces the sandbox's tags.
func (c *controlPlane) SandboxTagsSet(ctx context.Context, req *pb.SandboxTagsSetRequest) (*emptypb.Empty, error) {
	sb, err := c.s.lookup(req.GetSandboxId())
	if err != nil {
		return nil, err
	}
	tags := map[string]string{}
	for _, t := range req.GetTags() {
		if t.GetTagName() == "" {
			return nil, status.Error(codes.InvalidArgument, "tag names must not be empty")
		}
		tags[t.GetTagName()] = t.GetTagValue()
	}
	sb.mu.Lock()
	sb.tags = tags
	sb.mu.Unlock()
	return &emptypb.Empty{}, nil
}

// SandboxTagsGet returns the sandbox's tags.
func (c *controlPlane) SandboxTagsGet(ctx context.Context, req *pb.SandboxTagsGetRequest) (*pb.SandboxTagsGetResponse, error) {
	sb, err := c.s.lookup(req.GetSandboxId())
	if err != nil {
		return nil, err
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return pb.SandboxTagsGetResponse_builder{Tags: tagList(sb.tags)}.Build(), nil
}

func tagList(m map[string]string) []*pb.SandboxTag {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]*pb.SandboxTag, 0, len(m))
	for _, k := range keys {
		out = append(out, pb.SandboxTag_builder{TagName: k, TagValue: m[k]}.Build())
	}
	return out
}

// SandboxList lists sandboxes newest first, one page before BeforeTimestamp, filtered by App and tags.
func (c *controlPlane) SandboxList(ctx context.Context, req *pb.SandboxListRequest) (*pb.SandboxListResponse, error) {
	s := c.s
	want := map[string]string{}
	for _, t := range req.GetTags() {
		want[t.GetTagName()] = t.GetTagValue()
	}
	s.mu.Lock()
	all := make([]*sandbox, 0, len(s.sandboxes))
	for _, sb := range s.sandboxes {
		all = append(all, sb)
	}
	s.mu.Unlock()
	// Newest first, paged by creation time, as the service does.
	slices.SortFunc(all, func(a, b *sandbox) int {
		switch {
		case a.created > b.created:
			return -1
		case a.created < b.created:
			return 1
		}
		return 0
	})
	var out []*pb.SandboxInfo
	for _, sb := range all {
		if len(out) == s.opts.ListPageSize {
			break
		}
		if before := req.GetBeforeTimestamp(); before != 0 && sb.created >= before {
			continue
		}
		if req.GetAppId() != "" && sb.appID != req.GetAppId() {
			continue
		}
		sb.mu.Lock()
		ok := req.GetIncludeFinished() || sb.result == nil
		for k, v := range want {
			if sb.tags[k] != v {
				ok = false
			}
		}
		info := pb.SandboxInfo_builder{
			Id: sb.id, CreatedAt: sb.created, AppId: sb.appID, Tags: tagList(sb.tags),
			Name: sb.name, ImageId: sb.def.GetImageId(), TimeoutSecs: sb.def.GetTimeoutSecs(),
			TaskInfo: pb.TaskInfo_builder{Id: sb.taskID, SandboxId: sb.id, StartedAt: sb.created, Result: sb.result}.Build(),
		}.Build()
		sb.mu.Unlock()
		if ok {
			out = append(out, info)
		}
	}
	return pb.SandboxListResponse_builder{Sandboxes: out}.Build(), nil
}

// SandboxGetFromName finds a running sandbox by its name in an App.
func (c *controlPlane) SandboxGetFromName(ctx context.Context, req *pb.SandboxGetFromNameRequest) (*pb.SandboxGetFromNameResponse, error) {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	appID := s.apps[req.GetAppName()]
	for _, sb := range s.sandboxes {
		if sb.appID == appID && sb.name != "" && sb.name == req.GetSandboxName() && !sb.finished() {
			return pb.SandboxGetFromNameResponse_builder{SandboxId: sb.id}.Build(), nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "Sandbox with name '%s' not found", req.GetSandboxName())
}

// SandboxSnapshotFs copies the sandbox's directory into a new image.
func (c *controlPlane) SandboxSnapshotFs(ctx context.Context, req *pb.SandboxSnapshotFsRequest) (*pb.SandboxSnapshotFsResponse, error) {
	s := c.s
	sb, err := s.lookup(req.GetSandboxId())
	if err != nil {
		return nil, err
	}
	if sb.finished() {
		return nil, status.Errorf(codes.FailedPrecondition, "Sandbox '%s' has already finished", sb.id)
	}
	s.mu.Lock()
	id := s.newID("im")
	s.mu.Unlock()
	dst := filepath.Join(s.dir, "snapshot-"+id)
	if err := copyTree(sb.dir, dst); err != nil {
		os.RemoveAll(dst)
		return pb.SandboxSnapshotFsResponse_builder{
			Result: pb.GenericResult_builder{Status: pb.GenericResult_GENERIC_STATUS_FAILURE, Exception: err.Error()}.Build(),
		}.Build(), nil
	}
	s.mu.Lock()
	base := s.images[sb.def.GetImageId()]
	s.images[id] = &image{id: id, commands: slices.Clone(base.commands), snapshot: dst}
	s.mu.Unlock()
	return pb.SandboxSnapshotFsResponse_builder{
		ImageId: id,
		Result:  pb.GenericResult_builder{Status: pb.GenericResult_GENERIC_STATUS_SUCCESS}.Build(),
	}.Build(), nil
}

// SandboxGetTunnels opens (once) a TLS tunnel for every encrypted port of the definition.
func (c *controlPlane) SandboxGetTunnels(ctx context.Context, req *pb.SandboxGetTunnelsRequest) (*pb.SandboxGetTunnelsResponse, error) {
	sb, err := c.s.lookup(req.GetSandboxId())
	if err != nil {
		return nil, err
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.result != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "Sandbox '%s' has already finished", sb.id)
	}
	var out []*pb.TunnelData
	for _, ps := range sb.def.GetOpenPorts().GetPorts() {
		if ps.GetUnencrypted() {
			return nil, status.Error(codes.Unimplemented, "modalfake: unencrypted ports are not faked")
		}
		t := sb.tunnels[ps.GetPort()]
		if t == nil {
			t, err = startTunnel(c.s.tlsConfig, ps.GetPort())
			if err != nil {
				return nil, status.Errorf(codes.Internal, "starting tunnel: %v", err)
			}
			sb.tunnels[ps.GetPort()] = t
		}
		out = append(out, pb.TunnelData_builder{Host: "127.0.0.1", Port: uint32(t.port()), ContainerPort: ps.GetPort()}.Build())
	}
	return pb.SandboxGetTunnelsResponse_builder{
		Result:  pb.GenericResult_builder{Status: pb.GenericResult_GENERIC_STATUS_SUCCESS}.Build(),
		Tunnels: out,
	}.Build(), nil
}

// fsResult is the reply of one ContainerFilesystemExec, fetched once with
// ContainerFilesystemExecGetOutput.
type fsResult struct {
	output [][]byte
	err    *pb.SystemErrorMessage
}

// ContainerFilesystemExec performs one file request and keeps its output for ContainerFilesystemExecGetOutput.
func (c *controlPlane) ContainerFilesystemExec(ctx context.Context, req *pb.ContainerFilesystemExecRequest) (*pb.ContainerFilesystemExecResponse, error) {
	sb, err := c.s.runningTask(req.GetTaskId())
	if err != nil {
		return nil, err
	}
	res, fd, err := sb.fsExec(req)
	if err != nil {
		return nil, err
	}
	c.s.mu.Lock()
	id := c.s.newID("fe")
	c.s.fsOps[id] = res
	c.s.mu.Unlock()
	sb.mu.Lock()
	sb.fsOps = append(sb.fsOps, id)
	sb.mu.Unlock()
	b := pb.ContainerFilesystemExecResponse_builder{ExecId: id}
	if fd != "" {
		b.FileDescriptor = &fd
	}
	return b.Build(), nil
}

// ContainerFilesystemExecGetOutput streams a file request's output in one
// batch that ends it (eof), or its system error in a batch of its own that
// does not: the clients take eof as success, so an error never comes with
// it. An output can be fetched again (the clients do, after a broken stream
// or an error) until its sandbox ends.
func (c *controlPlane) ContainerFilesystemExecGetOutput(req *pb.ContainerFilesystemExecGetOutputRequest, stream grpc.ServerStreamingServer[pb.FilesystemRuntimeOutputBatch]) error {
	c.s.mu.Lock()
	res := c.s.fsOps[req.GetExecId()]
	c.s.mu.Unlock()
	if res == nil {
		return status.Errorf(codes.NotFound, "filesystem exec '%s' not found", req.GetExecId())
	}
	if res.err != nil {
		return stream.Send(pb.FilesystemRuntimeOutputBatch_builder{Error: res.err}.Build())
	}
	return stream.Send(pb.FilesystemRuntimeOutputBatch_builder{Output: res.output, Eof: true}.Build())
}

// copyTree copies the directory src to dst (created if missing) with cp -a,
// keeping symbolic links, modes and times.
func copyTree(src, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	if out, err := exec.Command("cp", "-a", src+"/.", dst).CombinedOutput(); err != nil {
		return fmt.Errorf("cp -a: %v: %s", err, out)
	}
	return nil
}
