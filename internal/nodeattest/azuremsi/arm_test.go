package azuremsi_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/nodeattest/azuremsi"
	"github.com/arborid/arbor/internal/nodeattest/azuremsi/azuremsitest"
)

// TestAttestAppCredential: with app_id and app_secret the Resource Manager
// token comes from the tenant's token endpoint (the SDK's client secret
// credential, reaching the Entra ID fake), once for a burst of
// attestations; a wrong secret is an internal error.
func TestAttestAppCredential(t *testing.T) {
	f := newFixture(t)
	const appID = "3a3a3a3a-4b4b-4c4c-8d8d-5e5e5e5e5e5e"
	appToken := f.entra.AddApp(tenantID, appID, "s3cret")
	arm := azuremsitest.NewARM(appToken)
	defer arm.Close()
	arm.PutVM(testVM())
	for _, n := range testNICs() {
		arm.PutNIC(n)
	}
	withApp := func(secret string) func(*azuremsi.Config) {
		return func(c *azuremsi.Config) {
			c.ARMEndpoint = arm.URL()
			c.HTTPClient = azuremsitest.Client(f.entra, arm)
			c.Tenants[tenantID] = azuremsi.TenantConfig{SubscriptionIDs: []string{subscription}, AppID: appID, AppSecret: secret}
		}
	}
	ctx := testContext(t)
	a := f.attestor(t, withApp("s3cret"))
	for range 5 {
		res, err := a.Attest(ctx, f.payload(t, testClaims()), noChallenge)
		if err != nil {
			t.Fatalf("Attest() = %v", err)
		}
		if diff := cmp.Diff(wantSelectors, res.Selectors); diff != "" {
			t.Errorf("selectors (-want +got):\n%s", diff)
		}
	}
	if n := f.entra.Grants(); n != 1 {
		t.Errorf("the token endpoint issued %d tokens for 5 attestations, want 1 (cached by the SDK)", n)
	}
	for _, c := range arm.Calls() {
		if !c.Authorized {
			t.Errorf("Resource Manager call %s without the app's token", c.Path)
		}
	}

	_, err := f.attestor(t, withApp("wrong")).Attest(ctx, f.payload(t, testClaims()), noChallenge)
	if err == nil || errors.Is(err, nodeattest.ErrInvalid) || errors.Is(err, nodeattest.ErrDenied) || !strings.Contains(err.Error(), "invalid_client") {
		t.Errorf("Attest() with a wrong app secret = %v, want an internal error from the token endpoint", err)
	}
}

// TestAttestARMFailures: Resource Manager refusing the server's
// credential, failing, redirecting or answering without bound is an
// internal error (neither ErrInvalid nor ErrDenied, so its text stays on the
// server), and no redirect is followed.
func TestAttestARMFailures(t *testing.T) {
	var followed bool
	target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { followed = true }))
	defer target.Close()
	redirect := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL, http.StatusTemporaryRedirect)
	}))
	defer redirect.Close()
	huge := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"name":"`))
		for range 5 << 10 {
			w.Write([]byte(strings.Repeat("a", 1<<10)))
		}
		w.Write([]byte(`"}`))
	}))
	defer huge.Close()
	// A NIC that Resource Manager lists on the VM but cannot find.
	lostNIC := testVM()
	lostNIC.Name = "lost-nic"
	lostNIC.NICs = []string{azuremsitest.NICID(subscription, resourceGroup, "gone")}

	for _, tc := range []struct {
		name  string
		edit  func(*fixture, *azuremsi.Config)
		claim func(*azuremsitest.Claims)
		msg   string
	}{
		{name: "wrong credential", edit: func(f *fixture, c *azuremsi.Config) {
			c.Tenants[tenantID] = azuremsi.TenantConfig{SubscriptionIDs: []string{subscription}, Credential: azuremsitest.StaticCredential{Token: "stolen"}}
		}, msg: "InvalidAuthenticationToken"},
		{name: "outage", edit: func(f *fixture, c *azuremsi.Config) { f.arm.SetFailure(http.StatusInternalServerError) }, msg: "500"},
		{name: "redirect", edit: func(f *fixture, c *azuremsi.Config) {
			c.ARMEndpoint, c.HTTPClient = redirect.URL, azuremsitest.Client(f.entra, fakeServer{redirect})
		}, msg: "redirect"},
		{name: "oversized answer", edit: func(f *fixture, c *azuremsi.Config) {
			c.ARMEndpoint, c.HTTPClient = huge.URL, azuremsitest.Client(f.entra, fakeServer{huge})
		}, msg: "size limit"},
		{name: "network interface not found", edit: func(f *fixture, c *azuremsi.Config) { f.arm.PutVM(lostNIC) },
			claim: func(c *azuremsitest.Claims) {
				c.MIResourceID = azuremsitest.VMID(subscription, resourceGroup, "lost-nic")
			}, msg: "ResourceNotFound"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			a := f.attestor(t, func(c *azuremsi.Config) {
				tc.edit(f, c)
				c.Timeout = 20 * time.Second
			})
			claims := testClaims()
			if tc.claim != nil {
				tc.claim(&claims)
			}
			_, err := a.Attest(testContext(t), f.payload(t, claims), noChallenge)
			if err == nil || errors.Is(err, nodeattest.ErrInvalid) || errors.Is(err, nodeattest.ErrDenied) {
				t.Fatalf("Attest() = %v, want an internal error", err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Attest() = %v, want it to mention %q", err, tc.msg)
			}
		})
	}
	if followed {
		t.Error("the Resource Manager client followed a redirect")
	}
}
