package ca

// The authorities the manager holds: an X.509 CA or a JWT key, prepared or
// active, each immutable once built.

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"slices"
	"time"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/upstream"
)

// x509Slot is an X.509 CA: prepared or active. Immutable once built.
type x509Slot struct {
	key     crypto.Signer
	keyFile string // base name in Dir; "" in memory
	minted  upstream.MintedCA
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

// newX509Slot builds the slot of a minted CA that upstream.Validate
// accepted.
func newX509Slot(key crypto.Signer, minted *upstream.MintedCA) *x509Slot {
	s := &x509Slot{
		key: key,
		minted: upstream.MintedCA{
			Cert:          minted.Cert,
			Intermediates: slices.Clone(minted.Intermediates),
			Roots:         slices.Clone(minted.Roots),
		},
	}
	for _, ic := range append([]*x509.Certificate{minted.Cert}, s.minted.Intermediates...) {
		if !upstream.IsSelfSigned(ic) {
			s.chain = append(s.chain, ic)
		}
	}
	s.notAfter = s.minted.NotAfter()
	s.anchors = s.minted.Anchors()
	return s
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
