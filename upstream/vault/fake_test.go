package vault_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arborid/arbor/upstream/internal/upstreamtest"
)

// fakeVault speaks Vault's HTTP API for what the adapter uses: sys/health,
// the approle/cert/kubernetes logins, auth/token/renew-self and
// <mount>/root/sign-intermediate, with namespaces (X-Vault-Namespace),
// tokens (X-Vault-Token) and error bodies {"errors":[...]}. Response shapes
// follow Vault's API documentation.
type fakeVault struct {
	t     *testing.T
	srv   *httptest.Server
	clock *upstreamtest.Clock

	issuer *upstreamtest.CA // signs; its chain is issuer, root
	root   *upstreamtest.CA

	mu         sync.Mutex
	namespace  string
	mount      string
	appRole    string // approle auth mount
	roleID     string
	secretID   string
	k8sRole    string
	k8sJWT     string
	certName   string
	leaseTTL   time.Duration // granted at login and renewal
	renewable  bool
	maxTTL     time.Duration // mount max TTL: longer requests are capped
	defect     upstreamtest.Defect
	signStatus int // non-zero: sign-intermediate fails with this status
	sealed     bool
	tokens     map[string]time.Time // token -> expiry
	nextToken  int
	calls      []string // "METHOD path" of every request
}

func newFakeVault(t *testing.T, clock *upstreamtest.Clock, clientCAs *x509.CertPool) *fakeVault {
	t.Helper()
	root := upstreamtest.NewRoot(t, "vault root", clock.Now(), 1000*time.Hour)
	f := &fakeVault{
		t: t, clock: clock, root: root,
		issuer: root.NewIntermediate(t, "vault pki", clock.Now(), 500*time.Hour),
		mount:  "pki", appRole: "approle", roleID: "role-1", secretID: "secret-1", k8sRole: "arbor", k8sJWT: "k8s.jwt.value",
		certName: "arbor", leaseTTL: time.Hour, renewable: true, maxTTL: 100 * time.Hour,
		tokens: map[string]time.Time{"static-token": clock.Now().Add(1000 * time.Hour)},
	}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.srv.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: clientCAs}
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	return f
}

// serverCAPEM is the PEM of the certificate that verifies the server.
func (f *fakeVault) serverCAPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw})
}

func (f *fakeVault) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeVault) reset() {
	f.mu.Lock()
	f.calls = nil
	f.mu.Unlock()
}

func (f *fakeVault) set(fn func(f *fakeVault)) {
	f.mu.Lock()
	fn(f)
	f.mu.Unlock()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func vaultError(w http.ResponseWriter, status int, msgs ...string) {
	writeJSON(w, status, map[string]any{"errors": msgs})
}

// envelope is Vault's response body for a secret or auth response.
func envelope(data map[string]any, auth map[string]any) map[string]any {
	return map[string]any{
		"request_id": "5e3c1b7e-0000-4000-8000-000000000001", "lease_id": "", "renewable": false, "lease_duration": 0,
		"data": data, "wrap_info": nil, "warnings": nil, "auth": auth, "mount_type": "",
	}
}

func (f *fakeVault) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	path := strings.TrimPrefix(r.URL.Path, "/v1/")
	f.calls = append(f.calls, r.Method+" "+path)
	if r.Header.Get("X-Vault-Request") != "true" {
		vaultError(w, http.StatusBadRequest, "missing X-Vault-Request header")
		return
	}
	if path == "sys/health" {
		if r.Method != http.MethodGet {
			vaultError(w, http.StatusMethodNotAllowed, "unsupported operation")
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"initialized": true, "sealed": f.sealed, "standby": false, "performance_standby": false,
			"replication_performance_mode": "disabled", "replication_dr_mode": "disabled",
			"server_time_utc": f.clock.Now().Unix(), "version": "1.15.0", "cluster_name": "vault-cluster-test", "cluster_id": "c0ffee",
		})
		return
	}
	if f.sealed {
		vaultError(w, http.StatusServiceUnavailable, "Vault is sealed")
		return
	}
	if r.Method != http.MethodPut && r.Method != http.MethodPost {
		vaultError(w, http.StatusMethodNotAllowed, "unsupported operation")
		return
	}
	if ns := r.Header.Get("X-Vault-Namespace"); ns != f.namespace {
		vaultError(w, http.StatusNotFound, fmt.Sprintf("no handler for route %q. route entry not found.", strings.Trim(ns+"/"+path, "/")))
		return
	}
	var body map[string]any
	if b, _ := io.ReadAll(r.Body); len(b) > 0 {
		if err := json.Unmarshal(b, &body); err != nil {
			vaultError(w, http.StatusBadRequest, "failed to parse JSON input: "+err.Error())
			return
		}
	}
	str := func(k string) string { s, _ := body[k].(string); return s }
	switch path {
	case "auth/" + f.appRole + "/login":
		if str("role_id") != f.roleID || str("secret_id") != f.secretID {
			vaultError(w, http.StatusBadRequest, "invalid role or secret ID")
			return
		}
		f.issueToken(w, map[string]any{"role_name": "arbor"})
	case "auth/cert/login":
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			vaultError(w, http.StatusBadRequest, "client certificate must be supplied")
			return
		}
		if n := str("name"); n != "" && n != f.certName {
			vaultError(w, http.StatusBadRequest, "invalid certificate or no client certificate supplied")
			return
		}
		f.issueToken(w, map[string]any{"cert_name": f.certName, "common_name": r.TLS.PeerCertificates[0].Subject.CommonName})
	case "auth/kubernetes/login":
		if str("role") != f.k8sRole || str("jwt") != f.k8sJWT {
			vaultError(w, http.StatusForbidden, "permission denied")
			return
		}
		f.issueToken(w, map[string]any{"role": f.k8sRole, "service_account_name": "arbor"})
	case "auth/token/renew-self":
		tok := r.Header.Get("X-Vault-Token")
		if !f.valid(tok) {
			vaultError(w, http.StatusForbidden, "permission denied")
			return
		}
		if !f.renewable {
			vaultError(w, http.StatusBadRequest, "lease is not renewable")
			return
		}
		f.tokens[tok] = f.clock.Now().Add(f.leaseTTL)
		writeJSON(w, http.StatusOK, envelope(nil, f.auth(tok, nil)))
	case f.mount + "/root/sign-intermediate":
		if !f.valid(r.Header.Get("X-Vault-Token")) {
			vaultError(w, http.StatusForbidden, "permission denied")
			return
		}
		if f.signStatus != 0 {
			vaultError(w, f.signStatus, "1 error occurred:\n\t* internal error\n\n")
			return
		}
		f.signIntermediate(w, body)
	default:
		vaultError(w, http.StatusNotFound, fmt.Sprintf("no handler for route %q. route entry not found.", path))
	}
}

func (f *fakeVault) valid(tok string) bool {
	exp, ok := f.tokens[tok]
	return ok && f.clock.Now().Before(exp)
}

func (f *fakeVault) auth(tok string, meta map[string]any) map[string]any {
	return map[string]any{
		"client_token": tok, "accessor": "acc-" + tok, "policies": []string{"default", "arbor-pki"},
		"token_policies": []string{"default", "arbor-pki"}, "metadata": meta,
		"lease_duration": int(f.leaseTTL / time.Second), "renewable": f.renewable,
		"entity_id": "e-1", "token_type": "service", "orphan": true, "mfa_requirement": nil, "num_uses": 0,
	}
}

func (f *fakeVault) issueToken(w http.ResponseWriter, meta map[string]any) {
	f.nextToken++
	tok := "hvs.token-" + strconv.Itoa(f.nextToken)
	f.tokens[tok] = f.clock.Now().Add(f.leaseTTL)
	writeJSON(w, http.StatusOK, envelope(nil, f.auth(tok, meta)))
}

func (f *fakeVault) signIntermediate(w http.ResponseWriter, body map[string]any) {
	csrPEM, _ := body["csr"].(string)
	b, _ := pem.Decode([]byte(csrPEM))
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		vaultError(w, http.StatusBadRequest, "csr contains no data")
		return
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err == nil {
		err = csr.CheckSignature()
	}
	if err != nil {
		vaultError(w, http.StatusBadRequest, "certificate request could not be parsed")
		return
	}
	if body["use_csr_values"] != true {
		vaultError(w, http.StatusBadRequest, "the fake only implements use_csr_values=true")
		return
	}
	ttlStr, _ := body["ttl"].(string)
	ttl, err := time.ParseDuration(ttlStr)
	if err != nil || ttl <= 0 {
		vaultError(w, http.StatusBadRequest, "invalid ttl")
		return
	}
	if ttl > f.maxTTL {
		ttl = f.maxTTL
	}
	now := f.clock.Now()
	cert := f.issuer.SignCA(f.t, csr.PublicKey, csr.Subject, csr.URIs, now, ttl, f.defect)
	pemOf := func(c *x509.Certificate) string { return string(upstreamtest.CertsPEM(c)) }
	writeJSON(w, http.StatusOK, envelope(map[string]any{
		"certificate":   pemOf(cert),
		"issuing_ca":    pemOf(f.issuer.Cert),
		"ca_chain":      []string{pemOf(f.issuer.Cert), pemOf(f.root.Cert)},
		"serial_number": fmt.Sprintf("%x", cert.SerialNumber),
		"expiration":    cert.NotAfter.Unix(),
	}, nil))
}
