package gcpiit

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// errResponseTooLarge is returned by a response body read past its bound.
var errResponseTooLarge = errors.New("gcpiit: response body exceeds its size limit")

// defaultClientTimeout bounds a request of a default client; the callers'
// contexts bound them further.
const defaultClientTimeout = 30 * time.Second

// boundedClient returns a copy of base (or of a default client when base is
// nil) that follows no redirect and fails reading a response body past
// limit bytes. Every HTTP call this package makes goes through such a
// client.
func boundedClient(base *http.Client, limit int64) *http.Client {
	var c http.Client
	if base != nil {
		c = *base
	} else {
		c.Timeout = defaultClientTimeout
	}
	c.Transport = boundedTransport(c.Transport, limit)
	c.CheckRedirect = refuseRedirect
	return &c
}

// boundedTransport wraps next (nil: http.DefaultTransport) so that response
// bodies past limit bytes fail.
func boundedTransport(next http.RoundTripper, limit int64) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return &limitTransport{next: next, limit: limit}
}

func refuseRedirect(req *http.Request, _ []*http.Request) error {
	return fmt.Errorf("gcpiit: refusing to follow a redirect to %s", req.URL.Redacted())
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
		return nil, fmt.Errorf("%w: %s answered %d bytes", errResponseTooLarge, req.URL.Redacted(), resp.ContentLength)
	}
	resp.Body = &limitBody{rc: resp.Body, left: t.limit}
	return resp, nil
}

// limitBody reads at most left bytes and fails, rather than truncating, on
// more: a truncated JSON answer or token must not pass for a shorter one.
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
			return 0, errResponseTooLarge
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
