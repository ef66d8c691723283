// Package ca is the certificate authority that the server of every tier runs:
// it holds the tier's X.509 CA and JWT signing keys, rotates them, publishes
// their public parts into the trust domain's bundle before use, and signs
// X509-SVIDs, JWT-SVIDs, the server's own TLS certificate and the
// intermediate CAs of downstream tiers. Where a tier's CA certificate comes
// from — self-signed at the root, or signed by a parent tier or an external
// authority — is the Upstream it is given.
package ca

import (
	"context"
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
	"github.com/arborid/arbor/internal/x509util"
)

// Upstream is where a tier's X.509 CA certificate comes from: root.SelfSigned
// for a root tier, the parent tier or an external authority otherwise.
type Upstream interface {
	// MintX509CA returns a CA certificate for key's public key valid for
	// about ttl (it may be shorter; the manager uses what it gets), with the
	// intermediates between it and the roots, and the roots to trust.
	MintX509CA(ctx context.Context, key crypto.Signer, ttl time.Duration) (*MintedCA, error)
}

// MintedCA is a CA certificate minted by an Upstream.
type MintedCA struct {
	Cert *x509.Certificate
	// Intermediates lead from Cert to one of Roots (Cert's issuer first);
	// empty when Cert is signed by a root or is itself a root.
	Intermediates []*x509.Certificate
	// Roots are the trust anchors; they go into the trust domain's bundle.
	Roots []*x509.Certificate
}

// JWTPublisher is implemented by an Upstream that publishes the tier's JWT
// signing keys to its parent (downstream tiers), so that every tier's bundle
// holds every tier's JWT keys.
type JWTPublisher interface {
	// PublishJWTKey publishes k upstream and returns the upstream bundle's
	// JWT authorities, which the manager adds to the local bundle.
	PublishJWTKey(ctx context.Context, k datastore.JWTAuthority) ([]datastore.JWTAuthority, error)
}

// Defaults for the zero values of Config.
const (
	DefaultCATTL          = 24 * time.Hour
	DefaultX509SVIDTTL    = time.Hour
	DefaultJWTSVIDTTL     = 5 * time.Minute
	DefaultRotateInterval = 10 * time.Second
	DefaultPruneGrace     = 24 * time.Hour
)

// Config configures a Manager. It must not be modified after New.
type Config struct {
	// TrustDomain the CA issues for. Required.
	TrustDomain spiffeid.TrustDomain
	// Upstream mints the X.509 CA certificates. Required. If it also
	// implements JWTPublisher, every new JWT key is published through it
	// before it enters the local bundle.
	Upstream Upstream
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
	// RotateInterval is how often Run calls Rotate; zero means 10s.
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
	// ErrBadUpstream: the upstream returned an unusable CA certificate.
	ErrBadUpstream = errors.New("ca: bad upstream CA")
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
	setDefault(&cfg.RotateInterval, DefaultRotateInterval)
	setDefault(&cfg.PruneGrace, DefaultPruneGrace)
	m := &Manager{cfg: cfg, log: cfg.Logger, now: cfg.Now, rand: cfg.Rand}
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

func setDefault(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

// Init loads the CA state from Dir, or prepares and activates the first X.509
// CA and JWT key, then runs one rotation step (which also catches up after a
// long downtime) and makes sure the bundle holds the public material. It may
// be called again; later calls only run the rotation step.
func (m *Manager) Init(ctx context.Context) error {
	m.rotateMu.Lock()
	defer m.rotateMu.Unlock()
	if !m.isInitialized() && m.cfg.Dir != "" {
		st, err := m.loadState()
		if err != nil {
			return err
		}
		if st != nil {
			m.mu.Lock()
			m.x509Cur, m.x509Next, m.jwtCur, m.jwtNext = st.x509Cur, st.x509Next, st.jwtCur, st.jwtNext
			m.mu.Unlock()
			m.log.Info("ca: loaded state", "dir", m.cfg.Dir, "x509_ca_serial", serialOf(st.x509Cur), "jwt_kid", kidOf(st.jwtCur))
		}
	}
	if err := m.step(ctx); err != nil {
		return err
	}
	m.mu.Lock()
	m.initialized = m.x509Cur != nil && m.jwtCur != nil
	ok := m.initialized
	m.mu.Unlock()
	if !ok {
		return errors.New("ca: init: no active authority")
	}
	return nil
}

// Rotate runs one rotation step at m.Now(): it prepares the next X.509 CA and
// JWT key once half of the active one's lifetime has passed (publishing their
// public parts into the bundle at once), activates the prepared one when a
// sixth of the active one's lifetime remains (or it expired), and prunes
// authorities that expired more than PruneGrace ago from the bundle. While
// the active or prepared X.509 CA is capped (shorter than CATTL because the
// upstream's own CA ends first), it asks the upstream again and keeps a CA
// that lives longer; it does not activate a CA with less than X509SVIDTTL
// left while the active one ends later. It keeps going after a failure and
// returns every failure it met.
func (m *Manager) Rotate(ctx context.Context) error {
	m.rotateMu.Lock()
	defer m.rotateMu.Unlock()
	if !m.isInitialized() {
		return ErrNotInitialized
	}
	return m.step(ctx)
}

// Run calls Rotate every RotateInterval and renews the server certificate at
// its half-life, until ctx ends. Failures are logged and retried at the next
// tick; the active authorities keep signing meanwhile.
func (m *Manager) Run(ctx context.Context) error {
	if !m.isInitialized() {
		return ErrNotInitialized
	}
	t := time.NewTicker(m.cfg.RotateInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		stepCtx, cancel := context.WithTimeout(ctx, time.Minute)
		err := m.Rotate(stepCtx)
		cancel()
		if err != nil && ctx.Err() == nil {
			m.log.Warn("ca: rotation step failed", "err", err)
		}
		if sc := m.server.Load(); sc != nil && !m.serverCertFresh(sc) {
			if _, err := m.issueServerCert(); err != nil {
				m.log.Warn("ca: renew server certificate failed", "err", err)
			}
		}
	}
}

// PruneResult counts the authorities a prune removed from the bundle.
type PruneResult struct {
	X509, JWT int
}

// PruneBundle removes from the trust domain's bundle every X.509 and JWT
// authority that expired more than grace ago — the tier's own old ones and
// those handed down by the upstream alike — except the roots the held CAs
// chain to and the held JWT keys; it never removes the last X.509 authority.
// Rotate does the same with PruneGrace; this is the on-demand form (arbor
// bundle prune).
func (m *Manager) PruneBundle(ctx context.Context, grace time.Duration) (PruneResult, error) {
	if grace < 0 {
		return PruneResult{}, fmt.Errorf("%w: negative grace period %v", ErrInvalidArgument, grace)
	}
	m.rotateMu.Lock()
	defer m.rotateMu.Unlock()
	if !m.isInitialized() {
		return PruneResult{}, ErrNotInitialized
	}
	cutoff := m.now().Add(-grace)
	ch, err := m.reconcile(ctx, cutoff, nil, nil, nil)
	if err != nil {
		return PruneResult{}, err
	}
	return PruneResult{X509: ch.x509Pruned, JWT: ch.jwtPruned}, nil
}

func (m *Manager) isInitialized() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.initialized
}

// step is one rotation step; the caller holds rotateMu.
func (m *Manager) step(ctx context.Context) error {
	now := m.now()
	var errs []error

	// X.509 CA.
	if n := m.x509Next; n != nil && !now.Before(n.notAfter) {
		m.log.Warn("ca: dropped expired prepared X.509 CA", "x509_ca_serial", serialOf(n), "not_after", n.notAfter)
		m.setSlots(func() { m.x509Next = nil })
	}
	if err := m.prepareX509(ctx, now); err != nil {
		errs = append(errs, err)
	}
	m.activateX509(now)

	// JWT key.
	if n := m.jwtNext; n != nil && !now.Before(n.notAfter) {
		m.log.Warn("ca: dropped expired prepared JWT key", "jwt_kid", n.kid, "not_after", n.notAfter)
		m.setSlots(func() { m.jwtNext = nil })
	}
	if m.jwtNext == nil && (m.jwtCur == nil || !now.Before(m.jwtCur.prepareAt())) {
		if s, err := m.prepareJWT(ctx, now); err != nil {
			errs = append(errs, err)
		} else {
			m.setSlots(func() { m.jwtNext = s })
			m.log.Info("ca: prepared JWT key", "jwt_kid", s.kid, "not_after", s.notAfter)
		}
	}
	if n := m.jwtNext; n != nil && (m.jwtCur == nil || !now.Before(m.jwtCur.activateAt())) &&
		m.published(now, n.notBefore, n.notAfter, m.jwtCur != nil && now.Before(m.jwtCur.notAfter)) {
		old := m.jwtCur
		m.setSlots(func() { m.jwtCur, m.jwtNext = n, nil })
		m.log.Info("ca: activated JWT key", "jwt_kid", n.kid, "not_after", n.notAfter, "previous_kid", kidOf(old))
	}

	if m.dirty && m.cfg.Dir != "" {
		if err := m.saveState(); err != nil {
			errs = append(errs, err)
		} else {
			m.dirty = false
		}
	}
	if m.x509Cur != nil || m.jwtCur != nil {
		if err := m.publish(ctx, now.Add(-m.cfg.PruneGrace), nil, nil, nil); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// prepareX509 prepares the next X.509 CA when one is due (half of the
// active one's lifetime has passed and none is prepared), and asks again
// while the CA it would replace is capped: a parent caps a child's CA at its
// own CA's expiry and can sign a full one only once it has rotated itself.
// A minted CA is kept when it is what was asked for, or when it ends later
// than the best CA held by a tenth of the CA TTL; otherwise it is thrown
// away before its key is written, and the next try waits capRetry. The
// caller holds rotateMu.
func (m *Manager) prepareX509(ctx context.Context, now time.Time) error {
	cur, next := m.x509Cur, m.x509Next
	due := next == nil && (cur == nil || !now.Before(cur.prepareAt()))
	improve := (next != nil && next.capped) || (next == nil && cur != nil && cur.capped)
	if !due && !improve {
		return nil
	}
	if cur != nil && now.Before(cur.notAfter) && now.Before(m.nextMint) {
		return nil
	}
	best := next
	if best == nil {
		best = cur
	}
	s, err := m.mintX509(ctx, now)
	if err != nil {
		if !due {
			m.nextMint = now.Add(m.capRetry())
		}
		return err
	}
	accept := best == nil ||
		(!s.capped && (due || s.notAfter.After(best.notAfter))) ||
		s.notAfter.After(best.notAfter.Add(m.cfg.CATTL/10))
	if !accept {
		m.nextMint = now.Add(m.capRetry())
		if m.waitingOn() != best {
			m.setWaiting(best)
			m.log.Warn("ca: the upstream cannot yet sign an X.509 CA that outlives the one held; asking again until it can",
				"x509_ca_serial", serialOf(best), "not_after", best.notAfter, "offered_not_after", s.notAfter,
				"retry_every", m.capRetry())
		}
		return nil
	}
	if err := m.commitX509(ctx, now, s); err != nil {
		return err
	}
	m.setSlots(func() { m.x509Next, m.waiting = s, nil })
	m.log.Info("ca: prepared X.509 CA", "x509_ca_serial", serialOf(s), "not_after", s.notAfter, "self_signed", len(s.chain) == 0)
	if s.capped {
		m.nextMint = now.Add(m.capRetry())
		m.log.Warn("ca: the upstream returned a shorter X.509 CA than asked for (capped at its own expiry); preparing again once it can sign a longer one",
			"x509_ca_serial", serialOf(s), "requested_ttl", m.cfg.CATTL, "not_after", s.notAfter,
			"remaining_seconds", int64(s.notAfter.Sub(now).Seconds()), "retry_every", m.capRetry())
	}
	return nil
}

// published reports whether material prepared at preparedAt (valid until
// notAfter) has been public for the publish lead, so that every tier and
// workload below has it before it is used. When the active one is no longer
// usable (curUsable false) there is no point in waiting.
func (m *Manager) published(now, preparedAt, notAfter time.Time, curUsable bool) bool {
	if !curUsable {
		return true
	}
	lead := m.cfg.PublishLead
	if lead == 0 {
		lead = min(notAfter.Sub(preparedAt)/12, 2*time.Minute)
	}
	return !now.Before(preparedAt.Add(lead))
}

// newAnchor reports whether n chains to a root cur does not (a self-signed
// root's next CA, or an upstream that moved to a new root).
func newAnchor(cur, n *x509Slot) bool {
	for _, a := range n.anchors {
		found := false
		for _, c := range cur.anchors {
			if a.Equal(c) {
				found = true
				break
			}
		}
		if !found {
			return true
		}
	}
	return false
}

// activateX509 activates the prepared X.509 CA once a sixth of the active
// one's lifetime remains (or there is none), unless the prepared one would
// cut X509-SVIDs short while the active one is better: then the active one
// stays until a better CA is prepared or it expires. The caller holds
// rotateMu.
func (m *Manager) activateX509(now time.Time) {
	cur, n := m.x509Cur, m.x509Next
	if n == nil || (cur != nil && now.Before(cur.activateAt())) {
		return
	}
	if cur != nil && newAnchor(cur, n) &&
		!m.published(now, n.cert().NotBefore.Add(x509util.Backdate), n.notAfter, now.Before(cur.notAfter)) {
		return // a new root must reach every verifier before anything chains to it
	}
	remaining := n.notAfter.Sub(now)
	if cur != nil && now.Before(cur.notAfter) && remaining < m.cfg.X509SVIDTTL && !n.notAfter.After(cur.notAfter) {
		if m.held != n {
			m.held = n
			m.log.Warn("ca: kept the active X.509 CA: the prepared one ends no later and has less than an X509-SVID TTL left",
				"x509_ca_serial", serialOf(cur), "not_after", cur.notAfter, "prepared_serial", serialOf(n), "prepared_not_after", n.notAfter,
				"x509_svid_ttl", m.cfg.X509SVIDTTL)
		}
		return
	}
	m.setSlots(func() { m.x509Cur, m.x509Next = n, nil })
	m.held = nil
	m.log.Info("ca: activated X.509 CA", "x509_ca_serial", serialOf(n), "not_after", n.notAfter, "previous_serial", serialOf(cur))
	if remaining < m.cfg.X509SVIDTTL {
		m.log.Warn("ca: the active X.509 CA ends before a full X509-SVID TTL; SVIDs end with it until a longer CA is prepared",
			"x509_ca_serial", serialOf(n), "not_after", n.notAfter, "remaining_seconds", int64(remaining.Seconds()),
			"x509_svid_ttl", m.cfg.X509SVIDTTL)
	}
}

func (m *Manager) waitingOn() *x509Slot {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.waiting
}

func (m *Manager) setWaiting(s *x509Slot) {
	m.mu.Lock()
	m.waiting = s
	m.mu.Unlock()
}

// capRetry is how long to wait between mints that can only improve on a
// capped CA: every rotation step, but not more often than 1/200 of the CA
// TTL (an external authority may charge per certificate).
func (m *Manager) capRetry() time.Duration {
	return max(m.cfg.RotateInterval, m.cfg.CATTL/200)
}

// setSlots changes the slots under mu and marks the state dirty.
func (m *Manager) setSlots(f func()) {
	m.mu.Lock()
	f()
	m.mu.Unlock()
	m.dirty = true
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
