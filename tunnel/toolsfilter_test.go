package tunnel

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestToolsListFilter(t *testing.T) {
	const list = `{"jsonrpc":"2.0","id":4,"result":{"tools":[{"name":"read","inputSchema":{}},{"name":"drop_all","inputSchema":{}},{"name":"write"},{"name":"drop_sneaky","Name":"fine"}],"nextCursor":"c"}}`
	const other = `{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"drop_all"}}`
	cases := []struct {
		name, contentType, body string
		want                    []string
		notWant                 []string
	}{
		{name: "json", contentType: "application/json", body: list,
			want: []string{`"read"`, `"write"`, `"nextCursor":"c"`}, notWant: []string{`"drop_all"`, `drop_sneaky`}},
		{name: "sse", contentType: "text/event-stream",
			body: "id: 0\nretry: 100\ndata: \n\nevent: message\nid: 1\ndata: " + other + "\n\nevent: message\nid: 2\ndata: " + list + "\n\n",
			want: []string{"id: 0\nretry: 100\ndata: \n\n", "id: 1\ndata: " + other + "\n\n", "event: message\nid: 2\ndata: {", `"read"`, `"write"`}},
		{name: "other id untouched", contentType: "application/json", body: strings.Replace(list, `"id":4`, `"id":5`, 1),
			want: []string{`"drop_all"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.contentType)
				w.Header().Set("Content-Length", "999") // must be fixed for JSON
				w.WriteHeader(200)
				// Write in small pieces, as a stream would arrive.
				for i := 0; i < len(tc.body); i += 7 {
					io.WriteString(w, tc.body[i:min(i+7, len(tc.body))])
					w.(http.Flusher).Flush()
				}
			})
			g := &guard{side: "connector", route: "r", policy: Policy{DenyTools: []string{"drop_*"}}, next: next,
				logger: slog.New(slog.DiscardHandler), metrics: nopMetrics{}}
			rr := httptest.NewRecorder()
			req := httptest.NewRequest("POST", "/", strings.NewReader(`{"jsonrpc":"2.0","id":4,"method":"tools/list"}`))
			g.ServeHTTP(rr, req)
			body := rr.Body.String()
			for _, w := range tc.want {
				assert.Contains(t, body, w)
			}
			if tc.contentType == "text/event-stream" {
				assert.Contains(t, body, "drop_all", "other events pass unchanged")
				assert.NotContains(t, body[strings.Index(body, "id: 2"):], "drop_all")
			}
			for _, w := range tc.notWant {
				assert.NotContains(t, body, w)
			}
			if tc.contentType == "application/json" {
				require.Equal(t, strconv.Itoa(len(body)), rr.Header().Get("Content-Length"))
			}
		})
	}
}
