package gcpiit

// The payload is what SPIRE's gcp_iit agent plugin (v1.13.3) sends: the
// instance identity token exactly as the metadata server returned it, a
// compact JWS (RFC 7515) signed by Google with RS256:
//
//	BASE64URL({"alg":"RS256","kid":"<key ID>","typ":"JWT"}) "."
//	BASE64URL(claims) "." BASE64URL(RSASSA-PKCS1-v1_5 SHA-256 signature)
//
// with the claims of format=full:
//
//	{"iss":"https://accounts.google.com","aud":"spire-gcp-node-attestor",
//	 "azp":"<service account ID>","sub":"<service account ID>",
//	 "iat":<issued>,"exp":<issued+3600>,
//	 "google":{"compute_engine":{"project_id":"...","project_number":<n>,
//	   "zone":"...","instance_id":"<decimal>","instance_name":"...",
//	   "instance_creation_timestamp":<unix seconds>}}}
//
// The parser here accepts exactly that shape and nothing JWS allows beyond
// it (no JSON serialization, no unencoded payload, no critical headers, no
// keys carried in the header): a token is looked up by its kid among the
// keys fetched from Google, never by anything else it says.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"time"

	"github.com/arborid/arbor/internal/nodeattest"
)

// maxPayload bounds the attestation payload: a full-format token is about
// 1 KB (more with license IDs).
const maxPayload = 16 << 10

// issuers are the iss values Google's identity tokens carry.
var issuers = []string{"https://accounts.google.com", "accounts.google.com"}

// identityToken holds the claims attestation reads, decoded from the
// signed bytes of the token.
type identityToken struct {
	Issuer    string       `json:"iss"`
	Audience  audience     `json:"aud"`
	IssuedAt  *numericDate `json:"iat"`
	Expiry    *numericDate `json:"exp"`
	NotBefore *numericDate `json:"nbf"`
	Google    struct {
		ComputeEngine computeEngine `json:"compute_engine"`
	} `json:"google"`
}

// computeEngine is the google.compute_engine claim, under SPIRE's names
// (pkg/common/plugin/gcp ComputeEngine).
type computeEngine struct {
	ProjectID                 string `json:"project_id"`
	ProjectNumber             int64  `json:"project_number"`
	Zone                      string `json:"zone"`
	InstanceID                string `json:"instance_id"`
	InstanceName              string `json:"instance_name"`
	InstanceCreationTimestamp int64  `json:"instance_creation_timestamp"`
}

// The formats Google uses. They are checked although the token is signed:
// every field ends up in an agent ID, a selector or a Compute API path, and
// an overridden keys URL (tests, a mirror) is trusted less than Google.
var (
	// projectIDPattern admits domain-scoped projects ("example.com:name").
	projectIDPattern    = regexp.MustCompile(`^([a-z0-9][a-z0-9.-]{0,62}:)?[a-z][-a-z0-9]{4,28}[a-z0-9]$`)
	zonePattern         = regexp.MustCompile(`^[a-z][-a-z0-9]{0,62}$`)
	instanceNamePattern = regexp.MustCompile(`^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$`)
	instanceIDPattern   = regexp.MustCompile(`^[1-9][0-9]{0,19}$`)
)

// audience is the aud claim: one string, or an array of them.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("aud is neither a string nor an array of strings")
	}
	*a = many
	return nil
}

// numericDate is a JWT NumericDate: seconds since the epoch, possibly
// fractional.
type numericDate struct{ time.Time }

func (d *numericDate) UnmarshalJSON(b []byte) error {
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return errors.New("a date is not a number")
	}
	// Beyond year 9999 or before 1970 is not a date a token carries.
	if math.IsNaN(f) || f < 0 || f > 253402300799 {
		return fmt.Errorf("date %v is out of range", f)
	}
	sec, frac := math.Modf(f)
	d.Time = time.Unix(int64(sec), int64(frac*1e9)).UTC()
	return nil
}

// jwsHeader is the protected header of the token.
type jwsHeader struct {
	Algorithm string          `json:"alg"`
	KeyID     string          `json:"kid"`
	Critical  json.RawMessage `json:"crit"`
	Base64    json.RawMessage `json:"b64"`
}

// keyFunc returns Google's public key of a kid: an error wrapping
// nodeattest.ErrDenied when no key has that ID, any other error when the
// keys cannot be had.
type keyFunc func(ctx context.Context, kid string) (*rsa.PublicKey, error)

// verifyToken parses payload as an instance identity token, verifies its
// RS256 signature with the key of its kid and its claims at now, and
// returns the claims decoded from the signed bytes. Malformed input is
// nodeattest.ErrInvalid; a well-formed token that does not prove an
// identity (unknown kid, bad signature, wrong issuer or audience, expired)
// is nodeattest.ErrDenied; a failure to get the keys is neither.
func verifyToken(ctx context.Context, payload []byte, keys keyFunc, now time.Time) (*identityToken, error) {
	if len(payload) > maxPayload {
		return nil, fmt.Errorf("gcpiit: %w: payload is %d bytes, at most %d allowed", nodeattest.ErrInvalid, len(payload), maxPayload)
	}
	parts := bytes.Split(payload, []byte("."))
	if len(parts) != 3 {
		return nil, fmt.Errorf("gcpiit: %w: payload is not a compact JWS (%d parts, want 3)", nodeattest.ErrInvalid, len(parts))
	}
	var raw [3][]byte
	for i, name := range []string{"header", "claims", "signature"} {
		b, err := decodeSegment(parts[i])
		if err != nil {
			return nil, fmt.Errorf("gcpiit: %w: token %s: %v", nodeattest.ErrInvalid, name, err)
		}
		raw[i] = b
	}
	var h jwsHeader
	if err := json.Unmarshal(raw[0], &h); err != nil {
		return nil, fmt.Errorf("gcpiit: %w: token header: %v", nodeattest.ErrInvalid, err)
	}
	switch {
	case h.Algorithm != "RS256":
		return nil, fmt.Errorf("gcpiit: %w: token alg %q, want RS256", nodeattest.ErrInvalid, h.Algorithm)
	case h.Critical != nil:
		return nil, fmt.Errorf("gcpiit: %w: token header has critical extensions", nodeattest.ErrInvalid)
	case h.Base64 != nil:
		return nil, fmt.Errorf("gcpiit: %w: token header has b64", nodeattest.ErrInvalid)
	case h.KeyID == "":
		return nil, fmt.Errorf("gcpiit: %w: token header has no kid", nodeattest.ErrInvalid)
	}
	key, err := keys(ctx, h.KeyID)
	if err != nil {
		return nil, err
	}
	// The signing input is the first two segments exactly as sent.
	signed := payload[:len(parts[0])+1+len(parts[1])]
	sum := sha256.Sum256(signed)
	if err := rsa.VerifyPKCS1v15(key, crypto.SHA256, sum[:], raw[2]); err != nil {
		return nil, fmt.Errorf("gcpiit: %w: token signature does not verify with Google's key %q", nodeattest.ErrDenied, h.KeyID)
	}

	// From here on only the verified claims are read.
	var tok identityToken
	if err := json.Unmarshal(raw[1], &tok); err != nil {
		return nil, fmt.Errorf("gcpiit: %w: token claims: %v", nodeattest.ErrInvalid, err)
	}
	if err := checkClaims(&tok, now); err != nil {
		return nil, err
	}
	return &tok, nil
}

// decodeSegment decodes one unpadded base64url segment. The alphabet is
// checked first: Go's decoder skips CR and LF, and a token with a line
// break in it is not the token Google issued.
func decodeSegment(seg []byte) ([]byte, error) {
	if len(seg) == 0 {
		return nil, errors.New("empty")
	}
	for _, c := range seg {
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return nil, fmt.Errorf("byte %q is not base64url", c)
		}
	}
	out := make([]byte, base64.RawURLEncoding.DecodedLen(len(seg)))
	n, err := base64.RawURLEncoding.Strict().Decode(out, seg)
	if err != nil {
		return nil, errors.New("not canonical base64url")
	}
	return out[:n], nil
}

// checkClaims checks the verified claims: Google's issuer, our audience,
// a lifetime that includes now (within the leeway) and a complete
// google.compute_engine claim in Google's formats.
func checkClaims(tok *identityToken, now time.Time) error {
	switch {
	case !slices.Contains(issuers, tok.Issuer):
		return fmt.Errorf("gcpiit: %w: token issuer %q is not Google's", nodeattest.ErrDenied, tok.Issuer)
	case !slices.Contains(tok.Audience, Audience):
		return fmt.Errorf("gcpiit: %w: token audience %q does not include %q", nodeattest.ErrDenied, []string(tok.Audience), Audience)
	case tok.Expiry == nil:
		return fmt.Errorf("gcpiit: %w: token has no exp", nodeattest.ErrInvalid)
	case tok.IssuedAt == nil:
		return fmt.Errorf("gcpiit: %w: token has no iat", nodeattest.ErrInvalid)
	case !tok.Expiry.After(tok.IssuedAt.Time):
		return fmt.Errorf("gcpiit: %w: token expires (%v) before it is issued (%v)", nodeattest.ErrInvalid, tok.Expiry.Time, tok.IssuedAt.Time)
	case now.After(tok.Expiry.Add(leeway)):
		return fmt.Errorf("gcpiit: %w: token expired at %v", nodeattest.ErrDenied, tok.Expiry.Time)
	case tok.IssuedAt.After(now.Add(leeway)):
		return fmt.Errorf("gcpiit: %w: token issued in the future (%v)", nodeattest.ErrDenied, tok.IssuedAt.Time)
	case tok.NotBefore != nil && tok.NotBefore.After(now.Add(leeway)):
		return fmt.Errorf("gcpiit: %w: token not valid before %v", nodeattest.ErrDenied, tok.NotBefore.Time)
	}
	ce := tok.Google.ComputeEngine
	if ce == (computeEngine{}) {
		return fmt.Errorf("gcpiit: %w: token has no google.compute_engine claim (not format=full)", nodeattest.ErrInvalid)
	}
	for _, f := range []struct {
		name, value string
		re          *regexp.Regexp
	}{
		{"project_id", ce.ProjectID, projectIDPattern},
		{"zone", ce.Zone, zonePattern},
		{"instance_id", ce.InstanceID, instanceIDPattern},
		{"instance_name", ce.InstanceName, instanceNamePattern},
	} {
		if !f.re.MatchString(f.value) {
			return fmt.Errorf("gcpiit: %w: token google.compute_engine.%s %q is not a valid value", nodeattest.ErrInvalid, f.name, f.value)
		}
	}
	if ce.ProjectNumber <= 0 {
		return fmt.Errorf("gcpiit: %w: token google.compute_engine.project_number %d is not a project number", nodeattest.ErrInvalid, ce.ProjectNumber)
	}
	return nil
}
