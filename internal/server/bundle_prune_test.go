package server_test

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/arborid/arbor/internal/api"
	"github.com/arborid/arbor/internal/cli/admin"
	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/upstream"
)

// foreignAuthorities returns an X.509 root and a JWT key, unrelated to the
// tree's CAs, both expiring at notAfter: an old upstream root and an old
// key, as an operator who re-rooted the tree leaves behind.
func foreignAuthorities(t *testing.T, serial int64, notAfter time.Time) (*types.X509Certificate, *types.JWTKey) {
	t.Helper()
	key := newKey(t)
	tmpl := must(upstream.CATemplate(td, key.Public(), big.NewInt(serial), pkix.Name{CommonName: "old upstream root"}, notAfter.Add(-48*time.Hour), notAfter))(t)
	der := must(x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key))(t)
	pub := must(x509.MarshalPKIXPublicKey(newKey(t).Public()))(t)
	return &types.X509Certificate{Asn1: der}, &types.JWTKey{PublicKey: pub, KeyId: "old-key-" + big.NewInt(serial).String(), ExpiresAt: notAfter.Unix()}
}

// TestBundlePruneAcrossTiers: expired authorities handed
// down from the root leave a child's bundle with `arbor bundle prune` (the
// admin client's PruneBundle over the admin socket), stay out although the
// root still lists them, and leave the root with its own prune; the grace
// period is honoured; the call is admin-only.
func TestBundlePruneAcrossTiers(t *testing.T) {
	c := newClock()
	long := func(cfg *server.Config) { cfg.X509SVIDTTL = 24 * time.Hour } // no certificate renews during the test's +2h
	root := startServerOn(t, c, long)
	child := startChildOn(t, root, "child", 100*time.Millisecond, long, func(cfg *server.Config) { cfg.CATTL = 12 * time.Hour })

	oldRoot, oldKey := foreignAuthorities(t, 7, c.Now().Add(time.Hour))
	bundles := bundlev1.NewBundleClient(root.admin)
	must(bundles.AppendBundle(ctxT(t), &bundlev1.AppendBundleRequest{X509Authorities: []*types.X509Certificate{oldRoot}, JwtAuthorities: []*types.JWTKey{oldKey}}))(t)
	waitFor(t, "the old root and key in the child's bundle", func() bool {
		return hasDER(ownX509(child), oldRoot.Asn1) && slices.Contains(ownKIDs(child), oldKey.KeyId)
	})

	c.Advance(2 * time.Hour) // both expired an hour ago
	prune := func(h *harness, grace time.Duration) string {
		t.Helper()
		cl := must(admin.Dial(h.cfg.AdminSocket))(t)
		defer cl.Close()
		var out bytes.Buffer
		if err := cl.PruneBundle(ctxT(t), admin.Printer{Out: &out}, grace); err != nil {
			t.Fatalf("PruneBundle(%v) on %s: %v", grace, h.cfg.Name, err)
		}
		return out.String()
	}
	if out := prune(child, 3*time.Hour); !strings.HasPrefix(out, "Pruned 0 X.509 and 0 JWT authorities expired more than 3h0m0s ago;") {
		t.Errorf("prune --grace 3h on the child printed %q, want nothing pruned", out)
	}
	if out := prune(child, 30*time.Minute); !strings.HasPrefix(out, "Pruned 1 X.509 and 1 JWT authorities expired more than 30m0s ago;") {
		t.Errorf("prune --grace 30m on the child printed %q, want one of each pruned", out)
	}
	if hasDER(ownX509(child), oldRoot.Asn1) || slices.Contains(ownKIDs(child), oldKey.KeyId) {
		t.Fatal("the child's bundle still holds the expired authorities after the prune")
	}

	// The root still lists them; a later sync (proved by a new authority
	// arriving) must not bring them back.
	if !hasDER(ownX509(root), oldRoot.Asn1) {
		t.Fatal("the root lost the old root without a prune; the check below would prove nothing")
	}
	newRoot, newKey := foreignAuthorities(t, 8, c.Now().Add(48*time.Hour))
	must(bundles.AppendBundle(ctxT(t), &bundlev1.AppendBundleRequest{X509Authorities: []*types.X509Certificate{newRoot}, JwtAuthorities: []*types.JWTKey{newKey}}))(t)
	waitFor(t, "a sync after the prune", func() bool {
		return hasDER(ownX509(child), newRoot.Asn1) && slices.Contains(ownKIDs(child), newKey.KeyId)
	})
	if hasDER(ownX509(child), oldRoot.Asn1) || slices.Contains(ownKIDs(child), oldKey.KeyId) {
		t.Error("the child took the pruned authorities back from its parent")
	}

	// The root prunes them too; its own CA root and key stay.
	if out := prune(root, 0); !strings.HasPrefix(out, "Pruned 1 X.509 and 1 JWT authorities") {
		t.Errorf("prune on the root printed %q, want one of each pruned", out)
	}
	rootCA, _ := root.srv.CA().X509CA()
	if hasDER(ownX509(root), oldRoot.Asn1) || !hasDER(ownX509(root), rootCA.Raw) || !hasDER(ownX509(root), newRoot.Asn1) {
		t.Error("after the root's prune: the old root stayed, or a live root left")
	}
	if kids := ownKIDs(root); slices.Contains(kids, oldKey.KeyId) || !slices.Contains(kids, root.srv.CA().Status().JWTKey.KeyID) || !slices.Contains(kids, child.srv.CA().Status().JWTKey.KeyID) {
		t.Errorf("after the root's prune JWT keys are %v: the old key stayed, or a live one left", kids)
	}

	// Admin only: an anonymous TLS caller and a downstream server's SVID
	// are refused, and the bundle is untouched; a negative grace is refused.
	before := root.srv.Bundles().Own().SequenceNumber
	resp := new(types.Bundle)
	if err := root.dial(nil).Invoke(ctxT(t), api.PruneBundleMethod, durationpb.New(0), resp); status.Code(err) != codes.Unauthenticated {
		t.Errorf("prune without credentials: %v, want Unauthenticated", err)
	}
	agent := root.newAgent()
	if err := root.dial(agent).Invoke(ctxT(t), api.PruneBundleMethod, durationpb.New(0), resp); status.Code(err) != codes.PermissionDenied {
		t.Errorf("prune with an agent SVID: %v, want PermissionDenied", err)
	}
	if err := root.admin.Invoke(ctxT(t), api.PruneBundleMethod, durationpb.New(-time.Second), resp); status.Code(err) != codes.InvalidArgument {
		t.Errorf("prune with a negative grace: %v, want InvalidArgument", err)
	}
	if after := root.srv.Bundles().Own().SequenceNumber; after != before {
		t.Errorf("refused prunes changed the bundle: sequence %d -> %d", before, after)
	}
}
