// Package httpretry is the retry loop the HTTP providers share: which
// failures are retried, how long to wait, and Retry-After.
//
// The rule that keeps a command from running twice is the caller's to state:
// a request that is not idempotent is sent again only when it cannot have
// reached the server (the connection was never made) or the server refused
// it unprocessed (429).
package httpretry

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Policy bounds the attempts of one request.
type Policy struct {
	// Retries is the number of attempts after the first.
	Retries int
	// Backoff is the wait before the first retry; it doubles with each
	// retry, plus up to half as much again at random.
	Backoff time.Duration
	// MaxRetryAfter is the longest Retry-After a 429 may ask for; a longer
	// one (or one that cannot be read) fails the request at once.
	MaxRetryAfter time.Duration
}

// Do sends a request until it succeeds, fails in a way that is not retried,
// or the attempts run out, and returns the first response with a status
// below 300. send makes and sends one attempt (a fresh request and body
// each time). A response of 300 or above is given to fail, which must read
// and close its body and return the error to report. Transport errors are
// returned as send gave them, and ctx's error once ctx ends.
//
// Retried: transport errors and 5xx when idempotent is true; a connection
// that was never made, and 429, always. A 429's Retry-After (seconds or an
// HTTP date) lengthens the wait.
func (p Policy) Do(ctx context.Context, idempotent bool, send func() (*http.Response, error), fail func(*http.Response) error) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		resp, err := send()
		last := attempt >= p.Retries
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if last || (!idempotent && !NotSent(err)) {
				return nil, err
			}
			if err := Sleep(ctx, p.Delay(attempt)); err != nil {
				return nil, err
			}
			continue
		}
		if resp.StatusCode < 300 {
			return resp, nil
		}
		apiErr := fail(resp)
		retryable := resp.StatusCode == http.StatusTooManyRequests || (idempotent && resp.StatusCode >= 500)
		if !retryable || last {
			return nil, apiErr
		}
		wait := p.Delay(attempt)
		if ra := resp.Header.Get("Retry-After"); ra != "" && resp.StatusCode == http.StatusTooManyRequests {
			d, ok := RetryAfter(ra)
			if !ok || d > p.MaxRetryAfter {
				return nil, apiErr
			}
			wait = max(wait, d)
		}
		if err := Sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// Delay is the wait before retry attempt+1: Backoff·2^attempt plus up to
// half as much again at random.
func (p Policy) Delay(attempt int) time.Duration {
	d := p.Backoff << attempt
	if d <= 0 {
		return 0
	}
	return d + rand.N(d/2+1)
}

// RetryAfter reads a Retry-After header: seconds or an HTTP date.
func RetryAfter(v string) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if secs, err := strconv.Atoi(v); err == nil {
		return time.Duration(secs) * time.Second, secs >= 0
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0), true
	}
	return 0, false
}

// NotSent reports whether a transport error happened before the request
// could reach the server (the connection was never made).
func NotSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// Sleep waits for d or until ctx ends, and returns ctx's error if it ended.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Fill returns p with its zero fields taken from def, the way the providers'
// Options read: Retries 0 means def's and a negative count means none;
// Backoff and MaxRetryAfter of zero or less mean def's.
func (p Policy) Fill(def Policy) Policy {
	switch {
	case p.Retries == 0:
		p.Retries = def.Retries
	case p.Retries < 0:
		p.Retries = 0
	}
	if p.Backoff <= 0 {
		p.Backoff = def.Backoff
	}
	if p.MaxRetryAfter <= 0 {
		p.MaxRetryAfter = def.MaxRetryAfter
	}
	return p
}
