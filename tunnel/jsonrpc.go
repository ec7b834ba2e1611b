package tunnel

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// This file is the policy's JSON-RPC reader. It must see exactly what the
// upstream will act on, so it is stricter than any decoder an upstream may
// use, and refuses what different decoders could read differently:
//
//   - keys match exactly (the MCP Go SDK decodes case-sensitively; Go's
//     encoding/json would match "Name" to name), and a key that differs from
//     one the reader uses only in case ("Method", "NAME", "paramſ") is
//     refused rather than ignored;
//   - a repeated key at a level the policy reads (the message object and its
//     params object) is refused: decoders disagree on which copy wins;
//   - the method, the tool/prompt name and the resource URI must be JSON
//     strings of valid UTF-8 with no lone surrogate escapes (decoders
//     replace those differently);
//   - nothing may follow the message (the SDK's decoder would ignore it; a
//     different upstream might not);
//   - the whole body must be well-formed JSON, nested at most maxJSONDepth
//     deep (the SDK's limit).
//
// It reads the body once, without building values for the parts the policy
// does not need, so a large tools/call argument costs one linear scan.

// maxJSONDepth is the nesting the MCP Go SDK accepts.
const maxJSONDepth = 1000

// rpcMessage is the part of one JSON-RPC message the policy reads.
type rpcMessage struct {
	// ID is the raw "id" value, or nil when absent.
	ID []byte
	// Method is the "method" value; hasMethod reports the key was present
	// (a response has none).
	Method    string
	hasMethod bool
	// paramName and paramURI are params.name and params.uri when params is
	// an object with string values for them.
	paramName, paramURI string
	hasName, hasURI     bool
}

// name returns the MCP "name" of a message: params.name for tools/call and
// prompts/get, params.uri for resources/read, "" otherwise.
func (m *rpcMessage) name() string {
	switch m.Method {
	case "tools/call", "prompts/get":
		return m.paramName
	case "resources/read":
		return m.paramURI
	}
	return ""
}

// messageKeys are the keys of a JSON-RPC message; a case variant of any of
// them is refused.
var messageKeys = []string{"jsonrpc", "id", "method", "params", "result", "error"}

// paramKeys are the params keys the policy reads.
var paramKeys = []string{"name", "uri"}

// parseMessages reads a POST body: one JSON-RPC message, or (batch) an array
// of them. It refuses whatever the policy could read differently from the
// upstream (see the comment at the top of this file).
func parseMessages(body []byte) (msgs []rpcMessage, batch bool, err error) {
	s := &scanner{data: body}
	s.skipSpace()
	if s.pos >= len(s.data) {
		return nil, false, errors.New("empty body")
	}
	if s.data[s.pos] == '[' {
		batch = true
		s.pos++
		s.skipSpace()
		if s.peek() == ']' {
			return nil, true, errors.New("empty batch")
		}
		for {
			s.skipSpace()
			m, err := s.message()
			if err != nil {
				return nil, true, fmt.Errorf("batch element %d: %w", len(msgs), err)
			}
			msgs = append(msgs, m)
			s.skipSpace()
			c := s.next()
			if c == ']' {
				break
			}
			if c != ',' {
				return nil, true, s.errorf("expected , or ] in batch")
			}
		}
	} else {
		m, err := s.message()
		if err != nil {
			return nil, false, err
		}
		msgs = []rpcMessage{m}
	}
	s.skipSpace()
	if s.pos != len(s.data) {
		return nil, batch, s.errorf("data after the JSON-RPC message")
	}
	return msgs, batch, nil
}

type scanner struct {
	data []byte
	pos  int
}

func (s *scanner) errorf(format string, args ...any) error {
	return fmt.Errorf("offset %d: %s", s.pos, fmt.Sprintf(format, args...))
}

func (s *scanner) peek() byte {
	if s.pos < len(s.data) {
		return s.data[s.pos]
	}
	return 0
}

func (s *scanner) next() byte {
	if s.pos < len(s.data) {
		c := s.data[s.pos]
		s.pos++
		return c
	}
	s.pos++
	return 0
}

func (s *scanner) skipSpace() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// caseVariant returns the key of known that k equals up to case but not
// exactly, or "".
func caseVariant(k string, known []string) string {
	for _, want := range known {
		if k != want && strings.EqualFold(k, want) {
			return want
		}
	}
	return ""
}

// message reads one JSON-RPC message object.
func (s *scanner) message() (rpcMessage, error) {
	var m rpcMessage
	if s.next() != '{' {
		s.pos--
		return m, s.errorf("a JSON-RPC message must be a JSON object")
	}
	var seen []string
	s.skipSpace()
	if s.peek() == '}' {
		s.pos++
		return m, nil
	}
	for {
		s.skipSpace()
		key, err := s.exactString()
		if err != nil {
			return m, fmt.Errorf("key: %w", err)
		}
		for _, k := range seen {
			if k == key {
				return m, s.errorf("duplicate key %q", key)
			}
		}
		if len(seen) < 64 {
			seen = append(seen, key)
		} else {
			return m, s.errorf("too many keys in a JSON-RPC message")
		}
		if v := caseVariant(key, messageKeys); v != "" {
			return m, s.errorf("key %q differs from %q only in case", key, v)
		}
		s.skipSpace()
		if s.next() != ':' {
			return m, s.errorf("expected :")
		}
		s.skipSpace()
		switch key {
		case "method":
			if s.peek() != '"' {
				return m, s.errorf("method is not a string")
			}
			if m.Method, err = s.exactString(); err != nil {
				return m, fmt.Errorf("method: %w", err)
			}
			m.hasMethod = true
		case "id":
			start := s.pos
			switch c := s.peek(); {
			case c == '"':
				err = s.skipString()
			case c == '-' || (c >= '0' && c <= '9'):
				err = s.skipNumber()
			case c == 'n':
				err = s.literal("null")
			default:
				return m, s.errorf("id is not a string, number or null")
			}
			if err != nil {
				return m, fmt.Errorf("id: %w", err)
			}
			m.ID = s.data[start:s.pos]
		case "params":
			if s.peek() == '{' {
				if err := s.params(&m); err != nil {
					return m, fmt.Errorf("params: %w", err)
				}
			} else if err := s.skipValue(1); err != nil {
				return m, fmt.Errorf("params: %w", err)
			}
		case "jsonrpc":
			if s.peek() != '"' {
				return m, s.errorf("jsonrpc is not a string")
			}
			v, err := s.exactString()
			if err != nil {
				return m, fmt.Errorf("jsonrpc: %w", err)
			}
			if v != "2.0" {
				return m, s.errorf("jsonrpc is %q, want \"2.0\"", v)
			}
		default:
			if err := s.skipValue(1); err != nil {
				return m, err
			}
		}
		s.skipSpace()
		switch s.next() {
		case ',':
			continue
		case '}':
			return m, nil
		default:
			s.pos--
			return m, s.errorf("expected , or } in object")
		}
	}
}

// params reads the params object of m, noting name and uri.
func (s *scanner) params(m *rpcMessage) error {
	s.pos++ // {
	var seen []string
	s.skipSpace()
	if s.peek() == '}' {
		s.pos++
		return nil
	}
	for {
		s.skipSpace()
		key, err := s.exactString()
		if err != nil {
			return fmt.Errorf("key: %w", err)
		}
		for _, k := range seen {
			if k == key {
				return s.errorf("duplicate key %q", key)
			}
		}
		if len(seen) >= 256 {
			return s.errorf("too many keys in params")
		}
		seen = append(seen, key)
		if v := caseVariant(key, paramKeys); v != "" {
			return s.errorf("key %q differs from %q only in case", key, v)
		}
		s.skipSpace()
		if s.next() != ':' {
			return s.errorf("expected :")
		}
		s.skipSpace()
		switch {
		case (key == "name" || key == "uri") && s.peek() == '"':
			v, err := s.exactString()
			if err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
			if key == "name" {
				m.paramName, m.hasName = v, true
			} else {
				m.paramURI, m.hasURI = v, true
			}
		case key == "name" || key == "uri":
			// Not a string: the SDK cannot decode these params; nor may a
			// non-string slip past a name rule.
			return s.errorf("%s is not a string", key)
		default:
			if err := s.skipValue(2); err != nil {
				return err
			}
		}
		s.skipSpace()
		switch s.next() {
		case ',':
			continue
		case '}':
			return nil
		default:
			s.pos--
			return s.errorf("expected , or } in object")
		}
	}
}

// skipValue skips one JSON value at nesting depth (1 for a member of the
// message object), checking that it is well formed.
func (s *scanner) skipValue(depth int) error {
	switch c := s.peek(); {
	case c == '"':
		return s.skipString()
	case c == '{' || c == '[':
		return s.skipContainer(depth)
	case c == '-' || (c >= '0' && c <= '9'):
		return s.skipNumber()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == 0 && s.pos >= len(s.data):
		return s.errorf("unexpected end of JSON")
	default:
		return s.errorf("invalid character %q looking for a value", c)
	}
}

// skipContainer skips an object or array iteratively (no recursion, so deep
// nesting costs no stack), up to maxJSONDepth levels in all.
func (s *scanner) skipContainer(depth int) error {
	var stack []byte // the closing bracket of each open container
	for {
		// At a value position.
		switch s.peek() {
		case '{', '[':
			if depth+len(stack) >= maxJSONDepth {
				return s.errorf("JSON nested deeper than %d", maxJSONDepth)
			}
			open := s.next()
			close := byte('}')
			if open == '[' {
				close = ']'
			}
			stack = append(stack, close)
			s.skipSpace()
			if s.peek() == close {
				s.pos++
				stack = stack[:len(stack)-1]
				break
			}
			if close == '}' {
				if err := s.objectKey(); err != nil {
					return err
				}
			}
			continue
		default:
			if err := s.skipValue(depth + len(stack)); err != nil {
				return err
			}
		}
		// After a value: close containers or move to the next member.
		for {
			if len(stack) == 0 {
				return nil
			}
			s.skipSpace()
			c := s.next()
			if c == stack[len(stack)-1] {
				stack = stack[:len(stack)-1]
				continue
			}
			if c != ',' {
				s.pos--
				return s.errorf("expected , or %c", stack[len(stack)-1])
			}
			s.skipSpace()
			if stack[len(stack)-1] == '}' {
				if err := s.objectKey(); err != nil {
					return err
				}
			}
			break
		}
	}
}

// objectKey skips `"key" :` and the space after it.
func (s *scanner) objectKey() error {
	if s.peek() != '"' {
		return s.errorf("expected an object key")
	}
	if err := s.skipString(); err != nil {
		return err
	}
	s.skipSpace()
	if s.next() != ':' {
		s.pos--
		return s.errorf("expected :")
	}
	s.skipSpace()
	return nil
}

func (s *scanner) literal(lit string) error {
	if len(s.data)-s.pos < len(lit) || string(s.data[s.pos:s.pos+len(lit)]) != lit {
		return s.errorf("invalid literal")
	}
	s.pos += len(lit)
	return nil
}

// skipNumber skips a number in JSON's grammar.
func (s *scanner) skipNumber() error {
	start := s.pos
	if s.peek() == '-' {
		s.pos++
	}
	digits := func() int {
		n := 0
		for s.pos < len(s.data) && s.data[s.pos] >= '0' && s.data[s.pos] <= '9' {
			s.pos++
			n++
		}
		return n
	}
	if s.peek() == '0' {
		s.pos++
	} else if digits() == 0 {
		return s.errorf("invalid number")
	}
	if s.peek() == '.' {
		s.pos++
		if digits() == 0 {
			return s.errorf("invalid number")
		}
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.pos++
		if c := s.peek(); c == '+' || c == '-' {
			s.pos++
		}
		if digits() == 0 {
			return s.errorf("invalid number")
		}
	}
	if s.pos == start {
		return s.errorf("invalid number")
	}
	return nil
}

// skipString skips a JSON string, checking its escapes and that it holds no
// control characters.
func (s *scanner) skipString() error {
	if s.next() != '"' {
		s.pos--
		return s.errorf("expected a string")
	}
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		switch {
		case c == '"':
			s.pos++
			return nil
		case c == '\\':
			s.pos++
			switch s.next() {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if !isHex4(s.data[min(s.pos, len(s.data)):]) {
					return s.errorf("invalid \\u escape")
				}
				s.pos += 4
			default:
				s.pos--
				return s.errorf("invalid escape in string")
			}
		case c < 0x20:
			return s.errorf("control character in string")
		default:
			s.pos++
		}
	}
	return s.errorf("unterminated string")
}

func isHex4(b []byte) bool {
	if len(b) < 4 {
		return false
	}
	for _, c := range b[:4] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// exactString reads a JSON string and decodes it. It refuses invalid UTF-8
// and lone surrogate escapes, which decoders replace differently.
func (s *scanner) exactString() (string, error) {
	start := s.pos
	if err := s.skipString(); err != nil {
		return "", err
	}
	raw := s.data[start+1 : s.pos-1]
	if !utf8.Valid(raw) {
		return "", fmt.Errorf("offset %d: string is not valid UTF-8", start)
	}
	if !strings.ContainsRune(string(raw), '\\') {
		return string(raw), nil
	}
	var b strings.Builder
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			b.WriteByte(c)
			i++
			continue
		}
		switch raw[i+1] {
		case '"', '\\', '/':
			b.WriteByte(raw[i+1])
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'u':
			r1, _ := strconv.ParseUint(string(raw[i+2:i+6]), 16, 32)
			i += 6
			r := rune(r1)
			if utf16.IsSurrogate(r) {
				if r >= 0xDC00 || i+6 > len(raw) || raw[i] != '\\' || raw[i+1] != 'u' {
					return "", fmt.Errorf("offset %d: lone surrogate in string", start)
				}
				r2, _ := strconv.ParseUint(string(raw[i+2:i+6]), 16, 32)
				r = utf16.DecodeRune(r, rune(r2))
				if r == utf8.RuneError {
					return "", fmt.Errorf("offset %d: lone surrogate in string", start)
				}
				i += 6
			}
			b.WriteRune(r)
			continue
		}
		i += 2
	}
	return b.String(), nil
}
