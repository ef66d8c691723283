package awsiid_test

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/nodeattest/awsiid"
	"github.com/arborid/arbor/internal/nodeattest/awsiid/awsiidtest"
)

var update = flag.Bool("update", false, "rewrite the seed corpus in testdata/fuzz")

// fuzzSeeds are the payloads FuzzVerifyPayload starts from, each named as
// its corpus file: payloads that verify (AWS's BER shape, DER, no signed
// attributes, a real AWS signature) and one of each way to fail. Signing
// time is pinned, so they are the same on every run.
func fuzzSeeds(t testing.TB) map[string][]byte {
	s := loadSigner(t, "signer.pem")
	s.Now = func() time.Time { return time.Date(2026, 3, 1, 12, 0, 1, 0, time.UTC) }
	other := loadSigner(t, "other-signer.pem")
	other.Now = s.Now
	doc := testDocument().JSON()
	sign := func(signer *awsiidtest.Signer, d []byte, o awsiidtest.SignOptions) string {
		return must(signer.SignWith(d, o))
	}
	good := sign(s, doc, awsiidtest.SignOptions{})
	der := must(base64.StdEncoding.DecodeString(strings.ReplaceAll(good, "\n", "")))
	otherDoc := testDocument()
	otherDoc.InstanceID = "i-0aaaaaaaaaaaaaaa1"

	seeds := map[string][]byte{
		"valid-ber":                payloadOf(t, string(doc), "", good),
		"valid-der":                payloadOf(t, string(doc), "", sign(s, doc, awsiidtest.SignOptions{DER: true})),
		"valid-no-signed-attrs":    payloadOf(t, string(doc), "", sign(s, doc, awsiidtest.SignOptions{NoSignedAttributes: true})),
		"valid-real-aws":           payloadOf(t, string(must(os.ReadFile("testdata/aws/ap-southeast-2.document"))), "", string(must(os.ReadFile("testdata/aws/ap-southeast-2.rsa2048")))),
		"wrong-signer":             payloadOf(t, string(doc), "", sign(other, doc, awsiidtest.SignOptions{})),
		"wrong-embedded-signer":    payloadOf(t, string(doc), "", sign(other, doc, awsiidtest.SignOptions{EmbedCertificates: []*x509.Certificate{other.Cert}})),
		"wrong-document":           payloadOf(t, string(otherDoc.JSON()), "", good),
		"wrong-content":            payloadOf(t, string(otherDoc.JSON()), "", sign(s, doc, awsiidtest.SignOptions{Content: otherDoc.JSON()})),
		"truncated-signature":      payloadOf(t, string(doc), "", base64.StdEncoding.EncodeToString(der[:len(der)/2])),
		"indefinite-without-end":   payloadOf(t, string(doc), "", base64.StdEncoding.EncodeToString(der[:len(der)-2])),
		"deep-nesting":             payloadOf(t, string(doc), "", base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x30, 0x80}, 64))),
		"rsa1024-only":             payloadOf(t, string(doc), must(s.SignRSA1024(doc)), ""),
		"not-base64":               payloadOf(t, string(doc), "", "%%%"),
		"signed-content-not-json":  payloadOf(t, "x", "", sign(s, []byte("x"), awsiidtest.SignOptions{})),
		"malformed-json":           []byte(`{"document":"{}","rsa2048":`),
		"null":                     []byte(`null`),
		"empty-object":             []byte(`{}`),
		"wrong-field-types":        []byte(`{"document":[],"signature":{},"rsa2048":7}`),
		"high-tag":                 payloadOf(t, string(doc), "", base64.StdEncoding.EncodeToString([]byte{0x1f, 0x81, 0x00, 0x00})),
		"octet-string-of-sequence": payloadOf(t, string(doc), "", base64.StdEncoding.EncodeToString([]byte{0x24, 0x80, 0x30, 0x00, 0x00, 0x00})),
	}
	return seeds
}

func fuzzAttestor(t testing.TB) *awsiid.Attestor {
	s := loadSigner(t, "signer.pem")
	a, err := awsiid.New(awsiid.Config{SigningCertificates: map[string][]*x509.Certificate{region: {s.Cert}}}, td)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// FuzzVerifyPayload sends arbitrary payloads to the parser and signature
// check of the server half: it must never panic, must refuse with exactly
// one of ErrInvalid and ErrDenied, and what it accepts must be a document
// with valid fields whose bytes are the payload's document.
func FuzzVerifyPayload(f *testing.F) {
	a := fuzzAttestor(f)
	for _, name := range []string{"valid-ber", "valid-der", "valid-no-signed-attrs", "valid-real-aws"} {
		if _, _, err := a.VerifyPayload(fuzzSeeds(f)[name]); err != nil {
			f.Fatalf("seed %s does not verify: %v", name, err)
		}
	}
	// The corpus in testdata/fuzz/FuzzVerifyPayload is added by the go
	// tool; f.Add only what is not a file.
	f.Add([]byte(nil))
	f.Fuzz(func(t *testing.T, payload []byte) {
		doc, raw, err := a.VerifyPayload(payload)
		if err != nil {
			invalid, denied := errors.Is(err, nodeattest.ErrInvalid), errors.Is(err, nodeattest.ErrDenied)
			if invalid == denied {
				t.Fatalf("VerifyPayload() = %v, want exactly one of ErrInvalid and ErrDenied", err)
			}
			if !strings.HasPrefix(err.Error(), "awsiid: ") {
				t.Fatalf("VerifyPayload() error %q lacks the awsiid: prefix", err)
			}
			return
		}
		if doc.AccountID == "" || doc.InstanceID == "" || doc.Region == "" || doc.ImageID == "" || doc.AvailabilityZone == "" {
			t.Fatalf("VerifyPayload() = %+v, want every field set", doc)
		}
		if !bytes.Contains(payload, []byte(doc.InstanceID)) || len(raw) == 0 {
			t.Fatalf("VerifyPayload() = %+v from a payload that does not carry it", doc)
		}
	})
}

// TestFuzzCorpus keeps testdata/fuzz/FuzzVerifyPayload equal to fuzzSeeds;
// go test -run TestFuzzCorpus -update rewrites it.
func TestFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzVerifyPayload")
	seeds := fuzzSeeds(t)
	if *update {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, payload := range seeds {
		want := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(payload)))
		path := filepath.Join(dir, name)
		if *update {
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != want {
			t.Errorf("%s is missing or stale (%v); run go test -run TestFuzzCorpus -update", path, err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(seeds) {
		t.Errorf("%s has %d files, want the %d seeds; run go test -run TestFuzzCorpus -update", dir, len(entries), len(seeds))
	}
}
