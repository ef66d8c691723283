package k8spsat

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/arborid/arbor/internal/nodeattest"
)

// FuzzParsePayload sends arbitrary bytes to the payload parser, seeded from
// testdata/fuzz/FuzzParsePayload (SPIRE's payload and the ways it can be
// malformed). The parser must never panic; it refuses only with ErrInvalid
// under the k8s_psat: prefix, and what it accepts has a cluster and a token
// and encodes, as the agent half encodes it, to a payload that parses back
// to the same.
func FuzzParsePayload(f *testing.F) {
	f.Add([]byte(`{"cluster":"prod","token":"` + strings.Repeat("a", maxPayloadSize) + `"}`))
	f.Add([]byte(`{"cluster":"prod","token":"` + strings.Repeat("a", maxPayloadSize-30) + `"}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		data, err := parsePayload(payload)
		if err != nil {
			if !errors.Is(err, nodeattest.ErrInvalid) || errors.Is(err, nodeattest.ErrDenied) {
				t.Fatalf("parsePayload(%q) = %v, want only ErrInvalid", payload, err)
			}
			if !strings.HasPrefix(err.Error(), "k8s_psat: ") {
				t.Fatalf("parsePayload() error %q lacks the k8s_psat: prefix", err)
			}
			if data != (attestationData{}) {
				t.Fatalf("parsePayload(%q) = %+v with error %v, want the zero value", payload, data, err)
			}
			return
		}
		if data.Cluster == "" || data.Token == "" {
			t.Fatalf("parsePayload(%q) = %+v, want a cluster and a token", payload, data)
		}
		if len(payload) > maxPayloadSize {
			t.Fatalf("parsePayload() accepted %d bytes, more than %d", len(payload), maxPayloadSize)
		}
		again, err := json.Marshal(&data)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(again, []byte(`{"cluster":`)) {
			t.Fatalf("re-encoded payload %s does not start with the cluster, as SPIRE's does", again)
		}
		// Invalid UTF-8 decodes to U+FFFD, which encodes longer.
		if back, err := parsePayload(again); err != nil && len(again) <= maxPayloadSize {
			t.Fatalf("parsePayload(re-encoded %s) = %v", again, err)
		} else if err == nil && back != data {
			t.Fatalf("parsePayload(re-encoded) = %+v, want %+v", back, data)
		}
	})
}
