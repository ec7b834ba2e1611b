package cloudflare

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// maxEventLine bounds one SSE line (one base64 chunk).
const maxEventLine = 16 << 20

// decodeExec reads an exec SSE stream: events separated by a blank line,
// each with an "event:" line and one "data:" line per line of payload. Each
// stdout or stderr chunk is decoded and written before the next line is
// read, so output arrives as the command produces it.
func decodeExec(body io.Reader, stdout, stderr io.Writer) (int, error) {
	br := bufio.NewReaderSize(body, 64<<10)
	var (
		event string
		data  bytes.Buffer
		has   bool
		buf   []byte
	)
	for {
		line, err := readLine(br)
		if err != nil {
			if err == io.EOF {
				return 0, fmt.Errorf("the exec stream ended without an exit or error event: %w", io.ErrUnexpectedEOF)
			}
			return 0, fmt.Errorf("reading the exec stream: %w", err)
		}
		if len(line) == 0 {
			if !has && event == "" {
				continue
			}
			code, done, err := dispatch(event, data.Bytes(), stdout, stderr, &buf)
			if done || err != nil {
				return code, err
			}
			event, has = "", false
			data.Reset()
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "event":
			event = string(value)
		case "data":
			if has {
				data.WriteByte('\n')
			}
			data.Write(value)
			has = true
		}
		// Comments (":…"), "id" and "retry" are ignored.
	}
}

// readLine returns one line without its end (LF, CRLF or CR-less), or
// io.EOF at the end of the stream. A final line without an end is
// returned; the EOF follows on the next call.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		line = append(line, frag...)
		if len(line) > maxEventLine {
			return nil, errors.New("an SSE line is longer than 16 MiB")
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF && len(line) > 0 {
				// A last line cut short is not a complete event.
				return nil, io.EOF
			}
			return nil, err
		}
		line = bytes.TrimSuffix(line[:len(line)-1], []byte("\r"))
		return line, nil
	}
}

func dispatch(event string, data []byte, stdout, stderr io.Writer, buf *[]byte) (int, bool, error) {
	switch event {
	case eventStdout, eventStderr:
		n := base64.StdEncoding.DecodedLen(len(data))
		if cap(*buf) < n {
			*buf = make([]byte, n)
		}
		n, err := base64.StdEncoding.Decode((*buf)[:n], bytes.ReplaceAll(data, []byte("\n"), nil))
		if err != nil {
			return 0, true, fmt.Errorf("the exec stream's %s event is not base64: %w", event, err)
		}
		w := stdout
		if event == eventStderr {
			w = stderr
		}
		if w != nil && n > 0 {
			if _, err := w.Write((*buf)[:n]); err != nil {
				return 0, true, &writeError{err}
			}
		}
		return 0, false, nil
	case eventExit:
		var e exitEvent
		if err := json.Unmarshal(data, &e); err != nil || e.ExitCode == nil {
			return 0, true, fmt.Errorf("the exec stream's exit event %q has no exit_code", data)
		}
		return *e.ExitCode, true, nil
	case eventError:
		var e errorBody
		if err := json.Unmarshal(data, &e); err != nil {
			e.Error = string(data)
		}
		return 0, true, &APIError{Status: http.StatusOK, Code: e.Code, Message: e.Error}
	}
	// Unknown events are skipped, as SSE clients do.
	return 0, false, nil
}

// writeError is a failure of the caller's writer, which ends the stream.
type writeError struct{ err error }

func (e *writeError) Error() string { return "writing command output: " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }
