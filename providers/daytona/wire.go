package daytona

// Wire structures of the Daytona control API and toolbox API (v0.190.0),
// with the JSON names of the OpenAPI specs. Only the fields the adapter
// reads or writes are declared.

// wireCreate is the control API's CreateSandbox.
type wireCreate struct {
	Name                string            `json:"name,omitempty"`
	Snapshot            string            `json:"snapshot,omitempty"`
	User                string            `json:"user,omitempty"`
	Env                 map[string]string `json:"env,omitempty"`
	Labels              map[string]string `json:"labels,omitempty"`
	Public              bool              `json:"public,omitempty"`
	NetworkBlockAll     bool              `json:"networkBlockAll,omitempty"`
	NetworkAllowList    string            `json:"networkAllowList,omitempty"`
	DomainAllowList     string            `json:"domainAllowList,omitempty"`
	Target              string            `json:"target,omitempty"`
	CPU                 int               `json:"cpu,omitempty"`
	GPU                 int               `json:"gpu,omitempty"`
	GPUType             []string          `json:"gpuType,omitempty"`
	Memory              int               `json:"memory,omitempty"`
	Disk                int               `json:"disk,omitempty"`
	AutoStopInterval    *int              `json:"autoStopInterval,omitempty"`
	AutoArchiveInterval *int              `json:"autoArchiveInterval,omitempty"`
	AutoDeleteInterval  *int              `json:"autoDeleteInterval,omitempty"`
	BuildInfo           *wireBuildInfo    `json:"buildInfo,omitempty"`
}

type wireBuildInfo struct {
	DockerfileContent string   `json:"dockerfileContent"`
	ContextHashes     []string `json:"contextHashes,omitempty"`
}

// wireSandbox is the control API's Sandbox (and SandboxListItem).
type wireSandbox struct {
	ID                  string            `json:"id"`
	OrganizationID      string            `json:"organizationId"`
	Name                string            `json:"name"`
	Snapshot            string            `json:"snapshot,omitempty"`
	User                string            `json:"user"`
	Env                 map[string]string `json:"env,omitempty"`
	Labels              map[string]string `json:"labels"`
	Public              bool              `json:"public"`
	NetworkBlockAll     bool              `json:"networkBlockAll"`
	NetworkAllowList    string            `json:"networkAllowList,omitempty"`
	DomainAllowList     string            `json:"domainAllowList,omitempty"`
	Target              string            `json:"target"`
	CPU                 float64           `json:"cpu"`
	GPU                 float64           `json:"gpu"`
	Memory              float64           `json:"memory"`
	Disk                float64           `json:"disk"`
	State               string            `json:"state,omitempty"`
	DesiredState        string            `json:"desiredState,omitempty"`
	ErrorReason         string            `json:"errorReason,omitempty"`
	Recoverable         bool              `json:"recoverable,omitempty"`
	AutoStopInterval    *float64          `json:"autoStopInterval,omitempty"`
	AutoArchiveInterval *float64          `json:"autoArchiveInterval,omitempty"`
	AutoDeleteInterval  *float64          `json:"autoDeleteInterval,omitempty"`
	CreatedAt           string            `json:"createdAt,omitempty"`
	UpdatedAt           string            `json:"updatedAt,omitempty"`
	LastActivityAt      string            `json:"lastActivityAt,omitempty"`
	SandboxClass        string            `json:"sandboxClass,omitempty"`
	ToolboxProxyURL     string            `json:"toolboxProxyUrl"`
}

// wireList is GET /sandbox in v0.190; v0.170 answered a plain array,
// which decodeList also accepts.
type wireList struct {
	Items      []wireSandbox `json:"items"`
	NextCursor *string       `json:"nextCursor"`
}

type wireNetworkSettings struct {
	NetworkBlockAll  *bool   `json:"networkBlockAll,omitempty"`
	NetworkAllowList *string `json:"networkAllowList,omitempty"`
	DomainAllowList  *string `json:"domainAllowList,omitempty"`
}

// wirePreview is PortPreviewUrl and SignedPortPreviewUrl.
type wirePreview struct {
	SandboxID string `json:"sandboxId"`
	URL       string `json:"url"`
	Token     string `json:"token"`
	Port      int    `json:"port,omitempty"`
}

type wireSnapshotReq struct {
	Name string `json:"name"`
}

// wireSnapshot is the control API's SnapshotDto (the fields read).
type wireSnapshot struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	State       string `json:"state"`
	ErrorReason string `json:"errorReason,omitempty"`
}

// Toolbox.

type wireExecute struct {
	Command string            `json:"command"`
	Cwd     string            `json:"cwd,omitempty"`
	Envs    map[string]string `json:"envs,omitempty"`
	Timeout int               `json:"timeout,omitempty"`
}

type wireExecuteResult struct {
	ExitCode int    `json:"exitCode"`
	Result   string `json:"result"`
}

type wireCreateSession struct {
	SessionID string `json:"sessionId"`
}

type wireSessionExec struct {
	Command  string `json:"command"`
	RunAsync bool   `json:"runAsync,omitempty"`
}

type wireSessionExecResult struct {
	CmdID    string `json:"cmdId"`
	ExitCode *int   `json:"exitCode,omitempty"`
}

type wireCommand struct {
	ID       string `json:"id"`
	Command  string `json:"command"`
	ExitCode *int   `json:"exitCode,omitempty"`
}

type wireInput struct {
	Data string `json:"data"`
}

type wireFileInfo struct {
	Name        string `json:"name"`
	Size        int64  `json:"size"`
	Mode        string `json:"mode"`
	Permissions string `json:"permissions"`
	IsDir       bool   `json:"isDir"`
	ModifiedAt  string `json:"modifiedAt"`
	ModTime     string `json:"modTime"`
	Owner       string `json:"owner"`
	Group       string `json:"group"`
}

type wirePtyCreate struct {
	ID   string            `json:"id"`
	Cols int               `json:"cols"`
	Rows int               `json:"rows"`
	Cwd  string            `json:"cwd,omitempty"`
	Envs map[string]string `json:"envs,omitempty"`
}

type wirePtyResize struct {
	Cols int `json:"cols"`
	Rows int `json:"rows"`
}

// wirePtyExit is the JSON close reason of the PTY WebSocket.
type wirePtyExit struct {
	ExitCode   *int   `json:"exitCode,omitempty"`
	ExitReason string `json:"exitReason,omitempty"`
	Error      string `json:"error,omitempty"`
}

// wireError is an error body: the daemon's {statusCode, message, code,
// timestamp, path, method}, or the API's {statusCode, message, error}.
type wireError struct {
	StatusCode int    `json:"statusCode"`
	Message    any    `json:"message"` // a string, or a list of strings from validation
	Code       string `json:"code"`
	Error      string `json:"error"`
	Path       string `json:"path"`
	Method     string `json:"method"`
}
