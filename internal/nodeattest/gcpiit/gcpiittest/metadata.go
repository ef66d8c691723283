package gcpiittest

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"time"
)

// identityPrefix and identitySuffix frame the service account in the path
// of an identity token request.
const (
	identityPrefix = "/computeMetadata/v1/instance/service-accounts/"
	identitySuffix = "/identity"
)

// MetadataConfig configures a MetadataServer.
type MetadataConfig struct {
	// Signer signs the tokens, as Google's current key.
	Signer *Signer
	// Instance is the instance the server runs on.
	Instance Instance
	// PlainHTTP serves HTTP instead of TLS, as the real metadata server
	// does and as SPIRE's agent plugin requires (identity_token_host is a
	// host it reaches over http).
	PlainHTTP bool
	// Now is the clock of the tokens' iat and exp; nil means time.Now.
	Now func() time.Time
}

// MetadataServer is a Compute Engine metadata server that answers
// identity token requests:
//
//	GET /computeMetadata/v1/instance/service-accounts/<default|email>/identity
//	    ?audience=<aud>[&format=standard|full][&licenses=TRUE|FALSE]
//	Metadata-Flavor: Google
//
// with a token signed by the configured Signer. Like the real server it
// refuses a request without Metadata-Flavor: Google or with
// X-Forwarded-For (403), without an audience (400), for a service account
// the instance does not have (404), and sets Metadata-Flavor: Google on
// its answers.
type MetadataServer struct {
	srv *httptest.Server
	cfg MetadataConfig

	mu       sync.Mutex
	requests []MetadataRequest
}

// MetadataRequest is one identity token request the server answered or
// refused.
type MetadataRequest struct {
	ServiceAccount string
	Query          url.Values
	Flavor         string
	Status         int
}

// NewMetadataServer starts a metadata server. Close it when done.
func NewMetadataServer(cfg MetadataConfig) *MetadataServer {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m := &MetadataServer{cfg: cfg}
	if cfg.PlainHTTP {
		m.srv = httptest.NewServer(http.HandlerFunc(m.serve))
	} else {
		m.srv = httptest.NewTLSServer(http.HandlerFunc(m.serve))
	}
	return m
}

// URL is the server's base URL (gcpiit.AgentConfig.IdentityTokenHost).
func (m *MetadataServer) URL() string { return m.srv.URL }

// Host is the server's host:port (SPIRE's identity_token_host, with
// PlainHTTP).
func (m *MetadataServer) Host() string { return m.srv.Listener.Addr().String() }

// Client returns an HTTP client that trusts the server's certificate.
func (m *MetadataServer) Client() *http.Client { return m.srv.Client() }

// Close stops the server.
func (m *MetadataServer) Close() { m.srv.Close() }

// Requests returns the identity token requests received so far.
func (m *MetadataServer) Requests() []MetadataRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]MetadataRequest(nil), m.requests...)
}

func (m *MetadataServer) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Metadata-Flavor", "Google")
	sa, ok := strings.CutPrefix(r.URL.Path, identityPrefix)
	if ok {
		sa, ok = strings.CutSuffix(sa, identitySuffix)
	}
	if !ok || sa == "" || strings.Contains(sa, "/") {
		http.NotFound(w, r)
		return
	}
	status := http.StatusOK
	defer func() {
		m.mu.Lock()
		m.requests = append(m.requests, MetadataRequest{ServiceAccount: sa, Query: r.URL.Query(), Flavor: r.Header.Get("Metadata-Flavor"), Status: status})
		m.mu.Unlock()
	}()
	fail := func(code int, msg string) {
		status = code
		http.Error(w, msg, code)
	}
	q := r.URL.Query()
	switch {
	case r.Method != http.MethodGet:
		fail(http.StatusMethodNotAllowed, "Method not allowed")
		return
	case r.Header.Get("Metadata-Flavor") != "Google":
		fail(http.StatusForbidden, "Missing required header \"Metadata-Flavor\": \"Google\"")
		return
	case r.Header.Get("X-Forwarded-For") != "":
		fail(http.StatusForbidden, "Request denied: X-Forwarded-For header present")
		return
	case q.Get("audience") == "":
		fail(http.StatusBadRequest, "non-empty audience parameter required")
		return
	}
	var account *ServiceAccount
	for i := range m.cfg.Instance.ServiceAccounts {
		a := &m.cfg.Instance.ServiceAccounts[i]
		if sa == a.Email || (sa == "default" && i == 0) {
			account = a
			break
		}
	}
	if account == nil {
		fail(http.StatusNotFound, "service account not found")
		return
	}
	var full bool
	switch q.Get("format") {
	case "", "standard":
	case "full":
		full = true
	default:
		fail(http.StatusBadRequest, "format must be standard or full")
		return
	}
	licenses := strings.EqualFold(q.Get("licenses"), "TRUE")
	token, err := m.cfg.Signer.Sign(m.cfg.Instance.Claims(account, q.Get("audience"), full, licenses, m.cfg.Now()))
	if err != nil {
		fail(http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write([]byte(token))
}
