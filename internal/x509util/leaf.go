// Package x509util is the CA manager's fast X509-SVID encoder (CreateLeaf):
// the same DER as crypto/x509 for the leaves arbor issues, without
// re-verifying its own signature. The CA certificate profile and the X.509
// helpers every CA source shares are in upstream (certificate.go).
package x509util

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/url"
	"time"
)

// Leaf describes an end-entity certificate (an X509-SVID): exactly what
// CreateLeaf encodes.
type Leaf struct {
	SerialNumber *big.Int
	Subject      pkix.Name
	NotBefore    time.Time
	NotAfter     time.Time
	URIs         []*url.URL
	DNSNames     []string
	KeyUsage     x509.KeyUsage
	ExtKeyUsage  []x509.ExtKeyUsage
}

// The DER that crypto/x509 writes for the same template, field for field, so
// that a certificate from CreateLeaf is byte-identical (up to the signature)
// to what x509.CreateCertificate makes. CreateLeaf exists because
// x509.CreateCertificate verifies every signature it has just made, which
// for ECDSA costs more than the signing itself and is a third of the CPU an
// SVID costs; the CA's key is in this process, so that check buys nothing.
var (
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtKeyUsage      = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidAuthorityKeyID   = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}

	oidServerAuth = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}
	oidClientAuth = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}

	oidECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECDSAWithSHA384 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidECDSAWithSHA512 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}
	oidSHA256WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}

	emptySubject = []byte{0x30, 0}
)

type tbsCertificate struct {
	Version            int `asn1:"optional,explicit,default:0,tag:0"`
	SerialNumber       *big.Int
	SignatureAlgorithm pkix.AlgorithmIdentifier
	Issuer             asn1.RawValue
	Validity           validity
	Subject            asn1.RawValue
	PublicKey          asn1.RawValue
	Extensions         []pkix.Extension `asn1:"omitempty,optional,explicit,tag:3"`
}

type validity struct {
	NotBefore, NotAfter time.Time
}

type certificate struct {
	TBSCertificate     asn1.RawValue
	SignatureAlgorithm pkix.AlgorithmIdentifier
	SignatureValue     asn1.BitString
}

type basicConstraints struct {
	IsCA       bool `asn1:"optional"`
	MaxPathLen int  `asn1:"optional,default:-1"`
}

type authKeyID struct {
	ID []byte `asn1:"optional,tag:0"`
}

// ErrUnsupportedLeaf is returned for inputs CreateLeaf does not encode; the
// caller falls back to x509.CreateCertificate.
var ErrUnsupportedLeaf = errors.New("x509util: leaf not supported by the fast encoder")

// CreateLeaf signs leaf for pub with the issuer's key and returns the DER
// certificate, encoded exactly as x509.CreateCertificate would for the same
// template (BasicConstraintsValid, not a CA) but without re-verifying the
// signature.
func CreateLeaf(rand io.Reader, leaf *Leaf, issuer *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) ([]byte, error) {
	if leaf.NotBefore.Year() >= 2050 || leaf.NotAfter.Year() >= 2050 || leaf.NotBefore.Year() < 1950 {
		return nil, ErrUnsupportedLeaf // UTCTime range; crypto/x509 handles GeneralizedTime
	}
	if leaf.SerialNumber == nil || leaf.SerialNumber.Sign() <= 0 {
		return nil, errors.New("x509util: serial number must be positive")
	}
	sigAlg, hash, err := signatureAlgorithm(key)
	if err != nil {
		return nil, err
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("x509util: %w", err)
	}
	subject, err := asn1.Marshal(leaf.Subject.ToRDNSequence())
	if err != nil {
		return nil, fmt.Errorf("x509util: subject: %w", err)
	}
	issuerName := issuer.RawSubject
	exts, err := leafExtensions(leaf, issuer, bytes.Equal(subject, emptySubject), !bytes.Equal(issuerName, subject))
	if err != nil {
		return nil, err
	}
	tbs, err := asn1.Marshal(tbsCertificate{
		Version:            2,
		SerialNumber:       leaf.SerialNumber,
		SignatureAlgorithm: sigAlg,
		Issuer:             asn1.RawValue{FullBytes: issuerName},
		Validity:           validity{leaf.NotBefore.UTC(), leaf.NotAfter.UTC()},
		Subject:            asn1.RawValue{FullBytes: subject},
		PublicKey:          asn1.RawValue{FullBytes: spki},
		Extensions:         exts,
	})
	if err != nil {
		return nil, fmt.Errorf("x509util: encoding certificate: %w", err)
	}
	h := hash.New()
	h.Write(tbs)
	sig, err := key.Sign(rand, h.Sum(nil), hash)
	if err != nil {
		return nil, fmt.Errorf("x509util: signing certificate: %w", err)
	}
	return asn1.Marshal(certificate{
		TBSCertificate:     asn1.RawValue{FullBytes: tbs},
		SignatureAlgorithm: sigAlg,
		SignatureValue:     asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)},
	})
}

func signatureAlgorithm(key crypto.Signer) (pkix.AlgorithmIdentifier, crypto.Hash, error) {
	switch pub := key.Public().(type) {
	case *ecdsa.PublicKey:
		switch pub.Curve {
		case elliptic.P256():
			return pkix.AlgorithmIdentifier{Algorithm: oidECDSAWithSHA256}, crypto.SHA256, nil
		case elliptic.P384():
			return pkix.AlgorithmIdentifier{Algorithm: oidECDSAWithSHA384}, crypto.SHA384, nil
		case elliptic.P521():
			return pkix.AlgorithmIdentifier{Algorithm: oidECDSAWithSHA512}, crypto.SHA512, nil
		}
	case *rsa.PublicKey:
		return pkix.AlgorithmIdentifier{Algorithm: oidSHA256WithRSA, Parameters: asn1.NullRawValue}, crypto.SHA256, nil
	}
	return pkix.AlgorithmIdentifier{}, 0, ErrUnsupportedLeaf
}

// leafExtensions are the extensions, in crypto/x509's order, of a leaf with
// BasicConstraintsValid and IsCA false.
func leafExtensions(leaf *Leaf, issuer *x509.Certificate, subjectEmpty, withAKI bool) ([]pkix.Extension, error) {
	var exts []pkix.Extension
	if leaf.KeyUsage != 0 {
		var a [2]byte
		a[0] = reverseBits(byte(leaf.KeyUsage))
		a[1] = reverseBits(byte(leaf.KeyUsage >> 8))
		bits := a[:1]
		if a[1] != 0 {
			bits = a[:2]
		}
		v, err := asn1.Marshal(asn1.BitString{Bytes: bits, BitLength: bitLength(bits)})
		if err != nil {
			return nil, err
		}
		exts = append(exts, pkix.Extension{Id: oidKeyUsage, Critical: true, Value: v})
	}
	if len(leaf.ExtKeyUsage) > 0 {
		oids := make([]asn1.ObjectIdentifier, 0, len(leaf.ExtKeyUsage))
		for _, u := range leaf.ExtKeyUsage {
			switch u {
			case x509.ExtKeyUsageServerAuth:
				oids = append(oids, oidServerAuth)
			case x509.ExtKeyUsageClientAuth:
				oids = append(oids, oidClientAuth)
			default:
				return nil, ErrUnsupportedLeaf
			}
		}
		v, err := asn1.Marshal(oids)
		if err != nil {
			return nil, err
		}
		exts = append(exts, pkix.Extension{Id: oidExtKeyUsage, Value: v})
	}
	bc, err := asn1.Marshal(basicConstraints{IsCA: false, MaxPathLen: -1})
	if err != nil {
		return nil, err
	}
	exts = append(exts, pkix.Extension{Id: oidBasicConstraints, Critical: true, Value: bc})
	if withAKI && len(issuer.SubjectKeyId) > 0 {
		v, err := asn1.Marshal(authKeyID{ID: issuer.SubjectKeyId})
		if err != nil {
			return nil, err
		}
		exts = append(exts, pkix.Extension{Id: oidAuthorityKeyID, Value: v})
	}
	if len(leaf.DNSNames) > 0 || len(leaf.URIs) > 0 {
		var names []asn1.RawValue
		for _, d := range leaf.DNSNames {
			if err := ia5(d); err != nil {
				return nil, err
			}
			names = append(names, asn1.RawValue{Tag: 2, Class: 2, Bytes: []byte(d)})
		}
		for _, u := range leaf.URIs {
			s := u.String()
			if err := ia5(s); err != nil {
				return nil, err
			}
			names = append(names, asn1.RawValue{Tag: 6, Class: 2, Bytes: []byte(s)})
		}
		v, err := asn1.Marshal(names)
		if err != nil {
			return nil, err
		}
		exts = append(exts, pkix.Extension{Id: oidSubjectAltName, Critical: subjectEmpty, Value: v})
	}
	return exts, nil
}

func ia5(s string) error {
	for _, r := range s {
		if r >= 0x80 {
			return fmt.Errorf("x509util: %q is not an IA5String", s)
		}
	}
	return nil
}

func reverseBits(b byte) byte {
	var r byte
	for i := 0; i < 8; i++ {
		r = r<<1 | b&1
		b >>= 1
	}
	return r
}

// bitLength is the BIT STRING length up to the last set bit.
func bitLength(b []byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		for bit := 0; bit < 8; bit++ {
			if b[i]&(1<<bit) != 0 {
				return i*8 + 8 - bit
			}
		}
	}
	return 0
}
