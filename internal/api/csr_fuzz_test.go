package api

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/arborid/arbor/upstream"
)

// FuzzParseCSR: whatever bytes arrive as a CSR, parseCSR never panics and
// either returns a request with a verified signature and an acceptable key,
// not asking to be a CA when an SVID is wanted, or an InvalidArgument status.
func FuzzParseCSR(f *testing.F) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	weak, _ := rsa.GenerateKey(rand.Reader, 1024)
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: "seed"}}
	for _, key := range []any{ec, p224, weak} {
		der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(der, false)
		f.Add(der[:len(der)-3], true)
	}
	bc, _ := asn1.Marshal(struct{ IsCA bool }{true})
	ca := &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{{Id: oidBasicConstraints, Value: bc}}}
	if der, err := x509.CreateCertificateRequest(rand.Reader, ca, ec); err == nil {
		f.Add(der, false)
		f.Add(der, true)
	}
	f.Add([]byte{}, false)
	f.Add([]byte{0x30, 0x80}, false)
	f.Fuzz(func(t *testing.T, der []byte, forCA bool) {
		use := csrSVID
		if forCA {
			use = csrCA
		}
		csr, err := parseCSR(der, use)
		if err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("parseCSR() error = %v, want InvalidArgument", err)
			}
			return
		}
		if err := csr.CheckSignature(); err != nil {
			t.Fatalf("parseCSR() accepted a CSR whose signature does not verify: %v", err)
		}
		if err := upstream.CheckPublicKey(csr.PublicKey); err != nil {
			t.Fatalf("parseCSR() accepted a CSR with a refused key: %v", err)
		}
		if isCA, _ := csrRequestsCA(csr); isCA && use == csrSVID {
			t.Fatal("parseCSR() accepted a CA:true request for an SVID")
		}
	})
}
