package nested

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/arborid/arbor/downstream"
	"github.com/arborid/arbor/internal/ca"
	"github.com/arborid/arbor/internal/testkit"
	"github.com/arborid/arbor/root"
	"github.com/arborid/arbor/upstream"
)

// The wide tree's tiers are linked without co-located agents, and each has
// its own clock that a test moves for single rotation steps: what the wide
// tree tests are about is JWT keys travelling between many tiers, and these
// lifetimes keep the clock jumps from rotating anything else.
const (
	// jwtKeyLife is every wide-tree tier's CA TTL, which is the lifetime of
	// its JWT signing keys: a key is prepared (and published) at half of it
	// and activated when a sixth remains.
	jwtKeyLife = time.Hour
	// x509Life is the lifetime of every wide-tree tier's X.509 CA. The
	// tests move a tier's clock up to a few JWT key lifetimes ahead for one
	// rotation step; with this lifetime such a jump never rotates the X.509
	// CA.
	x509Life = 1000 * time.Hour
	// svidTTL is every wide-tree tier's X509-SVID TTL, so also its TLS
	// server certificate's: renewed at half of it, so never during a clock
	// jump (a certificate issued at a jumped time would be "not yet valid"
	// for every peer checking it at the real time).
	svidTTL = 24 * time.Hour
)

// longRoot is the wide tree root's upstream: a self-signed CA valid for
// x509Life whatever the CA manager asks for, dated by the real clock.
type longRoot struct{ root.SelfSigned }

var _ upstream.Authority = (*longRoot)(nil)

func (r *longRoot) MintX509CA(ctx context.Context, key crypto.Signer, _ time.Duration) (*upstream.MintedCA, error) {
	return r.SelfSigned.MintX509CA(ctx, key, x509Life)
}

// childUpstream is a wide-tree tier's upstream. JWT keys go to the parent
// over the wire exactly as in production — PublishJWTAuthority, synchronous
// up to the root, and the parent's bundle pulled with GetBundle every
// syncEvery — which is what these tests are about. Only the X.509 CA is
// signed in process by the parent's CA manager, for x509Life, so that moving
// this tier's clock to a JWT rotation point never rotates its X.509 CA (the
// API would cap the intermediate at the parent's CA TTL, the same as the JWT
// key lifetime).
type childUpstream struct {
	*downstream.Upstream
	parent *ca.Manager
	roots  []*x509.Certificate
}

var (
	_ upstream.Authority    = (*childUpstream)(nil)
	_ upstream.JWTPublisher = (*childUpstream)(nil)
)

func (u *childUpstream) MintX509CA(ctx context.Context, key crypto.Signer, _ time.Duration) (*upstream.MintedCA, error) {
	chain, err := u.parent.SignDownstreamX509CA(ctx, key.Public(), x509Life)
	if err != nil {
		return nil, err
	}
	return &upstream.MintedCA{Cert: chain[0], Intermediates: chain[1:], Roots: u.roots}, nil
}

// staticSource serves one SVID and one bundle, as a co-located agent's
// Workload API would.
type staticSource struct {
	fixedSVID
	bundle *x509bundle.Bundle
}

func (s staticSource) GetX509BundleForTrustDomain(spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.bundle, nil
}

// startTreeTier starts a tier of the wide tree with its own clock: the root
// when parent is nil, otherwise a downstream tier authenticated to parent by
// the SVID of a downstream entry, with no co-located agent.
func startTreeTier(t *testing.T, name string, parent *tier) *tier {
	t.Helper()
	tr := &tier{t: t, name: name, parent: parent, clock: &testkit.Clock{}}
	tr.cfg = newTierConfig(t, name, ttls{ca: jwtKeyLife, x509: svidTTL})
	tr.cfg.CAKeysInMemory = true
	tr.cfg.Now = tr.clock.Now
	if parent == nil {
		tr.cfg.Upstream = &longRoot{root.SelfSigned{TrustDomain: td}}
	} else {
		tr.cfg.Parent = parent.downstreamFor(name)
		tr.cfg.ParentBundleSyncInterval = syncEvery
	}
	tr.start()
	t.Cleanup(tr.stop)
	return tr
}

// depth is the tier's distance from the root.
func (tr *tier) depth() int {
	d := 0
	for p := tr.parent; p != nil; p = p.parent {
		d++
	}
	return d
}

// downstreamFor registers child as a downstream tier of tr (an entry with
// downstream = true), signs its SVID and returns the child's upstream.
func (tr *tier) downstreamFor(child string) *childUpstream {
	t := tr.t
	t.Helper()
	id := idOf("/tier/" + child)
	tr.createEntry(&types.Entry{
		ParentId:   protoID(idOf("/host/" + child)),
		SpiffeId:   protoID(id),
		Selectors:  []*types.Selector{{Type: "unix", Value: "uid:0"}},
		Downstream: true,
	})
	key := newKey(t)
	chain, err := tr.srv.CA().SignX509SVID(callCtx(t), ca.X509SVIDParams{ID: id, PublicKey: key.Public()})
	if err != nil {
		t.Fatalf("%s: signing %s's SVID: %v", tr.name, id, err)
	}
	roots := tr.roots()
	up, err := downstream.New(callCtx(t), downstream.Config{
		TrustDomain:   td,
		ParentAddress: tr.addr(),
		Source: staticSource{
			fixedSVID: fixedSVID{&x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}},
			bundle:    x509bundle.FromX509Authorities(td, roots),
		},
		CallTimeout: 10 * time.Second,
		Logger:      testLogger(),
	})
	if err != nil {
		t.Fatalf("downstream.New for %s: %v", child, err)
	}
	t.Cleanup(func() { up.Close() })
	return &childUpstream{Upstream: up, parent: tr.srv.CA(), roots: roots}
}

// jwtBundle is the tier's bundle's JWT authorities as a go-spiffe bundle.
func (tr *tier) jwtBundle(ctx context.Context) (*jwtbundle.Bundle, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	b, err := tr.bundle(ctx)
	if err != nil {
		return nil, err
	}
	jb := jwtbundle.New(td)
	for _, k := range b.JwtAuthorities {
		pub, err := x509.ParsePKIXPublicKey(k.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("%s: JWT authority %s: %w", tr.name, k.KeyId, err)
		}
		jb.AddJWTAuthority(k.KeyId, pub)
	}
	return jb, nil
}

// rotateAt runs one rotation step of the tier's CA manager with the tier's
// clock at `at`, then puts the clock back to the real time. The server's own
// rotation loop (every 10s) may run a step meanwhile; it does the same.
func (tr *tier) rotateAt(ctx context.Context, at time.Time) error {
	tr.clock.JumpTo(at)
	defer tr.clock.Reset()
	return tr.srv.CA().Rotate(ctx)
}

// tree is a root, regional tiers under it and a leaf under each regional.
type tree struct {
	root      *tier
	regionals []*tier
	leaves    []*tier
	all       []*tier // root, regionals, leaves
}

func startTree(t *testing.T, regionals int) *tree {
	t.Helper()
	tr := &tree{root: startTreeTier(t, "root", nil)}
	tr.all = append(tr.all, tr.root)
	for i := range regionals {
		r := startTreeTier(t, fmt.Sprintf("region-%d", i), tr.root)
		tr.regionals = append(tr.regionals, r)
	}
	for i, r := range tr.regionals {
		tr.leaves = append(tr.leaves, startTreeTier(t, fmt.Sprintf("leaf-%d", i), r))
	}
	tr.all = append(append(tr.all, tr.regionals...), tr.leaves...)
	return tr
}
