package awsiid

// The payload, field for field as SPIRE's aws_iid agent plugin (v1.13.3)
// encodes it (pkg/common/plugin/aws IIDAttestationData): three strings,
// exactly as the instance metadata service returned them.
//
//	{"document":"<instance identity document JSON>",
//	 "signature":"<base64 RSA-1024 PKCS #1 v1.5 signature of the document>",
//	 "rsa2048":"<base64 CMS SignedData carrying the document, RSA-2048>"}
//
// SPIRE's server (v1.13) verifies rsa2048 when it is not empty and falls
// back to the RSA-1024 signature for agents older than the RSA-2048
// support. arbor verifies rsa2048 only: a 1024-bit RSA signature is not an
// identity proof worth accepting, and every SPIRE agent since the RSA-2048
// change sends both.

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/arborid/arbor/internal/nodeattest"
)

// maxPayload bounds the attestation payload: a document is about 500 bytes
// and its signatures 2 KB.
const maxPayload = 64 << 10

type attestationData struct {
	Document         string `json:"document"`
	Signature        string `json:"signature"`
	SignatureRSA2048 string `json:"rsa2048"`
}

// identityDocument holds the fields of an instance identity document
// that attestation reads. Every field comes from the content AWS signed.
type identityDocument struct {
	AccountID        string `json:"accountId"`
	InstanceID       string `json:"instanceId"`
	Region           string `json:"region"`
	AvailabilityZone string `json:"availabilityZone"`
	ImageID          string `json:"imageId"`
	InstanceType     string `json:"instanceType"`
}

// The formats AWS uses. They are checked although the document is signed:
// every field ends up in an agent ID, a selector or an API call, and an
// overridden certificate (a private region, a test) is trusted less than
// AWS's own.
var (
	accountIDPattern  = regexp.MustCompile(`^[0-9]{12}$`)
	instanceIDPattern = regexp.MustCompile(`^i-[0-9a-f]{8,32}$`)
	regionPattern     = regexp.MustCompile(`^[a-z]{2}(-[a-z0-9]+)+-[0-9]{1,2}$`)
	zonePattern       = regexp.MustCompile(`^[a-z0-9-]{1,64}$`)
	imageIDPattern    = regexp.MustCompile(`^ami-[0-9a-f]{8,32}$`)
)

func validRegion(r string) bool { return regionPattern.MatchString(r) }

// verifiedDocument is a payload whose RSA-2048 signature verified: doc is
// parsed from raw, which is the signed content byte for byte.
type verifiedDocument struct {
	raw []byte
	doc identityDocument
}

// verifyPayload parses payload, verifies its RSA-2048 signature with the
// anchors of the signed document's region and returns the document parsed
// from the signed bytes. Malformed input is nodeattest.ErrInvalid; a
// well-formed payload whose signature does not verify, or whose document
// differs from the signed one, is nodeattest.ErrDenied.
func verifyPayload(payload []byte, anchors map[string][]*anchor) (*verifiedDocument, error) {
	if len(payload) > maxPayload {
		return nil, fmt.Errorf("awsiid: %w: payload is %d bytes, at most %d allowed", nodeattest.ErrInvalid, len(payload), maxPayload)
	}
	var data attestationData
	if err := json.Unmarshal(payload, &data); err != nil {
		return nil, fmt.Errorf("awsiid: %w: decoding payload: %v", nodeattest.ErrInvalid, err)
	}
	if data.Document == "" {
		return nil, fmt.Errorf("awsiid: %w: payload has no document", nodeattest.ErrInvalid)
	}
	if data.SignatureRSA2048 == "" {
		return nil, fmt.Errorf("awsiid: %w: payload has no rsa2048 signature (RSA-1024 signatures are not accepted)", nodeattest.ErrInvalid)
	}
	ber, err := base64.StdEncoding.DecodeString(stripSpace(data.SignatureRSA2048))
	if err != nil {
		return nil, fmt.Errorf("awsiid: %w: decoding rsa2048 signature: %v", nodeattest.ErrInvalid, err)
	}
	signed, err := parseSignedDocument(ber)
	if err != nil {
		class := nodeattest.ErrDenied // well formed, but binds another document
		if errors.Is(err, errMalformed) {
			class = nodeattest.ErrInvalid
		}
		return nil, fmt.Errorf("awsiid: %w: rsa2048 signature: %v", class, err)
	}
	// From here on only the signed content is read. The document the agent
	// sent beside it must be the same bytes, or the agent is presenting
	// one document and a signature of another.
	doc, err := parseDocument(signed.content)
	if err != nil {
		return nil, fmt.Errorf("awsiid: %w: signed document: %v", nodeattest.ErrInvalid, err)
	}
	regionAnchors, ok := anchors[doc.Region]
	if !ok {
		regionAnchors = anchors[everyRegion]
	}
	if len(regionAnchors) == 0 {
		return nil, fmt.Errorf("awsiid: %w: no instance identity certificate for region %q", nodeattest.ErrDenied, doc.Region)
	}
	if err := signed.verify(regionAnchors); err != nil {
		return nil, fmt.Errorf("awsiid: %w: rsa2048 signature for region %s: %v", nodeattest.ErrDenied, doc.Region, err)
	}
	if data.Document != string(signed.content) {
		return nil, fmt.Errorf("awsiid: %w: document differs from the document the rsa2048 signature carries", nodeattest.ErrDenied)
	}
	return &verifiedDocument{raw: signed.content, doc: doc}, nil
}

// parseDocument decodes an instance identity document and checks the
// formats of the fields attestation uses.
func parseDocument(raw []byte) (identityDocument, error) {
	var doc identityDocument
	if err := json.Unmarshal(raw, &doc); err != nil {
		return doc, fmt.Errorf("decoding: %v", err)
	}
	for _, f := range []struct {
		name, value string
		re          *regexp.Regexp
	}{
		{"accountId", doc.AccountID, accountIDPattern},
		{"instanceId", doc.InstanceID, instanceIDPattern},
		{"region", doc.Region, regionPattern},
		{"availabilityZone", doc.AvailabilityZone, zonePattern},
		{"imageId", doc.ImageID, imageIDPattern},
	} {
		if !f.re.MatchString(f.value) {
			return doc, fmt.Errorf("%s %q is not a valid value", f.name, f.value)
		}
	}
	return doc, nil
}

// stripSpace removes the line breaks and spaces the metadata service or a
// transport may put into base64 text.
func stripSpace(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\r', '\n':
			return -1
		}
		return r
	}, s)
}
