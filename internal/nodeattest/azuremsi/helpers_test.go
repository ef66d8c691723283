package azuremsi_test

import (
	"context"
	"encoding/json"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/nodeattest/azuremsi"
	"github.com/arborid/arbor/internal/nodeattest/azuremsi/azuremsitest"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

const (
	tenantID      = "8f1c2d3e-4b5a-4c6d-8e7f-901a2b3c4d5e"
	otherTenantID = "1a2b3c4d-5e6f-4a1b-9c2d-3e4f5a6b7c8d"
	subscription  = "d5b40d61-272e-48da-beb9-05f295c42bd6"
	otherSub      = "0b0c0d0e-1f2a-4b3c-8d4e-5f6a7b8c9d0e"
	principalID   = "6e3f5d1a-9b8c-4d7e-a6f5-0c1b2a3d4e5f"
	resourceGroup = "frontend"
	vmName        = "blog"
	armToken      = "fake-arm-bearer-token"
	keyID         = "PoVKeirIOvmTyLQ9G9BenBwos7k"
)

// start is the pinned time of every test: tokens are issued then.
var start = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// loadKey reads a test-only signing key from testdata, so that tokens are
// the same bytes on every run.
func loadKey(t testing.TB, id, name string) *azuremsitest.Key {
	t.Helper()
	k, err := azuremsitest.LoadKey(id, must(os.ReadFile("testdata/"+name)))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// clock is a settable time for Config.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// testVM is the VM the token's identity belongs to: two interfaces, the
// first in a security group and two subnets of one virtual network (the
// network in a resource group of its own), the second in the same group
// and subnet — so selectors repeat and must come out once.
func testVM() azuremsitest.VM {
	return azuremsitest.VM{
		SubscriptionID: subscription, ResourceGroup: resourceGroup, Name: vmName, Location: "westeurope",
		PrincipalID: principalID, TenantID: tenantID,
		NICs: []string{
			azuremsitest.NICID(subscription, resourceGroup, "blog-nic"),
			azuremsitest.NICID(subscription, resourceGroup, "blog-nic2"),
		},
	}
}

func testNICs() []azuremsitest.NIC {
	vm := testVM().ID()
	nsg := azuremsitest.NSGID(subscription, resourceGroup, "webservers")
	return []azuremsitest.NIC{
		{
			SubscriptionID: subscription, ResourceGroup: resourceGroup, Name: "blog-nic", Location: "westeurope",
			NetworkSecurityGroup: nsg, VM: vm,
			Subnets: []string{
				azuremsitest.SubnetID(subscription, "network", "vnet", "default"),
				azuremsitest.SubnetID(subscription, "network", "vnet", "backend"),
			},
		},
		{
			SubscriptionID: subscription, ResourceGroup: resourceGroup, Name: "blog-nic2", Location: "westeurope",
			NetworkSecurityGroup: nsg, VM: vm,
			Subnets: []string{azuremsitest.SubnetID(subscription, "network", "vnet", "default")},
		},
	}
}

// testClaims are the claims of the token the VM's metadata service issues
// for Resource Manager at start.
func testClaims() azuremsitest.Claims {
	return azuremsitest.Claims{
		Tenant:       tenantID,
		Principal:    principalID,
		Audience:     azuremsi.DefaultResourceID,
		MIResourceID: azuremsitest.VMID(subscription, resourceGroup, vmName),
		IssuedAt:     start,
	}
}

// fixture is a server configuration for tenantID against fake Entra ID
// and Resource Manager that know testVM.
type fixture struct {
	key   *azuremsitest.Key
	entra *azuremsitest.Entra
	arm   *azuremsitest.ARM
	clock *clock
	cfg   azuremsi.Config
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{key: loadKey(t, keyID, "signer.pem"), clock: &clock{now: start.Add(time.Minute)}}
	f.entra = azuremsitest.NewEntra(f.key)
	t.Cleanup(f.entra.Close)
	f.arm = azuremsitest.NewARM(armToken)
	t.Cleanup(f.arm.Close)
	f.arm.PutVM(testVM())
	for _, n := range testNICs() {
		f.arm.PutNIC(n)
	}
	f.cfg = azuremsi.Config{
		Tenants: map[string]azuremsi.TenantConfig{
			tenantID: {SubscriptionIDs: []string{subscription}, Credential: azuremsitest.StaticCredential{Token: armToken}},
		},
		LoginEndpoint: f.entra.URL(),
		ARMEndpoint:   f.arm.URL(),
		HTTPClient:    azuremsitest.Client(f.entra, f.arm),
		Now:           f.clock.Now,
	}
	return f
}

func (f *fixture) attestor(t testing.TB, edit func(*azuremsi.Config)) *azuremsi.Attestor {
	t.Helper()
	cfg := f.cfg
	cfg.Tenants = map[string]azuremsi.TenantConfig{}
	for k, v := range f.cfg.Tenants {
		cfg.Tenants[k] = v
	}
	if edit != nil {
		edit(&cfg)
	}
	a, err := azuremsi.New(cfg, td)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	return a
}

// sign returns c signed by k.
func sign(t testing.TB, k *azuremsitest.Key, c azuremsitest.Claims) string {
	t.Helper()
	tok, err := k.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// payloadOf is what SPIRE's agent sends for token.
func payloadOf(t testing.TB, token string) []byte {
	t.Helper()
	out, err := json.Marshal(map[string]string{"token": token})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// payload is the payload of c signed with the fixture's key.
func (f *fixture) payload(t testing.TB, c azuremsitest.Claims) []byte {
	return payloadOf(t, sign(t, f.key, c))
}

func noChallenge(context.Context, []byte) ([]byte, error) {
	panic("azure_msi sends no challenge")
}
