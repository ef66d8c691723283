package k8spsat

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/arborid/arbor/internal/nodeattest"
)

// The payload a k8s_psat agent sends is SPIRE's PSATAttestationData
// (pkg/common/plugin/k8s), one JSON object:
//
//	{"cluster":"<cluster name>","token":"<the projected service account token>"}
//
// The token is the file's content as read, unchanged. Nothing else is
// exchanged: the server asks no challenge.
type attestationData struct {
	Cluster string `json:"cluster"`
	Token   string `json:"token"`
}

// maxPayloadSize bounds the payload. A projected token is one to two
// kilobytes; the bound leaves room for large claims and keeps a hostile
// payload from costing more than a few decodes.
const maxPayloadSize = 64 << 10

// parsePayload decodes payload as SPIRE's server does (encoding/json: field
// names matched without regard to case, unknown fields ignored) and requires
// a cluster and a token.
func parsePayload(payload []byte) (attestationData, error) {
	var data attestationData
	if len(payload) > maxPayloadSize {
		return data, fmt.Errorf("k8s_psat: %w: payload is %d bytes, at most %d allowed", nodeattest.ErrInvalid, len(payload), maxPayloadSize)
	}
	if err := json.Unmarshal(payload, &data); err != nil {
		return attestationData{}, fmt.Errorf("k8s_psat: %w: decoding payload: %v", nodeattest.ErrInvalid, err)
	}
	switch {
	case data.Cluster == "":
		return attestationData{}, fmt.Errorf("k8s_psat: %w: payload has no cluster", nodeattest.ErrInvalid)
	case data.Token == "":
		return attestationData{}, fmt.Errorf("k8s_psat: %w: payload has no token", nodeattest.ErrInvalid)
	}
	return data, nil
}

// unverifiedExpiry returns the exp claim of token if it is a JWT with one.
// The signature is not checked: the result only explains a refusal the API
// server already made, and never decides anything.
func unverifiedExpiry(token string) (time.Time, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var c struct {
		Expiry *json.Number `json:"exp"`
	}
	if err := json.Unmarshal(raw, &c); err != nil || c.Expiry == nil {
		return time.Time{}, false
	}
	exp, err := c.Expiry.Int64()
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(exp, 0).UTC(), true
}
