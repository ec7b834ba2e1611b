package vercel

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"unicode/utf16"
	"unicode/utf8"
)

// lineReader reads NDJSON lines of any length up to maxLine, reusing its
// buffer: a line is valid until the next call.
type lineReader struct {
	br  *bufio.Reader
	buf []byte
	out []byte // scratch for unescaped log data
}

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, 256<<10)}
}

// next returns the next non-blank line without its newline. A line cut
// before its newline is io.ErrUnexpectedEOF.
func (lr *lineReader) next() ([]byte, error) {
	for {
		lr.buf = lr.buf[:0]
		for {
			chunk, err := lr.br.ReadSlice('\n')
			if len(lr.buf)+len(chunk) > maxLine {
				return nil, fmt.Errorf("NDJSON line longer than %d bytes", maxLine)
			}
			lr.buf = append(lr.buf, chunk...)
			if err == bufio.ErrBufferFull {
				continue
			}
			if err != nil {
				if err == io.EOF && len(bytes.TrimSpace(lr.buf)) > 0 {
					err = io.ErrUnexpectedEOF
				}
				return nil, err
			}
			break
		}
		if line := bytes.TrimSpace(lr.buf); len(line) > 0 {
			return line, nil
		}
	}
}

// readLine returns the next line, parsed. Log lines of the usual shape
// ({"stream":"stdout"|"stderr","data":"…"}) take a fast path that decodes
// the string in place; anything else goes through encoding/json.
func (lr *lineReader) readLine() (streamLine, []byte, error) {
	line, err := lr.next()
	if err != nil {
		return streamLine{}, nil, err
	}
	for _, stream := range [...]string{"stdout", "stderr"} {
		prefix := `{"stream":"` + stream + `","data":"`
		if bytes.HasPrefix(line, []byte(prefix)) && bytes.HasSuffix(line, []byte(`"}`)) {
			if out, ok := unescape(lr.out[:0], line[len(prefix):len(line)-2]); ok {
				lr.out = out
				return streamLine{Stream: stream}, out, nil
			}
		}
	}
	var l streamLine
	if err := json.Unmarshal(line, &l); err != nil {
		return l, nil, fmt.Errorf("bad NDJSON line: %w", err)
	}
	if l.Stream == "stdout" || l.Stream == "stderr" {
		var s string
		if err := json.Unmarshal(l.Data, &s); err != nil {
			return l, nil, fmt.Errorf("bad %s log line: %w", l.Stream, err)
		}
		return l, []byte(s), nil
	}
	return l, nil, nil
}

// unescape appends the JSON string body s, decoded, to dst. It reports
// false for anything it does not decode exactly as encoding/json would
// (an unescaped quote or control byte, a bad escape, invalid UTF-8), so the
// caller can fall back.
func unescape(dst, s []byte) ([]byte, bool) {
	nonASCII := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c < 0x20:
			return dst, false
		case c >= 0x80:
			nonASCII = true
			dst = append(dst, c)
		case c != '\\':
			dst = append(dst, c)
		default:
			i++
			if i >= len(s) {
				return dst, false
			}
			switch s[i] {
			case '"', '\\', '/':
				dst = append(dst, s[i])
			case 'b':
				dst = append(dst, '\b')
			case 'f':
				dst = append(dst, '\f')
			case 'n':
				dst = append(dst, '\n')
			case 'r':
				dst = append(dst, '\r')
			case 't':
				dst = append(dst, '\t')
			case 'u':
				r, ok := hex4(s[i+1:])
				if !ok {
					return dst, false
				}
				i += 4
				if utf16.IsSurrogate(r) {
					r2, ok := rune(0), false
					if i+2 < len(s) && s[i+1] == '\\' && s[i+2] == 'u' {
						r2, ok = hex4(s[i+3:])
					}
					if !ok {
						return dst, false // a lone surrogate: let encoding/json decide
					}
					r = utf16.DecodeRune(r, r2)
					if r == utf8.RuneError {
						return dst, false
					}
					i += 6
				}
				dst = utf8.AppendRune(dst, r)
			default:
				return dst, false
			}
		}
	}
	if nonASCII && !utf8.Valid(dst) {
		return dst, false
	}
	return dst, true
}

func hex4(s []byte) (rune, bool) {
	if len(s) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range s[:4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	return r, true
}
