// Package disk is the upstream adapter for a CA whose certificate and private
// key sit in files: the root tier signs its own intermediate CA with them, so
// the tier chains to an existing (often offline-issued) enterprise CA. The
// files are read again whenever they change, so the upstream CA can be
// replaced without restarting the server.
package disk

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/upstream"
)

var _ upstream.Authority = (*Authority)(nil)

// ErrBadFiles is wrapped by the errors about the content of the configured
// files (unparsable, key not matching the certificate, certificate not a
// usable CA, no root to trust).
var ErrBadFiles = errors.New("disk: bad upstream CA files")

// Config configures an Authority. It must not be modified after New.
type Config struct {
	// TrustDomain of the tier. Required.
	TrustDomain spiffeid.TrustDomain
	// CertFile holds the upstream CA certificate (PEM), optionally followed
	// by the certificates that lead from it to its root. Required.
	CertFile string
	// KeyFile holds the upstream CA's private key: PEM PKCS#8 ("PRIVATE
	// KEY"), PKCS#1 ("RSA PRIVATE KEY") or SEC 1 ("EC PRIVATE KEY"). Required.
	KeyFile string
	// BundleFile optionally holds extra roots to trust (PEM). It is required
	// when the certificate in CertFile is not self-signed and CertFile does
	// not end with a self-signed root.
	BundleFile string
	// Subject of the tier's CA certificates; the zero value means O=arbor,
	// CN=<td> intermediate (the serial number is added as serialNumber).
	Subject pkix.Name
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Rand is the source of serial numbers and signatures; nil means
	// crypto/rand.Reader.
	Rand io.Reader
	// Logger receives state changes; nil discards them.
	Logger *slog.Logger
}

// Authority signs the tier's CA certificates with a CA read from files.
type Authority struct {
	cfg  Config
	now  func() time.Time
	rand io.Reader
	log  *slog.Logger

	mu     sync.Mutex
	loaded *material
}

// material is what the files held at one point.
type material struct {
	stamps        []stamp
	cert          *x509.Certificate
	key           crypto.Signer
	intermediates []*x509.Certificate // from cert (if not self-signed) up to the roots
	roots         []*x509.Certificate
}

// stamp identifies a version of a file without reading it.
type stamp struct {
	path    string
	modTime time.Time
	size    int64
}

// New checks cfg and loads the files once, so that a misconfiguration shows
// at start.
func New(cfg Config) (*Authority, error) {
	switch {
	case cfg.TrustDomain.IsZero():
		return nil, errors.New("disk: trust domain is required")
	case cfg.CertFile == "":
		return nil, errors.New("disk: cert_file_path is required")
	case cfg.KeyFile == "":
		return nil, errors.New("disk: key_file_path is required")
	}
	a := &Authority{cfg: cfg, now: cfg.Now, rand: cfg.Rand, log: cfg.Logger}
	if a.now == nil {
		a.now = time.Now
	}
	if a.rand == nil {
		a.rand = rand.Reader
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if _, err := a.material(); err != nil {
		return nil, err
	}
	return a, nil
}

// MintX509CA signs a CA certificate for key with the upstream CA: URI SAN
// spiffe://<td>, basic constraints CA, keyCertSign|cRLSign, valid for ttl
// but never past the upstream CA or its chain.
func (a *Authority) MintX509CA(ctx context.Context, key crypto.Signer, ttl time.Duration) (*upstream.MintedCA, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("disk: ttl must be positive, got %v", ttl)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("disk: %w", err)
	}
	m, err := a.material()
	if err != nil {
		return nil, err
	}
	now := a.now()
	notAfter := now.Add(ttl)
	if limit := upstream.MinNotAfter(append([]*x509.Certificate{m.cert}, m.intermediates...)...); limit.Before(notAfter) {
		notAfter = limit
	}
	subject := a.cfg.Subject
	if len(subject.ToRDNSequence()) == 0 {
		subject = pkix.Name{Organization: []string{"arbor"}, CommonName: a.cfg.TrustDomain.Name() + " intermediate"}
	}
	serial, err := upstream.NewSerialNumber(a.rand)
	if err != nil {
		return nil, fmt.Errorf("disk: %w", err)
	}
	tmpl, err := upstream.CATemplate(a.cfg.TrustDomain, key.Public(), serial, subject, now.Add(-upstream.Backdate), notAfter)
	if err != nil {
		return nil, fmt.Errorf("disk: %w", err)
	}
	der, err := x509.CreateCertificate(a.rand, tmpl, m.cert, key.Public(), m.key)
	if err != nil {
		return nil, fmt.Errorf("disk: sign CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("disk: parse signed CA certificate: %w", err)
	}
	minted := &upstream.MintedCA{
		Cert:          cert,
		Intermediates: append([]*x509.Certificate(nil), m.intermediates...),
		Roots:         append([]*x509.Certificate(nil), m.roots...),
	}
	granted, err := upstream.Validate(minted, key.Public(), a.cfg.TrustDomain, ttl, now)
	if err != nil {
		return nil, fmt.Errorf("disk: %w", err)
	}
	upstream.LogMinted(a.log, "disk", minted, ttl, granted)
	return minted, nil
}

// material returns the files' content, reading them again if any changed
// since the last read. A failed read is returned (and retried next time):
// an operator who replaced the files expects the new CA, not the old one.
func (a *Authority) material() (*material, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	stamps, err := a.stamps()
	if err != nil {
		return nil, err
	}
	if a.loaded != nil && slicesEqual(a.loaded.stamps, stamps) {
		return a.loaded, nil
	}
	m, err := a.load()
	if err != nil {
		return nil, err
	}
	m.stamps = stamps
	if a.loaded != nil {
		a.log.Info("disk: upstream CA files changed; reloaded", "cert_file_path", a.cfg.CertFile, "upstream_serial", m.cert.SerialNumber.String(), "not_after", m.cert.NotAfter)
	}
	a.loaded = m
	return m, nil
}

func (a *Authority) paths() []string {
	p := []string{a.cfg.CertFile, a.cfg.KeyFile}
	if a.cfg.BundleFile != "" {
		p = append(p, a.cfg.BundleFile)
	}
	return p
}

func (a *Authority) stamps() ([]stamp, error) {
	var out []stamp
	names := []string{"cert_file_path", "key_file_path", "bundle_file_path"}
	for i, p := range a.paths() {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("disk: %s: %w", names[i], err)
		}
		out = append(out, stamp{path: p, modTime: fi.ModTime(), size: fi.Size()})
	}
	return out, nil
}

func slicesEqual(a, b []stamp) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].path != b[i].path || !a[i].modTime.Equal(b[i].modTime) || a[i].size != b[i].size {
			return false
		}
	}
	return true
}

func (a *Authority) load() (*material, error) {
	certs, err := upstream.ReadCertificatesFile(a.cfg.CertFile)
	if err != nil {
		return nil, fmt.Errorf("disk: cert_file_path: %w: %w", ErrBadFiles, err)
	}
	keyPEM, err := os.ReadFile(a.cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("disk: key_file_path: %w", err)
	}
	key, err := upstream.ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("disk: key_file_path %s: %w: %v", a.cfg.KeyFile, ErrBadFiles, err)
	}
	cert := certs[0]
	bad := func(format string, args ...any) error {
		return fmt.Errorf("disk: cert_file_path %s: %w: "+format, append([]any{a.cfg.CertFile, ErrBadFiles}, args...)...)
	}
	if !upstream.PublicKeyEqual(key.Public(), cert.PublicKey) {
		return nil, bad("key_file_path %s does not hold the private key of the certificate", a.cfg.KeyFile)
	}
	if err := upstream.CheckCACertificate(cert, a.cfg.TrustDomain); err != nil {
		return nil, fmt.Errorf("disk: cert_file_path %s: %w: %w", a.cfg.CertFile, ErrBadFiles, err)
	}
	m := &material{cert: cert, key: key}
	m.intermediates, m.roots = upstream.SplitChain(certs, false)
	if a.cfg.BundleFile != "" {
		extra, err := upstream.ReadCertificatesFile(a.cfg.BundleFile)
		if err != nil {
			return nil, fmt.Errorf("disk: bundle_file_path: %w: %w", ErrBadFiles, err)
		}
		m.roots = upstream.AppendUnique(m.roots, extra...)
	}
	if len(m.roots) == 0 {
		return nil, bad("the certificate is not self-signed and no root was given: append the chain up to the root to cert_file_path or put the root in bundle_file_path")
	}
	return m, nil
}
