package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/trustbundle"
	"github.com/arborid/arbor/upstream"
)

// The SPIFFE bundle endpoint (SPIFFE Trust Domain and Bundle specification):
// the trust domain's bundle as a SPIFFE bundle JWKS over HTTPS, for other
// trust domains that federate with this one. Every tier may serve it: every
// tier's bundle holds the root(s) and every tier's JWT keys.

// Bundle endpoint profiles.
const (
	// ProfileHTTPSSPIFFE authenticates the endpoint with the server's own
	// X509-SVID (spiffe://<td>/spire/server); clients need a bundle of this
	// trust domain the first time.
	ProfileHTTPSSPIFFE = "https_spiffe"
	// ProfileHTTPSWeb authenticates it with a Web PKI certificate from
	// files, re-read when they change.
	ProfileHTTPSWeb = "https_web"
)

// DefaultBundleRefreshHint is the spiffe_refresh_hint served when none is
// configured (SPIRE's default).
const DefaultBundleRefreshHint = 5 * time.Minute

// BundleEndpointConfig configures the bundle endpoint. Its zero Profile is
// https_spiffe.
type BundleEndpointConfig struct {
	// ListenAddr is the TCP address to serve on ("0.0.0.0:8443").
	ListenAddr string
	// Profile is ProfileHTTPSSPIFFE or ProfileHTTPSWeb.
	Profile string
	// RefreshHint is served as spiffe_refresh_hint; zero means
	// DefaultBundleRefreshHint.
	RefreshHint time.Duration
	// CertFile and KeyFile are the Web PKI certificate chain and key
	// (PEM) of ProfileHTTPSWeb; they are re-read when they change.
	CertFile, KeyFile string
}

func (c *BundleEndpointConfig) validate() error {
	switch c.Profile {
	case "", ProfileHTTPSSPIFFE:
		if c.CertFile != "" || c.KeyFile != "" {
			return errors.New("server: bundle endpoint: cert and key files are for the https_web profile; https_spiffe presents the server's SVID")
		}
	case ProfileHTTPSWeb:
		if c.CertFile == "" || c.KeyFile == "" {
			return errors.New("server: bundle endpoint: the https_web profile needs a certificate file and a key file")
		}
	default:
		return fmt.Errorf("server: bundle endpoint: unknown profile %q (want %s or %s)", c.Profile, ProfileHTTPSSPIFFE, ProfileHTTPSWeb)
	}
	if c.RefreshHint < 0 {
		return fmt.Errorf("server: bundle endpoint: negative refresh hint %v", c.RefreshHint)
	}
	return nil
}

// Bounds of the bundle endpoint's HTTP server: a bundle request is one
// small GET.
const (
	bundleReadHeaderTimeout = 5 * time.Second
	bundleReadTimeout       = 10 * time.Second
	bundleWriteTimeout      = 10 * time.Second
	bundleIdleTimeout       = 60 * time.Second
	bundleMaxHeaderBytes    = 8 << 10
)

// newBundleEndpoint returns the endpoint's HTTP server (TLS only: a plain
// HTTP request on its port gets Go's "client sent an HTTP request to an
// HTTPS server" answer and no bundle).
func (s *Server) newBundleEndpoint(c BundleEndpointConfig) (*http.Server, error) {
	hint := c.RefreshHint
	if hint == 0 {
		hint = DefaultBundleRefreshHint
	}
	handler := &bundleHandler{src: &ownBundleSource{bundles: s.bundles, td: s.cfg.TrustDomain, hint: hint}, log: s.log}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	switch c.Profile {
	case ProfileHTTPSWeb:
		kp := &keyPairFiles{cert: c.CertFile, key: c.KeyFile, log: s.log}
		if _, err := kp.get(nil); err != nil {
			return nil, fmt.Errorf("server: bundle endpoint: %w", err)
		}
		tc.GetCertificate = kp.get
	default:
		tc.GetCertificate = s.ca.ServerCertificate
	}
	return &http.Server{
		Handler:           handler,
		TLSConfig:         tc,
		ReadHeaderTimeout: bundleReadHeaderTimeout,
		ReadTimeout:       bundleReadTimeout,
		WriteTimeout:      bundleWriteTimeout,
		IdleTimeout:       bundleIdleTimeout,
		MaxHeaderBytes:    bundleMaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}, nil
}

// BundleEndpointAddr returns the bundle endpoint's bound address, or nil.
func (s *Server) BundleEndpointAddr() net.Addr {
	if s.bundleLis == nil {
		return nil
	}
	return s.bundleLis.Addr()
}

// bundleHandler answers GET with the SPIFFE bundle document (the same
// document go-spiffe's federation.NewHandler serves, which encodes it again
// on every request; encoding dominated the cost of a request, so the
// document is encoded once per bundle change).
type bundleHandler struct {
	src *ownBundleSource
	log *slog.Logger
}

func (h *bundleHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "method is not allowed", http.StatusMethodNotAllowed)
		return
	}
	doc, err := h.src.document()
	if err != nil {
		h.log.Warn("bundle endpoint: no bundle to serve", "err", err)
		http.Error(w, "unable to serve the bundle", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(doc)
}

// ownBundleSource serves the own bundle from the in-memory cache as a SPIFFE
// bundle (X.509 authorities, JWT keys, sequence number, refresh hint),
// converted and encoded only when the cached bundle changes.
type ownBundleSource struct {
	bundles *trustbundle.Cache
	td      spiffeid.TrustDomain
	hint    time.Duration

	mu     sync.Mutex
	from   any // the cached datastore bundle last converted
	bundle *spiffebundle.Bundle
	doc    []byte
}

// document returns the encoded SPIFFE bundle of the current own bundle.
func (o *ownBundleSource) document() ([]byte, error) {
	if _, err := o.GetBundleForTrustDomain(o.td); err != nil {
		return nil, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.doc, nil
}

// GetBundleForTrustDomain implements spiffebundle.Source.
func (o *ownBundleSource) GetBundleForTrustDomain(td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	if td != o.td {
		return nil, fmt.Errorf("no bundle for trust domain %q", td)
	}
	own := o.bundles.Own()
	if own == nil {
		return nil, errors.New("the trust domain has no bundle yet")
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.from == any(own) && o.bundle != nil {
		return o.bundle, nil
	}
	b := spiffebundle.New(o.td)
	for _, a := range own.X509Authorities {
		cert, err := x509.ParseCertificate(a.Cert)
		if err != nil {
			continue // validated on the way in
		}
		b.AddX509Authority(cert)
	}
	for _, k := range own.JWTAuthorities {
		pub, err := x509.ParsePKIXPublicKey(k.PublicKey)
		if err != nil {
			continue
		}
		if err := b.AddJWTAuthority(k.KeyID, pub); err != nil {
			continue
		}
	}
	b.SetSequenceNumber(own.SequenceNumber)
	b.SetRefreshHint(o.hint)
	doc, err := b.Marshal()
	if err != nil {
		return nil, fmt.Errorf("encoding the bundle: %w", err)
	}
	o.from, o.bundle, o.doc = own, b, doc
	return b, nil
}

// keyPairFiles serves a certificate and key from files, re-reading them when
// either file's modification time or size changes, and keeping the last good
// pair when a new one does not load (an operator mid-way through replacing
// them).
type keyPairFiles struct {
	cert, key string
	log       *slog.Logger

	mu      sync.Mutex
	stamp   string
	current *tls.Certificate
}

func (k *keyPairFiles) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	stamp, err := fileStamp(k.cert, k.key)
	k.mu.Lock()
	defer k.mu.Unlock()
	if err == nil && stamp == k.stamp && k.current != nil {
		return k.current, nil
	}
	pair, lerr := loadKeyPair(k.cert, k.key)
	switch {
	case lerr == nil:
		k.current, k.stamp = pair, stamp
		return pair, nil
	case k.current != nil:
		k.log.Warn("bundle endpoint: keeping the previous certificate", "cert_file", k.cert, "err", lerr)
		return k.current, nil
	}
	return nil, lerr
}

func loadKeyPair(certFile, keyFile string) (*tls.Certificate, error) {
	chain, err := upstream.ReadCertificatesFile(certFile)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	key, err := upstream.ParsePrivateKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", keyFile, err)
	}
	if !upstream.PublicKeyEqual(chain[0].PublicKey, key.Public()) {
		return nil, fmt.Errorf("key file %s does not match certificate file %s", keyFile, certFile)
	}
	pair := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		pair.Certificate = append(pair.Certificate, c.Raw)
	}
	return pair, nil
}

func fileStamp(paths ...string) (string, error) {
	var stamp string
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return "", err
		}
		stamp += fmt.Sprintf("%s:%d:%d;", p, fi.ModTime().UnixNano(), fi.Size())
	}
	return stamp, nil
}
