package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/arborid/arbor/internal/server"
)

// TestOIDCDiscoveryVerifiesJWTSVIDs: a relying party using a real OIDC
// client library (go-oidc) discovers the provider from its issuer URL, reads
// the trust domain's JWT keys from /keys and verifies a JWT-SVID the server
// issued (whose iss defaults to the provider's issuer); plain HTTP gets no
// document.
func TestOIDCDiscoveryVerifiesJWTSVIDs(t *testing.T) {
	dir := shortDir(t)
	ca := selfSignedCAKey(t)
	certFile, keyFile := filepath.Join(dir, "oidc.pem"), filepath.Join(dir, "oidc-key.pem")
	writeWebCert(t, ca, certFile, keyFile, 9)
	addr := freePort(t)
	issuer := "https://" + addr
	h := startServer(t, func(c *server.Config) {
		c.OIDCDiscovery = &server.OIDCDiscoveryConfig{ListenAddr: addr, Issuer: issuer, CertFile: certFile, KeyFile: keyFile}
	})
	agent := h.newAgent()
	entryID := h.createEntry(&types.Entry{ParentId: protoID(agent.ID.Path()), SpiffeId: protoID("/web"), Selectors: []*types.Selector{sel("unix", "uid:1")}})
	resp, err := svidv1.NewSVIDClient(h.dial(agent)).NewJWTSVID(ctxT(t), &svidv1.NewJWTSVIDRequest{EntryId: entryID, Audience: []string{"sts.example"}})
	if err != nil {
		t.Fatalf("NewJWTSVID: %v", err)
	}

	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	ctx := oidc.ClientContext(ctxT(t), client)
	provider, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		t.Fatalf("oidc.NewProvider(%s): %v", issuer, err)
	}
	tok, err := provider.Verifier(&oidc.Config{ClientID: "sts.example"}).Verify(ctx, resp.Svid.Token)
	if err != nil {
		t.Fatalf("verifying the JWT-SVID through discovery: %v", err)
	}
	if tok.Subject != "spiffe://example.org/web" || tok.Issuer != issuer {
		t.Errorf("verified token: subject %q, issuer %q; want spiffe://example.org/web from %s", tok.Subject, tok.Issuer, issuer)
	}
	if _, err := provider.Verifier(&oidc.Config{ClientID: "someone-else"}).Verify(ctx, resp.Svid.Token); err == nil {
		t.Error("a JWT-SVID for sts.example verified for another audience")
	}

	if r, err := http.Get("http://" + addr + "/.well-known/openid-configuration"); err == nil {
		r.Body.Close()
		if r.StatusCode == http.StatusOK {
			t.Error("plain HTTP got the discovery document")
		}
	}
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, issuer+"/keys", strings.NewReader("{}"))
	if r, err := client.Do(req); err == nil {
		r.Body.Close()
		if r.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("POST /keys: %d, want 405", r.StatusCode)
		}
	}
}
