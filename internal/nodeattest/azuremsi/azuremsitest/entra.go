package azuremsitest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// tenantPath is the first path segment of Entra ID's tenant endpoints: a
// tenant ID, or one of the multi-tenant names.
var tenantPath = regexp.MustCompile(`^/([0-9a-f-]{36}|common|organizations)/(.*)$`)

// Entra is a fake Microsoft Entra ID over TLS, the endpoints azure_msi and
// the Azure SDK's client secret credential use:
//
//	GET  /<tenant>/v2.0/.well-known/openid-configuration   OpenID discovery
//	GET  /<tenant>/discovery/v2.0/keys                     the signing keys
//	POST /<tenant>/oauth2/v2.0/token                       client credentials grant
//
// Every tenant publishes the common keys, as in Entra ID, unless SetKeys
// gave it its own. It is safe for concurrent use.
type Entra struct {
	srv *httptest.Server

	mu        sync.Mutex
	common    []*Key
	tenants   map[string][]*Key
	apps      map[string]app // by tenant/appID
	discovery int
	keys      int
	grants    int
}

type app struct{ secret, token string }

// NewEntra starts a fake Entra ID whose tenants publish keys.
func NewEntra(keys ...*Key) *Entra {
	e := &Entra{common: keys, tenants: map[string][]*Key{}, apps: map[string]app{}}
	e.srv = httptest.NewTLSServer(http.HandlerFunc(e.serve))
	return e
}

// URL is the base URL, ending in "/" (azuremsi's LoginEndpoint).
func (e *Entra) URL() string { return e.srv.URL + "/" }

// Client returns an HTTP client that trusts the fake's certificate.
func (e *Entra) Client() *http.Client { return e.srv.Client() }

// Close stops the server.
func (e *Entra) Close() { e.srv.Close() }

// SetKeys makes tenant publish keys instead of the common ones; with no
// keys it publishes the common ones again.
func (e *Entra) SetKeys(tenant string, keys ...*Key) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(keys) == 0 {
		delete(e.tenants, tenant)
		return
	}
	e.tenants[tenant] = keys
}

// SetCommonKeys replaces the keys every other tenant publishes (a key
// rotation).
func (e *Entra) SetCommonKeys(keys ...*Key) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.common = keys
}

// AddApp registers an application of tenant with a client secret and
// returns the access token the token endpoint issues it.
func (e *Entra) AddApp(tenant, appID, secret string) string {
	b := make([]byte, 16)
	rand.Read(b)
	token := "fake-app-token-" + hex.EncodeToString(b)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.apps[tenant+"/"+appID] = app{secret: secret, token: token}
	return token
}

// Fetches returns how many discovery documents and key sets were served.
func (e *Entra) Fetches() (discovery, keys int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.discovery, e.keys
}

// Grants returns how many tokens the token endpoint issued.
func (e *Entra) Grants() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.grants
}

func (e *Entra) serve(w http.ResponseWriter, r *http.Request) {
	m := tenantPath.FindStringSubmatch(r.URL.Path)
	if m == nil {
		entraError(w, http.StatusNotFound, "invalid_tenant", "AADSTS90002: Tenant not found.")
		return
	}
	tenant, rest := m[1], m[2]
	base := e.srv.URL + "/" + tenant
	switch {
	case r.Method == http.MethodGet && rest == "v2.0/.well-known/openid-configuration":
		e.mu.Lock()
		e.discovery++
		e.mu.Unlock()
		issuer := base + "/v2.0"
		if tenant == "common" || tenant == "organizations" {
			issuer = e.srv.URL + "/{tenantid}/v2.0"
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"token_endpoint":                        base + "/oauth2/v2.0/token",
			"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
			"jwks_uri":                              base + "/discovery/v2.0/keys",
			"response_modes_supported":              []string{"query", "fragment", "form_post"},
			"subject_types_supported":               []string{"pairwise"},
			"id_token_signing_alg_values_supported": []string{"RS256"},
			"response_types_supported":              []string{"code", "id_token", "code id_token", "id_token token"},
			"scopes_supported":                      []string{"openid", "profile", "email", "offline_access"},
			"issuer":                                issuer,
			"request_uri_parameter_supported":       false,
			"userinfo_endpoint":                     "https://graph.microsoft.com/oidc/userinfo",
			"authorization_endpoint":                base + "/oauth2/v2.0/authorize",
			"end_session_endpoint":                  base + "/oauth2/v2.0/logout",
			"tenant_region_scope":                   "EU",
			"cloud_instance_name":                   "microsoftonline.com",
		})
	case r.Method == http.MethodGet && rest == "discovery/v2.0/keys":
		e.mu.Lock()
		e.keys++
		keys, ok := e.tenants[tenant]
		if !ok {
			keys = e.common
		}
		e.mu.Unlock()
		jwks := make([]map[string]any, 0, len(keys))
		for _, k := range keys {
			jwks = append(jwks, k.JWK(e.srv.URL+"/{tenantid}/v2.0"))
		}
		writeJSON(w, http.StatusOK, map[string]any{"keys": jwks})
	case r.Method == http.MethodPost && rest == "oauth2/v2.0/token":
		e.grant(w, r, tenant)
	default:
		entraError(w, http.StatusNotFound, "not_found", "no such endpoint")
	}
}

func (e *Entra) grant(w http.ResponseWriter, r *http.Request, tenant string) {
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "client_credentials" {
		entraError(w, http.StatusBadRequest, "unsupported_grant_type", "AADSTS70003: The app requested an unsupported grant type.")
		return
	}
	id, secret := r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	if u, p, ok := r.BasicAuth(); ok {
		id, secret = u, p
	}
	e.mu.Lock()
	a, ok := e.apps[tenant+"/"+id]
	if ok && a.secret == secret {
		e.grants++
	}
	e.mu.Unlock()
	if !ok || a.secret != secret {
		entraError(w, http.StatusUnauthorized, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
		return
	}
	// MSAL adds openid, profile and offline_access to the resource's
	// "<audience>/.default".
	if !slices.ContainsFunc(strings.Fields(r.PostForm.Get("scope")), func(s string) bool { return strings.HasSuffix(s, "/.default") }) {
		entraError(w, http.StatusBadRequest, "invalid_scope", "AADSTS1002012: The provided value for scope is not valid.")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"token_type":     "Bearer",
		"expires_in":     3599,
		"ext_expires_in": 3599,
		"access_token":   a.token,
	})
}

func entraError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]any{"error": code, "error_description": desc, "error_codes": []int{90002}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
