// Package azuremsi attests nodes running on Microsoft Azure virtual
// machines by their managed identity (SPIRE's "azure_msi" attestation
// type): the agent sends the access token the instance metadata service
// issues to the VM's system-assigned identity (AgentPayload), and the
// server verifies the token's RS256 signature with its tenant's signing
// keys from Microsoft Entra ID, checks tenant, issuer, audience and
// lifetime, reads the VM and its network interfaces from Azure Resource
// Manager, and returns the agent ID and SPIRE's selectors (Attestor). The
// JSON is SPIRE's, so either half can face a real SPIRE v1.13 peer.
//
// Any process on the VM can get such a token, so an attestation is trust on
// first use: the server accepts one per identity until that agent is
// evicted (nodeattest.Result.FirstUse).
package azuremsi

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/nodeattest/boundedhttp"
	"github.com/arborid/arbor/internal/selector"
)

// Type is the attestation data type, and the type of the selectors produced.
const Type = "azure_msi"

// DefaultResourceID is the resource an agent asks a token for, and the
// audience the server requires, unless configured otherwise: Azure Resource
// Manager, as in SPIRE.
const DefaultResourceID = "https://management.azure.com/"

// DefaultTimeout bounds the calls of one attestation.
const DefaultTimeout = 10 * time.Second

// tokenLeeway is the clock skew allowed on exp, nbf and iat (SPIRE's).
const tokenLeeway = 5 * time.Minute

// The public cloud's endpoints.
const (
	defaultLoginEndpoint = "https://login.microsoftonline.com/"
	defaultSTSEndpoint   = "https://sts.windows.net/"
	defaultARMEndpoint   = "https://management.azure.com/"
)

// Config configures an Attestor. The fields with SPIRE names mirror the
// server plugin_data of SPIRE's azure_msi NodeAttestor. It must not be
// modified after New.
type Config struct {
	// Tenants (tenants) maps a tenant ID (a lowercase GUID, as tokens carry
	// it in tid) to how its VMs attest. Tokens of any other tenant are
	// refused — all tenants' tokens are signed with the same Entra ID keys,
	// so this is what keeps another tenant's VMs out. At least one.
	Tenants map[string]TenantConfig
	// AgentPathTemplate (agent_path_template) is a text/template for the
	// agent ID's path below /spire/agent, with SPIRE's data: .PluginName
	// ("azure_msi"), .TenantID, .PrincipalID and the token's .Issuer,
	// .Audience, .Expiry, .NotBefore, .IssuedAt, .ID (.Subject is empty, as
	// in SPIRE), and sprig's lower, upper, trim, trimAll, trimPrefix,
	// trimSuffix, replace, contains, hasPrefix, hasSuffix, base, dir,
	// sha1sum and sha256sum. If empty, DefaultAgentPathTemplate is used.
	AgentPathTemplate string

	// LoginEndpoint is Microsoft Entra ID's base URL, for the tenants'
	// OpenID discovery (<LoginEndpoint><tenant>/v2.0/.well-known/
	// openid-configuration, whose jwks_uri holds the signing keys) and for
	// AppID/AppSecret credentials. Empty means
	// "https://login.microsoftonline.com/".
	LoginEndpoint string
	// STSEndpoint is the base of the issuer of v1 tokens, which the
	// instance metadata service issues: a tenant's tokens have iss
	// <STSEndpoint><tenant>/. Empty means "https://sts.windows.net/". Tokens
	// with the tenant's v2.0 issuer (from its discovery document) are
	// accepted too.
	STSEndpoint string
	// ARMEndpoint is Azure Resource Manager's base URL. Empty means
	// "https://management.azure.com/".
	ARMEndpoint string
	// HTTPClient is the client every call is made with (discovery, keys,
	// credentials, Resource Manager); nil means a default one. Redirects
	// are never followed and responses are bounded either way.
	HTTPClient *http.Client
	// Timeout bounds the calls of one attestation; zero means
	// DefaultTimeout.
	Timeout time.Duration
	// Now is the time tokens are checked against; if nil, time.Now is used.
	Now func() time.Time
}

// TenantConfig is one tenant's configuration, SPIRE's per-tenant
// plugin_data.
type TenantConfig struct {
	// ResourceID (resource_id) is the audience the tenant's tokens must be
	// for; empty means DefaultResourceID.
	ResourceID string
	// SubscriptionIDs are the subscriptions whose VMs may attest, and in
	// which they are looked up (SPIRE's subscription_id is one of them;
	// SPIRE, when it is not set, uses the subscription of the server's own
	// VM, which arbor does not guess). At least one.
	SubscriptionIDs []string
	// AppID and AppSecret (app_id, app_secret) are the credentials of an
	// application in the tenant that may read its VMs and network
	// interfaces; both or neither. Neither means the Azure SDK's default
	// credential chain for the tenant (environment, workload identity,
	// managed identity), as in SPIRE.
	AppID     string
	AppSecret string
	// Credential, when set, is used for Resource Manager instead of the
	// above (arbor's; tests, or credentials the SDK builds otherwise).
	Credential azcore.TokenCredential
}

// Attestor verifies azure_msi attestations on the server. It is safe for
// concurrent use.
type Attestor struct {
	td      spiffeid.TrustDomain
	tenants map[string]*tenant
	path    *pathTemplate
	sts     string
	timeout time.Duration
	now     func() time.Time
}

// tenant is one configured tenant at run time.
type tenant struct {
	id            string
	resourceID    string
	keys          *tenantKeys
	subscriptions map[string]string // lowercase ID -> as configured
	arm           map[string]*armClients
}

var _ nodeattest.Attestor = (*Attestor)(nil)

// New checks cfg, parses the path template and builds the Resource Manager
// clients. It makes no call: the signing keys are fetched by the first
// attestation of each tenant.
func New(cfg Config, td spiffeid.TrustDomain) (*Attestor, error) {
	if td.IsZero() {
		return nil, errors.New("azuremsi: trust domain is required")
	}
	if len(cfg.Tenants) == 0 {
		return nil, errors.New("azuremsi: tenants: at least one tenant is required")
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("azuremsi: negative timeout %v", cfg.Timeout)
	}
	a := &Attestor{td: td, tenants: map[string]*tenant{}, timeout: cfg.Timeout, now: cfg.Now}
	if a.timeout == 0 {
		a.timeout = DefaultTimeout
	}
	if a.now == nil {
		a.now = time.Now
	}
	login, err := baseURL("login endpoint", cfg.LoginEndpoint, defaultLoginEndpoint)
	if err != nil {
		return nil, err
	}
	if a.sts, err = baseURL("sts endpoint", cfg.STSEndpoint, defaultSTSEndpoint); err != nil {
		return nil, err
	}
	armEndpoint, err := baseURL("resource manager endpoint", cfg.ARMEndpoint, defaultARMEndpoint)
	if err != nil {
		return nil, err
	}
	text := cfg.AgentPathTemplate
	if text == "" {
		text = DefaultAgentPathTemplate
	}
	if a.path, err = newPathTemplate(text); err != nil {
		return nil, err
	}

	keysClient := boundedhttp.Client(cfg.HTTPClient, maxKeysResponse)
	armClient := boundedhttp.Client(cfg.HTTPClient, maxARMResponse)
	armOpts := armOptions(armEndpoint, armClient)
	for _, id := range slices.Sorted(maps.Keys(cfg.Tenants)) {
		tc := cfg.Tenants[id]
		if !tenantIDPattern.MatchString(id) {
			return nil, fmt.Errorf("azuremsi: tenants: %q is not a tenant ID (a lowercase GUID)", id)
		}
		t := &tenant{
			id:            id,
			resourceID:    tc.ResourceID,
			keys:          newTenantKeys(id, login, keysClient, a.timeout, a.now),
			subscriptions: map[string]string{},
			arm:           map[string]*armClients{},
		}
		if t.resourceID == "" {
			t.resourceID = DefaultResourceID
		}
		if len(tc.SubscriptionIDs) == 0 {
			return nil, fmt.Errorf("azuremsi: tenant %s: at least one subscription ID is required", id)
		}
		cred, err := tenantCredential(id, tc, login, armClient)
		if err != nil {
			return nil, err
		}
		for _, s := range tc.SubscriptionIDs {
			lower := strings.ToLower(s)
			if !tenantIDPattern.MatchString(lower) {
				return nil, fmt.Errorf("azuremsi: tenant %s: subscription ID %q is not a GUID", id, s)
			}
			if _, dup := t.subscriptions[lower]; dup {
				return nil, fmt.Errorf("azuremsi: tenant %s: subscription ID %s listed twice", id, s)
			}
			t.subscriptions[lower] = s
			if t.arm[lower], err = newARMClients(s, cred, armOpts); err != nil {
				return nil, err
			}
		}
		a.tenants[id] = t
	}
	return a, nil
}

// baseURL checks that an endpoint is an absolute https URL (the SDK sends
// credentials over https only) and returns it ending in "/"; v empty
// means def.
func baseURL(name, v, def string) (string, error) {
	if v == "" {
		return def, nil
	}
	u, err := url.Parse(v)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("azuremsi: %s %q is not an absolute https URL", name, v)
	}
	if !strings.HasSuffix(v, "/") {
		v += "/"
	}
	return v, nil
}

func tenantCredential(id string, tc TenantConfig, login string, client *http.Client) (azcore.TokenCredential, error) {
	if tc.Credential != nil {
		return tc.Credential, nil
	}
	if (tc.AppID == "") != (tc.AppSecret == "") {
		return nil, fmt.Errorf("azuremsi: tenant %s: app_id and app_secret go together", id)
	}
	opts := policy.ClientOptions{
		Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: login, Services: map[cloud.ServiceName]cloud.ServiceConfiguration{}},
		Transport: client,
	}
	if tc.AppID != "" {
		cred, err := azidentity.NewClientSecretCredential(id, tc.AppID, tc.AppSecret, &azidentity.ClientSecretCredentialOptions{
			ClientOptions: opts,
			// Instance discovery asks a fixed Microsoft host whether the
			// authority is known; with LoginEndpoint set it is the
			// operator's choice, and the public cloud's is known.
			DisableInstanceDiscovery: login != defaultLoginEndpoint,
		})
		if err != nil {
			return nil, fmt.Errorf("azuremsi: tenant %s: app credential: %w", id, err)
		}
		return cred, nil
	}
	cred, err := azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{ClientOptions: opts, TenantID: id})
	if err != nil {
		return nil, fmt.Errorf("azuremsi: tenant %s: default credential: %w", id, err)
	}
	return cred, nil
}

// Type returns "azure_msi".
func (a *Attestor) Type() string { return Type }

// Attest verifies the payload's token and returns the agent ID rendered by
// the path template with SPIRE's selectors (see selectorValues). In order:
// the token must be a compact RS256 JWS with a kid, of a configured tenant
// (tid); it is verified with the one key of that kid in the tenant's key
// set — no other key is tried, none is taken from the token — and from
// then on only the verified claims are read; iss must be the tenant's, aud
// the tenant's resource, exp present and not past, nbf and iat not in the
// future (5 minutes of leeway, as SPIRE); sub must be set; xms_mirid must
// name a VM in one of the tenant's subscriptions, whose system-assigned
// identity Resource Manager says is sub.
//
// Malformed data is nodeattest.ErrInvalid; a token or VM that does not
// prove an identity this server accepts is nodeattest.ErrDenied; failing
// Azure calls are internal errors. The result is trust on first use and
// cannot be re-attested with another token (as SPIRE). It sends no
// challenge.
func (a *Attestor) Attest(ctx context.Context, payload []byte, _ nodeattest.ChallengeFunc) (*nodeattest.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	t, claims, err := a.verify(ctx, payload)
	if err != nil {
		return nil, err
	}
	agentID, err := a.path.agentID(a.td, newTemplateData(claims))
	if err != nil {
		return nil, fmt.Errorf("azuremsi: %w: principal %s of tenant %s: %v", nodeattest.ErrDenied, claims.PrincipalID, t.id, err)
	}

	ref, ok := parseManagedIdentityVM(claims.MIResourceID)
	if !ok {
		return nil, fmt.Errorf("azuremsi: %w: token xms_mirid %q does not name a virtual machine (only VMs' system-assigned identities attest)", nodeattest.ErrDenied, claims.MIResourceID)
	}
	subscription, ok := t.subscriptions[ref.subscription]
	if !ok {
		return nil, fmt.Errorf("azuremsi: %w: subscription %s is not allowed to attest for tenant %s", nodeattest.ErrDenied, ref.subscription, t.id)
	}
	clients := t.arm[ref.subscription]
	vm, err := clients.virtualMachine(ctx, ref, claims.PrincipalID)
	if err != nil {
		return nil, err
	}
	values, err := clients.selectorValues(ctx, subscription, vm)
	if err != nil {
		return nil, err
	}
	sels := make([]selector.Selector, len(values))
	for i, v := range values {
		sels[i] = selector.Selector{Type: Type, Value: v}
	}
	return &nodeattest.Result{
		AgentID:     agentID,
		Selectors:   selector.Sorted(sels),
		CanReattest: false,
		FirstUse:    true,
	}, nil
}

// verify parses the payload, verifies the token's signature and checks its
// claims; it returns the token's tenant and its verified claims.
func (a *Attestor) verify(ctx context.Context, payload []byte) (*tenant, *tokenClaims, error) {
	tok, err := parsePayload(payload)
	if err != nil {
		return nil, nil, err
	}
	t, ok := a.tenants[tok.tenantID]
	if !ok {
		return nil, nil, fmt.Errorf("azuremsi: %w: tenant %s is not allowed to attest", nodeattest.ErrDenied, tok.tenantID)
	}
	key, v2Issuer, err := t.keys.key(ctx, tok.keyID)
	if err != nil {
		return nil, nil, err
	}
	var c tokenClaims
	if err := tok.jws.Claims(key, &c); err != nil {
		return nil, nil, fmt.Errorf("azuremsi: %w: token signature with key %q of tenant %s: %v", nodeattest.ErrDenied, tok.keyID, t.id, err)
	}
	// The verified claims are the bytes the unverified tid was read from;
	// checked anyway, since the key was chosen by it.
	if c.TenantID != t.id {
		return nil, nil, fmt.Errorf("azuremsi: %w: verified token is of tenant %q, not %s", nodeattest.ErrDenied, c.TenantID, t.id)
	}
	if c.Issuer != a.sts+t.id+"/" && c.Issuer != v2Issuer {
		return nil, nil, fmt.Errorf("azuremsi: %w: token issuer %q is not tenant %s's", nodeattest.ErrDenied, c.Issuer, t.id)
	}
	if c.Expiry == nil {
		return nil, nil, fmt.Errorf("azuremsi: %w: token has no exp", nodeattest.ErrDenied)
	}
	err = c.ValidateWithLeeway(jwt.Expected{AnyAudience: []string{t.resourceID}, Time: a.now()}, tokenLeeway)
	switch {
	case errors.Is(err, jwt.ErrInvalidAudience):
		return nil, nil, fmt.Errorf("azuremsi: %w: token audience %q is not %q", nodeattest.ErrDenied, []string(c.Audience), t.resourceID)
	case errors.Is(err, jwt.ErrExpired):
		return nil, nil, fmt.Errorf("azuremsi: %w: token expired at %s", nodeattest.ErrDenied, c.Expiry.Time().UTC().Format(time.RFC3339))
	case err != nil:
		return nil, nil, fmt.Errorf("azuremsi: %w: token claims: %v", nodeattest.ErrDenied, err)
	}
	if c.PrincipalID == "" {
		return nil, nil, fmt.Errorf("azuremsi: %w: token has no sub", nodeattest.ErrInvalid)
	}
	return t, &c, nil
}
