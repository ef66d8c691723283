package azuremsi

// The payload, as SPIRE's azure_msi agent plugin (v1.13.3) encodes it
// (pkg/common/plugin/azure MSIAttestationData): one string, the access
// token exactly as the instance metadata service returned it.
//
//	{"token":"<header>.<claims>.<RS256 signature>"}
//
// The token is a Microsoft Entra ID v1 access token for the VM's
// system-assigned managed identity, for the resource the agent asked for.
// The claims attestation reads:
//
//	tid        the tenant (a GUID)
//	sub        the identity's principal (object) ID; SPIRE's PrincipalID
//	aud        the resource (resource_id)
//	iss        https://sts.windows.net/<tid>/ (v1 tokens, what the
//	           metadata service issues) or the tenant's v2.0 issuer
//	exp, nbf   its lifetime (iat, when present, must not be in the future)
//	xms_mirid  the Azure resource ID of the identity's owner:
//	           /subscriptions/<s>/resourcegroups/<g>/providers/
//	           Microsoft.Compute/virtualMachines/<name> for a VM's
//	           system-assigned identity

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/arborid/arbor/internal/nodeattest"
)

// maxPayload bounds the attestation payload: a managed identity token is
// 1.5 to 3 KB.
const maxPayload = 64 << 10

// maxKeyIDLength bounds the kid header; Entra ID's are 27 characters.
const maxKeyIDLength = 128

type attestationData struct {
	Token string `json:"token"`
}

// tokenClaims has the shape of SPIRE's azure.MSITokenClaims, so that
// encoding/json fills it the same way: PrincipalID, at the outer level,
// takes "sub", and the embedded jwt.Claims's Subject stays empty — which an
// agent_path_template written for SPIRE sees as well. The last two fields
// are arbor's and are not offered to templates.
type tokenClaims struct {
	jwt.Claims
	TenantID    string `json:"tid,omitempty"`
	PrincipalID string `json:"sub,omitempty"`

	ObjectID     string `json:"oid,omitempty"`
	MIResourceID string `json:"xms_mirid,omitempty"`
}

// tenantIDPattern is a tenant ID as Entra ID writes it in tid: a lowercase
// GUID.
var tenantIDPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// parsedToken is a token whose structure is valid; nothing in it is
// verified yet.
type parsedToken struct {
	jws      *jwt.JSONWebToken
	keyID    string
	tenantID string // unverified: only chooses whose keys to verify with
}

// parsePayload decodes the payload and the compact JWS in it, and reads the
// two things needed to choose a verification key: kid from the header and
// tid from the (unverified) claims. Only RS256 is accepted — what Entra ID
// signs access tokens with; SPIRE also accepts the other RSA, ECDSA and
// RSA-PSS algorithms. Everything here is nodeattest.ErrInvalid.
func parsePayload(payload []byte) (*parsedToken, error) {
	if len(payload) > maxPayload {
		return nil, fmt.Errorf("azuremsi: %w: payload is %d bytes, at most %d allowed", nodeattest.ErrInvalid, len(payload), maxPayload)
	}
	var data attestationData
	if err := json.Unmarshal(payload, &data); err != nil {
		return nil, fmt.Errorf("azuremsi: %w: decoding payload: %v", nodeattest.ErrInvalid, err)
	}
	if data.Token == "" {
		return nil, fmt.Errorf("azuremsi: %w: payload has no token", nodeattest.ErrInvalid)
	}
	jws, err := jwt.ParseSigned(data.Token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return nil, fmt.Errorf("azuremsi: %w: parsing token: %v", nodeattest.ErrInvalid, err)
	}
	if len(jws.Headers) != 1 {
		return nil, fmt.Errorf("azuremsi: %w: token has %d signatures, want 1", nodeattest.ErrInvalid, len(jws.Headers))
	}
	kid := jws.Headers[0].KeyID
	switch {
	case kid == "":
		return nil, fmt.Errorf("azuremsi: %w: token header has no kid", nodeattest.ErrInvalid)
	case len(kid) > maxKeyIDLength || strings.ContainsFunc(kid, func(r rune) bool { return r < 0x21 || r > 0x7e }):
		return nil, fmt.Errorf("azuremsi: %w: token kid is not a key ID", nodeattest.ErrInvalid)
	}
	var unverified tokenClaims
	if err := jws.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return nil, fmt.Errorf("azuremsi: %w: decoding token claims: %v", nodeattest.ErrInvalid, err)
	}
	if !tenantIDPattern.MatchString(unverified.TenantID) {
		return nil, fmt.Errorf("azuremsi: %w: token tid is missing or not a tenant ID", nodeattest.ErrInvalid)
	}
	return &parsedToken{jws: jws, keyID: kid, tenantID: unverified.TenantID}, nil
}
