package ca

// The trust domain's bundle as the CA manager keeps it: the roots of the
// held X.509 CAs and the held JWT keys are published before use, what the
// parent hands down is merged in, and authorities that expired long enough
// ago are pruned. Every change to the own bundle's authorities made by the CA
// goes through addX509/addJWT and the prune in reconcileBundle.

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/upstream"
)

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

// publish makes the bundle hold the roots of the current and next X.509 CAs
// and the current and next JWT keys (plus the given extra ones), and prunes
// authorities that expired before cutoff. The caller holds rotateMu.
func (m *Manager) publish(ctx context.Context, cutoff time.Time, x *x509Slot, j *jwtSlot, extra []datastore.JWTAuthority) error {
	_, err := m.reconcile(ctx, cutoff, x, j, extra)
	return err
}

// reconcile is publish returning what changed.
func (m *Manager) reconcile(ctx context.Context, cutoff time.Time, x *x509Slot, j *jwtSlot, extra []datastore.JWTAuthority) (bundleChanges, error) {
	// Every root an upstream returned with a CA is published when that CA
	// is committed (x); afterwards only the anchors of the held CAs are
	// kept in: the other roots then live and leave like any authority, so
	// a root an operator revoked does not come back with the next step.
	var roots, anchors []*x509.Certificate
	for _, s := range []*x509Slot{m.x509Cur, m.x509Next, x} {
		if s != nil {
			if s == x {
				roots = append(roots, s.minted.Roots...)
			} else {
				roots = append(roots, s.anchors...)
			}
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

type bundleChanges struct{ x509Added, jwtAdded, x509Pruned, jwtPruned, revokedPruned int }

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
		if addX509(out, datastore.X509Authority{Cert: r.Raw}, cutoff, containsDER(required, r.Raw)) {
			ch.x509Added++
		}
	}
	requiredKIDs := map[string]bool{}
	for _, k := range keys {
		requiredKIDs[k.KeyID] = true
	}
	for _, k := range keys {
		if addJWT(out, k, cutoff, true) {
			ch.jwtAdded++
		}
	}
	for _, k := range extra {
		if addJWT(out, k, cutoff, false) {
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
	// A tombstone goes when its certificate has expired: nothing can bring
	// back an expired authority (it is pruned on sight).
	var keptRevoked [][]byte
	for _, der := range out.RevokedX509 {
		if !expiredX509(der, cutoff) {
			keptRevoked = append(keptRevoked, der)
		}
	}
	if len(keptRevoked) < len(out.RevokedX509) {
		ch.revokedPruned = len(out.RevokedX509) - len(keptRevoked)
		out.RevokedX509 = keptRevoked
	}

	if !ch.changed() {
		return b, ch
	}
	out.SequenceNumber++
	return out, ch
}

// addX509 appends a to b unless b holds it already or (unless keep) it is
// unparsable or expired before cutoff: an authority pruned for its age must
// not come back from an upstream that still lists it.
func addX509(b *datastore.Bundle, a datastore.X509Authority, cutoff time.Time, keep bool) bool {
	if !keep {
		c, err := x509.ParseCertificate(a.Cert)
		if err != nil || c.NotAfter.Before(cutoff) {
			return false
		}
	}
	return b.AddX509Authority(a)
}

// addJWT appends k to b unless b holds its key ID already, it has none, or
// (unless keep) it expired before cutoff.
func addJWT(b *datastore.Bundle, k datastore.JWTAuthority, cutoff time.Time, keep bool) bool {
	if !keep && jwtExpired(k, cutoff) {
		return false
	}
	return b.AddJWTAuthority(k)
}

func jwtExpired(a datastore.JWTAuthority, cutoff time.Time) bool {
	return a.ExpiresAt != 0 && a.ExpiresAt < cutoff.Unix()
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

// MergeParentBundle adds to the trust domain's bundle the parent's X.509
// authorities and JWT keys it lacks, so new roots and other tiers' JWT keys
// flow down before anyone uses them, and returns how many it added. It
// never adds what has already expired at now: pruning is the rotation's
// job, and an authority it pruned must not come back from a parent that has
// not pruned it yet. Taints and revocations flow down too: a JWT key the
// parent marks tainted is marked here; an X.509 authority the parent marks
// tainted is handed to the rotation, which replaces the active CA first if
// it chains to it and only then marks it here (so this tier's agents and
// children re-mint from a clean CA); an authority tainted here that the
// parent no longer lists (it revoked it) leaves, unless a held CA chains to
// it. Before Init (no bundle) it does nothing.
func (m *Manager) MergeParentBundle(ctx context.Context, parent *upstream.Bundle) (added int, err error) {
	now := m.now()
	m.mu.RLock()
	var anchors [][]byte
	for _, s := range []*x509Slot{m.x509Cur, m.x509Next} {
		if s != nil {
			for _, a := range s.anchors {
				anchors = append(anchors, a.Raw)
			}
		}
	}
	m.mu.RUnlock()
	var newlyTainted []*x509.Certificate
	changed := 0
	_, err = m.cfg.Bundles.UpdateBundle(ctx, m.cfg.TrustDomain, func(cur *datastore.Bundle) (*datastore.Bundle, error) {
		added, changed, newlyTainted = 0, 0, nil
		if cur == nil {
			return nil, nil
		}
		next := cur.Clone()
		parentX509 := map[string]bool{}
		for _, a := range parent.X509Authorities {
			parentX509[string(a.Cert)] = true
			i := slices.IndexFunc(next.X509Authorities, func(h datastore.X509Authority) bool { return bytes.Equal(h.Cert, a.Cert) })
			if i >= 0 {
				if a.Tainted && !next.X509Authorities[i].Tainted {
					if c, err := x509.ParseCertificate(a.Cert); err == nil {
						newlyTainted = append(newlyTainted, c)
					}
				}
				continue
			}
			if addX509(next, datastore.X509Authority{Cert: a.Cert, Tainted: a.Tainted}, now, false) {
				added++
			}
		}
		next.X509Authorities = slices.DeleteFunc(next.X509Authorities, func(h datastore.X509Authority) bool {
			gone := h.Tainted && !parentX509[string(h.Cert)] && !containsDER(anchors, h.Cert)
			if gone {
				changed++
			}
			return gone
		})
		parentJWT := map[string]upstream.JWTKey{}
		for _, k := range parent.JWTKeys {
			parentJWT[k.KeyID] = k
		}
		for i, h := range next.JWTAuthorities {
			if k, ok := parentJWT[h.KeyID]; ok && k.Tainted && !h.Tainted {
				next.JWTAuthorities[i].Tainted = true
				changed++
			}
		}
		next.JWTAuthorities = slices.DeleteFunc(next.JWTAuthorities, func(h datastore.JWTAuthority) bool {
			_, listed := parentJWT[h.KeyID]
			gone := h.Tainted && !listed && !m.ownKey(h.KeyID)
			if gone {
				changed++
			}
			return gone
		})
		for _, k := range jwtAuthoritiesOf(parent.JWTKeys) {
			if addJWT(next, k, now, false) {
				added++
			}
		}
		if added == 0 && changed == 0 {
			return cur, nil
		}
		next.SequenceNumber++
		return next, nil
	})
	if err != nil {
		return 0, fmt.Errorf("ca: merge parent bundle: %w", err)
	}
	if added > 0 || changed > 0 {
		m.log.Info("ca: merged parent bundle", "authorities_added", added, "authorities_changed", changed)
	}
	px, pk := map[string]bool{}, map[string]bool{}
	for _, a := range parent.X509Authorities {
		px[string(a.Cert)] = true
	}
	for _, k := range parent.JWTKeys {
		pk[k.KeyID] = true
	}
	m.mu.Lock()
	m.parentX509, m.parentKIDs = px, pk
	m.mu.Unlock()
	if len(newlyTainted) > 0 {
		m.mu.Lock()
		for _, c := range newlyTainted {
			if !slices.ContainsFunc(m.parentTainted, func(p *x509.Certificate) bool { return p.Equal(c) }) {
				m.parentTainted = append(m.parentTainted, c)
				m.log.Info("ca: the parent tainted an X.509 authority", "subject_key_id", SubjectKeyID(c))
			}
		}
		m.mu.Unlock()
		m.kick()
	}
	return added, nil
}

// ownKey reports whether kid is the active, prepared or old JWT key.
func (m *Manager) ownKey(kid string) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, s := range []*jwtSlot{m.jwtCur, m.jwtNext, m.jwtOld} {
		if s != nil && s.kid == kid {
			return true
		}
	}
	return false
}

// PublishJWTKeyThrough adapts a parent link's JWT publishing to the
// datastore's JWT authority type (the API's PublishUpstream).
func PublishJWTKeyThrough(p upstream.JWTPublisher) func(context.Context, datastore.JWTAuthority) ([]datastore.JWTAuthority, error) {
	return func(ctx context.Context, k datastore.JWTAuthority) ([]datastore.JWTAuthority, error) {
		keys, err := p.PublishJWTKey(ctx, jwtKeyOf(k))
		if err != nil {
			return nil, err
		}
		return jwtAuthoritiesOf(keys), nil
	}
}

func jwtKeyOf(a datastore.JWTAuthority) upstream.JWTKey {
	return upstream.JWTKey{KeyID: a.KeyID, PublicKey: a.PublicKey, ExpiresAt: a.ExpiresAt, Tainted: a.Tainted}
}

func jwtAuthoritiesOf(keys []upstream.JWTKey) []datastore.JWTAuthority {
	out := make([]datastore.JWTAuthority, 0, len(keys))
	for _, k := range keys {
		out = append(out, datastore.JWTAuthority{KeyID: k.KeyID, PublicKey: k.PublicKey, ExpiresAt: k.ExpiresAt, Tainted: k.Tainted})
	}
	return out
}
