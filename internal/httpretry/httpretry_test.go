package httpretry

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var errStatus = errors.New("status")

// server answers each request with the next status of statuses (the last
// one repeats), with Retry-After ra on 429s, and counts the requests.
func server(t *testing.T, ra string, statuses ...int) (*httptest.Server, *atomic.Int32) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := int(n.Add(1)) - 1
		code := statuses[min(i, len(statuses)-1)]
		if code == http.StatusTooManyRequests && ra != "" {
			w.Header().Set("Retry-After", ra)
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func get(ctx context.Context, p Policy, idempotent bool, url string) (*http.Response, error) {
	return p.Do(ctx, idempotent, func() (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
		if err != nil {
			return nil, err
		}
		return http.DefaultClient.Do(req)
	}, func(resp *http.Response) error {
		resp.Body.Close()
		return errStatus
	})
}

var quick = Policy{Retries: 3, Backoff: time.Millisecond, MaxRetryAfter: 2 * time.Second}

func TestIdempotentRetriesServerErrors(t *testing.T) {
	srv, n := server(t, "", 503, 502, 200)
	resp, err := get(context.Background(), quick, true, srv.URL)
	require.NoError(t, err)
	resp.Body.Close()
	assert.EqualValues(t, 3, n.Load())
}

func TestNotIdempotentIsSentOnceOnServerError(t *testing.T) {
	srv, n := server(t, "", 503, 200)
	_, err := get(context.Background(), quick, false, srv.URL)
	assert.ErrorIs(t, err, errStatus)
	assert.EqualValues(t, 1, n.Load(), "a request that may have run must not be sent again")
}

func TestTooManyRequestsIsRetriedEvenWhenNotIdempotent(t *testing.T) {
	srv, n := server(t, "0", 429, 200)
	resp, err := get(context.Background(), quick, false, srv.URL)
	require.NoError(t, err)
	resp.Body.Close()
	assert.EqualValues(t, 2, n.Load())
}

func TestLongRetryAfterFailsAtOnce(t *testing.T) {
	srv, n := server(t, "60", 429, 200)
	_, err := get(context.Background(), quick, true, srv.URL)
	assert.ErrorIs(t, err, errStatus)
	assert.EqualValues(t, 1, n.Load())
	srv2, n2 := server(t, "soon", 429, 200)
	_, err = get(context.Background(), quick, true, srv2.URL)
	assert.ErrorIs(t, err, errStatus, "an unreadable Retry-After is not waited for")
	assert.EqualValues(t, 1, n2.Load())
}

func TestOtherClientErrorsAreNotRetried(t *testing.T) {
	srv, n := server(t, "", 404, 200)
	_, err := get(context.Background(), quick, true, srv.URL)
	assert.ErrorIs(t, err, errStatus)
	assert.EqualValues(t, 1, n.Load())
}

func TestAttemptsRunOut(t *testing.T) {
	srv, n := server(t, "", 500)
	_, err := get(context.Background(), quick, true, srv.URL)
	assert.ErrorIs(t, err, errStatus)
	assert.EqualValues(t, 4, n.Load(), "one attempt and three retries")
}

func TestConnectionNeverMadeIsRetriedWhenNotIdempotent(t *testing.T) {
	// A listener that is closed at once: the port refuses connections.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	url := "http://" + ln.Addr().String()
	ln.Close()
	var calls int
	_, err = quick.Do(context.Background(), false, func() (*http.Response, error) {
		calls++
		req, _ := http.NewRequest(http.MethodPost, url, nil)
		return http.DefaultClient.Do(req)
	}, func(*http.Response) error { return errStatus })
	require.Error(t, err)
	assert.True(t, NotSent(err), "a refused connection is a dial error: %v", err)
	assert.Equal(t, 4, calls)
}

func TestCancelledContextStopsTheWait(t *testing.T) {
	srv, n := server(t, "", 503)
	ctx, cancel := context.WithCancel(context.Background())
	slow := Policy{Retries: 3, Backoff: time.Hour}
	done := make(chan error, 1)
	go func() {
		_, err := get(ctx, slow, true, srv.URL)
		done <- err
	}()
	require.Eventually(t, func() bool { return n.Load() == 1 }, time.Minute, time.Millisecond)
	cancel()
	assert.ErrorIs(t, <-done, context.Canceled)
}

func TestRetryAfterReadsSecondsAndDates(t *testing.T) {
	d, ok := RetryAfter("3")
	assert.True(t, ok)
	assert.Equal(t, 3*time.Second, d)
	d, ok = RetryAfter(time.Now().Add(time.Hour).UTC().Format(http.TimeFormat))
	assert.True(t, ok)
	assert.InDelta(t, time.Hour.Seconds(), d.Seconds(), 5)
	_, ok = RetryAfter("-1")
	assert.False(t, ok)
	_, ok = RetryAfter("soon")
	assert.False(t, ok)
}

func TestFill(t *testing.T) {
	def := Policy{Retries: 2, Backoff: time.Second, MaxRetryAfter: time.Minute}
	assert.Equal(t, def, Policy{}.Fill(def))
	assert.Equal(t, 0, Policy{Retries: -1}.Fill(def).Retries)
	assert.Equal(t, 5, Policy{Retries: 5}.Fill(def).Retries)
}
