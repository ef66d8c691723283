package fakes

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

// Vault speaks Vault's HTTP API for what the vault adapter uses: sys/health,
// the approle/cert/kubernetes logins, auth/token/renew-self and
// <mount>/root/sign-intermediate, with namespaces (X-Vault-Namespace),
// tokens (X-Vault-Token) and error bodies {"errors":[...]}. Response shapes
// follow Vault's API documentation.
//
// The exported fields configure its behaviour; change them with Set once the
// server runs.
type Vault struct {
	t   testing.TB
	now func() time.Time
	// Srv is the running HTTPS server; Srv.URL is Vault's address.
	Srv *httptest.Server

	// Issuer signs; its chain is Issuer, Root.
	Issuer *upstreamtest.CA
	Root   *upstreamtest.CA

	mu         sync.Mutex
	Namespace  string
	Mount      string // PKI mount
	AppRole    string // approle auth mount
	RoleID     string
	SecretID   string
	K8sRole    string
	K8sJWT     string
	CertName   string
	LeaseTTL   time.Duration // granted at login and renewal
	Renewable  bool
	MaxTTL     time.Duration // mount max TTL: longer requests are capped
	Defect     upstreamtest.Defect
	SignStatus int // non-zero: sign-intermediate fails with this status
	Sealed     bool
	Tokens     map[string]time.Time // token -> expiry
	nextToken  int
	calls      []string // "METHOD path" of every request
}

// StaticToken is a token the fake accepts from the start (for a long time).
const StaticToken = "static-token"

// NewVault starts a fake Vault over TLS whose clock is now (nil means
// time.Now). Client certificates are verified against clientCAs when given
// (cert auth). The server stops when the test ends.
func NewVault(t testing.TB, now func() time.Time, clientCAs *x509.CertPool) *Vault {
	t.Helper()
	if now == nil {
		now = time.Now
	}
	root := upstreamtest.NewRoot(t, "vault root", now(), 1000*time.Hour)
	f := &Vault{
		t: t, now: now, Root: root,
		Issuer: root.NewIntermediate(t, "vault pki", now(), 500*time.Hour),
		Mount:  "pki", AppRole: "approle", RoleID: "role-1", SecretID: "secret-1", K8sRole: "arbor", K8sJWT: "k8s.jwt.value",
		CertName: "arbor", LeaseTTL: time.Hour, Renewable: true, MaxTTL: 100 * time.Hour,
		Tokens: map[string]time.Time{StaticToken: now().Add(1000 * time.Hour)},
	}
	f.Srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.Srv.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: clientCAs}
	f.Srv.StartTLS()
	t.Cleanup(f.Srv.Close)
	return f
}

// ServerCAPEM is the PEM of the certificate that verifies the server.
func (f *Vault) ServerCAPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.Srv.Certificate().Raw})
}

// Calls returns "METHOD path" of every request served since the start or
// the last Reset.
func (f *Vault) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// Reset forgets the recorded calls.
func (f *Vault) Reset() {
	f.mu.Lock()
	f.calls = nil
	f.mu.Unlock()
}

// Set runs fn with the fake locked, to change its exported fields.
func (f *Vault) Set(fn func(f *Vault)) {
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

func (f *Vault) serve(w http.ResponseWriter, r *http.Request) {
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
			"initialized": true, "sealed": f.Sealed, "standby": false, "performance_standby": false,
			"replication_performance_mode": "disabled", "replication_dr_mode": "disabled",
			"server_time_utc": f.now().Unix(), "version": "1.15.0", "cluster_name": "vault-cluster-test", "cluster_id": "c0ffee",
		})
		return
	}
	if f.Sealed {
		vaultError(w, http.StatusServiceUnavailable, "Vault is sealed")
		return
	}
	if r.Method != http.MethodPut && r.Method != http.MethodPost {
		vaultError(w, http.StatusMethodNotAllowed, "unsupported operation")
		return
	}
	if ns := r.Header.Get("X-Vault-Namespace"); ns != f.Namespace {
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
	case "auth/" + f.AppRole + "/login":
		if str("role_id") != f.RoleID || str("secret_id") != f.SecretID {
			vaultError(w, http.StatusBadRequest, "invalid role or secret ID")
			return
		}
		f.issueToken(w, map[string]any{"role_name": "arbor"})
	case "auth/cert/login":
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			vaultError(w, http.StatusBadRequest, "client certificate must be supplied")
			return
		}
		if n := str("name"); n != "" && n != f.CertName {
			vaultError(w, http.StatusBadRequest, "invalid certificate or no client certificate supplied")
			return
		}
		f.issueToken(w, map[string]any{"cert_name": f.CertName, "common_name": r.TLS.PeerCertificates[0].Subject.CommonName})
	case "auth/kubernetes/login":
		if str("role") != f.K8sRole || str("jwt") != f.K8sJWT {
			vaultError(w, http.StatusForbidden, "permission denied")
			return
		}
		f.issueToken(w, map[string]any{"role": f.K8sRole, "service_account_name": "arbor"})
	case "auth/token/renew-self":
		tok := r.Header.Get("X-Vault-Token")
		if !f.valid(tok) {
			vaultError(w, http.StatusForbidden, "permission denied")
			return
		}
		if !f.Renewable {
			vaultError(w, http.StatusBadRequest, "lease is not renewable")
			return
		}
		f.Tokens[tok] = f.now().Add(f.LeaseTTL)
		writeJSON(w, http.StatusOK, envelope(nil, f.auth(tok, nil)))
	case f.Mount + "/root/sign-intermediate":
		if !f.valid(r.Header.Get("X-Vault-Token")) {
			vaultError(w, http.StatusForbidden, "permission denied")
			return
		}
		if f.SignStatus != 0 {
			vaultError(w, f.SignStatus, "1 error occurred:\n\t* internal error\n\n")
			return
		}
		f.signIntermediate(w, body)
	default:
		vaultError(w, http.StatusNotFound, fmt.Sprintf("no handler for route %q. route entry not found.", path))
	}
}

func (f *Vault) valid(tok string) bool {
	exp, ok := f.Tokens[tok]
	return ok && f.now().Before(exp)
}

func (f *Vault) auth(tok string, meta map[string]any) map[string]any {
	return map[string]any{
		"client_token": tok, "accessor": "acc-" + tok, "policies": []string{"default", "arbor-pki"},
		"token_policies": []string{"default", "arbor-pki"}, "metadata": meta,
		"lease_duration": int(f.LeaseTTL / time.Second), "renewable": f.Renewable,
		"entity_id": "e-1", "token_type": "service", "orphan": true, "mfa_requirement": nil, "num_uses": 0,
	}
}

func (f *Vault) issueToken(w http.ResponseWriter, meta map[string]any) {
	f.nextToken++
	tok := "hvs.token-" + strconv.Itoa(f.nextToken)
	f.Tokens[tok] = f.now().Add(f.LeaseTTL)
	writeJSON(w, http.StatusOK, envelope(nil, f.auth(tok, meta)))
}

func (f *Vault) signIntermediate(w http.ResponseWriter, body map[string]any) {
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
	if ttl > f.MaxTTL {
		ttl = f.MaxTTL
	}
	now := f.now()
	cert := f.Issuer.SignCA(f.t, csr.PublicKey, csr.Subject, csr.URIs, now, ttl, f.Defect)
	pemOf := func(c *x509.Certificate) string { return string(upstreamtest.CertsPEM(c)) }
	writeJSON(w, http.StatusOK, envelope(map[string]any{
		"certificate":   pemOf(cert),
		"issuing_ca":    pemOf(f.Issuer.Cert),
		"ca_chain":      []string{pemOf(f.Issuer.Cert), pemOf(f.Root.Cert)},
		"serial_number": fmt.Sprintf("%x", cert.SerialNumber),
		"expiration":    cert.NotAfter.Unix(),
	}, nil))
}

// Now returns the fake's time.
func (f *Vault) Now() time.Time { return f.now() }
