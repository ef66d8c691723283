// Package awsiidtest provides local stand-ins for the AWS services the
// aws_iid attestor talks to, speaking their wire formats: a Signer that
// signs instance identity documents as AWS does, an instance metadata
// service (IMDSv2) and a Query API server answering EC2 DescribeInstances,
// IAM GetInstanceProfile and STS AssumeRole. Only tests import it.
package awsiidtest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// Signer signs instance identity documents the way AWS signs them for one
// region: an RSA key and the self-signed certificate the attestor is told
// to trust for that region (Config.SigningCertificates).
type Signer struct {
	Key  *rsa.PrivateKey
	Cert *x509.Certificate
	// Now is the signing time written into the signature; nil means
	// time.Now.
	Now func() time.Time
}

// NewSigner generates an RSA-2048 key and a certificate for it shaped like
// AWS's (subject O=Amazon Web Services LLC, self-signed, valid for a
// century).
func NewSigner() (*Signer, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	return signerForKey(key)
}

// LoadSigner reads a Signer from PEM holding an RSA PRIVATE KEY (PKCS #1)
// or PRIVATE KEY (PKCS #8) block and, optionally, its CERTIFICATE; without
// one a certificate is made, with a serial derived from the key so that
// the same key always yields the same issuer and serial.
func LoadSigner(pemData []byte) (*Signer, error) {
	var key *rsa.PrivateKey
	var cert *x509.Certificate
	for rest := pemData; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch b.Type {
		case "RSA PRIVATE KEY":
			k, err := x509.ParsePKCS1PrivateKey(b.Bytes)
			if err != nil {
				return nil, err
			}
			key = k
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				return nil, err
			}
			rk, ok := k.(*rsa.PrivateKey)
			if !ok {
				return nil, fmt.Errorf("awsiidtest: private key is %T, want RSA", k)
			}
			key = rk
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, err
			}
			cert = c
		}
	}
	if key == nil {
		return nil, errors.New("awsiidtest: no RSA private key in PEM")
	}
	if cert == nil {
		return signerForKey(key)
	}
	return &Signer{Key: key, Cert: cert}, nil
}

func signerForKey(key *rsa.PrivateKey) (*Signer, error) {
	sum := sha256.Sum256(key.N.Bytes())
	tmpl := &x509.Certificate{
		SerialNumber: new(big.Int).SetBytes(sum[:8]),
		Subject: pkix.Name{
			Country:      []string{"US"},
			Province:     []string{"Washington State"},
			Locality:     []string{"Seattle"},
			Organization: []string{"Amazon Web Services LLC"},
		},
		NotBefore:             time.Date(2015, 8, 14, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2195, 1, 17, 0, 0, 0, 0, time.UTC),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Signer{Key: key, Cert: cert}, nil
}

// PEM returns the signer's key (PKCS #8) and certificate as PEM.
func (s *Signer) PEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(s.Key)
	if err != nil {
		return nil, err
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	return append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Cert.Raw})...), nil
}

// SignOptions change what Sign produces, for tests of what the attestor
// refuses.
type SignOptions struct {
	// EmbedCertificates puts these certificates into the SignedData's
	// certificates field (AWS sends none).
	EmbedCertificates []*x509.Certificate
	// Content, when set, is the content carried in the signature instead
	// of the document that was signed (the messageDigest stays the
	// document's).
	Content []byte
	// NoSignedAttributes signs the content directly, without signed
	// attributes.
	NoSignedAttributes bool
	// DER encodes with definite lengths throughout (AWS uses BER with
	// indefinite lengths).
	DER bool
}

// Sign returns the RSA-2048 signature of document as the metadata service
// serves it at /latest/dynamic/instance-identity/rsa2048: base64 of a CMS
// SignedData in BER with indefinite lengths carrying the document, a sha256
// digest, signed attributes (contentType, signingTime,
// CMSAlgorithmProtection, messageDigest), sha256WithRSAEncryption and one
// SignerInfo naming the certificate by issuer and serial, wrapped at 64
// characters a line.
func (s *Signer) Sign(document []byte) (string, error) {
	return s.SignWith(document, SignOptions{})
}

// SignWith is Sign with options.
func (s *Signer) SignWith(document []byte, opts SignOptions) (string, error) {
	der, err := s.signedData(document, opts)
	if err != nil {
		return "", err
	}
	return wrap64(base64.StdEncoding.EncodeToString(der)), nil
}

// SignRSA1024 returns what the metadata service serves at
// Signatures returns both signatures the metadata service serves beside
// document, as NewIMDS and NewPlainIMDS take them: the RSA-1024 one
// (SignRSA1024) and the RSA-2048 PKCS #7 one (Sign).
func (s *Signer) Signatures(document []byte) (rsa1024, rsa2048 string, err error) {
	if rsa2048, err = s.Sign(document); err != nil {
		return "", "", err
	}
	if rsa1024, err = s.SignRSA1024(document); err != nil {
		return "", "", err
	}
	return rsa1024, rsa2048, nil
}

// /latest/dynamic/instance-identity/signature: base64 of a PKCS #1 v1.5
// sha256 signature of the document (AWS uses a 1024-bit key there; the
// signer's key stands in for it).
func (s *Signer) SignRSA1024(document []byte) (string, error) {
	sum := sha256.Sum256(document)
	sig, err := rsa.SignPKCS1v15(rand.Reader, s.Key, crypto.SHA256, sum[:])
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

var (
	oidSignedData       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	oidData             = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidSHA256           = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidSHA256WithRSA    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidContentType      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 3}
	oidMessageDigest    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 4}
	oidSigningTime      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 5}
	oidAlgorithmProtect = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 52}
)

type algID struct {
	Algorithm  asn1.ObjectIdentifier
	Parameters asn1.RawValue `asn1:"optional"`
}

var (
	sha256Alg        = algID{Algorithm: oidSHA256}
	sha256RSAAlg     = algID{Algorithm: oidSHA256WithRSA, Parameters: asn1.RawValue{FullBytes: asn1.NullBytes}}
	errEmptyDocument = errors.New("awsiidtest: empty document")
)

func mustMarshal(v any) []byte {
	b, err := asn1.Marshal(v)
	if err != nil {
		panic(err) // only fixed, well-formed structures are marshalled
	}
	return b
}

// attr encodes an attribute with one value.
func attr(t asn1.ObjectIdentifier, value []byte) []byte {
	return tlv(0x30, mustMarshal(t), tlv(0x31, value))
}

func (s *Signer) signedData(document []byte, opts SignOptions) ([]byte, error) {
	if len(document) == 0 {
		return nil, errEmptyDocument
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	sum := sha256.Sum256(document)
	toSign := document
	var signedAttrs []byte
	if !opts.NoSignedAttributes {
		protection := tlv(0x30, mustMarshal(sha256Alg), tlv(0xa1, mustMarshal(oidSHA256WithRSA), asn1.NullBytes))
		// DER order of a SET OF: by encoding; these four sort as listed.
		attrs := concat(
			attr(oidContentType, mustMarshal(oidData)),
			attr(oidSigningTime, mustMarshal(now().UTC().Truncate(time.Second))),
			attr(oidAlgorithmProtect, protection),
			attr(oidMessageDigest, mustMarshal(sum[:])),
		)
		toSign = tlv(0x31, attrs)
		signedAttrs = tlv(0xa0, attrs)
	}
	digest := sha256.Sum256(toSign)
	sig, err := rsa.SignPKCS1v15(rand.Reader, s.Key, crypto.SHA256, digest[:])
	if err != nil {
		return nil, err
	}
	signerInfo := tlv(0x30,
		mustMarshal(1),
		tlv(0x30, s.Cert.RawIssuer, mustMarshal(s.Cert.SerialNumber)),
		mustMarshal(sha256Alg),
		signedAttrs,
		mustMarshal(sha256RSAAlg),
		mustMarshal(sig),
	)
	content := document
	if opts.Content != nil {
		content = opts.Content
	}
	var certs []byte
	if len(opts.EmbedCertificates) > 0 {
		var raw []byte
		for _, c := range opts.EmbedCertificates {
			raw = append(raw, c.Raw...)
		}
		certs = tlv(0xa0, raw)
	}
	digestAlgs := tlv(0x31, mustMarshal(sha256Alg))
	if opts.DER {
		encap := tlv(0x30, mustMarshal(oidData), tlv(0xa0, tlv(0x04, content)))
		sd := tlv(0x30, mustMarshal(1), digestAlgs, encap, certs, tlv(0x31, signerInfo))
		return tlv(0x30, mustMarshal(oidSignedData), tlv(0xa0, sd)), nil
	}
	// As AWS: indefinite lengths down to the content, which is a
	// constructed OCTET STRING holding one primitive one.
	encap := indefinite(0x30, mustMarshal(oidData), indefinite(0xa0, indefinite(0x24, tlv(0x04, content))))
	sd := indefinite(0x30, mustMarshal(1), digestAlgs, encap, certs, tlv(0x31, signerInfo))
	return indefinite(0x30, mustMarshal(oidSignedData), indefinite(0xa0, sd)), nil
}

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// tlv encodes a DER element with a definite minimal length.
func tlv(tag byte, parts ...[]byte) []byte {
	content := concat(parts...)
	n := len(content)
	var hdr []byte
	switch {
	case n < 0x80:
		hdr = []byte{tag, byte(n)}
	case n < 0x100:
		hdr = []byte{tag, 0x81, byte(n)}
	default:
		hdr = []byte{tag, 0x82, byte(n >> 8), byte(n)}
	}
	return append(hdr, content...)
}

// indefinite encodes a BER constructed element with an indefinite length.
func indefinite(tag byte, parts ...[]byte) []byte {
	out := append([]byte{tag, 0x80}, concat(parts...)...)
	return append(out, 0, 0)
}

func wrap64(s string) string {
	var b strings.Builder
	for len(s) > 64 {
		b.WriteString(s[:64])
		b.WriteByte('\n')
		s = s[64:]
	}
	b.WriteString(s)
	return b.String()
}

// Document is an instance identity document.
type Document struct {
	AccountID        string
	Architecture     string
	AvailabilityZone string
	ImageID          string
	InstanceID       string
	InstanceType     string
	PendingTime      time.Time
	PrivateIP        string
	Region           string
}

// JSON returns the document as the metadata service serves it: AWS's key
// order, two-space indentation and " : " separators, no final newline.
func (d Document) JSON() []byte {
	q := func(s string) string {
		b, _ := json.Marshal(s)
		return string(b)
	}
	lines := []string{
		`"accountId" : ` + q(d.AccountID),
		`"architecture" : ` + q(d.Architecture),
		`"availabilityZone" : ` + q(d.AvailabilityZone),
		`"billingProducts" : null`,
		`"devpayProductCodes" : null`,
		`"marketplaceProductCodes" : null`,
		`"imageId" : ` + q(d.ImageID),
		`"instanceId" : ` + q(d.InstanceID),
		`"instanceType" : ` + q(d.InstanceType),
		`"kernelId" : null`,
		`"pendingTime" : ` + q(d.PendingTime.UTC().Format(time.RFC3339)),
		`"privateIp" : ` + q(d.PrivateIP),
		`"ramdiskId" : null`,
		`"region" : ` + q(d.Region),
		`"version" : "2017-09-30"`,
	}
	return []byte("{\n  " + strings.Join(lines, ",\n  ") + "\n}")
}
