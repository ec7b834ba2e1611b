package modalfake

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	pb "github.com/modal-labs/libmodal/modal-go/proto/modal_proto"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fsExec performs one filesystem request in the sandbox's root, as the container's
// filesystem agent does, and returns its output or its system error. A
// malformed request is a gRPC error; a failed file operation is an error
// carried in the output batch, which the SDK turns into SandboxFilesystemError.
func (sb *sandbox) fsExec(req *pb.ContainerFilesystemExecRequest) (*fsResult, string, error) {
	switch req.WhichFileExecRequestOneof() {
	case pb.ContainerFilesystemExecRequest_FileOpenRequest_case:
		r := req.GetFileOpenRequest()
		flag, err := openFlags(r.GetMode())
		if err != nil {
			return nil, "", err
		}
		name := r.GetPath()
		if !filepath.IsAbs(name) {
			name = filepath.Join(sb.workdir, name)
		}
		f, err := sb.openFile(name, flag, 0o644)
		if err != nil {
			return errResult(err), "", nil
		}
		if fi, err := f.Stat(); err == nil && fi.IsDir() {
			f.Close()
			return errResult(&fs.PathError{Op: "open", Path: r.GetPath(), Err: syscall.EISDIR}), "", nil
		}
		sb.mu.Lock()
		defer sb.mu.Unlock()
		if sb.result != nil {
			f.Close()
			return nil, "", status.Error(codes.FailedPrecondition, "task has finished")
		}
		sb.s.mu.Lock()
		fd := sb.s.newID("fd")
		sb.s.mu.Unlock()
		sb.files[fd] = f
		return &fsResult{}, fd, nil
	case pb.ContainerFilesystemExecRequest_FileReadRequest_case:
		r := req.GetFileReadRequest()
		f, err := sb.file(r.GetFileDescriptor())
		if err != nil {
			return nil, "", err
		}
		var data []byte
		if r.HasN() {
			data = make([]byte, r.GetN())
			n, err := io.ReadFull(f, data)
			if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
				return errResult(err), "", nil
			}
			data = data[:n]
		} else if data, err = io.ReadAll(f); err != nil {
			return errResult(err), "", nil
		}
		return &fsResult{output: [][]byte{data}}, "", nil
	case pb.ContainerFilesystemExecRequest_FileWriteRequest_case:
		r := req.GetFileWriteRequest()
		f, err := sb.file(r.GetFileDescriptor())
		if err != nil {
			return nil, "", err
		}
		if _, err := f.Write(r.GetData()); err != nil {
			return errResult(err), "", nil
		}
		return &fsResult{}, "", nil
	case pb.ContainerFilesystemExecRequest_FileFlushRequest_case:
		f, err := sb.file(req.GetFileFlushRequest().GetFileDescriptor())
		if err != nil {
			return nil, "", err
		}
		if err := f.Sync(); err != nil {
			return errResult(err), "", nil
		}
		return &fsResult{}, "", nil
	case pb.ContainerFilesystemExecRequest_FileCloseRequest_case:
		fd := req.GetFileCloseRequest().GetFileDescriptor()
		f, err := sb.file(fd)
		if err != nil {
			return nil, "", err
		}
		sb.mu.Lock()
		delete(sb.files, fd)
		sb.mu.Unlock()
		if err := f.Close(); err != nil {
			return errResult(err), "", nil
		}
		return &fsResult{}, "", nil
	default:
		return nil, "", status.Errorf(codes.Unimplemented, "modalfake: filesystem request %v is not faked", req.WhichFileExecRequestOneof())
	}
}

func (sb *sandbox) file(fd string) (*os.File, error) {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	f := sb.files[fd]
	if f == nil {
		return nil, status.Errorf(codes.InvalidArgument, "unknown file descriptor %q", fd)
	}
	return f, nil
}

// openFlags reads a Python-style mode ("r", "w", "a", "x", with "+" and "b").
func openFlags(mode string) (int, error) {
	m := strings.ReplaceAll(mode, "b", "")
	plus := strings.Contains(m, "+")
	m = strings.ReplaceAll(m, "+", "")
	var flag int
	switch m {
	case "r":
		flag = os.O_RDONLY
		if plus {
			flag = os.O_RDWR
		}
	case "w":
		flag = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	case "a":
		flag = os.O_WRONLY | os.O_CREATE | os.O_APPEND
	case "x":
		flag = os.O_WRONLY | os.O_CREATE | os.O_EXCL
	default:
		return 0, status.Errorf(codes.InvalidArgument, "invalid file mode %q", mode)
	}
	if plus && m != "r" {
		flag = flag&^os.O_WRONLY | os.O_RDWR
	}
	return flag, nil
}

// errResult turns a host error into the system error the agent reports.
func errResult(err error) *fsResult {
	code := pb.SystemErrorCode_SYSTEM_ERROR_CODE_IO
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if _, ok := pb.SystemErrorCode_name[int32(errno)]; ok {
			code = pb.SystemErrorCode(errno)
		}
	}
	return &fsResult{err: pb.SystemErrorMessage_builder{ErrorCode: code, ErrorMessage: err.Error()}.Build()}
}

// openFile opens name as the sandbox sees it, inside its root.
func (sb *sandbox) openFile(name string, flag int, perm os.FileMode) (*os.File, error) {
	return sb.h.open(name, flag, uint32(perm))
}
