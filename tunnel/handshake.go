package tunnel

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// ALPN is the TLS application protocol a connector and an edge negotiate on
// the carrier connection. An edge refuses a connection that did not negotiate
// it, so an ordinary HTTPS client that reaches the edge's listener is turned
// away during the TLS handshake.
const ALPN = "perimeter-tunnel/1"

// handshakeMagic starts every handshake frame.
var handshakeMagic = [4]byte{'P', 'T', 'N', '1'}

// maxHandshakeBytes bounds a handshake frame's JSON payload.
const maxHandshakeBytes = 16 << 10

// hello is what a connector sends first on a carrier connection, after TLS.
type hello struct {
	// Token authenticates the connector; empty when a client certificate does.
	Token string `json:"token,omitempty"`
	// Connector is the connector's ID; it prefixes the session IDs it owns.
	Connector string `json:"connector"`
	// Version is the connector's software version, for the edge's status.
	Version string `json:"version,omitempty"`
	// Routes are the route names the connector serves.
	Routes []string `json:"routes"`
	// Connections is how many carrier connections the connector keeps.
	Connections int `json:"connections,omitempty"`
}

// welcome is the edge's answer to a hello.
type welcome struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// ValidName reports whether s is usable as a connector ID, route name or
// client name: 1 to 63 characters from [A-Za-z0-9_-], starting with a letter
// or digit. Names never contain "." so that a stdio session ID
// "<connector>.<random>" splits unambiguously.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !alnum && (i == 0 || c != '-' && c != '_') {
			return false
		}
	}
	return true
}

// writeFrame writes magic, a 4-byte big-endian length and v as JSON.
func writeFrame(w io.Writer, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(body) > maxHandshakeBytes {
		return fmt.Errorf("handshake frame of %d bytes exceeds %d", len(body), maxHandshakeBytes)
	}
	buf := make([]byte, 0, 8+len(body))
	buf = append(buf, handshakeMagic[:]...)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(body)))
	buf = append(buf, body...)
	_, err = w.Write(buf)
	return err
}

// readFrame reads one frame written by writeFrame into v, refusing a wrong
// magic, an oversized length and JSON with unknown fields or trailing data.
func readFrame(r io.Reader, v any) error {
	var head [8]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return fmt.Errorf("reading handshake header: %w", err)
	}
	if !bytes.Equal(head[:4], handshakeMagic[:]) {
		return errors.New("not a perimeter tunnel handshake (bad magic)")
	}
	n := binary.BigEndian.Uint32(head[4:])
	if n == 0 || n > maxHandshakeBytes {
		return fmt.Errorf("handshake frame length %d out of range 1..%d", n, maxHandshakeBytes)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return fmt.Errorf("reading handshake body: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decoding handshake: %w", err)
	}
	if dec.More() {
		return errors.New("decoding handshake: trailing data")
	}
	return nil
}

// readHello reads and validates a connector's hello. It checks the shape only;
// authentication is the edge's job.
func readHello(r io.Reader) (*hello, error) {
	var h hello
	if err := readFrame(r, &h); err != nil {
		return nil, err
	}
	if !ValidName(h.Connector) {
		return nil, fmt.Errorf("handshake: invalid connector id %q", h.Connector)
	}
	if len(h.Routes) == 0 || len(h.Routes) > 1024 {
		return nil, fmt.Errorf("handshake: connector %q advertises %d routes (want 1..1024)", h.Connector, len(h.Routes))
	}
	for _, rt := range h.Routes {
		if !ValidName(rt) {
			return nil, fmt.Errorf("handshake: connector %q advertises invalid route name %q", h.Connector, rt)
		}
	}
	if h.Connections < 0 || h.Connections > 64 {
		return nil, fmt.Errorf("handshake: connector %q asks for %d connections (want 0..64)", h.Connector, h.Connections)
	}
	if len(h.Version) > 64 {
		return nil, fmt.Errorf("handshake: connector %q version string too long", h.Connector)
	}
	return &h, nil
}

// tokenSet holds SHA-256 digests of accepted connector tokens, so that tokens
// are compared in constant time and the plaintext is not kept.
type tokenSet [][sha256.Size]byte

func newTokenSet(tokens []string) (tokenSet, error) {
	var s tokenSet
	for i, t := range tokens {
		if len(t) < 16 {
			return nil, fmt.Errorf("token %d is shorter than 16 characters", i)
		}
		s = append(s, sha256.Sum256([]byte(t)))
	}
	return s, nil
}

// match reports whether token is one of the set, in time independent of which
// one (if any) matched.
func (s tokenSet) match(token string) bool { return s.index(token) >= 0 }

// index returns the position of token in the set, or -1, comparing against
// every entry in constant time.
func (s tokenSet) index(token string) int {
	d := sha256.Sum256([]byte(token))
	found := -1
	for i := range s {
		eq := subtle.ConstantTimeCompare(d[:], s[i][:])
		found = subtle.ConstantTimeSelect(eq, i, found)
	}
	return found
}
