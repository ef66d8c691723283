// Package boundedhttp is the HTTP client every node attestor uses for the
// metadata services, identity providers and cloud APIs it calls: it follows
// no redirect (a redirect could send the request anywhere) and fails, rather
// than truncates, a response body past a size limit.
package boundedhttp

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// DefaultTimeout bounds a request of a client made without a base; the
// callers' contexts bound them further.
const DefaultTimeout = 30 * time.Second

// ErrTooLarge is returned by a response body read past its limit.
var ErrTooLarge = errors.New("response body exceeds its size limit")

// Client returns a copy of base (or of a default client with DefaultTimeout
// when base is nil) that follows no redirect and fails reading any response
// body past limit bytes.
func Client(base *http.Client, limit int64) *http.Client {
	var c http.Client
	if base != nil {
		c = *base
	} else {
		c.Timeout = DefaultTimeout
	}
	c.Transport = Transport(c.Transport, limit)
	c.CheckRedirect = RefuseRedirect
	return &c
}

// Transport wraps next (nil: http.DefaultTransport) so that response bodies
// past limit bytes fail.
func Transport(next http.RoundTripper, limit int64) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return &limitTransport{next: next, limit: limit}
}

// RefuseRedirect is an http.Client CheckRedirect that follows none.
func RefuseRedirect(req *http.Request, _ []*http.Request) error {
	return fmt.Errorf("refusing to follow a redirect to %s", req.URL.Redacted())
}

type limitTransport struct {
	next  http.RoundTripper
	limit int64
}

func (t *limitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > t.limit {
		resp.Body.Close()
		return nil, fmt.Errorf("%w: %s answered %d bytes", ErrTooLarge, req.URL.Redacted(), resp.ContentLength)
	}
	resp.Body = &limitBody{rc: resp.Body, left: t.limit}
	return resp, nil
}

// Body wraps rc so that reading more than limit bytes fails (for a body
// that did not come through Transport, such as one an SDK hands a
// middleware).
func Body(rc io.ReadCloser, limit int64) io.ReadCloser { return &limitBody{rc: rc, left: limit} }

// limitBody reads at most left bytes and fails on more: a truncated XML or
// JSON answer, or a token, must not pass for a shorter one.
type limitBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *limitBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One more byte tells a body of exactly the limit from a longer one.
		var one [1]byte
		n, err := b.rc.Read(one[:])
		if n > 0 {
			return 0, ErrTooLarge
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitBody) Close() error { return b.rc.Close() }
