package awsiidtest

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
)

// IMDS is an instance metadata service over TLS that serves one instance
// identity document and its signatures through the IMDSv2 session flow:
// PUT /latest/api/token with X-aws-ec2-metadata-token-ttl-seconds returns a
// token, and every GET under /latest/dynamic/instance-identity/ must carry
// it in X-aws-ec2-metadata-token (401 otherwise, as IMDS with
// HttpTokens=required answers).
type IMDS struct {
	srv *httptest.Server

	mu        sync.Mutex
	document  []byte
	signature string
	rsa2048   string
	tokens    map[string]bool
	tokenPuts int
	refused   int // GETs without a valid token
}

// NewIMDS starts an IMDS serving document with its RSA-1024 signature and
// RSA-2048 signature (as Signer.SignRSA1024 and Signer.Sign return them).
// Close it when done.
func NewIMDS(document []byte, signature, rsa2048 string) *IMDS {
	m := &IMDS{document: document, signature: signature, rsa2048: rsa2048, tokens: map[string]bool{}}
	m.srv = httptest.NewTLSServer(http.HandlerFunc(m.serve))
	return m
}

// NewPlainIMDS is NewIMDS over plain HTTP, as the real service is served
// (http://169.254.169.254): for an agent configured only with an endpoint
// URL, as a topology file configures one.
func NewPlainIMDS(document []byte, signature, rsa2048 string) *IMDS {
	m := &IMDS{document: document, signature: signature, rsa2048: rsa2048, tokens: map[string]bool{}}
	m.srv = httptest.NewServer(http.HandlerFunc(m.serve))
	return m
}

// URL is the service's base URL (AgentConfig.EC2MetadataEndpoint).
func (m *IMDS) URL() string { return m.srv.URL }

// Client returns an HTTP client that trusts the service's certificate.
func (m *IMDS) Client() *http.Client { return m.srv.Client() }

// Certificate is the service's TLS certificate.
func (m *IMDS) Certificate() *x509.Certificate { return m.srv.Certificate() }

// Close stops the service.
func (m *IMDS) Close() { m.srv.Close() }

// Stats returns how many tokens were issued and how many metadata requests
// were refused for lacking a valid one.
func (m *IMDS) Stats() (tokens, refused int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.tokenPuts, m.refused
}

func (m *IMDS) serve(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r.URL.Path == "/latest/api/token" {
		if r.Method != http.MethodPut {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		ttl, err := strconv.Atoi(r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds"))
		if err != nil || ttl < 1 || ttl > 21600 {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		var b [16]byte
		rand.Read(b[:])
		tok := hex.EncodeToString(b[:])
		m.tokens[tok] = true
		m.tokenPuts++
		w.Header().Set("X-aws-ec2-metadata-token-ttl-seconds", strconv.Itoa(ttl))
		w.Write([]byte(tok))
		return
	}
	var body string
	switch r.URL.Path {
	case "/latest/dynamic/instance-identity/document":
		body = string(m.document)
	case "/latest/dynamic/instance-identity/signature":
		body = m.signature
	case "/latest/dynamic/instance-identity/rsa2048":
		body = m.rsa2048
	default:
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if !m.tokens[r.Header.Get("X-aws-ec2-metadata-token")] {
		m.refused++
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Write([]byte(body))
}
