package azuremsi

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/nodeattest/azuremsi/azuremsitest"
)

// FuzzParsePayload sends arbitrary bytes to the payload parser, the part of
// azure_msi that reads what an agent sent before any key is chosen. Seeded
// with SPIRE's payload around a token in Entra ID's format and the ways it
// can be malformed. It must never panic; it refuses only with ErrInvalid
// under the azuremsi: prefix; what it accepts is within the size bound and
// names a printable key ID and a tenant ID in Entra ID's lowercase GUID
// form, which alone choose the keys the token is then verified with.
func FuzzParsePayload(f *testing.F) {
	key, err := azuremsitest.NewKey("kid-1")
	if err != nil {
		f.Fatal(err)
	}
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	tok, err := key.Sign(azuremsitest.Claims{Tenant: "72f988bf-86f1-41af-91ab-2d7cd011db47", Principal: "8d3c5a1e-0000-4000-8000-000000000001",
		Audience: "https://management.azure.com/", MIResourceID: azuremsitest.VMID("11111111-1111-1111-1111-111111111111", "rg", "vm-1"),
		IssuedAt: now, Expiry: now.Add(time.Hour)})
	if err != nil {
		f.Fatal(err)
	}
	payload := func(token string) []byte {
		b, _ := json.Marshal(map[string]string{"token": token})
		return b
	}
	parts := strings.Split(tok, ".")
	for _, seed := range [][]byte{payload(tok), payload(parts[0] + "." + parts[1] + "."), payload(tok + "." + parts[2]),
		payload(""), []byte(`{"token":`), []byte(`{}`), []byte(`null`), payload(strings.ToUpper(tok))} {
		f.Add(seed)
	}
	if _, err := parsePayload(payload(tok)); err != nil {
		f.Fatalf("the seed payload does not parse: %v", err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := parsePayload(data)
		if err != nil {
			if !errors.Is(err, nodeattest.ErrInvalid) || errors.Is(err, nodeattest.ErrDenied) {
				t.Fatalf("parsePayload(%q) = %v, want only ErrInvalid", data, err)
			}
			if !strings.HasPrefix(err.Error(), "azuremsi: ") {
				t.Fatalf("parsePayload() error %q lacks the azuremsi: prefix", err)
			}
			if p != nil {
				t.Fatalf("parsePayload(%q) returned a token with error %v", data, err)
			}
			return
		}
		if len(data) > maxPayload {
			t.Fatalf("parsePayload() accepted %d bytes, more than %d", len(data), maxPayload)
		}
		if p.keyID == "" || len(p.keyID) > maxKeyIDLength || strings.ContainsFunc(p.keyID, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
			t.Fatalf("parsePayload(%q) accepted key ID %q", data, p.keyID)
		}
		if !tenantIDPattern.MatchString(p.tenantID) {
			t.Fatalf("parsePayload(%q) accepted tenant %q", data, p.tenantID)
		}
	})
}
