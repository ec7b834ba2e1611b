package tunnel

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func frame(payload string) []byte {
	b := append([]byte(nil), handshakeMagic[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	return append(b, payload...)
}

// rw is a handshake peer: reads come from in, writes go to out.
type rw struct {
	io.Reader
	out bytes.Buffer
}

func (r *rw) Write(p []byte) (int, error) { return r.out.Write(p) }

func testEdgeForHandshake(t testing.TB) *Edge {
	e, err := NewEdge(edgeOptions(t))
	require.NoError(t, err)
	return e
}

func TestHandshakeAcceptsOnlyTheRightToken(t *testing.T) {
	e := testEdgeForHandshake(t)
	good := frame(`{"token":"` + testToken + `","connector":"c1","routes":["r"],"connections":2}`)
	h, err := e.handshake(&rw{Reader: bytes.NewReader(good)}, nil)
	require.NoError(t, err)
	assert.Equal(t, "c1", h.Connector)
	assert.Empty(t, h.Token, "the edge does not keep the token")

	for name, in := range map[string][]byte{
		"wrong token":      frame(`{"token":"nope-nope-nope-nope","connector":"c1","routes":["r"]}`),
		"no token":         frame(`{"connector":"c1","routes":["r"]}`),
		"bad magic":        append([]byte("XXXX"), good[4:]...),
		"huge length":      append(append([]byte(nil), handshakeMagic[:]...), 0xff, 0xff, 0xff, 0xff),
		"zero length":      frame(""),
		"truncated":        good[:len(good)-3],
		"unknown field":    frame(`{"token":"` + testToken + `","connector":"c1","routes":["r"],"admin":true}`),
		"trailing data":    frame(`{"token":"` + testToken + `","connector":"c1","routes":["r"]} {}`),
		"dotted connector": frame(`{"token":"` + testToken + `","connector":"c.1","routes":["r"]}`),
		"no routes":        frame(`{"token":"` + testToken + `","connector":"c1","routes":[]}`),
		"bad route":        frame(`{"token":"` + testToken + `","connector":"c1","routes":["../x"]}`),
		"http request":     []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"empty":            nil,
	} {
		t.Run(name, func(t *testing.T) {
			peer := &rw{Reader: bytes.NewReader(in)}
			_, err := e.handshake(peer, nil)
			require.Error(t, err)
			if peer.out.Len() > 0 {
				var w welcome
				require.NoError(t, readFrame(&peer.out, &w))
				assert.False(t, w.OK)
			}
		})
	}
}

// FuzzHandshake feeds arbitrary bytes to the edge's side of the handshake.
// It must never panic, never read past a frame, and accept only a
// well-formed hello that carries the configured token.
func FuzzHandshake(f *testing.F) {
	f.Add(frame(`{"token":"` + testToken + `","connector":"c1","routes":["r"],"connections":2}`))
	f.Add(frame(`{"token":"` + testToken + `","connector":"c1","version":"x","routes":["a","b"]}`))
	f.Add(frame(`{"token":"wrong","connector":"c1","routes":["r"]}`))
	f.Add(frame(`{"connector":"","routes":null}`))
	f.Add(frame(`[]`))
	f.Add(frame(`{"token":` + strings.Repeat("[", 100) + `}`))
	f.Add([]byte("PTN1"))
	f.Add([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	f.Add([]byte{})
	e := testEdgeForHandshake(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		peer := &rw{Reader: r}
		h, err := e.handshake(peer, nil)
		consumed := len(in) - r.Len()
		if consumed > 8+maxHandshakeBytes {
			t.Fatalf("handshake read %d bytes, more than one frame", consumed)
		}
		if err != nil {
			return
		}
		// Accepted: the input must really hold a frame with the right token.
		var raw hello
		require.NoError(t, readFrame(bytes.NewReader(in), &raw))
		if raw.Token != testToken {
			t.Fatalf("accepted a hello with token %q", raw.Token)
		}
		if !ValidName(h.Connector) || len(h.Routes) == 0 {
			t.Fatalf("accepted an invalid hello %+v", h)
		}
		var w welcome
		require.NoError(t, readFrame(&peer.out, &w))
		if !w.OK {
			t.Fatal("accepted but answered not OK")
		}
	})
}

func TestTokenSetRefusesShortTokens(t *testing.T) {
	_, err := newTokenSet([]string{"short"})
	require.ErrorContains(t, err, "shorter than 16")
	s, err := newTokenSet([]string{"aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"})
	require.NoError(t, err)
	assert.True(t, s.match("bbbbbbbbbbbbbbbb"))
	assert.False(t, s.match("cccccccccccccccc"))
	assert.False(t, s.match(""))
}

func TestBackoffStaysWithinBounds(t *testing.T) {
	for attempt := range 40 {
		for range 50 {
			const base, ceiling = 100 * time.Millisecond, 2 * time.Second
			d := backoff(base, ceiling, attempt)
			assert.GreaterOrEqual(t, d, 10*time.Millisecond)
			assert.LessOrEqual(t, d, min(base<<min(attempt, 30), ceiling))
		}
	}
}

// FuzzWelcome feeds arbitrary bytes to the connector's side: reading the
// edge's answer must never panic, and only a well-formed frame with ok=true
// lets the connector proceed.
func FuzzWelcome(f *testing.F) {
	f.Add(frame(`{"ok":true}`))
	f.Add(frame(`{"ok":false,"error":"authentication failed"}`))
	f.Add(frame(`{"ok":"yes"}`))
	f.Add(frame(`{"ok":true,"extra":1}`))
	f.Add([]byte("PTN1\x00\x00\x00"))
	f.Add([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var w welcome
		err := readFrame(bytes.NewReader(in), &w)
		if err == nil && w.OK && !bytes.Contains(in, []byte(`"ok"`)) {
			t.Fatalf("ok without an ok field in %q", in)
		}
	})
}

// TestValidName checks the hand-written rule against the regular
// expression it replaced, on edge cases and fuzzed input.
func TestValidName(t *testing.T) {
	re := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$`)
	cases := []string{"", "a", "A9", "-a", "_a", "a-", "a_b-c", "a.b", "a b", "é", "a\x00",
		strings.Repeat("a", 63), strings.Repeat("a", 64), "9" + strings.Repeat("-", 62)}
	for _, c := range cases {
		assert.Equal(t, re.MatchString(c), ValidName(c), "%q", c)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const alphabet = "aZ09-_.é \x00"
	for range 20000 {
		b := make([]byte, rng.IntN(66))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		if re.MatchString(string(b)) != ValidName(string(b)) {
			t.Fatalf("%q: regexp %v, ValidName %v", b, re.MatchString(string(b)), ValidName(string(b)))
		}
	}
}
