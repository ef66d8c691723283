// Package upstream is the contract at the bottom of every tier: where a
// tier's X.509 CA certificate comes from. This file declares the interface
// every CA source implements (Authority), what it returns (MintedCA) and,
// side by side, every optional ability a source may have — the abilities of
// a parent tier: taking the child's JWT keys (JWTPublisher), handing its
// trust bundle down (BundleSource) and saying whether it answers
// (Reachability). Parent is all of them together.
//
// The sources are root.SelfSigned (a root that signs itself), the adapters
// of an existing PKI in the subpackages — disk (a CA certificate and key in
// files), vault (HashiCorp Vault's PKI engine), awspca (AWS Private CA) — and
// downstream.Upstream, the parent tier reached through the co-located agent
// (the "spire" kind: any SPIRE-API server). Every minted CA, whatever its
// source, is checked by Validate with one rule set before the CA manager
// uses it.
//
// This package imports nothing from arbor's internal/: the CA manager
// (internal/ca) and the server (internal/server) convert its value types.
package upstream

import (
	"context"
	"crypto"
	"crypto/x509"
	"time"
)

// Authority is where a tier's X.509 CA certificate comes from.
type Authority interface {
	// MintX509CA returns a CA certificate for key's public key valid for
	// about ttl (it may be shorter; the CA manager uses what it gets), with
	// the intermediates between it and the roots, and the roots to trust.
	MintX509CA(ctx context.Context, key crypto.Signer, ttl time.Duration) (*MintedCA, error)
}

// MintedCA is a CA certificate minted by an Authority.
type MintedCA struct {
	Cert *x509.Certificate
	// Intermediates lead from Cert to one of Roots (Cert's issuer first);
	// empty when Cert is signed by a root or is itself a root.
	Intermediates []*x509.Certificate
	// Roots are the trust anchors; they go into the trust domain's bundle.
	Roots []*x509.Certificate
}

// JWTKey is a JWT signing public key as it crosses tiers.
type JWTKey struct {
	KeyID     string
	PublicKey []byte // PKIX, ASN.1 DER
	ExpiresAt int64  // Unix seconds; 0 means none
	Tainted   bool
}

// Bundle is a parent tier's trust bundle as it is handed down.
type Bundle struct {
	X509Authorities []X509Authority
	JWTKeys         []JWTKey
	// Federated are the bundles of the trust domains the parent federates
	// with, which flow down the tree so a leaf needs no path to a foreign
	// endpoint. Nil when the parent does not hand them out (a SPIRE parent
	// lets only admins list them): the child then keeps what it holds.
	Federated []FederatedBundle
}

// FederatedBundle is another trust domain's bundle held by a parent.
type FederatedBundle struct {
	// TrustDomain is the trust domain's name ("partner.example").
	TrustDomain     string
	X509Authorities []X509Authority
	JWTKeys         []JWTKey
	RefreshHint     int64 // seconds
	SequenceNumber  uint64
}

// X509Authority is one X.509 trust anchor of a Bundle.
type X509Authority struct {
	Cert    []byte // ASN.1 DER
	Tainted bool
}

// JWTPublisher is the ability of a parent tier to take the tier's JWT
// signing keys, so that every tier's bundle holds every tier's JWT keys.
type JWTPublisher interface {
	// PublishJWTKey publishes k to the parent and returns the parent
	// bundle's JWT keys, which the tier adds to its own bundle.
	PublishJWTKey(ctx context.Context, k JWTKey) ([]JWTKey, error)
}

// BundleSource is the ability of a parent tier to hand its trust bundle
// down, so that new roots and other tiers' JWT keys reach the tier before
// anything uses them.
type BundleSource interface {
	// FetchBundle returns the parent's current trust bundle.
	FetchBundle(ctx context.Context) (*Bundle, error)
}

// Reachability is the ability of a remote authority to say whether it
// answers.
type Reachability interface {
	// Reachable reports whether the last call to the authority succeeded.
	Reachable() bool
}

// Parent is a parent tier: an Authority with every optional ability. A
// downstream tier is configured with one (downstream.Upstream).
type Parent interface {
	Authority
	JWTPublisher
	BundleSource
	Reachability
}
