package azuremsi_test

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/nodeattest/azuremsi"
	"github.com/arborid/arbor/internal/nodeattest/azuremsi/azuremsitest"
	"github.com/arborid/arbor/internal/selector"
)

func sel(v string) selector.Selector { return selector.Selector{Type: "azure_msi", Value: v} }

// wantSelectors are SPIRE's selectors for testVM: its subscription and
// name, its interfaces' security group and subnets, each once.
var wantSelectors = []selector.Selector{
	sel("network-security-group:frontend:webservers"),
	sel("subscription-id:" + subscription),
	sel("virtual-network-subnet:network:vnet:backend"),
	sel("virtual-network-subnet:network:vnet:default"),
	sel("virtual-network:network:vnet"),
	sel("vm-name:frontend:blog"),
}

// TestAttest attests testVM's token end to end against the fakes: the
// token verifies with the tenant's published key, the VM and both network
// interfaces are read with the configured credential, and the result is
// SPIRE's agent ID and selectors, trust on first use.
func TestAttest(t *testing.T) {
	f := newFixture(t)
	res, err := f.attestor(t, nil).Attest(testContext(t), f.payload(t, testClaims()), noChallenge)
	if err != nil {
		t.Fatalf("Attest() = %v", err)
	}
	if got, want := res.AgentID.String(), "spiffe://example.org/spire/agent/azure_msi/"+tenantID+"/"+principalID; got != want {
		t.Errorf("agent ID = %q, want %q", got, want)
	}
	if diff := cmp.Diff(wantSelectors, res.Selectors); diff != "" {
		t.Errorf("selectors (-want +got):\n%s", diff)
	}
	if !res.FirstUse || res.CanReattest || res.JoinToken != "" {
		t.Errorf("Attest() = FirstUse %v, CanReattest %v, JoinToken %q; want trust on first use only", res.FirstUse, res.CanReattest, res.JoinToken)
	}
	var paths []string
	for _, c := range f.arm.Calls() {
		if !c.Authorized || c.APIVersion == "" {
			t.Errorf("Resource Manager call %+v without the credential's token or an api-version", c)
		}
		paths = append(paths, c.Path)
	}
	want := []string{testVM().ID(), testVM().NICs[0], testVM().NICs[1]}
	if diff := cmp.Diff(want, paths); diff != "" {
		t.Errorf("Resource Manager calls (-want +got):\n%s", diff)
	}
	if d, k := f.entra.Fetches(); d != 1 || k != 1 {
		t.Errorf("Entra ID served %d discovery documents and %d key sets, want 1 and 1", d, k)
	}
}

// TestAttestVariants: tokens Entra ID issues in other shapes that attest.
func TestAttestVariants(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name string
		edit func(*azuremsitest.Claims)
		cfg  func(*azuremsi.Config)
	}{
		{name: "v2.0 issuer", edit: func(c *azuremsitest.Claims) { c.Issuer = f.entra.URL() + tenantID + "/v2.0" }},
		{name: "audience as an array", edit: func(c *azuremsitest.Claims) {
			c.Extra = map[string]any{"aud": []string{"https://other.example/", azuremsi.DefaultResourceID}}
		}},
		{name: "custom resource", edit: func(c *azuremsitest.Claims) { c.Audience = "api://arbor-attestation" }, cfg: func(cfg *azuremsi.Config) {
			cfg.Tenants[tenantID] = azuremsi.TenantConfig{ResourceID: "api://arbor-attestation", SubscriptionIDs: []string{subscription}, Credential: azuremsitest.StaticCredential{Token: armToken}}
		}},
		{name: "expired within the leeway", edit: func(c *azuremsitest.Claims) { c.Expiry = start.Add(-4 * time.Minute) }},
		{name: "not yet valid within the leeway", edit: func(c *azuremsitest.Claims) { c.IssuedAt = start.Add(5 * time.Minute) }},
		{name: "no nbf or iat", edit: func(c *azuremsitest.Claims) { c.Omit = []string{"nbf", "iat"} }},
		{name: "xms_mirid in Resource Manager's case", edit: func(c *azuremsitest.Claims) { c.MIResourceID = testVM().ID() }},
		{name: "subscription configured in upper case", cfg: func(cfg *azuremsi.Config) {
			cfg.Tenants[tenantID] = azuremsi.TenantConfig{SubscriptionIDs: []string{strings.ToUpper(subscription)}, Credential: azuremsitest.StaticCredential{Token: armToken}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testClaims()
			if tc.edit != nil {
				tc.edit(&c)
			}
			res, err := f.attestor(t, tc.cfg).Attest(testContext(t), f.payload(t, c), noChallenge)
			if err != nil {
				t.Fatalf("Attest() = %v", err)
			}
			if res.AgentID.Path() != "/spire/agent/azure_msi/"+tenantID+"/"+principalID {
				t.Errorf("agent ID = %s", res.AgentID)
			}
		})
	}
}

// flipSignature changes one bit of the token's signature.
func flipSignature(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	sig := must(base64.RawURLEncoding.DecodeString(parts[2]))
	sig[10] ^= 0x01
	return parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// TestAttestRefused: each way a payload, token or VM fails, with the error
// class the API maps to a status.
func TestAttestRefused(t *testing.T) {
	f := newFixture(t)
	other := loadKey(t, "other-key-id", "other-signer.pem")
	impostor := loadKey(t, keyID, "other-signer.pem") // the published kid, another key
	good := sign(t, f.key, testClaims())
	claims := func(edit func(*azuremsitest.Claims)) azuremsitest.Claims {
		c := testClaims()
		edit(&c)
		return c
	}
	raw := func(header map[string]any, payload string) []byte {
		return payloadOf(t, must(f.key.SignRaw(header, []byte(payload))))
	}
	parts := strings.Split(good, ".")

	// VMs that are not the token's.
	noIdentity := testVM()
	noIdentity.Name, noIdentity.PrincipalID = "no-identity", ""
	f.arm.PutVM(noIdentity)
	otherIdentity := testVM()
	otherIdentity.Name, otherIdentity.PrincipalID = "other-identity", "99999999-9b8c-4d7e-a6f5-0c1b2a3d4e5f"
	f.arm.PutVM(otherIdentity)

	for _, tc := range []struct {
		name    string
		payload []byte
		cfg     func(*azuremsi.Config)
		want    error
		msg     string
	}{
		{name: "empty", payload: nil, want: nodeattest.ErrInvalid, msg: "decoding payload"},
		{name: "malformed JSON", payload: []byte(`{"token":`), want: nodeattest.ErrInvalid, msg: "decoding payload"},
		{name: "token of another type", payload: []byte(`{"token":7}`), want: nodeattest.ErrInvalid, msg: "decoding payload"},
		{name: "no token", payload: []byte(`{}`), want: nodeattest.ErrInvalid, msg: "no token"},
		{name: "too large", payload: payloadOf(t, strings.Repeat("a", 70<<10)), want: nodeattest.ErrInvalid, msg: "at most"},
		{name: "not a JWS", payload: payloadOf(t, "not.a.jws"), want: nodeattest.ErrInvalid, msg: "parsing token"},
		{name: "two parts", payload: payloadOf(t, parts[0]+"."+parts[1]), want: nodeattest.ErrInvalid, msg: "parsing token"},
		{name: "alg none", payload: payloadOf(t, base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"`+keyID+`"}`))+"."+parts[1]+"."), want: nodeattest.ErrInvalid, msg: "parsing token"},
		{name: "alg HS256", payload: raw(map[string]any{"alg": "HS256", "kid": keyID}, `{}`), want: nodeattest.ErrInvalid, msg: "parsing token"},
		{name: "alg PS256", payload: raw(map[string]any{"alg": "PS256", "kid": keyID}, `{}`), want: nodeattest.ErrInvalid, msg: "parsing token"},
		{name: "no kid", payload: raw(map[string]any{"alg": "RS256"}, `{"tid":"`+tenantID+`"}`), want: nodeattest.ErrInvalid, msg: "no kid"},
		{name: "claims not JSON", payload: raw(f.key.Header(), `not json`), want: nodeattest.ErrInvalid, msg: "claims"},
		{name: "no tid", payload: f.payload(t, claims(func(c *azuremsitest.Claims) { c.Omit = []string{"tid"} })), want: nodeattest.ErrInvalid, msg: "tid"},
		{name: "tid not a GUID", payload: f.payload(t, claims(func(c *azuremsitest.Claims) { c.Tenant = "../" + tenantID })), want: nodeattest.ErrInvalid, msg: "tid"},
		{name: "tenant not configured", payload: f.payload(t, claims(func(c *azuremsitest.Claims) { c.Tenant = otherTenantID })), want: nodeattest.ErrDenied, msg: "tenant " + otherTenantID + " is not allowed"},
		{name: "unknown kid", payload: payloadOf(t, sign(t, other, testClaims())), want: nodeattest.ErrDenied, msg: "unknown key ID"},
		{name: "signature altered", payload: payloadOf(t, flipSignature(t, good)), want: nodeattest.ErrDenied, msg: "signature"},
		{name: "published kid, another key", payload: payloadOf(t, sign(t, impostor, testClaims())), want: nodeattest.ErrDenied, msg: "signature"},
		{name: "claims swapped after signing", payload: payloadOf(t, parts[0]+"."+base64.RawURLEncoding.EncodeToString([]byte(strings.ReplaceAll(string(must(base64.RawURLEncoding.DecodeString(parts[1]))), principalID, "00000000-0000-0000-0000-000000000000")))+"."+parts[2]), want: nodeattest.ErrDenied, msg: "signature"},
		{
			name:    "attacker key embedded in the header",
			payload: payloadOf(t, must(other.SignRaw(map[string]any{"alg": "RS256", "kid": keyID, "jwk": other.JWK("")}, []byte(`{"tid":"`+tenantID+`"}`)))),
			want:    nodeattest.ErrDenied, msg: "signature",
		},
		{name: "issuer of another tenant", payload: f.payload(t, claims(func(c *azuremsitest.Claims) { c.Issuer = "https://sts.windows.net/" + otherTenantID + "/" })), want: nodeattest.ErrDenied, msg: "issuer"},
		{name: "issuer of another cloud", payload: f.payload(t, claims(func(c *azuremsitest.Claims) { c.Issuer = "https://sts.chinacloudapi.cn/" + tenantID + "/" })), want: nodeattest.ErrDenied, msg: "issuer"},
		{name: "no issuer", payload: f.payload(t, claims(func(c *azuremsitest.Claims) { c.Omit = []string{"iss"} })), want: nodeattest.ErrDenied, msg: "issuer"},
		{name: "wrong audience", payload: f.payload(t, claims(func(c *azuremsitest.Claims) { c.Audience = "https://vault.azure.net" })), want: nodeattest.ErrDenied, msg: "audience"},
		{name: "audience without its slash", payload: f.payload(t, claims(func(c *azuremsitest.Claims) { c.Audience = "https://management.azure.com" })), want: nodeattest.ErrDenied, msg: "audience"},
		{name: "no audience", payload: f.payload(t, claims(func(c *azuremsitest.Claims) { c.Omit = []string{"aud"} })), want: nodeattest.ErrDenied, msg: "audience"},
		{name: "expired", payload: f.payload(t, claims(func(c *azuremsitest.Claims) { c.Expiry = start.Add(-5*time.Minute - time.Second) })), want: nodeattest.ErrDenied, msg: "expired"},
		{name: "expired long ago", payload: f.payload(t, claims(func(c *azuremsitest.Claims) { c.IssuedAt = start.Add(-48 * time.Hour) })), want: nodeattest.ErrDenied, msg: "expired"},
		{name: "no exp", payload: f.payload(t, claims(func(c *azuremsitest.Claims) { c.Omit = []string{"exp"} })), want: nodeattest.ErrDenied, msg: "no exp"},
		{name: "exp not a number", payload: f.payload(t, claims(func(c *azuremsitest.Claims) { c.Extra = map[string]any{"exp": "tomorrow"} })), want: nodeattest.ErrInvalid, msg: "claims"},
		{name: "not yet valid", payload: f.payload(t, claims(func(c *azuremsitest.Claims) { c.Extra = map[string]any{"nbf": start.Add(time.Hour).Unix()} })), want: nodeattest.ErrDenied, msg: "not valid yet"},
		{name: "issued in the future", payload: f.payload(t, claims(func(c *azuremsitest.Claims) { c.Extra = map[string]any{"iat": start.Add(time.Hour).Unix()} })), want: nodeattest.ErrDenied, msg: "future"},
		{name: "no sub", payload: f.payload(t, claims(func(c *azuremsitest.Claims) { c.Omit = []string{"sub"} })), want: nodeattest.ErrInvalid, msg: "no sub"},
		{name: "no xms_mirid", payload: f.payload(t, claims(func(c *azuremsitest.Claims) { c.Omit = []string{"xms_mirid"} })), want: nodeattest.ErrDenied, msg: "does not name a virtual machine"},
		{
			name: "user-assigned identity",
			payload: f.payload(t, claims(func(c *azuremsitest.Claims) {
				c.MIResourceID = "/subscriptions/" + subscription + "/resourcegroups/" + resourceGroup + "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/agents"
			})),
			want: nodeattest.ErrDenied, msg: "does not name a virtual machine",
		},
		{
			name: "scale set identity",
			payload: f.payload(t, claims(func(c *azuremsitest.Claims) {
				c.MIResourceID = strings.Replace(c.MIResourceID, "virtualMachines", "virtualMachineScaleSets", 1)
			})),
			want: nodeattest.ErrDenied, msg: "does not name a virtual machine",
		},
		{name: "subscription not allowed", payload: f.payload(t, claims(func(c *azuremsitest.Claims) { c.MIResourceID = azuremsitest.VMID(otherSub, resourceGroup, vmName) })), want: nodeattest.ErrDenied, msg: "subscription " + otherSub + " is not allowed"},
		{name: "VM not found", payload: f.payload(t, claims(func(c *azuremsitest.Claims) { c.MIResourceID = azuremsitest.VMID(subscription, resourceGroup, "gone") })), want: nodeattest.ErrDenied, msg: "not found"},
		{name: "VM without an identity", payload: f.payload(t, claims(func(c *azuremsitest.Claims) {
			c.MIResourceID = azuremsitest.VMID(subscription, resourceGroup, "no-identity")
		})), want: nodeattest.ErrDenied, msg: "no system-assigned identity"},
		{name: "VM of another identity", payload: f.payload(t, claims(func(c *azuremsitest.Claims) {
			c.MIResourceID = azuremsitest.VMID(subscription, resourceGroup, "other-identity")
		})), want: nodeattest.ErrDenied, msg: "no system-assigned identity with principal " + principalID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := f.attestor(t, tc.cfg).Attest(testContext(t), tc.payload, noChallenge)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Attest() = %+v, %v; want %v", res, err, tc.want)
			}
			if other := map[error]error{nodeattest.ErrInvalid: nodeattest.ErrDenied, nodeattest.ErrDenied: nodeattest.ErrInvalid}[tc.want]; errors.Is(err, other) {
				t.Errorf("Attest() = %v, both ErrInvalid and ErrDenied", err)
			}
			t.Log(err)
			if res != nil {
				t.Errorf("Attest() = %+v with error, want nil", res)
			}
			if !strings.HasPrefix(err.Error(), "azuremsi: ") || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Attest() error %q, want the azuremsi: prefix and %q", err, tc.msg)
			}
		})
	}
}

// TestAttestOtherTenant: Entra ID signs every tenant's tokens with the same
// keys, so a VM of a tenant the server is not configured for holds a token
// that verifies; only tid and iss tell it apart. Such a token is refused
// whichever claim it presents, and, configured for both tenants, the server
// names each agent after its own tenant.
func TestAttestOtherTenant(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	theirs := testClaims()
	theirs.Tenant = otherTenantID
	a := f.attestor(t, nil)

	if _, err := a.Attest(ctx, f.payload(t, theirs), noChallenge); !errors.Is(err, nodeattest.ErrDenied) || !strings.Contains(err.Error(), "not allowed") {
		t.Errorf("Attest(token of tenant %s) = %v, want ErrDenied: not allowed", otherTenantID, err)
	}
	// Their token claiming our tenant: tid is signed, so this needs a
	// token Entra ID would not issue, with their issuer left in.
	claimsOurs := theirs
	claimsOurs.Tenant, claimsOurs.Issuer = tenantID, "https://sts.windows.net/"+otherTenantID+"/"
	if _, err := a.Attest(ctx, f.payload(t, claimsOurs), noChallenge); !errors.Is(err, nodeattest.ErrDenied) || !strings.Contains(err.Error(), "issuer") {
		t.Errorf("Attest(tid %s, iss of %s) = %v, want ErrDenied: issuer", tenantID, otherTenantID, err)
	}

	// A tenant with signing keys of its own: its key does not verify
	// tokens of ours, nor ours its.
	theirKey := loadKey(t, "their-key", "other-signer.pem")
	f.entra.SetKeys(otherTenantID, theirKey)
	both := f.attestor(t, func(c *azuremsi.Config) {
		c.Tenants[otherTenantID] = azuremsi.TenantConfig{SubscriptionIDs: []string{otherSub}, Credential: azuremsitest.StaticCredential{Token: armToken}}
	})
	ours := testClaims()
	if _, err := both.Attest(ctx, payloadOf(t, sign(t, theirKey, ours)), noChallenge); !errors.Is(err, nodeattest.ErrDenied) || !strings.Contains(err.Error(), "unknown key ID") {
		t.Errorf("Attest(our token, their key) = %v, want ErrDenied: unknown key ID", err)
	}
	if _, err := both.Attest(ctx, f.payload(t, theirs), noChallenge); !errors.Is(err, nodeattest.ErrDenied) || !strings.Contains(err.Error(), "unknown key ID") {
		t.Errorf("Attest(their token, our key) = %v, want ErrDenied: unknown key ID", err)
	}

	// Their VM, in their subscription, with their key: theirs.
	theirVM := azuremsitest.VM{SubscriptionID: otherSub, ResourceGroup: "rg", Name: "vm", PrincipalID: principalID, TenantID: otherTenantID}
	f.arm.PutVM(theirVM)
	theirs.MIResourceID = azuremsitest.VMID(otherSub, "rg", "vm")
	res, err := both.Attest(ctx, payloadOf(t, sign(t, theirKey, theirs)), noChallenge)
	if err != nil {
		t.Fatalf("Attest(their token) = %v", err)
	}
	if want := "/spire/agent/azure_msi/" + otherTenantID + "/" + principalID; res.AgentID.Path() != want {
		t.Errorf("agent ID = %s, want path %s", res.AgentID, want)
	}
	// Our token naming their VM: their subscription is not ours.
	ours.MIResourceID = theirs.MIResourceID
	if _, err := both.Attest(ctx, f.payload(t, ours), noChallenge); !errors.Is(err, nodeattest.ErrDenied) || !strings.Contains(err.Error(), "subscription") {
		t.Errorf("Attest(our token, their VM) = %v, want ErrDenied: subscription", err)
	}
}

// TestAttestTemplateInjection (CVE-2021-27099's class): the claims an
// agent_path_template reads reach the agent ID only as parts of canonical
// segments. A value that would add "..", an empty segment, a
// percent-encoded slash or a segment of its own is refused before any
// Resource Manager call; the same template with a plain value works.
func TestAttestTemplateInjection(t *testing.T) {
	for _, tc := range []struct {
		name string
		tmpl string
		edit func(*azuremsitest.Claims)
		want string // agent ID path; "" means refused
	}{
		{name: "plain", tmpl: "/{{ .PluginName }}/{{ .PrincipalID }}", want: "/spire/agent/azure_msi/" + principalID},
		{name: "dot-dot sub", tmpl: "/{{ .PluginName }}/{{ .PrincipalID }}", edit: func(c *azuremsitest.Claims) { c.Principal = "../../server" }},
		{name: "dot sub", tmpl: "/{{ .PluginName }}/{{ .PrincipalID }}", edit: func(c *azuremsitest.Claims) { c.Principal = "." }},
		{name: "slash in sub", tmpl: "/{{ .PluginName }}/{{ .PrincipalID }}", edit: func(c *azuremsitest.Claims) { c.Principal = "admin/" + principalID }},
		{name: "double slash in sub", tmpl: "/{{ .PluginName }}/{{ .PrincipalID }}", edit: func(c *azuremsitest.Claims) { c.Principal = "a//b" }},
		{name: "percent-encoded slash in sub", tmpl: "/{{ .PluginName }}/{{ .PrincipalID }}", edit: func(c *azuremsitest.Claims) { c.Principal = "a%2Fb" }},
		{name: "space in sub", tmpl: "/{{ .PluginName }}/{{ .PrincipalID }}", edit: func(c *azuremsitest.Claims) { c.Principal = "a b" }},
		{name: "newline in sub", tmpl: "/{{ .PluginName }}/{{ .PrincipalID }}", edit: func(c *azuremsitest.Claims) { c.Principal = "a\nb" }},
		{name: "non-ASCII sub", tmpl: "/{{ .PluginName }}/{{ .PrincipalID }}", edit: func(c *azuremsitest.Claims) { c.Principal = "ä" }},
		{name: "slash in jti", tmpl: "/{{ .PluginName }}/{{ .ID }}", edit: func(c *azuremsitest.Claims) { c.Extra = map[string]any{"jti": "spire/server"} }},
		{name: "jti with no slash", tmpl: "/{{ .PluginName }}/{{ .ID }}", edit: func(c *azuremsitest.Claims) { c.Extra = map[string]any{"jti": "abc"} }, want: "/spire/agent/azure_msi/abc"},
		{name: "slash in audience", tmpl: "/{{ .PluginName }}/{{ index .Audience 0 | trimPrefix \"api:\" | trimPrefix \"//\" }}", edit: func(c *azuremsitest.Claims) { c.Audience = "api://arbor/agents" }},
		{name: "audience with no slash left", tmpl: "/{{ .PluginName }}/{{ index .Audience 0 | trimPrefix \"api://\" }}", edit: func(c *azuremsitest.Claims) { c.Audience = "api://arbor" }, want: "/spire/agent/azure_msi/arbor"},
		{name: "issuer through base", tmpl: "/{{ .PluginName }}/{{ .Issuer | base }}", want: "/spire/agent/azure_msi/" + tenantID},
		{name: "issuer whole", tmpl: "/{{ .Issuer }}"},
		{name: "template adds the server's path", tmpl: "/../../server"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			c := testClaims()
			if tc.edit != nil {
				tc.edit(&c)
			}
			resource := c.Audience
			a := f.attestor(t, func(cfg *azuremsi.Config) {
				cfg.AgentPathTemplate = tc.tmpl
				cfg.Tenants[tenantID] = azuremsi.TenantConfig{ResourceID: resource, SubscriptionIDs: []string{subscription}, Credential: azuremsitest.StaticCredential{Token: armToken}}
			})
			res, err := a.Attest(testContext(t), f.payload(t, c), noChallenge)
			if tc.want == "" {
				if !errors.Is(err, nodeattest.ErrDenied) {
					t.Fatalf("Attest() = %+v, %v; want ErrDenied", res, err)
				}
				if calls := f.arm.Calls(); len(calls) != 0 {
					t.Errorf("Resource Manager called %d times for a refused agent ID", len(calls))
				}
				return
			}
			if err != nil {
				t.Fatalf("Attest() = %v", err)
			}
			if got := res.AgentID.Path(); got != tc.want {
				t.Errorf("agent ID path = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestAgentPathTemplate renders SPIRE-style templates over the token's
// claims.
func TestAgentPathTemplate(t *testing.T) {
	for _, tc := range []struct{ tmpl, want string }{
		{"", "/spire/agent/azure_msi/" + tenantID + "/" + principalID},
		{azuremsi.DefaultAgentPathTemplate, "/spire/agent/azure_msi/" + tenantID + "/" + principalID},
		{"/{{ .PluginName }}/{{ .PrincipalID | upper }}", "/spire/agent/azure_msi/" + strings.ToUpper(principalID)},
		{"/{{ .TenantID | sha256sum }}", "/spire/agent/ffe1345ab4f86258c8569e6d583356b9eeaafbc74b3bc53b06808dce17f73494"},
		{"/azure/{{ .PrincipalID | replace \"-\" \"\" }}", "/spire/agent/azure/" + strings.ReplaceAll(principalID, "-", "")},
		{"/x{{ .Subject }}", "/spire/agent/x"}, // empty, as in SPIRE: sub is .PrincipalID
	} {
		t.Run(tc.tmpl, func(t *testing.T) {
			f := newFixture(t)
			a := f.attestor(t, func(c *azuremsi.Config) { c.AgentPathTemplate = tc.tmpl })
			res, err := a.Attest(testContext(t), f.payload(t, testClaims()), noChallenge)
			if err != nil {
				t.Fatalf("Attest() = %v", err)
			}
			if got := res.AgentID.Path(); got != tc.want {
				t.Errorf("template %q: agent ID path = %q, want %q", tc.tmpl, got, tc.want)
			}
		})
	}
}

// TestNewRefusesConfig: configuration errors are reported by New, naming
// the field.
func TestNewRefusesConfig(t *testing.T) {
	f := newFixture(t)
	tenant := func(tc azuremsi.TenantConfig) func(*azuremsi.Config) {
		return func(c *azuremsi.Config) { c.Tenants = map[string]azuremsi.TenantConfig{tenantID: tc} }
	}
	for _, tc := range []struct {
		name string
		edit func(*azuremsi.Config)
		msg  string
	}{
		{"no tenant", func(c *azuremsi.Config) { c.Tenants = nil }, "at least one tenant"},
		{"tenant not a GUID", func(c *azuremsi.Config) {
			c.Tenants = map[string]azuremsi.TenantConfig{"contoso.onmicrosoft.com": {SubscriptionIDs: []string{subscription}}}
		}, "not a tenant ID"},
		{"tenant in upper case", func(c *azuremsi.Config) {
			c.Tenants = map[string]azuremsi.TenantConfig{strings.ToUpper(tenantID): {SubscriptionIDs: []string{subscription}}}
		}, "lowercase GUID"},
		{"no subscription", tenant(azuremsi.TenantConfig{}), "subscription"},
		{"subscription not a GUID", tenant(azuremsi.TenantConfig{SubscriptionIDs: []string{"prod"}}), "subscription ID \"prod\""},
		{"subscription twice", tenant(azuremsi.TenantConfig{SubscriptionIDs: []string{subscription, strings.ToUpper(subscription)}}), "twice"},
		{"app ID without secret", tenant(azuremsi.TenantConfig{SubscriptionIDs: []string{subscription}, AppID: "app"}), "app_id and app_secret"},
		{"template does not parse", func(c *azuremsi.Config) { c.AgentPathTemplate = "/{{ .TenantID " }, "agent path template"},
		{"template uses an unknown function", func(c *azuremsi.Config) { c.AgentPathTemplate = `/{{ env "HOME" }}` }, "agent path template"},
		{"http login endpoint", func(c *azuremsi.Config) { c.LoginEndpoint = "http://login.example" }, "login endpoint"},
		{"relative resource manager endpoint", func(c *azuremsi.Config) { c.ARMEndpoint = "management.azure.com" }, "resource manager endpoint"},
		{"sts endpoint with a query", func(c *azuremsi.Config) { c.STSEndpoint = "https://sts.example/?x=1" }, "sts endpoint"},
		{"negative timeout", func(c *azuremsi.Config) { c.Timeout = -time.Second }, "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := f.cfg
			tc.edit(&cfg)
			a, err := azuremsi.New(cfg, td)
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("New() = %v, %v; want an error about %s", a, err, tc.msg)
			}
		})
	}
	if _, err := azuremsi.New(f.cfg, spiffeid.TrustDomain{}); err == nil {
		t.Error("New() with the zero trust domain succeeded")
	}
}
