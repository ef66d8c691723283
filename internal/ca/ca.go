// Package ca is the certificate authority that the server of every tier runs:
// it holds the tier's X.509 CA and JWT signing keys, rotates them, publishes
// their public parts into the trust domain's bundle before use, and signs
// X509-SVIDs, JWT-SVIDs, the server's own TLS certificate and the
// intermediate CAs of downstream tiers. Where a tier's CA certificate comes
// from — self-signed at the root, or signed by a parent tier or an external
// authority — is the upstream.Authority it is given.
package ca

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/defaults"
	"github.com/arborid/arbor/upstream"
)

// Defaults for the zero values of Config.
const (
	DefaultCATTL          = defaults.CATTL
	DefaultX509SVIDTTL    = defaults.X509SVIDTTL
	DefaultJWTSVIDTTL     = defaults.JWTSVIDTTL
	DefaultRotateInterval = 10 * time.Second
	DefaultPruneGrace     = 24 * time.Hour
)

// Config configures a Manager. It must not be modified after New.
type Config struct {
	// TrustDomain the CA issues for. Required.
	TrustDomain spiffeid.TrustDomain
	// Upstream mints the X.509 CA certificates. Required. Every CA it
	// returns is checked with upstream.Validate.
	Upstream upstream.Authority
	// SignedUpstream reports that Upstream is another authority (an
	// external PKI or a parent tier) rather than the tier itself
	// (root.SelfSigned): its CAs are then not bundle roots, so an operator
	// taints the upstream authority that signed them, not the CA itself
	// (SPIRE's rule for TaintX509Authority and TaintX509UpstreamAuthority).
	SignedUpstream bool
	// JWTPublisher, set for a downstream tier (its parent link), takes
	// every new JWT key before it enters the local bundle, and its answer
	// (the parent's JWT keys) is added to the bundle; nil for a root tier.
	JWTPublisher upstream.JWTPublisher
	// ChooseDownstreamCA picks the CA that signs a child tier's CA for ttl
	// at now: the active one or the prepared one (nil when none is
	// prepared). It is the parent side's policy of nesting
	// (downstream.ChooseSigningCA); nil means the active one always.
	ChooseDownstreamCA func(now time.Time, ttl time.Duration, active, prepared *upstream.MintedCA) *upstream.MintedCA
	// Bundles holds the trust domain's own bundle. Required.
	Bundles datastore.BundleStore
	// KeyType of the X.509 CA keys; the zero value is ec-p256.
	KeyType KeyType
	// JWTKeyType of the JWT signing keys; the zero value is ec-p256.
	JWTKeyType KeyType
	// CATTL is the requested lifetime of X.509 CAs and JWT keys; zero means
	// DefaultCATTL (24h).
	CATTL time.Duration
	// X509SVIDTTL is the default X509-SVID lifetime; zero means 1h.
	X509SVIDTTL time.Duration
	// JWTSVIDTTL is the default JWT-SVID lifetime; zero means 5m.
	JWTSVIDTTL time.Duration
	// Dir stores the keys (PKCS#8 PEM, mode 0600) and the CA state, so that
	// a restarted server keeps its CA and JWT key. It is created with mode
	// 0700 if missing and should be dedicated to the CA: key files in it
	// that the state does not reference are deleted. "" keeps everything in
	// memory.
	Dir string
	// JWTIssuer, if set, is the "iss" claim of JWT-SVIDs.
	JWTIssuer string
	// ServerDNSNames are extra DNS SANs of the server's TLS certificate.
	ServerDNSNames []string
	// PublishLead is the least time between publishing a prepared JWT key or
	// new root CA in the bundle and activating it, so that it reaches every
	// tier and workload first even when preparation ran late (the upstream
	// was unreachable until after the activation point). Zero means
	// min(lifetime/12, 2m). It never delays activation past the expiry of
	// the active one.
	PublishLead time.Duration
	// RotateInterval is how often Run calls Rotate; zero means 10s, or a
	// sixtieth of CATTL when that is shorter (at least 100ms), so that the
	// activation window (the last sixth of a CA's life) holds ten steps
	// however short the CA lives.
	RotateInterval time.Duration
	// PruneGrace is how long after expiry an authority stays in the bundle
	// before Rotate removes it; zero means 24h.
	PruneGrace time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Rand is the source of serial numbers, key IDs and (where the crypto
	// library honours it) keys; nil means crypto/rand.Reader.
	Rand io.Reader
	// Logger receives state changes; nil discards them.
	Logger *slog.Logger
}

// Errors returned by the manager. Callers branch with errors.Is.
var (
	// ErrNotInitialized: Init has not completed successfully.
	ErrNotInitialized = errors.New("ca: not initialized")
	// ErrInvalidArgument: a signing request is malformed (the message says
	// what); an API handler maps it to InvalidArgument.
	ErrInvalidArgument = errors.New("ca: invalid argument")
	// ErrExpired: the active authority has no lifetime left to sign with.
	ErrExpired = errors.New("ca: signing authority expired")
	// ErrBadUpstream: the upstream returned an unusable CA certificate
	// (upstream.Validate refused it); it is upstream.ErrRefused.
	ErrBadUpstream = upstream.ErrRefused
	// ErrBadState: the state in Dir cannot be loaded (corrupt, missing key
	// files, or another trust domain's).
	ErrBadState = errors.New("ca: bad stored state")
)

// Manager is a tier's certificate authority. Create it with New, call Init
// once before use and Run for the rotation loop. Signing methods are safe for
// concurrent use.
type Manager struct {
	cfg  Config
	log  *slog.Logger
	now  func() time.Time
	rand io.Reader

	// rotateMu serializes Init and Rotate; it is held across upstream and
	// datastore calls. Only its holder writes the slots below, so it may read
	// them without mu.
	rotateMu sync.Mutex
	dirty    bool // state changed since the last successful save
	// nextMint is when a mint that can only improve on the CAs held (the
	// current or prepared one is capped) may be tried again.
	nextMint time.Time
	// held is the prepared CA last kept from activation, so that it is
	// logged once, not at every step.
	held *x509Slot

	mu          sync.RWMutex
	initialized bool
	x509Cur     *x509Slot
	x509Next    *x509Slot
	// waiting is the CA held (current or prepared) that the upstream's last
	// offer could not outlive: the tier's CA lifetime is limited upstream.
	waiting *x509Slot
	jwtCur  *jwtSlot
	jwtNext *jwtSlot
	// x509Old and jwtOld are the authorities the last activation replaced
	// (no private key is kept): the ones an operator taints and revokes.
	x509Old *x509Slot
	jwtOld  *jwtSlot
	// parentTainted are X.509 authorities the parent's bundle marks
	// tainted that this tier's bundle does not yet: the rotation marks
	// them once the active CA no longer chains to them (authority.go).
	parentTainted []*x509.Certificate
	// parentLists is what the parent's bundle held at the last merge: the
	// DER of its X.509 authorities and its JWT key IDs. A revoke of one of
	// them here would be undone by the next merge, so it is refused.
	parentX509 map[string]bool
	parentKIDs map[string]bool
	// wake asks Run for a rotation step before the next tick.
	wake chan struct{}

	serverMu  sync.Mutex // serializes server certificate issuance
	serverKey crypto.Signer
	server    atomic.Pointer[serverCert]
}

// New checks cfg and returns a Manager; it does no I/O.
func New(cfg Config) (*Manager, error) {
	switch {
	case cfg.TrustDomain.IsZero():
		return nil, errors.New("ca: config: trust domain is required")
	case cfg.Upstream == nil:
		return nil, errors.New("ca: config: upstream is required")
	case cfg.Bundles == nil:
		return nil, errors.New("ca: config: bundle store is required")
	case !cfg.KeyType.valid():
		return nil, fmt.Errorf("ca: config: key type: %w %v", ErrUnknownKeyType, cfg.KeyType)
	case !cfg.JWTKeyType.valid():
		return nil, fmt.Errorf("ca: config: JWT key type: %w %v", ErrUnknownKeyType, cfg.JWTKeyType)
	}
	for name, d := range map[string]time.Duration{
		"ca ttl": cfg.CATTL, "x509 svid ttl": cfg.X509SVIDTTL, "jwt svid ttl": cfg.JWTSVIDTTL,
		"rotate interval": cfg.RotateInterval, "prune grace": cfg.PruneGrace,
	} {
		if d < 0 {
			return nil, fmt.Errorf("ca: config: %s is negative (%v)", name, d)
		}
	}
	setDefault(&cfg.CATTL, DefaultCATTL)
	setDefault(&cfg.X509SVIDTTL, DefaultX509SVIDTTL)
	setDefault(&cfg.JWTSVIDTTL, DefaultJWTSVIDTTL)
	setDefault(&cfg.RotateInterval, min(DefaultRotateInterval, max(cfg.CATTL/60, 100*time.Millisecond)))
	setDefault(&cfg.PruneGrace, DefaultPruneGrace)
	m := &Manager{cfg: cfg, log: cfg.Logger, now: cfg.Now, rand: cfg.Rand, wake: make(chan struct{}, 1)}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.rand == nil {
		m.rand = rand.Reader
	}
	return m, nil
}

// CATTL is the lifetime the manager asks for its X.509 CAs and JWT keys
// (Config.CATTL or its default).
func (m *Manager) CATTL() time.Duration { return m.cfg.CATTL }

// X509SVIDTTL is the default X509-SVID lifetime (Config.X509SVIDTTL or its
// default).
func (m *Manager) X509SVIDTTL() time.Duration { return m.cfg.X509SVIDTTL }

func setDefault(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

// Status describes the manager's authorities.
type Status struct {
	X509CA     *x509.Certificate // active; nil before Init
	NextX509CA *x509.Certificate // prepared; nil if none
	JWTKey     *JWTKeyStatus     // active; nil before Init
	NextJWTKey *JWTKeyStatus     // prepared; nil if none
	// X509NotAfter is the earliest NotAfter of the active CA's chain (the
	// CA, its intermediates and the root it chains to): no X509-SVID
	// outlives it, so it is the tier's remaining X.509 budget. Zero before
	// Init.
	X509NotAfter time.Time
	// X509Capped reports that the upstream limits the active CA: it
	// returned it shorter than the CA TTL asked for (a parent caps it at
	// its own CA's expiry), or its last offer of a successor could not
	// outlive it. The manager keeps asking until it gets a longer one.
	// NextX509Capped reports that the prepared CA was returned short.
	X509Capped, NextX509Capped bool
}

// JWTKeyStatus describes a JWT signing key.
type JWTKeyStatus struct {
	KeyID     string
	PublicKey crypto.PublicKey
	NotBefore time.Time
	NotAfter  time.Time
}

// Status returns the active and prepared authorities.
func (m *Manager) Status() Status {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var s Status
	if m.x509Cur != nil {
		s.X509CA = m.x509Cur.cert()
		s.X509NotAfter = m.x509Cur.notAfter
		s.X509Capped = m.x509Cur.capped || m.waiting == m.x509Cur
	}
	if m.x509Next != nil {
		s.NextX509CA = m.x509Next.cert()
		s.NextX509Capped = m.x509Next.capped
	}
	s.JWTKey = m.jwtCur.status()
	s.NextJWTKey = m.jwtNext.status()
	return s
}

// X509CA returns the active CA certificate and the chain that follows an
// SVID's leaf (the CA certificate and intermediates without self-signed
// roots; empty when the CA is itself a root). Both are nil before Init.
func (m *Manager) X509CA() (cert *x509.Certificate, chain []*x509.Certificate) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.x509Cur == nil {
		return nil, nil
	}
	return m.x509Cur.cert(), append([]*x509.Certificate(nil), m.x509Cur.chain...)
}

func serialOf(s *x509Slot) string {
	if s == nil {
		return ""
	}
	return s.cert().SerialNumber.String()
}

func kidOf(s *jwtSlot) string {
	if s == nil {
		return ""
	}
	return s.kid
}
