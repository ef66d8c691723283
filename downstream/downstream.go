// Package downstream is what makes a tier downstream: it obtains the tier's
// X.509 intermediate CA from the parent server with svid.v1
// NewDownstreamX509CA, publishes the tier's JWT signing keys upward with
// bundle.v1 PublishJWTAuthority, and carries the parent's trust bundle down.
//
// The child never holds a static secret for its parent: it authenticates with
// the X509-SVID of a downstream registration entry that a co-located agent
// (arbor's or spire-agent) serves on its Workload API socket. The same code
// path serves any SPIRE-API parent — an arbor server or a real spire-server.
package downstream

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/arborid/arbor/internal/ca"
	"github.com/arborid/arbor/internal/datastore"
)

var (
	_ ca.Upstream     = (*Upstream)(nil)
	_ ca.JWTPublisher = (*Upstream)(nil)
)

// Source is where the child's client SVID and the trust bundle used to
// authenticate the parent come from; workloadapi.X509Source is one.
type Source interface {
	x509svid.Source
	x509bundle.Source
}

// Config configures an Upstream. It must not be modified after New.
type Config struct {
	// TrustDomain of the tree. Required.
	TrustDomain spiffeid.TrustDomain
	// ParentAddress is the parent server's API address, host:port. Required.
	ParentAddress string
	// WorkloadAPIAddr is the co-located agent's Workload API, e.g.
	// "unix:///run/arbor/agent.sock". Used when Source is nil.
	WorkloadAPIAddr string
	// Source overrides WorkloadAPIAddr (tests, or a caller that already has one).
	Source Source
	// ParentID is the SPIFFE ID the parent's TLS certificate must carry;
	// zero means spiffe://<td>/spire/server.
	ParentID spiffeid.ID
	// CallTimeout bounds each call to the parent; zero means 30s.
	CallTimeout time.Duration
	// Now is the clock SyncBundle judges expiry by; nil means time.Now.
	Now func() time.Time
	// Logger; nil discards.
	Logger *slog.Logger
}

// Upstream implements ca.Upstream and ca.JWTPublisher against a parent server.
type Upstream struct {
	cfg    Config
	log    *slog.Logger
	source Source
	closer func() error

	connMu     sync.Mutex
	conn       *grpc.ClientConn // authenticated with the SVID of serial connSerial
	connSerial string

	mu    sync.Mutex
	roots []*x509.Certificate // the parent's latest X.509 authorities

	reachable atomic.Bool // the last call to the parent succeeded
}

// Reachable reports whether the last call to the parent succeeded.
func (u *Upstream) Reachable() bool { return u.reachable.Load() }

// note records the outcome of a call to the parent.
func (u *Upstream) note(err error) error {
	u.reachable.Store(err == nil)
	return err
}

// New connects to the co-located agent (waiting for its first SVID until ctx
// ends) and prepares the connection to the parent. It does not call the parent.
func New(ctx context.Context, cfg Config) (*Upstream, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("downstream: trust domain is required")
	}
	if cfg.ParentAddress == "" {
		return nil, errors.New("downstream: parent address is required")
	}
	if cfg.ParentID.IsZero() {
		id, err := spiffeid.FromPath(cfg.TrustDomain, "/spire/server")
		if err != nil {
			return nil, fmt.Errorf("downstream: %w", err)
		}
		cfg.ParentID = id
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	u := &Upstream{cfg: cfg, log: log, source: cfg.Source, closer: func() error { return nil }}
	if u.source == nil {
		if cfg.WorkloadAPIAddr == "" {
			return nil, errors.New("downstream: a Workload API address or a source is required")
		}
		log.Info("downstream: waiting for the co-located agent's X509-SVID", "workload_api", cfg.WorkloadAPIAddr)
		src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(cfg.WorkloadAPIAddr)))
		if err != nil {
			return nil, fmt.Errorf("downstream: getting an X509-SVID from the Workload API at %s: %w", cfg.WorkloadAPIAddr, err)
		}
		u.source, u.closer = src, src.Close
	}
	if _, err := u.client(); err != nil {
		u.closer()
		return nil, err
	}
	return u, nil
}

// client returns a connection to the parent authenticated with the agent's
// current SVID. TLS presents the client certificate once per connection, so
// when the agent has rotated the SVID the old connection (which would keep
// showing the parent the old, eventually expired, certificate) is replaced.
func (u *Upstream) client() (*grpc.ClientConn, error) {
	svid, err := u.source.GetX509SVID()
	if err != nil {
		return nil, fmt.Errorf("downstream: no X509-SVID from the co-located agent: %w", err)
	}
	serial := svid.Certificates[0].SerialNumber.String()
	u.connMu.Lock()
	defer u.connMu.Unlock()
	if u.conn != nil && u.connSerial == serial {
		return u.conn, nil
	}
	tc := tlsconfig.MTLSClientConfig(u.source, u.source, tlsconfig.AuthorizeID(u.cfg.ParentID))
	conn, err := grpc.NewClient(u.cfg.ParentAddress, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		return nil, fmt.Errorf("downstream: parent %s: %w", u.cfg.ParentAddress, err)
	}
	if u.conn != nil {
		u.conn.Close()
		u.log.Info("downstream: reconnecting to the parent with the renewed SVID", "serial", serial)
	}
	u.conn, u.connSerial = conn, serial
	return conn, nil
}

// Close releases the parent connection and the Workload API source.
func (u *Upstream) Close() error {
	u.connMu.Lock()
	var err error
	if u.conn != nil {
		err = u.conn.Close()
	}
	u.connMu.Unlock()
	return errors.Join(err, u.closer())
}

// MintX509CA asks the parent to sign an intermediate CA for key.
func (u *Upstream) MintX509CA(ctx context.Context, key crypto.Signer, ttl time.Duration) (*ca.MintedCA, error) {
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{Organization: []string{"arbor"}, CommonName: u.cfg.TrustDomain.Name() + " intermediate"},
		URIs:    []*url.URL{u.cfg.TrustDomain.ID().URL()},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("downstream: creating CSR: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, u.cfg.CallTimeout)
	defer cancel()
	conn, err := u.client()
	if err != nil {
		return nil, u.note(err)
	}
	resp, err := svidv1.NewSVIDClient(conn).NewDownstreamX509CA(ctx, &svidv1.NewDownstreamX509CARequest{
		Csr: csr, PreferredTtl: int32(ttl / time.Second),
	})
	if u.note(err) != nil {
		return nil, fmt.Errorf("downstream: parent %s refused NewDownstreamX509CA: %w", u.cfg.ParentAddress, err)
	}
	if len(resp.CaCertChain) == 0 {
		return nil, errors.New("downstream: parent returned an empty CA chain")
	}
	chain, err := parseCerts(resp.CaCertChain)
	if err != nil {
		return nil, fmt.Errorf("downstream: parent returned a bad CA chain: %w", err)
	}
	roots, err := parseCerts(resp.X509Authorities)
	if err != nil {
		return nil, fmt.Errorf("downstream: parent returned bad X.509 authorities: %w", err)
	}
	if len(roots) == 0 {
		return nil, errors.New("downstream: parent returned no X.509 authorities")
	}
	u.setRoots(roots)
	u.log.Info("downstream: parent signed intermediate CA", "not_after", chain[0].NotAfter, "parent", u.cfg.ParentAddress)
	return &ca.MintedCA{Cert: chain[0], Intermediates: chain[1:], Roots: roots}, nil
}

// PublishJWTKey publishes a JWT signing key to the parent and returns the
// parent's whole set of JWT authorities.
func (u *Upstream) PublishJWTKey(ctx context.Context, k datastore.JWTAuthority) ([]datastore.JWTAuthority, error) {
	ctx, cancel := context.WithTimeout(ctx, u.cfg.CallTimeout)
	defer cancel()
	conn, err := u.client()
	if err != nil {
		return nil, u.note(err)
	}
	resp, err := bundlev1.NewBundleClient(conn).PublishJWTAuthority(ctx, &bundlev1.PublishJWTAuthorityRequest{
		JwtAuthority: &types.JWTKey{PublicKey: k.PublicKey, KeyId: k.KeyID, ExpiresAt: k.ExpiresAt},
	})
	if u.note(err) != nil {
		return nil, fmt.Errorf("downstream: parent %s refused PublishJWTAuthority: %w", u.cfg.ParentAddress, err)
	}
	out := make([]datastore.JWTAuthority, 0, len(resp.JwtAuthorities))
	for _, a := range resp.JwtAuthorities {
		out = append(out, datastore.JWTAuthority{KeyID: a.KeyId, PublicKey: a.PublicKey, ExpiresAt: a.ExpiresAt, Tainted: a.Tainted})
	}
	u.log.Info("downstream: published JWT key to parent", "jwt_kid", k.KeyID, "parent_jwt_authorities", len(out))
	return out, nil
}

func (u *Upstream) setRoots(roots []*x509.Certificate) {
	u.mu.Lock()
	u.roots = roots
	u.mu.Unlock()
}

// FetchParentBundle reads the parent's bundle (X.509 roots and JWT keys).
func (u *Upstream) FetchParentBundle(ctx context.Context) (*types.Bundle, error) {
	ctx, cancel := context.WithTimeout(ctx, u.cfg.CallTimeout)
	defer cancel()
	conn, err := u.client()
	if err != nil {
		return nil, u.note(err)
	}
	b, err := bundlev1.NewBundleClient(conn).GetBundle(ctx, &bundlev1.GetBundleRequest{})
	if u.note(err) != nil {
		return nil, fmt.Errorf("downstream: parent %s GetBundle: %w", u.cfg.ParentAddress, err)
	}
	return b, nil
}

// SyncBundle merges the parent's current X.509 authorities and JWT keys into
// the own bundle, so new roots and other tiers' JWT keys flow down before
// anyone uses them. Authorities are only added here, and never ones that have
// already expired: pruning is the CA manager's job, and an authority it
// pruned must not come back from a parent that has not pruned it yet.
func (u *Upstream) SyncBundle(ctx context.Context, bundles datastore.BundleStore) (added int, err error) {
	pb, err := u.FetchParentBundle(ctx)
	if err != nil {
		return 0, err
	}
	now := u.cfg.Now()
	_, err = bundles.UpdateBundle(ctx, u.cfg.TrustDomain, func(cur *datastore.Bundle) (*datastore.Bundle, error) {
		if cur == nil {
			return nil, nil // the CA manager creates the bundle at Init
		}
		next := *cur
		next.X509Authorities = slices.Clone(cur.X509Authorities)
		next.JWTAuthorities = slices.Clone(cur.JWTAuthorities)
		for _, a := range pb.X509Authorities {
			if !slices.ContainsFunc(next.X509Authorities, func(h datastore.X509Authority) bool { return string(h.Cert) == string(a.Asn1) }) {
				if c, err := x509.ParseCertificate(a.Asn1); err != nil || now.After(c.NotAfter) {
					continue
				}
				next.X509Authorities = append(next.X509Authorities, datastore.X509Authority{Cert: a.Asn1, Tainted: a.Tainted})
				added++
			}
		}
		for _, k := range pb.JwtAuthorities {
			if k.ExpiresAt != 0 && k.ExpiresAt < now.Unix() {
				continue
			}
			if !slices.ContainsFunc(next.JWTAuthorities, func(h datastore.JWTAuthority) bool { return h.KeyID == k.KeyId }) {
				next.JWTAuthorities = append(next.JWTAuthorities, datastore.JWTAuthority{KeyID: k.KeyId, PublicKey: k.PublicKey, ExpiresAt: k.ExpiresAt, Tainted: k.Tainted})
				added++
			}
		}
		if added == 0 {
			return cur, nil
		}
		next.SequenceNumber++
		return &next, nil
	})
	if err != nil {
		return 0, fmt.Errorf("downstream: merging parent bundle: %w", err)
	}
	if added > 0 {
		u.log.Info("downstream: parent bundle merged", "authorities_added", added)
	}
	return added, nil
}

// RunBundleSync calls SyncBundle every interval until ctx ends, logging
// failures once per change of state.
func (u *Upstream) RunBundleSync(ctx context.Context, bundles datastore.BundleStore, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	failing := false
	for {
		if _, err := u.SyncBundle(ctx, bundles); err != nil {
			if !failing && ctx.Err() == nil {
				u.log.Warn("downstream: parent unreachable; serving from the current CA", "err", err)
			}
			failing = true
		} else if failing {
			u.log.Info("downstream: parent reachable again")
			failing = false
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func parseCerts(ders [][]byte) ([]*x509.Certificate, error) {
	out := make([]*x509.Certificate, 0, len(ders))
	for _, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}
