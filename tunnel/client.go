package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// HTTPClient returns an http.Client that calls the edge's Handler in process,
// without a network hop: for the host application's own agent. Requests go to
// any URL whose path is a route, such as "http://edge/tickets". Responses
// stream (an SSE event reaches the caller when the connector flushes it), and
// closing a response body or cancelling the request's context cancels the
// call.
func (e *Edge) HTTPClient() *http.Client {
	return &http.Client{Transport: inProcessTransport{h: e.handler}}
}

// ClientTransport returns an MCP Streamable HTTP client transport for route,
// for use with mcp.Client.Connect. It uses HTTPClient.
func (e *Edge) ClientTransport(route string) *mcp.StreamableClientTransport {
	return &mcp.StreamableClientTransport{Endpoint: "http://perimeter-edge/" + route, HTTPClient: e.HTTPClient()}
}

type inProcessTransport struct{ h http.Handler }

func (t inProcessTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(context.WithValue(req.Context(), inProcessKey{}, true))
	sreq := req.Clone(ctx)
	sreq.RequestURI = req.URL.RequestURI()
	sreq.RemoteAddr = "in-process"
	if sreq.Body == nil {
		sreq.Body = http.NoBody
	}
	pr, pw := io.Pipe()
	rw := &pipeWriter{header: make(http.Header), pw: pw, ready: make(chan struct{})}
	go func() {
		defer func() {
			if p := recover(); p != nil {
				pw.CloseWithError(fmt.Errorf("tunnel: edge handler aborted the response: %v", p))
			}
			rw.writeHeader(http.StatusOK)
			pw.Close()
		}()
		t.h.ServeHTTP(rw, sreq)
	}()
	select {
	case <-rw.ready:
	case <-ctx.Done():
		cancel()
		pr.CloseWithError(ctx.Err())
		return nil, ctx.Err()
	}
	return &http.Response{
		Status:        fmt.Sprintf("%d %s", rw.status, http.StatusText(rw.status)),
		StatusCode:    rw.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        rw.sent,
		Body:          &cancelBody{ReadCloser: pr, cancel: cancel},
		ContentLength: -1,
		Request:       req,
	}, nil
}

// pipeWriter is an http.ResponseWriter whose body goes through a pipe: a
// write returns when the reader has taken it, so nothing is buffered.
type pipeWriter struct {
	header http.Header
	sent   http.Header
	pw     *io.PipeWriter
	status int
	once   sync.Once
	ready  chan struct{}
}

func (w *pipeWriter) Header() http.Header { return w.header }

func (w *pipeWriter) WriteHeader(code int) {
	if code < 200 {
		return // 1xx informational responses are not relayed
	}
	w.writeHeader(code)
}

func (w *pipeWriter) writeHeader(code int) {
	w.once.Do(func() {
		w.status = code
		w.sent = w.header.Clone()
		close(w.ready)
	})
}

func (w *pipeWriter) Write(p []byte) (int, error) {
	w.writeHeader(http.StatusOK)
	return w.pw.Write(p)
}

// Flush sends the header if it has not been sent; body writes are never
// buffered.
func (w *pipeWriter) Flush() { w.writeHeader(http.StatusOK) }

type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	b.cancel()
	err := b.ReadCloser.Close()
	if errors.Is(err, io.ErrClosedPipe) {
		err = nil
	}
	return err
}
