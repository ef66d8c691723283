package admin_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"

	"github.com/arborid/arbor/internal/cli/admin"
	"github.com/arborid/arbor/internal/testkit"
)

// TestFederatedBundleValues: the value calls arbor up federates its trust
// domains with: no bundle is nil, a set bundle is read back, and a refresh
// that fails at the foreign endpoint is the server's answer, not an
// unreachable admin socket.
func TestFederatedBundleValues(t *testing.T) {
	_, socket := startServer(t)
	c := dial(t, socket)
	ctx := testContext(t)
	partner := spiffeid.RequireTrustDomainFromString("partner.example")

	if b, err := c.FederatedBundle(ctx, partner); b != nil || err != nil {
		t.Fatalf("FederatedBundle(none held) = %v, %v; want nil, nil", b, err)
	}
	ca := newCA(t, partner.Name())
	set := &types.Bundle{TrustDomain: partner.Name(), X509Authorities: []*types.X509Certificate{{Asn1: ca.Raw}}}
	if err := c.SetFederatedBundle(ctx, set); err != nil {
		t.Fatalf("SetFederatedBundle: %v", err)
	}
	got, err := c.FederatedBundle(ctx, partner)
	if err != nil || got == nil || len(got.X509Authorities) != 1 || string(got.X509Authorities[0].Asn1) != string(ca.Raw) {
		t.Fatalf("FederatedBundle after set = %v, %v; want the set CA", got, err)
	}

	own := &types.Bundle{TrustDomain: td.Name(), X509Authorities: []*types.X509Certificate{{Asn1: ca.Raw}}}
	err = c.SetFederatedBundle(ctx, own)
	if rpc := (*admin.RPCError)(nil); !errors.As(err, &rpc) {
		t.Errorf("SetFederatedBundle(own trust domain) = %v, want an *RPCError", err)
	}
	checkOneLine(t, err)
	if err := c.SetFederatedBundle(ctx, &types.Bundle{}); err == nil {
		t.Error("SetFederatedBundle(no trust domain) = nil, want an error")
	}

	err = c.RefreshBundle(ctx, partner)
	if rpc := (*admin.RPCError)(nil); !errors.As(err, &rpc) || rpc.Code != codes.NotFound {
		t.Errorf("RefreshBundle(no relationship) = %v, want NotFound", err)
	}

	// A relationship whose endpoint nobody serves.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := lis.Addr().String()
	lis.Close()
	if err := c.CreateFederation(ctx, admin.Printer{Out: io.Discard, Err: io.Discard}, admin.Relationship{
		TrustDomain: partner.Name(), BundleEndpointURL: fmt.Sprintf("https://%s", closed), Profile: "https_web",
	}); err != nil {
		t.Fatal(err)
	}
	err = c.RefreshBundle(ctx, partner)
	if rpc := (*admin.RPCError)(nil); !errors.As(err, &rpc) || rpc.Code != codes.Unavailable || errors.Is(err, admin.ErrUnreachable) {
		t.Errorf("RefreshBundle(endpoint down) = %v, want the server's Unavailable answer", err)
	}
	checkOneLine(t, err)
	if got, err := c.FederatedBundle(ctx, partner); err != nil || got == nil || len(got.X509Authorities) != 1 {
		t.Errorf("after a failed refresh FederatedBundle = %v, %v; want the set bundle kept", got, err)
	}

	nobody, err := admin.Open(filepath.Join(testkit.ShortDir(t), "none.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer nobody.Close()
	if err := nobody.RefreshBundle(ctx, partner); !errors.Is(err, admin.ErrUnreachable) {
		t.Errorf("RefreshBundle(no server) = %v, want ErrUnreachable", err)
	}
	if _, err := nobody.FederatedBundle(ctx, partner); !errors.Is(err, admin.ErrUnreachable) {
		t.Errorf("FederatedBundle(no server) = %v, want ErrUnreachable", err)
	}
}
