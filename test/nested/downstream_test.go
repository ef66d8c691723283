package nested

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// TestChildKeepsParentAccessAfterItsSVIDRotates: a downstream tier's
// X509-SVID from its co-located agent lives the parent's x509_svid_ttl; once
// the first one has expired (and the agent serves a renewed one) the child
// must still be able to obtain an intermediate CA from its parent —
// otherwise its CA runs out one ca_ttl later and the whole subtree stops.
func TestChildKeepsParentAccessAfterItsSVIDRotates(t *testing.T) {
	root := startRoot(t, "root", ttls{ca: 120 * time.Second, x509: 12 * time.Second, agent: 60 * time.Second})
	reg := startChild(t, root, "regional", ttls{ca: 60 * time.Second, x509: 12 * time.Second})

	// What the co-located agent serves the child, as the child sees it.
	c, err := workloadapi.New(callCtx(t), workloadapi.WithAddr("unix://"+reg.colo.sock))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	first, err := c.FetchX509SVID(callCtx(t))
	if err != nil {
		t.Fatalf("FetchX509SVID from the co-located agent: %v", err)
	}
	if first.ID != serverIDOf("regional") {
		t.Fatalf("co-located agent serves %s, want %s", first.ID, serverIDOf("regional"))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.up.MintX509CA(callCtx(t), key, 20*time.Second); err != nil {
		t.Fatalf("MintX509CA while the first SVID is valid: %v", err)
	}

	expiry := first.Certificates[0].NotAfter
	if err := sleepUntil(ctxFor(t, time.Minute), expiry.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	cur, err := c.FetchX509SVID(callCtx(t))
	if err != nil {
		t.Fatalf("FetchX509SVID from the co-located agent: %v", err)
	}
	if !time.Now().Before(cur.Certificates[0].NotAfter) {
		t.Fatalf("the co-located agent serves an expired SVID (not after %v)", cur.Certificates[0].NotAfter)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := reg.up.MintX509CA(ctx, key, 20*time.Second); err != nil {
		t.Errorf("MintX509CA after the child's first SVID expired (not after %v) while its agent serves a valid one (serial %v, not after %v): %v",
			expiry.Format(time.TimeOnly), cur.Certificates[0].SerialNumber, cur.Certificates[0].NotAfter.Format(time.TimeOnly), err)
	}
}
