package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"

	"github.com/go-jose/go-jose/v4"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/trustbundle"
)

// The OIDC discovery provider: what cloud IAM, Vault and other OIDC relying
// parties need to trust JWT-SVIDs — a discovery document at
// /.well-known/openid-configuration naming the issuer and a JWKS at /keys
// with the trust domain's JWT signing keys, as SPIRE's oidc-discovery-provider
// serves them. JWT-SVIDs verify through it when they carry the same issuer
// (the server's JWT issuer; it defaults to this provider's).

// OIDCDiscoveryConfig configures the OIDC discovery provider.
type OIDCDiscoveryConfig struct {
	// ListenAddr is the TCP address to serve on.
	ListenAddr string
	// Issuer is the https:// URL relying parties know the provider by; the
	// discovery document is at Issuer + "/.well-known/openid-configuration".
	Issuer string
	// CertFile and KeyFile are the Web PKI certificate and key presented
	// for the issuer's host (PEM), re-read when they change.
	CertFile, KeyFile string
}

func (c *OIDCDiscoveryConfig) validate() error {
	u, err := url.Parse(c.Issuer)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("server: OIDC discovery: issuer %q must be an https:// URL without query or fragment", c.Issuer)
	}
	if c.CertFile == "" || c.KeyFile == "" {
		return errors.New("server: OIDC discovery: a certificate file and a key file are required (relying parties verify the issuer's Web PKI certificate)")
	}
	if _, err := loadKeyPair(c.CertFile, c.KeyFile); err != nil {
		return fmt.Errorf("server: OIDC discovery: %w", err)
	}
	return nil
}

// newOIDCDiscovery returns the provider's HTTP server (TLS only).
func (s *Server) newOIDCDiscovery(c OIDCDiscoveryConfig) *http.Server {
	kp := &keyPairFiles{cert: c.CertFile, key: c.KeyFile, log: s.log}
	p := &oidcProvider{issuer: c.Issuer, bundles: s.bundles, log: s.log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", p.discovery)
	mux.HandleFunc("GET /keys", p.keys)
	return &http.Server{
		Handler:           mux,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: kp.get},
		ReadHeaderTimeout: bundleReadHeaderTimeout,
		ReadTimeout:       bundleReadTimeout,
		WriteTimeout:      bundleWriteTimeout,
		IdleTimeout:       bundleIdleTimeout,
		MaxHeaderBytes:    bundleMaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

// OIDCDiscoveryAddr returns the provider's bound address, or nil.
func (s *Server) OIDCDiscoveryAddr() net.Addr {
	if s.oidcLis == nil {
		return nil
	}
	return s.oidcLis.Addr()
}

type oidcProvider struct {
	issuer  string
	bundles *trustbundle.Cache
	log     *slog.Logger

	mu   sync.Mutex
	from *datastore.Bundle
	jwks []byte
}

func (p *oidcProvider) discovery(w http.ResponseWriter, _ *http.Request) {
	doc := map[string]any{
		"issuer":                                p.issuer,
		"jwks_uri":                              p.issuer + "/keys",
		"authorization_endpoint":                "",
		"response_types_supported":              []string{"id_token"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256", "ES256", "ES384"},
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(doc)
}

// keys serves the own bundle's JWT signing keys as a JWKS, encoded once
// per bundle change.
func (p *oidcProvider) keys(w http.ResponseWriter, _ *http.Request) {
	own := p.bundles.Own()
	if own == nil {
		http.Error(w, "no keys yet", http.StatusServiceUnavailable)
		return
	}
	p.mu.Lock()
	if p.from != own {
		set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
		for _, a := range own.JWTAuthorities {
			pub, err := x509.ParsePKIXPublicKey(a.PublicKey)
			if err != nil {
				continue
			}
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: pub, KeyID: a.KeyID, Use: "sig", Algorithm: algorithmOf(pub)})
		}
		doc, err := json.Marshal(set)
		if err != nil {
			p.mu.Unlock()
			p.log.Error("OIDC discovery: encoding the keys", "err", err)
			http.Error(w, "unable to serve the keys", http.StatusInternalServerError)
			return
		}
		p.from, p.jwks = own, doc
	}
	doc := p.jwks
	p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Write(doc)
}

// algorithmOf is the JWS algorithm arbor signs JWT-SVIDs with for pub.
func algorithmOf(pub any) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return "RS256"
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P384() {
			return "ES384"
		}
		return "ES256"
	}
	return ""
}
