// Package downstream is the nesting protocol, both ends.
//
// The child end (this file) is what makes a tier downstream: Upstream, an
// upstream.Parent, obtains the tier's X.509 intermediate CA from the parent
// server with svid.v1 NewDownstreamX509CA, publishes the tier's JWT signing
// keys upward with bundle.v1 PublishJWTAuthority, fetches the parent's trust
// bundle to carry it down, and reports whether the parent answers. The child
// never holds a static secret for its parent: it authenticates with the
// X509-SVID of a downstream registration entry that a co-located agent
// (arbor's or spire-agent) serves on its Workload API socket. The same code
// path serves any SPIRE-API parent — an arbor server or a real spire-server
// (the topology's upstream "spire" kind).
//
// The parent end (parent.go) is the policy a tier applies to its children's
// requests: the TTL a child gets and the trust domain its CSR must name
// (ChildCAPolicy), and which of the tier's CAs signs it (ChooseSigningCA).
// The server injects both into the API and the CA manager.
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
	"strings"
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
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/arborid/arbor/internal/idpolicy"
	"github.com/arborid/arbor/internal/serverconn"
	"github.com/arborid/arbor/upstream"
)

var _ upstream.Parent = (*Upstream)(nil)

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
	// ParentAddress is the parent server's API address, host:port. Several
	// servers of the parent tier (replicas) may be given separated by
	// commas; the link stays on one while it answers and fails over to
	// another. One of ParentAddress and ParentAddresses is required.
	ParentAddress string
	// ParentAddresses lists the parent tier's servers instead of
	// ParentAddress.
	ParentAddresses []string
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
	// Logger; nil discards.
	Logger *slog.Logger
}

// Upstream is the link to a parent server: an upstream.Parent.
type Upstream struct {
	cfg    Config
	log    *slog.Logger
	source Source
	closer func() error

	connMu     sync.Mutex
	conn       *grpc.ClientConn // authenticated with the SVID of serial connSerial
	connSerial string

	reachable atomic.Bool // the last call to the parent succeeded

	// addrs are the parent tier's servers; tracker says which answered last.
	addrs   []string
	tracker *serverconn.Tracker
}

// Parent returns the address (ip:port) of the parent server the latest
// successful call reached, "" before any.
func (u *Upstream) Parent() string { return u.tracker.Current() }

// parent names the parent server for messages: the last one that
// answered, or the configured list before any did.
func (u *Upstream) parent() string {
	if cur := u.tracker.Current(); cur != "" {
		return cur
	}
	return strings.Join(u.addrs, ",")
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
	if cfg.ParentAddress == "" && len(cfg.ParentAddresses) == 0 {
		return nil, errors.New("downstream: parent address is required")
	}
	if cfg.ParentAddress != "" && len(cfg.ParentAddresses) > 0 {
		return nil, errors.New("downstream: give a parent address or a list of parent addresses, not both")
	}
	list := cfg.ParentAddress
	if len(cfg.ParentAddresses) > 0 {
		list = strings.Join(cfg.ParentAddresses, ",")
	}
	addrs, err := serverconn.Split(list)
	if err != nil {
		return nil, fmt.Errorf("downstream: parent: %w", err)
	}
	if cfg.ParentID.IsZero() {
		cfg.ParentID = idpolicy.ServerID(cfg.TrustDomain)
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = 30 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	u := &Upstream{cfg: cfg, log: log, source: cfg.Source, closer: func() error { return nil }, addrs: addrs}
	u.tracker = &serverconn.Tracker{OnChange: func(from, to string) {
		if from != "" {
			log.Warn("downstream: moved to another server of the parent tier", "from", from, "to", to)
		}
	}}
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
	conn, err := serverconn.Dial(u.addrs, u.tracker, append(serverconn.FixedWindow(), grpc.WithTransportCredentials(credentials.NewTLS(tc)))...)
	if err != nil {
		return nil, fmt.Errorf("downstream: parent %s: %w", u.parent(), err)
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
func (u *Upstream) MintX509CA(ctx context.Context, key crypto.Signer, ttl time.Duration) (*upstream.MintedCA, error) {
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
		return nil, fmt.Errorf("downstream: parent %s refused NewDownstreamX509CA: %w", u.parent(), err)
	}
	if len(resp.CaCertChain) == 0 {
		return nil, errors.New("downstream: parent returned an empty CA chain")
	}
	chain, err := upstream.ParseCertificatesDER(resp.CaCertChain...)
	if err != nil {
		return nil, fmt.Errorf("downstream: parent returned a bad CA chain: %w", err)
	}
	roots, err := upstream.ParseCertificatesDER(resp.X509Authorities...)
	if err != nil {
		return nil, fmt.Errorf("downstream: parent returned bad X.509 authorities: %w", err)
	}
	if len(roots) == 0 {
		return nil, errors.New("downstream: parent returned no X.509 authorities")
	}
	u.log.Info("downstream: parent signed intermediate CA", "not_after", chain[0].NotAfter, "parent", u.parent())
	return &upstream.MintedCA{Cert: chain[0], Intermediates: chain[1:], Roots: roots}, nil
}

// PublishJWTKey publishes a JWT signing key to the parent and returns the
// parent's whole set of JWT authorities.
func (u *Upstream) PublishJWTKey(ctx context.Context, k upstream.JWTKey) ([]upstream.JWTKey, error) {
	ctx, cancel := context.WithTimeout(ctx, u.cfg.CallTimeout)
	defer cancel()
	conn, err := u.client()
	if err != nil {
		return nil, u.note(err)
	}
	resp, err := bundlev1.NewBundleClient(conn).PublishJWTAuthority(ctx, &bundlev1.PublishJWTAuthorityRequest{
		JwtAuthority: &types.JWTKey{PublicKey: k.PublicKey, KeyId: k.KeyID, ExpiresAt: k.ExpiresAt, Tainted: k.Tainted},
	})
	if u.note(err) != nil {
		return nil, fmt.Errorf("downstream: parent %s refused PublishJWTAuthority: %w", u.parent(), err)
	}
	out := jwtKeysOf(resp.JwtAuthorities)
	u.log.Info("downstream: published JWT key to parent", "jwt_kid", k.KeyID, "parent_jwt_authorities", len(out))
	return out, nil
}

// FetchBundle reads the parent's bundle: its X.509 authorities and JWT keys.
func (u *Upstream) FetchBundle(ctx context.Context) (*upstream.Bundle, error) {
	ctx, cancel := context.WithTimeout(ctx, u.cfg.CallTimeout)
	defer cancel()
	conn, err := u.client()
	if err != nil {
		return nil, u.note(err)
	}
	b, err := bundlev1.NewBundleClient(conn).GetBundle(ctx, &bundlev1.GetBundleRequest{})
	if u.note(err) != nil {
		return nil, fmt.Errorf("downstream: parent %s GetBundle: %w", u.parent(), err)
	}
	out := &upstream.Bundle{JWTKeys: jwtKeysOf(b.JwtAuthorities), X509Authorities: x509AuthoritiesOf(b.X509Authorities)}
	fed, err := u.federatedBundles(ctx, bundlev1.NewBundleClient(conn))
	switch status.Code(err) {
	case codes.OK:
		out.Federated = fed
	case codes.PermissionDenied, codes.Unimplemented:
		// A parent that does not hand federated bundles to children (a
		// SPIRE server): the own bundle is still synced.
	default:
		return nil, fmt.Errorf("downstream: parent %s ListFederatedBundles: %w", u.parent(), u.note(err))
	}
	return out, nil
}

// federatedBundles lists every federated bundle the parent holds.
func (u *Upstream) federatedBundles(ctx context.Context, c bundlev1.BundleClient) ([]upstream.FederatedBundle, error) {
	out := []upstream.FederatedBundle{}
	token := ""
	for {
		resp, err := c.ListFederatedBundles(ctx, &bundlev1.ListFederatedBundlesRequest{PageSize: 100, PageToken: token})
		if err != nil {
			return nil, err
		}
		for _, b := range resp.Bundles {
			out = append(out, upstream.FederatedBundle{TrustDomain: b.TrustDomain, X509Authorities: x509AuthoritiesOf(b.X509Authorities),
				JWTKeys: jwtKeysOf(b.JwtAuthorities), RefreshHint: b.RefreshHint, SequenceNumber: b.SequenceNumber})
		}
		if resp.NextPageToken == "" || len(resp.Bundles) == 0 {
			return out, nil
		}
		token = resp.NextPageToken
	}
}

func x509AuthoritiesOf(as []*types.X509Certificate) []upstream.X509Authority {
	out := make([]upstream.X509Authority, 0, len(as))
	for _, a := range as {
		out = append(out, upstream.X509Authority{Cert: a.Asn1, Tainted: a.Tainted})
	}
	return out
}

func jwtKeysOf(keys []*types.JWTKey) []upstream.JWTKey {
	out := make([]upstream.JWTKey, 0, len(keys))
	for _, k := range keys {
		out = append(out, upstream.JWTKey{KeyID: k.KeyId, PublicKey: k.PublicKey, ExpiresAt: k.ExpiresAt, Tainted: k.Tainted})
	}
	return out
}
