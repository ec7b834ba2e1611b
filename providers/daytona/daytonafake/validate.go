package daytonafake

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// The OpenAPI specs of Daytona v0.190.0, byte-identical to the ones
// Daytona publishes (libs/api-client-go/api/openapi.yaml and
// libs/toolbox-api-client-go/api/openapi.yaml).
//
//go:embed testdata/api-v0.190.0.yaml testdata/toolbox-v0.190.0.yaml
var specs embed.FS

// maxValidatedBody is the largest request body whose content is validated;
// a larger one (a file upload) has its parameters, headers and content
// type validated, and its multipart form checked by the handler, so that
// a 64 MiB upload is not held in memory.
const maxValidatedBody = 8 << 20

// validator checks requests and responses against one spec.
type validator struct {
	name   string // "control API" or "toolbox API"
	router routers.Router
}

func loadValidator(name, file string) (*validator, error) {
	raw, err := specs.ReadFile(file)
	if err != nil {
		return nil, err
	}
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(raw)
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", file, err)
	}
	if err := doc.Validate(context.Background(), openapi3.DisableExamplesValidation()); err != nil {
		return nil, fmt.Errorf("%s is not a valid OpenAPI document: %w", file, err)
	}
	// Requests are matched by path only: the fake serves the spec's paths
	// under its own address and prefix.
	doc.Servers = openapi3.Servers{{URL: "/"}}
	r, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, err
	}
	return &validator{name: name, router: r}, nil
}

// exchange is one request under validation.
type exchange struct {
	v     *validator
	input *openapi3filter.RequestValidationInput
}

// checkRequest validates r, whose path relative to the spec is path, and
// returns the exchange for checking the response. r's body is restored for
// the handler.
func (v *validator) checkRequest(r *http.Request, path string) (*exchange, error) {
	rq := r.Clone(r.Context())
	rq.URL = &url.URL{Path: path, RawQuery: r.URL.RawQuery}
	rq.RequestURI = ""
	route, params, err := v.router.FindRoute(rq)
	if err != nil {
		return nil, fmt.Errorf("%s: %s %s is not in the spec: %w", v.name, r.Method, path, err)
	}
	opts := &openapi3filter.Options{
		AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, // the fake checks the token itself
		MultiError:         true,
	}
	if r.ContentLength < 0 || r.ContentLength > maxValidatedBody {
		opts.ExcludeRequestBody = true
	}
	in := &openapi3filter.RequestValidationInput{Request: rq, PathParams: params, Route: route, Options: opts}
	err = openapi3filter.ValidateRequest(r.Context(), in)
	r.Body = rq.Body // ValidateRequest replaced it with what it read
	if err != nil {
		return nil, fmt.Errorf("%s: request %s %s does not match the spec: %w", v.name, r.Method, path, err)
	}
	return &exchange{v: v, input: in}, nil
}

// checkResponse validates a response. A nil body validates the status and
// headers only (streams and WebSocket upgrades).
func (x *exchange) checkResponse(status int, header http.Header, body []byte) error {
	opts := *x.input.Options
	opts.ExcludeResponseBody = body == nil
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: x.input,
		Status:                 status,
		Header:                 header,
		Options:                &opts,
	}
	if body != nil {
		in.Body = io.NopCloser(bytes.NewReader(body))
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		r := x.input.Request
		return fmt.Errorf("%s: response %d to %s %s does not match the spec: %w", x.v.name, status, r.Method, r.URL.Path, err)
	}
	return nil
}

// recorder buffers a response so it can be validated before it is sent.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func newRecorder() *recorder { return &recorder{header: http.Header{}} }

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}
func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(p)
}

// flush sends the recorded response to w.
func (r *recorder) flush(w http.ResponseWriter) {
	for k, v := range r.header {
		w.Header()[k] = v
	}
	if r.status == 0 {
		r.status = http.StatusOK
	}
	w.WriteHeader(r.status)
	w.Write(r.body.Bytes())
}

// passthrough records the status and headers of a streamed response and
// validates them when the handler first writes.
type passthrough struct {
	http.ResponseWriter
	x       *exchange
	report  func(error)
	checked bool
}

func (p *passthrough) WriteHeader(code int) {
	if !p.checked {
		p.checked = true
		if code < 300 {
			if err := p.x.checkResponse(code, p.Header(), nil); err != nil {
				p.report(err)
			}
		}
	}
	p.ResponseWriter.WriteHeader(code)
}

func (p *passthrough) Write(b []byte) (int, error) {
	if !p.checked {
		p.WriteHeader(http.StatusOK)
	}
	return p.ResponseWriter.Write(b)
}

func (p *passthrough) Flush() {
	if f, ok := p.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController and WebSocket upgrades reach the
// connection.
func (p *passthrough) Unwrap() http.ResponseWriter { return p.ResponseWriter }
