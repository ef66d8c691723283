package api

import (
	"crypto/x509"
	"encoding/asn1"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/arborid/arbor/upstream"
)

// maxCSRSize bounds the PKCS#10 requests any RPC accepts; real ones are a
// few hundred bytes (an RSA-4096 key with SANs stays under 2 KiB).
const maxCSRSize = 16 << 10

// csrUse says what a CSR asks for, which decides what it may request.
type csrUse int

const (
	// csrSVID: an X509-SVID (workload or agent): not a CA.
	csrSVID csrUse = iota
	// csrCA: a downstream tier's intermediate CA.
	csrCA
)

var oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}

// parseCSR parses and checks a PKCS#10 request completely before anything
// is signed or consumed: size, syntax, the signature, and a key arbor
// signs for (upstream.CheckPublicKey). A CSR for an SVID may not ask to be a
// CA. Every failure is an InvalidArgument status.
func parseCSR(der []byte, use csrUse) (*x509.CertificateRequest, error) {
	if len(der) == 0 {
		return nil, status.Error(codes.InvalidArgument, "missing CSR")
	}
	if len(der) > maxCSRSize {
		return nil, status.Errorf(codes.InvalidArgument, "CSR of %d bytes is larger than %d", len(der), maxCSRSize)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "malformed CSR: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "CSR signature does not verify: %v", err)
	}
	if err := upstream.CheckPublicKey(csr.PublicKey); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "CSR key: %v", err)
	}
	if use == csrSVID {
		isCA, err := csrRequestsCA(csr)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "malformed CSR: %v", err)
		}
		if isCA {
			return nil, status.Error(codes.InvalidArgument, "CSR requests a CA certificate (basic constraints CA:true); an SVID is never a CA")
		}
	}
	return csr, nil
}

// csrRequestsCA reports whether the CSR's requested extensions include basic
// constraints with CA:true.
func csrRequestsCA(csr *x509.CertificateRequest) (bool, error) {
	for _, ext := range csr.Extensions {
		if !ext.Id.Equal(oidBasicConstraints) {
			continue
		}
		var bc struct {
			IsCA       bool `asn1:"optional"`
			MaxPathLen int  `asn1:"optional,default:-1"`
		}
		rest, err := asn1.Unmarshal(ext.Value, &bc)
		if err != nil {
			return false, fmt.Errorf("basic constraints: %v", err)
		}
		if len(rest) != 0 {
			return false, fmt.Errorf("basic constraints: trailing data")
		}
		if bc.IsCA {
			return true, nil
		}
	}
	return false, nil
}
