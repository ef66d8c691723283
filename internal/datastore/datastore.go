// Package datastore defines what a server tier persists — bundles, registration
// entries, attested nodes and join tokens — and the small interfaces through
// which each part of the server reaches it. Backends live in subpackages
// (sqlite, the embedded default; postgres, for servers of one tier sharing a
// database).
//
// The server keeps entries and nodes in memory and writes through to the
// store; the store is the durable truth that is loaded at start and, when
// several servers share it, polled through the event logs (EntryEventsSince,
// NodeEventsSince) to pick up the others' writes.
package datastore

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/selector"
)

// Errors returned by every backend. Callers branch with errors.Is.
var (
	// ErrNotFound: the record does not exist.
	ErrNotFound = errors.New("datastore: not found")
	// ErrAlreadyExists: a record with the same identity exists (for entries:
	// same parent ID, SPIFFE ID and selector set; or the same entry ID).
	ErrAlreadyExists = errors.New("datastore: already exists")
	// ErrConflict: a concurrent writer changed the record first, so the
	// write's condition no longer holds; re-read and decide again.
	ErrConflict = errors.New("datastore: conflict")
	// ErrBanned: the node is banned, and only deleting it lifts the ban.
	ErrBanned = errors.New("datastore: node is banned")
	// ErrUnavailable: the database could not be reached or ended the
	// session (refused or lost connection, server shutting down or starting
	// up, no answer within the deadline). Nothing is known to have been
	// written, but a write whose commit was lost may have committed: callers
	// retry later and a retried create may find its record already there.
	// The backend's cause is wrapped too, for logs.
	ErrUnavailable = errors.New("datastore: unavailable")
)

// Entry is a registration entry. Times are Unix seconds as in the SPIRE API.
type Entry struct {
	// The fields are ordered so that the struct has no padding (192 bytes
	// on 64-bit machines, one allocation size class below 208): a server
	// holds one per entry in memory.
	ID             string
	SPIFFEID       spiffeid.ID
	ParentID       spiffeid.ID
	Selectors      []selector.Selector
	FederatesWith  []spiffeid.TrustDomain
	DNSNames       []string
	Hint           string
	RevisionNumber int64
	CreatedAt      int64 // Unix seconds, set by the store on create
	ExpiresAt      int64 // Unix seconds; 0 means never
	X509SVIDTTL    int32 // seconds; 0 means the server default
	JWTSVIDTTL     int32 // seconds; 0 means the server default
	Admin          bool
	Downstream     bool
	StoreSVID      bool
	// JWTSVIDIncludeJTI and DisableX509SVIDPrefetch mirror the SPIRE API's
	// Entry.AdditionalAttributes.
	JWTSVIDIncludeJTI       bool
	DisableX509SVIDPrefetch bool
}

// Node is an attested agent.
type Node struct {
	ID              spiffeid.ID
	AttestationType string
	// CertSerial is the serial (decimal string) of the agent's current SVID and
	// NewCertSerial the one issued by a renewal not yet used. A node whose
	// serials are both empty is banned (SPIRE's representation).
	CertSerial      string
	CertNotAfter    int64 // Unix seconds
	NewCertSerial   string
	NewCertNotAfter int64 // Unix seconds
	CanReattest     bool
	Selectors       []selector.Selector
	AgentVersion    string
}

// Banned reports whether the node was banned (both serials cleared).
func (n *Node) Banned() bool { return n.CertSerial == "" && n.NewCertSerial == "" }

// JoinToken is a single-use attestation secret.
type JoinToken struct {
	Token     string
	ExpiresAt time.Time
}

// X509Authority is one trusted X.509 root or intermediate of a bundle.
type X509Authority struct {
	Cert    []byte // ASN.1 DER
	Tainted bool
}

// JWTAuthority is one JWT signing public key of a bundle.
type JWTAuthority struct {
	KeyID     string
	PublicKey []byte // PKIX, ASN.1 DER
	ExpiresAt int64  // Unix seconds; 0 means none
	Tainted   bool
}

// Bundle is a trust domain's trust bundle: this server's own trust domain or a
// federated one.
type Bundle struct {
	TrustDomain     spiffeid.TrustDomain
	X509Authorities []X509Authority
	JWTAuthorities  []JWTAuthority
	RefreshHint     int64 // seconds
	SequenceNumber  uint64
	// RevokedX509 holds the certificates (DER) of the X.509 authorities
	// revoked from this bundle, until they expire: a tombstone, so that no
	// server of the tier puts one back (a replica whose CA still chains to
	// a revoked upstream root re-publishes its anchors). It is not part of
	// the bundle served to anyone.
	RevokedX509 [][]byte
}

// Clone returns a copy of b whose authority lists can change without
// changing b's.
func (b *Bundle) Clone() *Bundle {
	c := *b
	c.X509Authorities = slices.Clone(b.X509Authorities)
	c.JWTAuthorities = slices.Clone(b.JWTAuthorities)
	c.RevokedX509 = slices.Clone(b.RevokedX509)
	return &c
}

// Revoked reports whether the X.509 authority certificate der was revoked
// from b.
func (b *Bundle) Revoked(der []byte) bool {
	return slices.ContainsFunc(b.RevokedX509, func(r []byte) bool { return bytes.Equal(r, der) })
}

// AddX509Authority appends a unless b holds its certificate already or it
// was revoked from b, and reports whether it did. It is the one rule by
// which authorities are merged into a bundle (appended by an admin,
// published by a child, synced from a parent, reconciled by the CA).
func (b *Bundle) AddX509Authority(a X509Authority) bool {
	if b.Revoked(a.Cert) || slices.ContainsFunc(b.X509Authorities, func(have X509Authority) bool { return bytes.Equal(have.Cert, a.Cert) }) {
		return false
	}
	b.X509Authorities = append(b.X509Authorities, a)
	return true
}

// AddJWTAuthority appends k unless it has no key ID or b holds its key ID
// already, and reports whether it did.
func (b *Bundle) AddJWTAuthority(k JWTAuthority) bool {
	if k.KeyID == "" || slices.ContainsFunc(b.JWTAuthorities, func(have JWTAuthority) bool { return have.KeyID == k.KeyID }) {
		return false
	}
	b.JWTAuthorities = append(b.JWTAuthorities, k)
	return true
}

// Event records that an entry or node was created, updated or deleted. IDs
// increase monotonically; a poller remembers the last ID it applied.
type Event struct {
	ID  uint64
	Key string // entry ID, or node SPIFFE ID string
}

// EntryStore persists registration entries.
type EntryStore interface {
	// CreateEntries creates the entries in one transaction, each independently:
	// errs[i] is nil, ErrAlreadyExists (out[i] then holds the existing entry)
	// or another error. An empty ID gets a new random UUID; CreatedAt and
	// RevisionNumber (0) are set by the store.
	CreateEntries(ctx context.Context, entries []*Entry) (out []*Entry, errs []error)
	// UpdateEntry reads the entry with the given ID, calls fn with (a copy
	// of) it and stores what fn returns, incrementing the revision and
	// keeping the ID and CreatedAt, all in one transaction that excludes
	// every other entry writer (also across servers sharing the store): a
	// change of some fields is merged onto the entry as stored, never onto a
	// stale copy. fn returning an error aborts with that error. ErrNotFound
	// if missing; ErrAlreadyExists if the result would duplicate another.
	UpdateEntry(ctx context.Context, id string, fn func(cur *Entry) (*Entry, error)) (*Entry, error)
	// DeleteEntry deletes and returns the entry; ErrNotFound if missing.
	DeleteEntry(ctx context.Context, id string) (*Entry, error)
	// FetchEntry returns one entry; ErrNotFound if missing.
	FetchEntry(ctx context.Context, id string) (*Entry, error)
	// ListEntries returns every entry (loaded once at start into memory).
	ListEntries(ctx context.Context) ([]*Entry, error)
	// EntryEventsSince returns entry events with ID > after, oldest first, and
	// the highest event ID that exists (so a fresh poller can start there).
	EntryEventsSince(ctx context.Context, after uint64) ([]Event, error)
}

// NodeStore persists attested nodes. Every write changes only the fields it
// is about, under a condition checked in the same transaction, and returns
// the node as stored after it; so no write can undo another that it did not
// see — a ban or an eviction in particular (a write to a deleted node is
// ErrNotFound, never a re-creation, except by AttestNode).
// AttestCondition is what an attestation rests on besides the node record.
type AttestCondition struct {
	// JoinToken, when not empty, is consumed in the same transaction
	// (ErrNotFound if it does not exist, that is, was already used).
	JoinToken string
	// FirstUse refuses the attestation when the node is already attested.
	FirstUse bool
}

type NodeStore interface {
	// CreateNode stores a newly attested node; ErrAlreadyExists if present.
	CreateNode(ctx context.Context, n *Node) error
	// AttestNode records a successful attestation in one transaction: it
	// consumes cond.JoinToken when not empty (ErrNotFound if it does not
	// exist, that is, was already used), then creates the node or, when it exists,
	// replaces what attestation establishes (attestation type, both serials
	// and not-afters, CanReattest, selectors), keeping AgentVersion.
	// ErrBanned, consuming nothing, if the node exists and is banned.
	// With cond.FirstUse, ErrAlreadyExists, changing nothing, if the node
	// exists at all (trust on first use: evicted nodes do not exist).
	AttestNode(ctx context.Context, n *Node, cond AttestCondition) (*Node, error)
	// RenewNode records a renewed SVID (NewCertSerial, NewCertNotAfter) if
	// the node's current serial is still current; ErrConflict otherwise (the
	// node was banned or attested again since).
	RenewNode(ctx context.Context, id spiffeid.ID, current, serial string, notAfter int64) (*Node, error)
	// ActivateNodeSerial makes the renewed serial the current one, on its
	// first use, if it is still the node's NewCertSerial; ErrConflict
	// otherwise (banned, or already activated by a concurrent call).
	ActivateNodeSerial(ctx context.Context, id spiffeid.ID, serial string) (*Node, error)
	// SetNodeAgentVersion records the version the agent reports.
	SetNodeAgentVersion(ctx context.Context, id spiffeid.ID, version string) (*Node, error)
	// BanNode clears both serials, so no SVID of the node is accepted and it
	// cannot attest again until deleted.
	BanNode(ctx context.Context, id spiffeid.ID) (*Node, error)
	FetchNode(ctx context.Context, id spiffeid.ID) (*Node, error)
	ListNodes(ctx context.Context) ([]*Node, error)
	// DeleteNode deletes and returns the node; ErrNotFound if missing.
	DeleteNode(ctx context.Context, id spiffeid.ID) (*Node, error)
	NodeEventsSince(ctx context.Context, after uint64) ([]Event, error)
}

// TokenStore persists join tokens. A token is consumed by NodeStore.AttestNode,
// in the transaction that stores the node it attested.
type TokenStore interface {
	// CreateJoinToken stores t; ErrAlreadyExists if the token value exists.
	CreateJoinToken(ctx context.Context, t *JoinToken) error
	// FetchJoinToken returns the token without consuming it; ErrNotFound if
	// missing.
	FetchJoinToken(ctx context.Context, token string) (*JoinToken, error)
	// PruneJoinTokens deletes tokens that expired before the given time.
	PruneJoinTokens(ctx context.Context, expiredBefore time.Time) (int, error)
}

// BundleStore persists trust bundles.
type BundleStore interface {
	// FetchBundle returns ErrNotFound if the trust domain has no bundle.
	FetchBundle(ctx context.Context, td spiffeid.TrustDomain) (*Bundle, error)
	ListBundles(ctx context.Context) ([]*Bundle, error)
	// UpdateBundle reads the bundle for td (nil if none), calls fn, and stores
	// what fn returns, all in one transaction that excludes concurrent updaters
	// of the same bundle (also across servers sharing the store). fn returning
	// an error aborts with that error; returning the input unchanged (same
	// pointer) writes nothing.
	UpdateBundle(ctx context.Context, td spiffeid.TrustDomain, fn func(*Bundle) (*Bundle, error)) (*Bundle, error)
	// DeleteBundle returns ErrNotFound if missing.
	DeleteBundle(ctx context.Context, td spiffeid.TrustDomain) error
}

// FederationRelationship is a trust domain this one federates with: where
// its bundle endpoint is and how the endpoint authenticates.
type FederationRelationship struct {
	TrustDomain       spiffeid.TrustDomain
	BundleEndpointURL string
	// Profile is "https_web" or "https_spiffe".
	Profile string
	// EndpointSPIFFEID is the endpoint server's ID (https_spiffe only).
	EndpointSPIFFEID spiffeid.ID
}

// FederationStore persists federation relationships.
type FederationStore interface {
	// CreateFederationRelationship stores r; ErrAlreadyExists if its trust
	// domain has one.
	CreateFederationRelationship(ctx context.Context, r *FederationRelationship) error
	// FetchFederationRelationship returns ErrNotFound if missing.
	FetchFederationRelationship(ctx context.Context, td spiffeid.TrustDomain) (*FederationRelationship, error)
	// ListFederationRelationships returns every relationship, ordered by
	// trust domain.
	ListFederationRelationships(ctx context.Context) ([]*FederationRelationship, error)
	// UpdateFederationRelationship reads the relationship of td, calls fn
	// with a copy and stores what it returns (its trust domain kept), in
	// one transaction; ErrNotFound if missing; fn's error aborts.
	UpdateFederationRelationship(ctx context.Context, td spiffeid.TrustDomain, fn func(cur *FederationRelationship) (*FederationRelationship, error)) (*FederationRelationship, error)
	// DeleteFederationRelationship returns ErrNotFound if missing.
	DeleteFederationRelationship(ctx context.Context, td spiffeid.TrustDomain) error
}

// Store is everything a backend provides.
type Store interface {
	EntryStore
	NodeStore
	TokenStore
	BundleStore
	FederationStore
	Close() error
}
