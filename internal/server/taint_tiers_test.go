package server_test

import (
	"bytes"
	"crypto/x509"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	localauthorityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/localauthority/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"

	"github.com/arborid/arbor/downstream"
	"github.com/arborid/arbor/internal/ca"
	"github.com/arborid/arbor/internal/server"
)

// swappableSource is a co-located agent's Workload API as a downstream link
// sees it, whose bundle the test replaces when the parent's root changes
// (as the agent's bundle sync would).
type swappableSource struct {
	mu     sync.Mutex
	svid   *x509svid.SVID
	bundle *x509bundle.Bundle
}

func (s *swappableSource) GetX509SVID() (*x509svid.SVID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.svid, nil
}

func (s *swappableSource) setSVID(svid *x509svid.SVID) {
	s.mu.Lock()
	s.svid = svid
	s.mu.Unlock()
}
func (s *swappableSource) GetX509BundleForTrustDomain(spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bundle, nil
}
func (s *swappableSource) set(b *x509bundle.Bundle) {
	s.mu.Lock()
	s.bundle = b
	s.mu.Unlock()
}

func swappableLink(t *testing.T, parent *harness, name string) (*downstream.Upstream, *swappableSource) {
	t.Helper()
	agent := parent.newAgent()
	entryID := parent.createEntry(&types.Entry{ParentId: protoID(agent.ID.Path()), SpiffeId: protoID("/tier/" + name),
		Selectors: []*types.Selector{sel("unix", "uid:0")}, Downstream: true})
	src := &swappableSource{svid: must(parent.workloadSVID(agent, entryID))(t), bundle: parent.snapshotBundle()}
	up, err := downstream.New(ctxT(t), downstream.Config{TrustDomain: td, ParentAddress: parent.cfg.ListenAddr, Source: src})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	return up, src
}

// chainsToCert reports whether c was signed by root or is root.
func chainsToCert(c, root *x509.Certificate) bool {
	return bytes.Equal(c.Raw, root.Raw) || (bytes.Equal(c.RawIssuer, root.RawSubject) && c.CheckSignatureFrom(root) == nil)
}

// TestParentTaintReplacesChildIntermediate: the root rotates to a new root
// CA and taints the old one; the child tier, whose intermediate chains to the
// tainted root, gets a new intermediate from the root before it marks the
// root tainted in its own bundle (so its agents re-mint from a clean CA),
// and drops the root from its bundle once the root revokes it.
func TestParentTaintReplacesChildIntermediate(t *testing.T) {
	root := startServer(t)
	up, src := swappableLink(t, root, "child")
	child := startServer(t, func(c *server.Config) {
		c.Name, c.Parent, c.ParentBundleSyncInterval = "child", up, 50*time.Millisecond
		c.CATTL = 2 * time.Hour
	})
	ctx := ctxT(t)
	r1, _ := root.srv.CA().X509CA()
	childCA1, _ := child.srv.CA().X509CA()
	if !chainsToCert(childCA1, r1) {
		t.Fatal("the child's intermediate is not signed by the root's CA")
	}
	rla := localauthorityv1.NewLocalAuthorityClient(root.admin)
	second := must(rla.PrepareX509Authority(ctx, &localauthorityv1.PrepareX509AuthorityRequest{}))(t).PreparedAuthority.AuthorityId
	waitFor(t, "the root's prepared CA in the child's bundle", func() bool {
		st := root.srv.CA().Status()
		return st.NextX509CA != nil && hasDER(ownX509(child), st.NextX509CA.Raw)
	})
	must(rla.ActivateX509Authority(ctx, &localauthorityv1.ActivateX509AuthorityRequest{AuthorityId: second}))(t)
	r2, _ := root.srv.CA().X509CA()
	src.set(root.snapshotBundle()) // the co-located agent's bundle sync
	root.bundle = root.snapshotBundle()

	// Before the taint the child keeps its intermediate.
	must(struct{}{}, child.srv.CA().Rotate(ctx))(t)
	if cur, _ := child.srv.CA().X509CA(); !cur.Equal(childCA1) {
		t.Fatal("the child replaced its intermediate before any taint")
	}

	must(rla.TaintX509Authority(ctx, &localauthorityv1.TaintX509AuthorityRequest{AuthorityId: ca.SubjectKeyID(r1)}))(t)
	waitFor(t, "the child marking the root's old CA tainted", func() bool {
		b := child.srv.Bundles().Own()
		for _, a := range b.X509Authorities {
			if bytes.Equal(a.Cert, r1.Raw) && a.Tainted {
				// Marked only once the child signs with a clean CA.
				if cur, _ := child.srv.CA().X509CA(); chainsToCert(cur, r1) {
					t.Errorf("the child marked the root tainted while its active CA still chains to it")
				}
				return true
			}
		}
		return false
	})
	cur, _ := child.srv.CA().X509CA()
	if cur.Equal(childCA1) || !chainsToCert(cur, r2) {
		t.Fatalf("the child's active CA after the taint is not a new one signed by the root's new CA")
	}
	st := must(localauthorityv1.NewLocalAuthorityClient(child.admin).GetX509AuthorityState(ctx, &localauthorityv1.GetX509AuthorityStateRequest{}))(t)
	if st.Old.GetAuthorityId() != ca.SubjectKeyID(childCA1) || st.Old.GetUpstreamAuthoritySubjectKeyId() != ca.SubjectKeyID(r1) {
		t.Errorf("child state after the forced rotation = %v, want old %s signed by %s", st, ca.SubjectKeyID(childCA1), ca.SubjectKeyID(r1))
	}
	child.bundle = child.snapshotBundle()
	agent := child.newAgent()
	entry := child.createEntry(&types.Entry{ParentId: protoID(agent.ID.Path()), SpiffeId: protoID("/leafw"), Selectors: []*types.Selector{sel("unix", "uid:2")}})
	svid := must(child.workloadSVID(agent, entry))(t)
	top := svid.Certificates[len(svid.Certificates)-1]
	if !chainsToCert(top, r2) || chainsToCert(top, r1) {
		t.Fatalf("a workload SVID of the child after the taint chains to %s, want the root's new CA", top.Issuer)
	}

	// A local taint on a tier with an upstream is refused.
	_, err := localauthorityv1.NewLocalAuthorityClient(child.admin).TaintX509Authority(ctx, &localauthorityv1.TaintX509AuthorityRequest{AuthorityId: ca.SubjectKeyID(childCA1)})
	child.wantRefusal(t, "local taint on a downstream tier", err, codes.FailedPrecondition, "local authority can't be tainted if there is an upstream authority", child.snapshot().Bundle.SequenceNumber)

	// Revokes on the child of what the parent still lists would be undone
	// by the next bundle sync: refused.
	cla := localauthorityv1.NewLocalAuthorityClient(child.admin)
	_, err = cla.RevokeX509UpstreamAuthority(ctx, &localauthorityv1.RevokeX509UpstreamAuthorityRequest{SubjectKeyId: ca.SubjectKeyID(r1)})
	child.wantRefusal(t, "upstream revoke on the child of a root the parent still lists", err, codes.FailedPrecondition, "revoke it at the parent", child.snapshot().Bundle.SequenceNumber)
	oldKID := must(cla.GetJWTAuthorityState(ctx, &localauthorityv1.GetJWTAuthorityStateRequest{}))(t).Active.AuthorityId
	newKID := must(cla.PrepareJWTAuthority(ctx, &localauthorityv1.PrepareJWTAuthorityRequest{}))(t).PreparedAuthority.AuthorityId
	must(cla.ActivateJWTAuthority(ctx, &localauthorityv1.ActivateJWTAuthorityRequest{AuthorityId: newKID}))(t)
	must(cla.TaintJWTAuthority(ctx, &localauthorityv1.TaintJWTAuthorityRequest{AuthorityId: oldKID}))(t)
	_, err = cla.RevokeJWTAuthority(ctx, &localauthorityv1.RevokeJWTAuthorityRequest{AuthorityId: oldKID})
	child.wantRefusal(t, "JWT revoke on the child of a key the parent lists", err, codes.FailedPrecondition, "revoke it at the parent", child.snapshot().Bundle.SequenceNumber)
	// The child's taint reached the root, which holds the key tainted and
	// so can revoke it; the child then can too, once its parent no longer
	// lists it, and the key is gone from both.
	rootHolds := func(kid string) (held, tainted bool) {
		for _, k := range root.srv.Bundles().Own().JWTAuthorities {
			if k.KeyID == kid {
				return true, k.Tainted
			}
		}
		return false, false
	}
	if held, tainted := rootHolds(oldKID); !held || !tainted {
		t.Fatalf("after the child's taint the root holds its old JWT key %s: held %v, tainted %v; want held tainted", oldKID, held, tainted)
	}
	must(rla.RevokeJWTAuthority(ctx, &localauthorityv1.RevokeJWTAuthorityRequest{AuthorityId: oldKID}))(t)
	waitFor(t, "the child's revoke of its old JWT key, once the root revoked it", func() bool {
		_, err := cla.RevokeJWTAuthority(ctx, &localauthorityv1.RevokeJWTAuthorityRequest{AuthorityId: oldKID})
		return err == nil
	})
	if held, _ := rootHolds(oldKID); held || slices.Contains(ownKIDs(child), oldKID) {
		t.Fatalf("the revoked JWT key %s is still held: root %v, child %v", oldKID, held, slices.Contains(ownKIDs(child), oldKID))
	}

	// The co-located agent re-mints the link's SVID, which the old root
	// signed (here: a new agent of the root and its downstream entry).
	agent2 := root.newAgent()
	entry2 := root.createEntry(&types.Entry{ParentId: protoID(agent2.ID.Path()), SpiffeId: protoID("/tier/child"),
		Selectors: []*types.Selector{sel("unix", "uid:0")}, Downstream: true})
	src.setSVID(must(root.workloadSVID(agent2, entry2))(t))

	// The root revokes it: it leaves the child's bundle.
	must(rla.RevokeX509Authority(ctx, &localauthorityv1.RevokeX509AuthorityRequest{AuthorityId: ca.SubjectKeyID(r1)}))(t)
	waitFor(t, "the revoked root leaving the child's bundle", func() bool { return !hasDER(ownX509(child), r1.Raw) })
	if !hasDER(ownX509(child), r2.Raw) {
		t.Fatal("the child's bundle lost the root's new CA")
	}
}
