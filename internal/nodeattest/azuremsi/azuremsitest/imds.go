package azuremsitest

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// IMDS is a fake Azure instance metadata service over TLS for one VM whose
// system-assigned identity is Identity (Tenant, Principal, MIResourceID):
//
//	GET /metadata/identity/oauth2/token?api-version=...&resource=...   (header Metadata: true)
//
// answers, as the real one, a JSON object with a token signed by Key for
// that identity and the resource asked for, valid from Now for 24 hours.
// It is safe for concurrent use.
type IMDS struct {
	srv      *httptest.Server
	key      *Key
	identity Claims
	now      func() time.Time

	mu       sync.Mutex
	requests []*url.URL
}

// NewIMDS starts a metadata service issuing tokens for identity, signed by
// key; now may be nil (time.Now).
func NewIMDS(key *Key, identity Claims, now func() time.Time) *IMDS {
	if now == nil {
		now = time.Now
	}
	m := &IMDS{key: key, identity: identity, now: now}
	m.srv = httptest.NewTLSServer(http.HandlerFunc(m.serve))
	return m
}

// URL is the base URL (azuremsi's AgentConfig.MetadataEndpoint).
func (m *IMDS) URL() string { return m.srv.URL }

// Client returns an HTTP client that trusts the fake's certificate.
func (m *IMDS) Client() *http.Client { return m.srv.Client() }

// Close stops the server.
func (m *IMDS) Close() { m.srv.Close() }

// Requests returns the URLs of the token requests answered, in order.
func (m *IMDS) Requests() []*url.URL {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*url.URL(nil), m.requests...)
}

func (m *IMDS) serve(w http.ResponseWriter, r *http.Request) {
	fail := func(status int, code, desc string) {
		writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
	}
	q := r.URL.Query()
	switch {
	case r.URL.Path != "/metadata/identity/oauth2/token":
		http.NotFound(w, r)
		return
	case r.Method != http.MethodGet:
		fail(http.StatusMethodNotAllowed, "invalid_request", "Method not allowed")
		return
	case r.Header.Get("Metadata") != "true":
		fail(http.StatusBadRequest, "invalid_request", "Required metadata header not specified")
		return
	case r.Header.Get("X-Forwarded-For") != "":
		fail(http.StatusBadRequest, "invalid_request", "Request contains X-Forwarded-For header")
		return
	case q.Get("api-version") == "":
		fail(http.StatusBadRequest, "invalid_request", "Required query variable 'api-version' is missing")
		return
	case q.Get("resource") == "":
		fail(http.StatusBadRequest, "invalid_request", "Required audience parameter not specified")
		return
	}
	m.mu.Lock()
	u := *r.URL
	m.requests = append(m.requests, &u)
	m.mu.Unlock()

	now := m.now().Truncate(time.Second)
	c := m.identity
	c.Audience, c.IssuedAt, c.Expiry = q.Get("resource"), now, now.Add(24*time.Hour)
	token, err := m.key.Sign(c)
	if err != nil {
		fail(http.StatusInternalServerError, "internal_error", err.Error())
		return
	}
	lifetime := strconv.Itoa(int(24 * time.Hour / time.Second))
	writeJSON(w, http.StatusOK, map[string]string{
		"access_token":   token,
		"client_id":      "7c7c7c7c-1111-4a4a-8b8b-9d9d9d9d9d9d",
		"expires_in":     lifetime,
		"expires_on":     strconv.FormatInt(c.Expiry.Unix(), 10),
		"ext_expires_in": lifetime,
		"not_before":     strconv.FormatInt(now.Unix(), 10),
		"resource":       c.Audience,
		"token_type":     "Bearer",
	})
}
