package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/x509util"
)

// x509Slot is an X.509 CA: prepared or active. Immutable once built.
type x509Slot struct {
	key     crypto.Signer
	keyFile string // base name in Dir; "" in memory
	minted  MintedCA
	// chain follows a leaf signed by this CA: the CA certificate and the
	// intermediates, without self-signed certificates.
	chain []*x509.Certificate
	// notAfter is the earliest NotAfter of the CA certificate, its
	// intermediates and the root it chains to: nothing this CA signs may
	// outlive it.
	notAfter time.Time
	// anchors are the roots among minted.Roots that the chain ends at (the
	// CA certificate itself when it is self-signed).
	anchors []*x509.Certificate
	// capped is set when the upstream returned a CA that ends noticeably
	// before the lifetime asked for (a parent caps it at its own expiry).
	capped bool
}

func (s *x509Slot) cert() *x509.Certificate { return s.minted.Cert }

// prepareAt is half of the CA's lifetime.
func (s *x509Slot) prepareAt() time.Time { return halfLife(s.cert().NotBefore, s.notAfter) }

// activateAt is when a sixth of the CA's lifetime remains.
func (s *x509Slot) activateAt() time.Time { return lastSixth(s.cert().NotBefore, s.notAfter) }

func halfLife(notBefore, notAfter time.Time) time.Time {
	return notBefore.Add(notAfter.Sub(notBefore) / 2)
}

func lastSixth(notBefore, notAfter time.Time) time.Time {
	return notAfter.Add(-notAfter.Sub(notBefore) / 6)
}

// newX509Slot checks the structure of a minted CA (not its validity period)
// and builds its slot.
func newX509Slot(key crypto.Signer, minted *MintedCA) (*x509Slot, error) {
	if minted == nil || minted.Cert == nil {
		return nil, fmt.Errorf("%w: no certificate", ErrBadUpstream)
	}
	c := minted.Cert
	switch {
	case !x509util.PublicKeyEqual(key.Public(), c.PublicKey):
		return nil, fmt.Errorf("%w: certificate %v is not for the CA key", ErrBadUpstream, c.SerialNumber)
	case !c.BasicConstraintsValid || !c.IsCA:
		return nil, fmt.Errorf("%w: certificate %v is not a CA", ErrBadUpstream, c.SerialNumber)
	case c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0:
		return nil, fmt.Errorf("%w: certificate %v lacks the keyCertSign key usage", ErrBadUpstream, c.SerialNumber)
	case len(minted.Roots) == 0:
		return nil, fmt.Errorf("%w: no roots", ErrBadUpstream)
	}
	s := &x509Slot{
		key: key,
		minted: MintedCA{
			Cert:          c,
			Intermediates: append([]*x509.Certificate(nil), minted.Intermediates...),
			Roots:         append([]*x509.Certificate(nil), minted.Roots...),
		},
	}
	for _, ic := range append([]*x509.Certificate{c}, s.minted.Intermediates...) {
		if !x509util.IsSelfSigned(ic) {
			s.chain = append(s.chain, ic)
		}
	}
	path := append([]*x509.Certificate{c}, s.minted.Intermediates...)
	s.notAfter = x509util.MinNotAfter(path...)
	top := path[len(path)-1]
	if x509util.IsSelfSigned(top) {
		s.anchors = []*x509.Certificate{top}
	} else {
		// The root an SVID chains to bounds its validity like any
		// intermediate: a root that ends first ends the chain. With several
		// candidate roots (a re-issued root with the same key), the one
		// that lives longest is the bound.
		var rootEnd time.Time
		for _, r := range s.minted.Roots {
			if top.CheckSignatureFrom(r) == nil {
				s.anchors = append(s.anchors, r)
				if r.NotAfter.After(rootEnd) {
					rootEnd = r.NotAfter
				}
			}
		}
		if !rootEnd.IsZero() && rootEnd.Before(s.notAfter) {
			s.notAfter = rootEnd
		}
	}
	return s, nil
}

// verify checks that a freshly minted CA chains to its roots and is usable
// at now.
func (s *x509Slot) verify(now time.Time) error {
	c := s.cert()
	if !now.Before(s.notAfter) {
		return fmt.Errorf("%w: certificate %v expires at %v", ErrBadUpstream, c.SerialNumber, s.notAfter)
	}
	at := now
	if at.Before(c.NotBefore) { // tolerate an upstream clock slightly ahead of ours
		at = c.NotBefore
	}
	opts := x509.VerifyOptions{
		Roots:         x509.NewCertPool(),
		Intermediates: x509.NewCertPool(),
		CurrentTime:   at,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}
	for _, r := range s.minted.Roots {
		opts.Roots.AddCert(r)
	}
	for _, ic := range s.minted.Intermediates {
		opts.Intermediates.AddCert(ic)
	}
	if _, err := c.Verify(opts); err != nil {
		return fmt.Errorf("%w: certificate %v does not chain to the roots: %v", ErrBadUpstream, c.SerialNumber, err)
	}
	return nil
}

// jwtSlot is a JWT signing key: prepared or active. Immutable once built.
type jwtSlot struct {
	key       crypto.Signer
	keyFile   string // base name in Dir; "" in memory
	kid       string
	notBefore time.Time
	notAfter  time.Time
	pkix      []byte // public key, PKIX DER
	alg       string
}

func (s *jwtSlot) prepareAt() time.Time  { return halfLife(s.notBefore, s.notAfter) }
func (s *jwtSlot) activateAt() time.Time { return lastSixth(s.notBefore, s.notAfter) }

func (s *jwtSlot) authority() datastore.JWTAuthority {
	return datastore.JWTAuthority{KeyID: s.kid, PublicKey: s.pkix, ExpiresAt: s.notAfter.Unix()}
}

func (s *jwtSlot) status() *JWTKeyStatus {
	if s == nil {
		return nil
	}
	return &JWTKeyStatus{KeyID: s.kid, PublicKey: s.key.Public(), NotBefore: s.notBefore, NotAfter: s.notAfter}
}

func newJWTSlot(key crypto.Signer, kid string, notBefore, notAfter time.Time) (*jwtSlot, error) {
	alg, err := jwtAlgorithm(key)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("ca: marshal JWT public key: %w", err)
	}
	return &jwtSlot{key: key, kid: kid, notBefore: notBefore, notAfter: notAfter, pkix: der, alg: string(alg)}, nil
}

// mintX509 obtains a new X.509 CA from the upstream and checks it; it
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
	s, err := newX509Slot(key, minted)
	if err != nil {
		return nil, err
	}
	if err := s.verify(now); err != nil {
		return nil, err
	}
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
	if p, ok := m.cfg.Upstream.(JWTPublisher); ok {
		if upstreamKeys, err = p.PublishJWTKey(ctx, s.authority()); err != nil {
			return nil, fmt.Errorf("ca: publish JWT key upstream: %w", err)
		}
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

// publish makes the bundle hold the roots of the current and next X.509 CAs
// and the current and next JWT keys (plus the given extra ones), and prunes
// authorities that expired before cutoff. The caller holds rotateMu.
func (m *Manager) publish(ctx context.Context, cutoff time.Time, x *x509Slot, j *jwtSlot, extra []datastore.JWTAuthority) error {
	_, err := m.reconcile(ctx, cutoff, x, j, extra)
	return err
}

// reconcile is publish returning what changed.
func (m *Manager) reconcile(ctx context.Context, cutoff time.Time, x *x509Slot, j *jwtSlot, extra []datastore.JWTAuthority) (bundleChanges, error) {
	var roots, anchors []*x509.Certificate
	for _, s := range []*x509Slot{m.x509Cur, m.x509Next, x} {
		if s != nil {
			roots = append(roots, s.minted.Roots...)
			anchors = append(anchors, s.anchors...)
		}
	}
	var keys []datastore.JWTAuthority
	for _, s := range []*jwtSlot{m.jwtCur, m.jwtNext, j} {
		if s != nil {
			keys = append(keys, s.authority())
		}
	}
	td := m.cfg.TrustDomain
	var ch bundleChanges
	var seq uint64
	_, err := m.cfg.Bundles.UpdateBundle(ctx, td, func(b *datastore.Bundle) (*datastore.Bundle, error) {
		var out *datastore.Bundle
		out, ch = reconcileBundle(b, td, roots, anchors, keys, extra, cutoff)
		if out != nil {
			seq = out.SequenceNumber
		}
		return out, nil
	})
	if err != nil {
		return bundleChanges{}, fmt.Errorf("ca: update bundle: %w", err)
	}
	if ch.changed() {
		m.log.Info("ca: updated bundle", "sequence_number", seq, "x509_added", ch.x509Added, "jwt_added", ch.jwtAdded,
			"x509_pruned", ch.x509Pruned, "jwt_pruned", ch.jwtPruned, "pruned_before", cutoff)
	}
	return ch, nil
}

type bundleChanges struct{ x509Added, jwtAdded, x509Pruned, jwtPruned int }

func (c bundleChanges) changed() bool { return c != bundleChanges{} }

// reconcileBundle returns b with roots and keys added (those whose DER or key
// ID is missing, except roots and extra keys that already expired before
// cutoff) and authorities that expired before cutoff removed. Only the
// anchors (the roots the held CAs chain to) and the own keys are kept
// whatever their expiry: other roots an upstream handed down, such as a
// parent's retired root, leave like any expired authority. A prune that would
// leave no X.509 authority is skipped. It returns b itself when nothing
// changes, otherwise a copy with the sequence number incremented. b is never
// modified.
func reconcileBundle(b *datastore.Bundle, td spiffeid.TrustDomain, roots, anchors []*x509.Certificate, keys, extra []datastore.JWTAuthority, cutoff time.Time) (*datastore.Bundle, bundleChanges) {
	var ch bundleChanges
	out := &datastore.Bundle{TrustDomain: td}
	if b != nil {
		*out = *b
		out.X509Authorities = append([]datastore.X509Authority(nil), b.X509Authorities...)
		out.JWTAuthorities = append([]datastore.JWTAuthority(nil), b.JWTAuthorities...)
	}

	var required [][]byte
	for _, r := range anchors {
		required = append(required, r.Raw)
	}
	for _, r := range roots {
		if r.NotAfter.Before(cutoff) && !containsDER(required, r.Raw) {
			continue
		}
		if !hasX509(out.X509Authorities, r.Raw) {
			out.X509Authorities = append(out.X509Authorities, datastore.X509Authority{Cert: r.Raw})
			ch.x509Added++
		}
	}
	requiredKIDs := map[string]bool{}
	for _, k := range keys {
		requiredKIDs[k.KeyID] = true
	}
	for _, k := range keys {
		if k.KeyID != "" && !hasJWT(out.JWTAuthorities, k.KeyID) {
			out.JWTAuthorities = append(out.JWTAuthorities, k)
			ch.jwtAdded++
		}
	}
	for _, k := range extra {
		if k.KeyID != "" && !jwtExpired(k, cutoff) && !hasJWT(out.JWTAuthorities, k.KeyID) {
			out.JWTAuthorities = append(out.JWTAuthorities, k)
			ch.jwtAdded++
		}
	}

	var keptX509 []datastore.X509Authority
	for _, a := range out.X509Authorities {
		if expiredX509(a.Cert, cutoff) && !containsDER(required, a.Cert) {
			continue
		}
		keptX509 = append(keptX509, a)
	}
	if len(keptX509) > 0 && len(keptX509) < len(out.X509Authorities) {
		ch.x509Pruned = len(out.X509Authorities) - len(keptX509)
		out.X509Authorities = keptX509
	}
	var keptJWT []datastore.JWTAuthority
	for _, a := range out.JWTAuthorities {
		if jwtExpired(a, cutoff) && !requiredKIDs[a.KeyID] {
			ch.jwtPruned++
			continue
		}
		keptJWT = append(keptJWT, a)
	}
	out.JWTAuthorities = keptJWT

	if !ch.changed() {
		return b, ch
	}
	out.SequenceNumber++
	return out, ch
}

func jwtExpired(a datastore.JWTAuthority, cutoff time.Time) bool {
	return a.ExpiresAt != 0 && a.ExpiresAt < cutoff.Unix()
}

func hasX509(as []datastore.X509Authority, der []byte) bool {
	for _, a := range as {
		if bytes.Equal(a.Cert, der) {
			return true
		}
	}
	return false
}

func hasJWT(as []datastore.JWTAuthority, kid string) bool {
	for _, a := range as {
		if a.KeyID == kid {
			return true
		}
	}
	return false
}

func containsDER(list [][]byte, der []byte) bool {
	for _, d := range list {
		if bytes.Equal(d, der) {
			return true
		}
	}
	return false
}

// expiredX509 reports whether the certificate expired before cutoff; an
// unparsable one is kept (reported false).
func expiredX509(der []byte, cutoff time.Time) bool {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return false
	}
	return c.NotAfter.Before(cutoff)
}
