package ca

// Rotation, top to bottom: Init and Rotate run one step; a step prepares the
// next X.509 CA and JWT key at half of the active one's lifetime (minting
// the CA from the upstream and publishing the public parts into the bundle
// at once), activates the prepared one when a sixth of the active one's
// lifetime remains and the publish lead has passed, saves the state and
// reconciles the bundle (bundle.go).

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/upstream"
)

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
			m.x509Old, m.jwtOld = st.x509Old, st.jwtOld
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
		case <-m.wake:
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
	if m.x509Cur != nil {
		if err := m.replaceTainted(ctx, now); err != nil {
			errs = append(errs, err)
		}
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
		m.activateJWTSlot(n, "scheduled")
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

// mintX509 obtains a new X.509 CA from the upstream and checks it with
// upstream.Validate (the one rule set for every source; without the
// lifetime floor, since a parent tier caps its child at its own expiry); it
// neither stores its key nor publishes it (see commitX509), so that a CA
// that is no better than the ones held can be thrown away.
func (m *Manager) mintX509(ctx context.Context, now time.Time) (*x509Slot, error) {
	key, err := m.cfg.KeyType.Generate(m.rand)
	if err != nil {
		return nil, err
	}
	minted, err := m.cfg.Upstream.MintX509CA(ctx, key, m.cfg.CATTL)
	if err != nil {
		return nil, fmt.Errorf("ca: mint X.509 CA: %w", err)
	}
	if _, err := upstream.Validate(minted, key.Public(), m.cfg.TrustDomain, 0, now); err != nil {
		return nil, fmt.Errorf("ca: mint X.509 CA: %w", err)
	}
	s := newX509Slot(key, minted)
	s.capped = s.notAfter.Before(now.Add(m.cfg.CATTL - m.capTolerance()))
	return s, nil
}

// capTolerance is how much shorter than asked a CA may be without counting
// as capped: clock skew between tiers and whole-second TTLs on the wire.
func (m *Manager) capTolerance() time.Duration {
	return min(m.cfg.CATTL/20, time.Minute)
}

// commitX509 stores a minted CA's key and publishes its roots into the
// bundle, so that it is trusted before it is used.
func (m *Manager) commitX509(ctx context.Context, now time.Time, s *x509Slot) error {
	if m.cfg.Dir != "" {
		var err error
		if s.keyFile, err = m.writeKey("x509-ca", s.key); err != nil {
			return err
		}
	}
	return m.publish(ctx, now.Add(-m.cfg.PruneGrace), s, nil, nil)
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
		!m.published(now, n.cert().NotBefore.Add(upstream.Backdate), n.notAfter, now.Before(cur.notAfter)) {
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
	m.activateX509Slot(n, "scheduled")
	if remaining < m.cfg.X509SVIDTTL {
		m.log.Warn("ca: the active X.509 CA ends before a full X509-SVID TTL; SVIDs end with it until a longer CA is prepared",
			"x509_ca_serial", serialOf(n), "not_after", n.notAfter, "remaining_seconds", int64(remaining.Seconds()),
			"x509_svid_ttl", m.cfg.X509SVIDTTL)
	}
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

// prepareJWT generates a new JWT key, publishes it upstream if the upstream
// takes JWT keys, and publishes it into the bundle.
func (m *Manager) prepareJWT(ctx context.Context, now time.Time) (*jwtSlot, error) {
	key, err := m.cfg.JWTKeyType.Generate(m.rand)
	if err != nil {
		return nil, err
	}
	kid, err := newKeyID(m.rand)
	if err != nil {
		return nil, err
	}
	s, err := newJWTSlot(key, kid, now, now.Add(m.cfg.CATTL))
	if err != nil {
		return nil, err
	}
	var upstreamKeys []datastore.JWTAuthority
	if p := m.cfg.JWTPublisher; p != nil {
		keys, err := p.PublishJWTKey(ctx, jwtKeyOf(s.authority()))
		if err != nil {
			return nil, fmt.Errorf("ca: publish JWT key upstream: %w", err)
		}
		upstreamKeys = jwtAuthoritiesOf(keys)
	}
	if m.cfg.Dir != "" {
		if s.keyFile, err = m.writeKey("jwt", key); err != nil {
			return nil, err
		}
	}
	if err := m.publish(ctx, now.Add(-m.cfg.PruneGrace), nil, s, upstreamKeys); err != nil {
		return nil, err
	}
	return s, nil
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
