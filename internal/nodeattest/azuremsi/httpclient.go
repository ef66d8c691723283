package azuremsi

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Response bounds. An instance metadata token answer is about 3 KB, an
// OpenID discovery document 2 KB and Entra ID's key set 10 KB; a virtual
// machine or network interface from Resource Manager is a few KB.
const (
	maxIMDSResponse = 64 << 10
	maxKeysResponse = 1 << 20
	maxARMResponse  = 4 << 20
)

// errResponseTooLarge is returned by a response body read past its bound.
var errResponseTooLarge = errors.New("azuremsi: response body exceeds its size limit")

// boundedClient returns a copy of base (or of a default client when base is
// nil) that follows no redirect and fails reading a response body past
// limit bytes. Every HTTP call this package makes, through the Azure SDK or
// not, goes through such a client.
func boundedClient(base *http.Client, limit int64) *http.Client {
	var c http.Client
	if base != nil {
		c = *base
	} else {
		c.Timeout = 30 * time.Second
	}
	next := c.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	c.Transport = &limitTransport{next: next, limit: limit}
	c.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
		return fmt.Errorf("azuremsi: refusing to follow a redirect to %s", req.URL.Redacted())
	}
	return &c
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
// more: a truncated JSON answer must not parse as a shorter one.
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

// readBounded reads a whole body that a bounded client returned; the error
// says what was being read.
func readBounded(body io.Reader, what string) ([]byte, error) {
	b, err := io.ReadAll(body)
	if err != nil {
		return nil, fmt.Errorf("azuremsi: reading %s: %w", what, err)
	}
	return b, nil
}
