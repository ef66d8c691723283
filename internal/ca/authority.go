package ca

// The tier's authorities as an operator manages them (SPIRE's
// localauthority.v1): each kind, X.509 CA and JWT key, has an active
// authority, at most one prepared (published in the bundle, not yet used)
// and at most one old (the one the last activation replaced). The manual
// operations are the same state machine the rotation drives on its own
// schedule: a prepare fills the prepared slot, an activation moves active to
// old and prepared to active. Taint and revoke act on the old authority in
// the trust domain's bundle (the datastore), so every server sharing it, and
// every agent and child tier reading it, sees them: a tainted authority is
// one whose SVIDs and intermediates are re-issued early, a revoked one leaves
// the bundle.

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/upstream"
)

// Errors that refuse an authority operation, besides ErrInvalidArgument and
// ErrNotInitialized. Callers branch with errors.Is on the *AuthorityError.
var (
	// ErrFailedPrecondition: the operation does not apply to this tier or
	// to the authority's state (a local taint on a tier whose CA comes from
	// an upstream, an activation of an authority that is not prepared).
	ErrFailedPrecondition = errors.New("ca: failed precondition")
	// ErrAuthorityNotFound: the bundle holds no authority with that ID.
	ErrAuthorityNotFound = errors.New("ca: authority not found")
)

// AuthorityError is a refused authority operation: Kind is one of
// ErrInvalidArgument, ErrFailedPrecondition, ErrAuthorityNotFound or
// ErrNotInitialized, Reason says why in SPIRE's words.
type AuthorityError struct {
	Kind   error
	Reason string
}

func (e *AuthorityError) Error() string { return e.Reason }
func (e *AuthorityError) Unwrap() error { return e.Kind }

func refuse(kind error, format string, args ...any) error {
	return &AuthorityError{Kind: kind, Reason: fmt.Sprintf(format, args...)}
}

// AuthorityState describes one authority.
type AuthorityState struct {
	// AuthorityID is, for an X.509 CA, its certificate's subject key ID in
	// lowercase hex; for a JWT key, its key ID.
	AuthorityID string
	ExpiresAt   time.Time
	// UpstreamAuthorityID is, for an X.509 CA signed by another authority
	// (an upstream or a parent tier), the subject key ID of its issuer (its
	// authority key ID); "" for a self-signed CA and for JWT keys.
	UpstreamAuthorityID string
}

// AuthorityStates are the active, prepared and old authorities of one kind;
// Prepared and Old are nil when there is none.
type AuthorityStates struct {
	Active, Prepared, Old *AuthorityState
}

// SubjectKeyID is how an X.509 authority is named: the certificate's subject
// key ID in lowercase hex, or, for a certificate without one, the SHA-1 of
// its public key (RFC 5280's method 1).
func SubjectKeyID(c *x509.Certificate) string {
	if len(c.SubjectKeyId) > 0 {
		return hex.EncodeToString(c.SubjectKeyId)
	}
	sum := sha1.Sum(subjectPublicKeyBits(c))
	return hex.EncodeToString(sum[:])
}

// subjectPublicKeyBits is the BIT STRING of the certificate's
// SubjectPublicKeyInfo, or the whole encoding when it cannot be split.
func subjectPublicKeyBits(c *x509.Certificate) []byte {
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(c.RawSubjectPublicKeyInfo, &spki); err != nil {
		return c.RawSubjectPublicKeyInfo
	}
	return spki.PublicKey.Bytes
}

// withoutKey is s as an old authority: its private key is not kept.
func (s *x509Slot) withoutKey() *x509Slot {
	c := *s
	c.key, c.keyFile = nil, ""
	return &c
}

func (s *jwtSlot) withoutKey() *jwtSlot {
	c := *s
	c.key, c.keyFile = nil, ""
	return &c
}

func (s *x509Slot) authorityID() string { return SubjectKeyID(s.cert()) }

func (s *x509Slot) upstreamAuthorityID() string {
	c := s.cert()
	if upstream.IsSelfSigned(c) || len(c.AuthorityKeyId) == 0 {
		return ""
	}
	return hex.EncodeToString(c.AuthorityKeyId)
}

func (s *x509Slot) state() *AuthorityState {
	if s == nil {
		return nil
	}
	return &AuthorityState{AuthorityID: s.authorityID(), ExpiresAt: s.notAfter, UpstreamAuthorityID: s.upstreamAuthorityID()}
}

func (s *jwtSlot) state() *AuthorityState {
	if s == nil {
		return nil
	}
	return &AuthorityState{AuthorityID: s.kid, ExpiresAt: s.notAfter}
}

// HasUpstreamAuthority reports whether the tier's X.509 CA is signed by
// another authority (an external PKI or a parent tier) rather than by
// itself: then its own CAs are not bundle roots, and an operator taints or
// revokes the upstream authority instead (SPIRE's rule).
func (m *Manager) HasUpstreamAuthority() bool {
	return m.cfg.SignedUpstream
}

// X509AuthorityStates returns the X.509 CAs; ErrNotInitialized before Init.
func (m *Manager) X509AuthorityStates() (AuthorityStates, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if !m.initialized || m.x509Cur == nil {
		return AuthorityStates{}, refuse(ErrNotInitialized, "server is initializing")
	}
	return AuthorityStates{Active: m.x509Cur.state(), Prepared: m.x509Next.state(), Old: m.x509Old.state()}, nil
}

// JWTAuthorityStates returns the JWT keys; ErrNotInitialized before Init.
func (m *Manager) JWTAuthorityStates() (AuthorityStates, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if !m.initialized || m.jwtCur == nil {
		return AuthorityStates{}, refuse(ErrNotInitialized, "server is initializing")
	}
	return AuthorityStates{Active: m.jwtCur.state(), Prepared: m.jwtNext.state(), Old: m.jwtOld.state()}, nil
}

// lockInitialized takes rotateMu for an operation, refusing before Init.
func (m *Manager) lockInitialized() error {
	m.rotateMu.Lock()
	if !m.isInitialized() {
		m.rotateMu.Unlock()
		return refuse(ErrNotInitialized, "server is initializing")
	}
	return nil
}

// PrepareX509Authority mints a new X.509 CA from the tier's upstream and
// publishes its roots into the bundle, replacing any prepared one; it
// becomes active by ActivateX509Authority or by the rotation at its time.
func (m *Manager) PrepareX509Authority(ctx context.Context) (*AuthorityState, error) {
	if err := m.lockInitialized(); err != nil {
		return nil, err
	}
	defer m.rotateMu.Unlock()
	now := m.now()
	s, err := m.mintX509(ctx, now)
	if err != nil {
		return nil, err
	}
	if t := m.taintedIn(ctx); t.chains(s) {
		return nil, fmt.Errorf("ca: prepare X.509 CA: the upstream signed it with a tainted authority")
	}
	if err := m.commitX509(ctx, now, s); err != nil {
		return nil, err
	}
	m.setSlots(func() { m.x509Next, m.waiting = s, nil })
	m.log.Info("ca: prepared X.509 CA", "x509_ca_serial", serialOf(s), "local_authority_id", s.authorityID(), "not_after", s.notAfter, "manual", true)
	return s.state(), m.saveAndPublish(ctx, now)
}

// ActivateX509Authority makes the prepared X.509 CA, named by its authority
// ID, the active one at once; the active one becomes old.
func (m *Manager) ActivateX509Authority(ctx context.Context, id string) (*AuthorityState, error) {
	if err := m.lockInitialized(); err != nil {
		return nil, err
	}
	defer m.rotateMu.Unlock()
	n := m.x509Next
	switch {
	case id == "":
		return nil, refuse(ErrInvalidArgument, "no authority ID provided")
	case m.x509Cur.authorityID() == id || (m.x509Old != nil && m.x509Old.authorityID() == id):
		return nil, refuse(ErrFailedPrecondition, "only Prepared authorities can be activated")
	case n == nil || n.authorityID() != id:
		return nil, refuse(ErrInvalidArgument, "unexpected authority ID")
	}
	now := m.now()
	if !now.Before(n.notAfter) {
		return nil, refuse(ErrFailedPrecondition, "the prepared authority has expired")
	}
	m.activateX509Slot(n, "manual")
	return n.state(), m.saveAndPublish(ctx, now)
}

// activateX509Slot makes n (the prepared CA) active and the active one old;
// the caller holds rotateMu.
func (m *Manager) activateX509Slot(n *x509Slot, why string) {
	cur := m.x509Cur
	m.setSlots(func() {
		if cur != nil {
			m.x509Old = cur.withoutKey()
		}
		m.x509Cur, m.x509Next = n, nil
	})
	m.held = nil
	m.log.Info("ca: activated X.509 CA", "x509_ca_serial", serialOf(n), "local_authority_id", n.authorityID(), "not_after", n.notAfter,
		"previous_serial", serialOf(cur), "reason", why)
}

// activateJWTSlot makes n (the prepared key) active and the active one old.
func (m *Manager) activateJWTSlot(n *jwtSlot, why string) {
	cur := m.jwtCur
	m.setSlots(func() {
		if cur != nil {
			m.jwtOld = cur.withoutKey()
		}
		m.jwtCur, m.jwtNext = n, nil
	})
	m.log.Info("ca: activated JWT key", "jwt_kid", n.kid, "not_after", n.notAfter, "previous_kid", kidOf(cur), "reason", why)
}

// TaintX509Authority marks the old X.509 CA tainted in the bundle: agents
// re-mint what it signed. Refused on a tier whose CA comes from an upstream
// (taint the upstream authority instead) and for any authority but the old
// one.
func (m *Manager) TaintX509Authority(ctx context.Context, id string) (*AuthorityState, error) {
	if err := m.lockInitialized(); err != nil {
		return nil, err
	}
	defer m.rotateMu.Unlock()
	if m.HasUpstreamAuthority() {
		return nil, refuse(ErrFailedPrecondition, "local authority can't be tainted if there is an upstream authority")
	}
	switch {
	case id == "":
		return nil, refuse(ErrInvalidArgument, "no authority ID provided")
	case id == m.x509Cur.authorityID():
		return nil, refuse(ErrInvalidArgument, "unable to taint current local authority")
	case m.x509Next != nil && id == m.x509Next.authorityID():
		return nil, refuse(ErrInvalidArgument, "only Old local authorities can be tainted")
	case m.x509Old == nil || id != m.x509Old.authorityID():
		return nil, refuse(ErrInvalidArgument, "unexpected authority ID")
	}
	old := m.x509Old
	if err := m.taintX509InBundle(ctx, id); err != nil {
		return nil, err
	}
	m.log.Info("ca: X.509 authority tainted", "local_authority_id", id, "not_after", old.notAfter)
	return old.state(), nil
}

// RevokeX509Authority removes the old X.509 CA, which must be tainted, from
// the bundle.
func (m *Manager) RevokeX509Authority(ctx context.Context, id string) (*AuthorityState, error) {
	if err := m.lockInitialized(); err != nil {
		return nil, err
	}
	defer m.rotateMu.Unlock()
	if m.HasUpstreamAuthority() {
		return nil, refuse(ErrFailedPrecondition, "local authority can't be revoked if there is an upstream authority")
	}
	switch {
	case id == "":
		return nil, refuse(ErrInvalidArgument, "invalid authority ID: no authority ID provided")
	case id == m.x509Cur.authorityID():
		return nil, refuse(ErrInvalidArgument, "invalid authority ID: unable to use current authority")
	case m.x509Old == nil || id != m.x509Old.authorityID():
		return nil, refuse(ErrInvalidArgument, "invalid authority ID: only Old local authority can be revoked")
	}
	old := m.x509Old
	if err := m.revokeX509InBundle(ctx, id); err != nil {
		return nil, err
	}
	m.setSlots(func() { m.x509Old = nil })
	m.log.Info("ca: X.509 authority revoked", "local_authority_id", id)
	return &AuthorityState{AuthorityID: id, ExpiresAt: old.notAfter}, m.saveAndPublish(ctx, m.now())
}

// TaintX509UpstreamAuthority marks tainted, in the bundle, the upstream
// authority (named by its subject key ID) that signed the old X.509 CA. The
// active CA must be signed by another one: activate a CA from the new
// upstream authority first.
func (m *Manager) TaintX509UpstreamAuthority(ctx context.Context, skid string) (string, error) {
	if err := m.lockInitialized(); err != nil {
		return "", err
	}
	defer m.rotateMu.Unlock()
	skid, err := m.checkUpstreamSKID(ctx, skid, "provided subject key id is not valid")
	if err != nil {
		return "", err
	}
	if err := m.taintX509InBundle(ctx, skid); err != nil {
		return "", err
	}
	m.log.Info("ca: X.509 upstream authority tainted", "subject_key_id", skid)
	m.kick()
	return skid, nil
}

// RevokeX509UpstreamAuthority removes the tainted upstream authority that
// signed the old X.509 CA from the bundle.
func (m *Manager) RevokeX509UpstreamAuthority(ctx context.Context, skid string) (string, error) {
	if err := m.lockInitialized(); err != nil {
		return "", err
	}
	defer m.rotateMu.Unlock()
	skid, err := m.checkUpstreamSKID(ctx, skid, "invalid subject key ID")
	if err != nil {
		return "", err
	}
	if err := m.revokeX509InBundle(ctx, skid); err != nil {
		return "", err
	}
	m.log.Info("ca: X.509 upstream authority revoked", "subject_key_id", skid)
	return skid, nil
}

func (m *Manager) checkUpstreamSKID(ctx context.Context, skid, what string) (string, error) {
	if !m.HasUpstreamAuthority() {
		return "", refuse(ErrFailedPrecondition, "upstream authority is not configured")
	}
	skid = strings.ToLower(skid)
	switch {
	case skid == "":
		return "", refuse(ErrInvalidArgument, "%s: no subject key ID provided", what)
	case skid == m.x509Cur.upstreamAuthorityID():
		return "", refuse(ErrInvalidArgument, "%s: unable to use upstream authority signing current authority", what)
	case m.x509Old == nil || skid != m.x509Old.upstreamAuthorityID():
		return "", refuse(ErrInvalidArgument, "%s: upstream authority didn't sign the old local authority", what)
	}
	// The active and prepared CAs may chain to it further up; then it is
	// still in use.
	b, err := m.cfg.Bundles.FetchBundle(ctx, m.cfg.TrustDomain)
	if err != nil {
		return "", fmt.Errorf("ca: fetch bundle: %w", err)
	}
	for _, a := range b.X509Authorities {
		c, err := x509.ParseCertificate(a.Cert)
		if err != nil || SubjectKeyID(c) != skid {
			continue
		}
		t := taintSet{certs: []*x509.Certificate{c}}
		if t.chains(m.x509Cur) {
			return "", refuse(ErrFailedPrecondition, "%s: the active X.509 authority chains to it; activate one signed by another upstream authority first", what)
		}
	}
	return skid, nil
}

// taintX509InBundle marks the bundle's X.509 authority with the subject key
// ID tainted, in one bundle transaction.
func (m *Manager) taintX509InBundle(ctx context.Context, skid string) error {
	_, err := m.cfg.Bundles.UpdateBundle(ctx, m.cfg.TrustDomain, func(b *datastore.Bundle) (*datastore.Bundle, error) {
		if b == nil {
			return nil, refuse(ErrAuthorityNotFound, "no ca found with provided subject key ID")
		}
		out := b.Clone()
		found := false
		for i, a := range out.X509Authorities {
			c, err := x509.ParseCertificate(a.Cert)
			if err != nil || SubjectKeyID(c) != skid {
				continue
			}
			if a.Tainted {
				return nil, refuse(ErrInvalidArgument, "root CA is already tainted")
			}
			out.X509Authorities[i].Tainted = true
			found = true
		}
		if !found {
			return nil, refuse(ErrAuthorityNotFound, "no ca found with provided subject key ID")
		}
		out.SequenceNumber++
		return out, nil
	})
	return bundleErr(err)
}

// revokeX509InBundle removes the tainted X.509 authority with the subject
// key ID from the bundle, in one bundle transaction.
func (m *Manager) revokeX509InBundle(ctx context.Context, skid string) error {
	_, err := m.cfg.Bundles.UpdateBundle(ctx, m.cfg.TrustDomain, func(b *datastore.Bundle) (*datastore.Bundle, error) {
		if b == nil {
			return nil, refuse(ErrAuthorityNotFound, "no root CA found with provided subject key ID")
		}
		out := b.Clone()
		var kept []datastore.X509Authority
		found := false
		for _, a := range out.X509Authorities {
			c, err := x509.ParseCertificate(a.Cert)
			if err == nil && SubjectKeyID(c) == skid {
				if !a.Tainted {
					return nil, refuse(ErrInvalidArgument, "it is not possible to revoke an untainted root CA")
				}
				if m.parentLists(a.Cert, "") {
					return nil, refuse(ErrFailedPrecondition, "the parent tier's bundle still lists this authority, so the next bundle sync would bring it back: revoke it at the parent")
				}
				found = true
				continue
			}
			kept = append(kept, a)
		}
		if !found {
			return nil, refuse(ErrAuthorityNotFound, "no root CA found with provided subject key ID")
		}
		if len(kept) == 0 {
			return nil, refuse(ErrFailedPrecondition, "it is the bundle's last X.509 authority")
		}
		for _, a := range out.X509Authorities {
			if c, err := x509.ParseCertificate(a.Cert); err == nil && SubjectKeyID(c) == skid && !out.Revoked(a.Cert) {
				out.RevokedX509 = append(out.RevokedX509, a.Cert)
			}
		}
		out.X509Authorities = kept
		out.SequenceNumber++
		return out, nil
	})
	return bundleErr(err)
}

// parentLists reports whether the parent's bundle held the X.509 authority
// (DER) or the JWT key ID at the last merge.
func (m *Manager) parentLists(der []byte, kid string) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if der != nil {
		return m.parentX509[string(der)]
	}
	return m.parentKIDs[kid]
}

func bundleErr(err error) error {
	var ae *AuthorityError
	if err == nil || errors.As(err, &ae) {
		return err
	}
	return fmt.Errorf("ca: update bundle: %w", err)
}

// PrepareJWTAuthority makes a new JWT key, publishes it (upstream first on
// a downstream tier, then into the bundle) and holds it as prepared,
// replacing any prepared one.
func (m *Manager) PrepareJWTAuthority(ctx context.Context) (*AuthorityState, error) {
	if err := m.lockInitialized(); err != nil {
		return nil, err
	}
	defer m.rotateMu.Unlock()
	now := m.now()
	s, err := m.prepareJWT(ctx, now)
	if err != nil {
		return nil, err
	}
	m.setSlots(func() { m.jwtNext = s })
	m.log.Info("ca: prepared JWT key", "jwt_kid", s.kid, "not_after", s.notAfter, "manual", true)
	return s.state(), m.saveAndPublish(ctx, now)
}

// ActivateJWTAuthority makes the prepared JWT key, named by its key ID,
// the active one at once; the active one becomes old.
func (m *Manager) ActivateJWTAuthority(ctx context.Context, id string) (*AuthorityState, error) {
	if err := m.lockInitialized(); err != nil {
		return nil, err
	}
	defer m.rotateMu.Unlock()
	n := m.jwtNext
	switch {
	case id == "":
		return nil, refuse(ErrInvalidArgument, "no authority ID provided")
	case id == m.jwtCur.kid || (m.jwtOld != nil && id == m.jwtOld.kid):
		return nil, refuse(ErrFailedPrecondition, "only Prepared authorities can be activated")
	case n == nil || n.kid != id:
		return nil, refuse(ErrInvalidArgument, "unexpected authority ID")
	}
	now := m.now()
	if !now.Before(n.notAfter) {
		return nil, refuse(ErrFailedPrecondition, "the prepared authority has expired")
	}
	m.activateJWTSlot(n, "manual")
	return n.state(), m.saveAndPublish(ctx, now)
}

// TaintJWTAuthority marks the old JWT key tainted in the bundle — on a
// downstream tier first at its parent, and so up to the root — so agents
// drop the JWT-SVIDs it signed.
func (m *Manager) TaintJWTAuthority(ctx context.Context, id string) (*AuthorityState, error) {
	if err := m.lockInitialized(); err != nil {
		return nil, err
	}
	defer m.rotateMu.Unlock()
	switch {
	case id == "":
		return nil, refuse(ErrInvalidArgument, "no authority ID provided")
	case id == m.jwtCur.kid:
		return nil, refuse(ErrInvalidArgument, "unable to taint current local authority")
	case m.jwtNext != nil && id == m.jwtNext.kid:
		return nil, refuse(ErrInvalidArgument, "only Old local authorities can be tainted")
	case m.jwtOld == nil || id != m.jwtOld.kid:
		return nil, refuse(ErrInvalidArgument, "unexpected authority ID")
	}
	// A downstream tier's keys are in every tier's bundle through its
	// parent, which can revoke them for the whole tree only once it holds
	// them tainted: the parent first (it forwards the taint to its own), so
	// a parent that cannot be reached leaves the key untainted everywhere.
	if p := m.cfg.JWTPublisher; p != nil {
		k := m.jwtOld.authority()
		k.Tainted = true
		if _, err := p.PublishJWTKey(ctx, jwtKeyOf(k)); err != nil {
			m.log.Warn("ca: tainting the JWT key at the parent failed", "jwt_kid", id, "err", err)
			return nil, refuse(ErrFailedPrecondition, "the parent tier could not be told of the taint (unreachable?): nothing was tainted; retry")
		}
	}
	_, err := m.cfg.Bundles.UpdateBundle(ctx, m.cfg.TrustDomain, func(b *datastore.Bundle) (*datastore.Bundle, error) {
		if b == nil {
			return nil, refuse(ErrAuthorityNotFound, "no JWT Key found with provided key ID")
		}
		out := b.Clone()
		i := slices.IndexFunc(out.JWTAuthorities, func(k datastore.JWTAuthority) bool { return k.KeyID == id })
		switch {
		case i < 0:
			return nil, refuse(ErrAuthorityNotFound, "no JWT Key found with provided key ID")
		case out.JWTAuthorities[i].Tainted:
			return nil, refuse(ErrInvalidArgument, "key is already tainted")
		}
		out.JWTAuthorities[i].Tainted = true
		out.SequenceNumber++
		return out, nil
	})
	if err := bundleErr(err); err != nil {
		return nil, err
	}
	m.log.Info("ca: JWT authority tainted", "jwt_kid", id)
	return &AuthorityState{AuthorityID: id}, nil
}

// RevokeJWTAuthority removes a tainted JWT key from the bundle: the old
// one, or any other in the bundle that is neither active nor prepared.
func (m *Manager) RevokeJWTAuthority(ctx context.Context, id string) (*AuthorityState, error) {
	if err := m.lockInitialized(); err != nil {
		return nil, err
	}
	defer m.rotateMu.Unlock()
	switch {
	case id == "":
		return nil, refuse(ErrInvalidArgument, "invalid authority ID: no authority ID provided")
	case m.jwtNext != nil && id == m.jwtNext.kid:
		return nil, refuse(ErrInvalidArgument, "invalid authority ID: unable to use a prepared key")
	case id == m.jwtCur.kid:
		return nil, refuse(ErrInvalidArgument, "invalid authority ID: unable to use current authority")
	}
	_, err := m.cfg.Bundles.UpdateBundle(ctx, m.cfg.TrustDomain, func(b *datastore.Bundle) (*datastore.Bundle, error) {
		if b == nil {
			return nil, refuse(ErrInvalidArgument, "invalid authority ID: no JWT authority found with provided authority ID")
		}
		out := b.Clone()
		i := slices.IndexFunc(out.JWTAuthorities, func(k datastore.JWTAuthority) bool { return k.KeyID == id })
		switch {
		case i < 0:
			return nil, refuse(ErrInvalidArgument, "invalid authority ID: no JWT authority found with provided authority ID")
		case !out.JWTAuthorities[i].Tainted:
			return nil, refuse(ErrInvalidArgument, "it is not possible to revoke an untainted key")
		case m.parentLists(nil, id):
			return nil, refuse(ErrFailedPrecondition, "the parent tier's bundle still lists this key, so the next bundle sync would bring it back: revoke it at the parent")
		}
		out.JWTAuthorities = slices.Delete(out.JWTAuthorities, i, i+1)
		out.SequenceNumber++
		return out, nil
	})
	if err := bundleErr(err); err != nil {
		return nil, err
	}
	if m.jwtOld != nil && m.jwtOld.kid == id {
		m.setSlots(func() { m.jwtOld = nil })
	}
	m.log.Info("ca: JWT authority revoked", "jwt_kid", id)
	return &AuthorityState{AuthorityID: id}, m.saveAndPublish(ctx, m.now())
}

// saveAndPublish saves a changed state and reconciles the bundle after a
// manual operation; the caller holds rotateMu.
func (m *Manager) saveAndPublish(ctx context.Context, now time.Time) error {
	var errs []error
	if m.dirty && m.cfg.Dir != "" {
		if err := m.saveState(); err != nil {
			errs = append(errs, err)
		} else {
			m.dirty = false
		}
	}
	if err := m.publish(ctx, now.Add(-m.cfg.PruneGrace), nil, nil, nil); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// taintSet is the X.509 authorities marked tainted.
type taintSet struct {
	certs []*x509.Certificate
}

func (t taintSet) empty() bool { return len(t.certs) == 0 }

// chains reports whether the CA of s, its intermediates or the roots it
// ends at are a tainted authority or were signed by one.
func (t taintSet) chains(s *x509Slot) bool {
	if s == nil || t.empty() {
		return false
	}
	path := append([]*x509.Certificate{s.minted.Cert}, s.minted.Intermediates...)
	path = append(path, s.anchors...)
	for _, c := range path {
		for _, bad := range t.certs {
			if bytes.Equal(c.Raw, bad.Raw) {
				return true
			}
			if bytes.Equal(c.RawIssuer, bad.RawSubject) && c.CheckSignatureFrom(bad) == nil {
				return true
			}
		}
	}
	return false
}

// taintedIn returns the X.509 authorities tainted in the bundle or revoked
// from it (a replica that had not seen the taint before the revoke must
// still replace a CA chaining to one), and those a parent marked tainted
// that this tier has not marked yet.
func (m *Manager) taintedIn(ctx context.Context) taintSet {
	var t taintSet
	if b, err := m.cfg.Bundles.FetchBundle(ctx, m.cfg.TrustDomain); err == nil {
		for _, a := range b.X509Authorities {
			if !a.Tainted {
				continue
			}
			if c, err := x509.ParseCertificate(a.Cert); err == nil {
				t.certs = append(t.certs, c)
			}
		}
		for _, der := range b.RevokedX509 {
			if c, err := x509.ParseCertificate(der); err == nil {
				t.certs = append(t.certs, c)
			}
		}
	}
	m.mu.RLock()
	t.certs = append(t.certs, m.parentTainted...)
	m.mu.RUnlock()
	return t
}

// replaceTainted is the rotation's answer to a taint: when the active X.509
// CA chains to a tainted authority (a parent's, an upstream's, or one
// another server of the tier tainted), a CA that does not is activated at
// once — the prepared one if it is clean, else a new one from the upstream;
// a prepared CA that chains to one is dropped. Then the authorities the
// parent tainted are marked tainted in this tier's bundle too, so its
// agents and children re-mint only once this tier signs cleanly. The
// caller holds rotateMu.
func (m *Manager) replaceTainted(ctx context.Context, now time.Time) error {
	t := m.taintedIn(ctx)
	if t.empty() {
		return nil
	}
	if n := m.x509Next; n != nil && t.chains(n) {
		m.log.Warn("ca: dropped prepared X.509 CA: it chains to a tainted authority", "x509_ca_serial", serialOf(n))
		m.setSlots(func() { m.x509Next = nil })
	}
	if t.chains(m.x509Cur) {
		n := m.x509Next
		if n == nil {
			s, err := m.mintX509(ctx, now)
			if err != nil {
				return fmt.Errorf("ca: replace X.509 CA signed by a tainted authority: %w", err)
			}
			if t.chains(s) {
				return errors.New("ca: replace X.509 CA signed by a tainted authority: the upstream still signs with a tainted authority")
			}
			if err := m.commitX509(ctx, now, s); err != nil {
				return err
			}
			n = s
		}
		m.activateX509Slot(n, "active CA chains to a tainted authority")
	}
	m.mu.RLock()
	pending := slices.Clone(m.parentTainted)
	m.mu.RUnlock()
	if len(pending) == 0 {
		return nil
	}
	_, err := m.cfg.Bundles.UpdateBundle(ctx, m.cfg.TrustDomain, func(b *datastore.Bundle) (*datastore.Bundle, error) {
		if b == nil {
			return nil, nil
		}
		out := b.Clone()
		changed := false
		for i, a := range out.X509Authorities {
			if a.Tainted {
				continue
			}
			for _, p := range pending {
				if bytes.Equal(a.Cert, p.Raw) {
					out.X509Authorities[i].Tainted = true
					changed = true
				}
			}
		}
		if !changed {
			return b, nil
		}
		out.SequenceNumber++
		return out, nil
	})
	if err != nil {
		return fmt.Errorf("ca: mark parent's tainted authorities: %w", err)
	}
	m.mu.Lock()
	m.parentTainted = slices.DeleteFunc(m.parentTainted, func(c *x509.Certificate) bool {
		return slices.ContainsFunc(pending, func(p *x509.Certificate) bool { return p == c })
	})
	m.mu.Unlock()
	m.log.Info("ca: marked the parent's tainted X.509 authorities tainted", "count", len(pending))
	return nil
}

// kick asks Run for a rotation step now.
func (m *Manager) kick() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}
