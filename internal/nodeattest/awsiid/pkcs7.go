package awsiid

// The RSA-2048 signature of an instance identity document is a CMS
// (PKCS #7) SignedData in BER with indefinite lengths, carrying the document
// itself as its content: sha256 digest, signed attributes (contentType,
// signingTime, CMSAlgorithmProtection, messageDigest), one SignerInfo that
// names the region's AWS certificate by issuer and serial number, and no
// certificates (testdata/aws holds one real signature). Only that shape is
// accepted here: the content is what the identity is read from, so it must
// be the signed content itself, and the certificate that verifies it is
// chosen by the server from the document's region, never taken from the
// envelope.

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
)

var (
	oidSignedData             = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	oidData                   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidSHA256                 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidRSAEncryption          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidSHA256WithRSA          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidAttrContentType        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 3}
	oidAttrMessageDigest      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 4}
	oidAttrAlgorithmProtected = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 52}
)

// Bounds on what the parser accepts. A real signature is about 1.1 KB with
// a handful of nested elements.
const (
	maxSignatureDER = 16 << 10
	maxBERDepth     = 16
)

// errMalformed marks a signature that does not parse; callers map it to
// nodeattest.ErrInvalid. Any other error from verifySignedDocument is a
// signature that parses but does not verify (nodeattest.ErrDenied).
var errMalformed = errors.New("malformed signature")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errMalformed, fmt.Sprintf(format, args...))
}

type contentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue `asn1:"explicit,tag:0"`
}

type signedData struct {
	Version          int
	DigestAlgorithms []algorithmIdentifier `asn1:"set"`
	EncapContent     encapContentInfo
	Certificates     asn1.RawValue `asn1:"optional,tag:0"`
	CRLs             asn1.RawValue `asn1:"optional,tag:1"`
	SignerInfos      []signerInfo  `asn1:"set"`
}

type encapContentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     []byte `asn1:"explicit,optional,tag:0"`
}

type signerInfo struct {
	Version            int
	IssuerAndSerial    issuerAndSerial
	DigestAlgorithm    algorithmIdentifier
	SignedAttrs        asn1.RawValue `asn1:"optional,tag:0"`
	SignatureAlgorithm algorithmIdentifier
	Signature          []byte
	UnsignedAttrs      asn1.RawValue `asn1:"optional,tag:1"`
}

type issuerAndSerial struct {
	Issuer asn1.RawValue
	Serial *big.Int
}

// algorithmIdentifier is pkix.AlgorithmIdentifier with the parameters kept
// raw: AWS omits them for sha256 and sends NULL for the RSA algorithms.
type algorithmIdentifier struct {
	Algorithm  asn1.ObjectIdentifier
	Parameters asn1.RawValue `asn1:"optional"`
}

type attribute struct {
	Type   asn1.ObjectIdentifier
	Values asn1.RawValue `asn1:"set"`
}

// cmsAlgorithmProtection is RFC 6211's attribute: the algorithms the signer
// used, signed so that they cannot be swapped.
type cmsAlgorithmProtection struct {
	DigestAlgorithm    algorithmIdentifier
	SignatureAlgorithm algorithmIdentifier `asn1:"optional,tag:1"`
}

// signedDocument is a SignedData parsed far enough to verify it.
type signedDocument struct {
	content []byte     // the encapsulated content: the document AWS signed
	signer  signerInfo // the only SignerInfo
	// signedBytes is what the signature covers: the DER SET of the signed
	// attributes, or the content when there are none.
	signedBytes []byte
}

// parseSignedDocument parses a CMS SignedData (BER or DER) with attached
// content and exactly one signer. It does not verify anything.
func parseSignedDocument(ber []byte) (*signedDocument, error) {
	if len(ber) > maxSignatureDER {
		return nil, malformed("signature is %d bytes, at most %d allowed", len(ber), maxSignatureDER)
	}
	der, err := berToDER(ber)
	if err != nil {
		return nil, err
	}
	var ci contentInfo
	if rest, err := asn1.Unmarshal(der, &ci); err != nil {
		return nil, malformed("content info: %v", err)
	} else if len(rest) != 0 {
		return nil, malformed("%d bytes after the content info", len(rest))
	}
	if !ci.ContentType.Equal(oidSignedData) {
		return nil, malformed("content type %v is not signedData", ci.ContentType)
	}
	var sd signedData
	if rest, err := asn1.Unmarshal(ci.Content.Bytes, &sd); err != nil {
		return nil, malformed("signed data: %v", err)
	} else if len(rest) != 0 {
		return nil, malformed("%d bytes after the signed data", len(rest))
	}
	if !sd.EncapContent.ContentType.Equal(oidData) {
		return nil, malformed("encapsulated content type %v is not data", sd.EncapContent.ContentType)
	}
	if len(sd.EncapContent.Content) == 0 {
		return nil, malformed("signature carries no document (detached signatures are not accepted)")
	}
	if len(sd.SignerInfos) != 1 {
		return nil, malformed("signature has %d signers, want exactly 1", len(sd.SignerInfos))
	}
	si := sd.SignerInfos[0]
	if si.Version != 1 {
		return nil, malformed("signer info version %d, want 1 (issuer and serial number)", si.Version)
	}
	if !si.DigestAlgorithm.Algorithm.Equal(oidSHA256) || !absentOrNull(si.DigestAlgorithm.Parameters) {
		return nil, malformed("digest algorithm %v is not sha256", si.DigestAlgorithm.Algorithm)
	}
	switch alg := si.SignatureAlgorithm.Algorithm; {
	case alg.Equal(oidRSAEncryption), alg.Equal(oidSHA256WithRSA):
	default:
		return nil, malformed("signature algorithm %v is not RSA PKCS #1 v1.5 with sha256", alg)
	}
	doc := &signedDocument{content: sd.EncapContent.Content, signer: si, signedBytes: sd.EncapContent.Content}
	if len(si.SignedAttrs.FullBytes) != 0 {
		if err := checkSignedAttributes(si, doc.content); err != nil {
			return nil, err
		}
		// The signature covers the attributes' DER with the SET tag, not
		// the [0] IMPLICIT tag they travel under (RFC 5652, 5.4).
		doc.signedBytes = append([]byte{0x31}, si.SignedAttrs.FullBytes[1:]...)
	}
	return doc, nil
}

// checkSignedAttributes checks the attributes that bind the signature to
// the content: contentType is data and messageDigest is the content's
// sha256, each present exactly once, and an algorithm protection attribute,
// when present, names the algorithms the signer info does.
func checkSignedAttributes(si signerInfo, content []byte) error {
	seen := map[string]bool{}
	rest := si.SignedAttrs.Bytes
	var digestOK, typeOK bool
	for len(rest) > 0 {
		var a attribute
		var err error
		if rest, err = asn1.Unmarshal(rest, &a); err != nil {
			return malformed("signed attribute: %v", err)
		}
		key := a.Type.String()
		if seen[key] {
			return malformed("signed attribute %v appears twice", a.Type)
		}
		seen[key] = true
		var value asn1.RawValue
		if r, err := asn1.Unmarshal(a.Values.Bytes, &value); err != nil || len(r) != 0 {
			return malformed("signed attribute %v must have exactly one value", a.Type)
		}
		switch {
		case a.Type.Equal(oidAttrContentType):
			var t asn1.ObjectIdentifier
			if _, err := asn1.Unmarshal(value.FullBytes, &t); err != nil || !t.Equal(oidData) {
				return malformed("signed content type attribute is not data")
			}
			typeOK = true
		case a.Type.Equal(oidAttrMessageDigest):
			var d []byte
			if _, err := asn1.Unmarshal(value.FullBytes, &d); err != nil {
				return malformed("message digest attribute: %v", err)
			}
			sum := sha256.Sum256(content)
			if subtle.ConstantTimeCompare(d, sum[:]) != 1 {
				return errors.New("message digest attribute does not match the signed document")
			}
			digestOK = true
		case a.Type.Equal(oidAttrAlgorithmProtected):
			var p cmsAlgorithmProtection
			if _, err := asn1.Unmarshal(value.FullBytes, &p); err != nil {
				return malformed("algorithm protection attribute: %v", err)
			}
			if !p.DigestAlgorithm.Algorithm.Equal(si.DigestAlgorithm.Algorithm) ||
				(len(p.SignatureAlgorithm.Algorithm) != 0 && !p.SignatureAlgorithm.Algorithm.Equal(si.SignatureAlgorithm.Algorithm)) {
				return errors.New("algorithm protection attribute names other algorithms than the signer info")
			}
		}
	}
	if !typeOK || !digestOK {
		return malformed("signed attributes lack contentType or messageDigest")
	}
	return nil
}

func absentOrNull(params asn1.RawValue) bool {
	return len(params.FullBytes) == 0 || bytes.Equal(params.FullBytes, asn1.NullBytes)
}

// verify checks the signature with the first of anchors that the signer
// info names by issuer and serial number. The certificates are the
// server's own for the document's region; nothing from the envelope is
// trusted.
func (d *signedDocument) verify(anchors []*anchor) error {
	ias := d.signer.IssuerAndSerial
	for _, a := range anchors {
		if !bytes.Equal(ias.Issuer.FullBytes, a.cert.RawIssuer) || ias.Serial == nil || ias.Serial.Cmp(a.cert.SerialNumber) != 0 {
			continue
		}
		sum := sha256.Sum256(d.signedBytes)
		if err := rsa.VerifyPKCS1v15(a.key, crypto.SHA256, sum[:], d.signer.Signature); err != nil {
			return errors.New("RSA signature verification failed")
		}
		return nil
	}
	return fmt.Errorf("signer (serial %x) is not a trusted instance identity certificate of the region", ias.Serial)
}

// anchor is a trusted instance identity certificate, parsed once.
type anchor struct {
	cert *x509.Certificate
	key  *rsa.PublicKey
}

// berToDER re-encodes BER as DER far enough for encoding/asn1: indefinite
// lengths become minimal definite ones and constructed OCTET STRINGs are
// joined into one primitive string. Definite-length primitive content is
// copied unchanged.
func berToDER(in []byte) ([]byte, error) {
	out, rest, err := berElement(in, 0)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, malformed("%d bytes after the signature", len(rest))
	}
	return out, nil
}

// berElement converts the first element of in and returns it with what
// follows it.
func berElement(in []byte, depth int) (out, rest []byte, err error) {
	if depth > maxBERDepth {
		return nil, nil, malformed("nested deeper than %d", maxBERDepth)
	}
	if len(in) < 2 {
		return nil, nil, malformed("truncated element")
	}
	tag := in[0]
	if tag&0x1f == 0x1f {
		return nil, nil, malformed("high tag numbers are not used in instance identity signatures")
	}
	constructed := tag&0x20 != 0
	body := in[2:]
	switch l := in[1]; {
	case l == 0x80: // indefinite: constructed elements until end-of-contents
		if !constructed {
			return nil, nil, malformed("indefinite length on a primitive element")
		}
		var children [][]byte
		for {
			if len(body) < 2 {
				return nil, nil, malformed("missing end-of-contents")
			}
			if body[0] == 0 && body[1] == 0 {
				body = body[2:]
				break
			}
			var child []byte
			if child, body, err = berElement(body, depth+1); err != nil {
				return nil, nil, err
			}
			children = append(children, child)
		}
		out, err = joinChildren(tag, children)
		return out, body, err
	case l < 0x80:
		if int(l) > len(body) {
			return nil, nil, malformed("element longer than its input")
		}
		return berContent(tag, body[:l], body[l:], depth)
	default:
		n := int(l & 0x7f)
		if n > 3 || n > len(body) {
			return nil, nil, malformed("length of %d bytes", n)
		}
		size := 0
		for _, b := range body[:n] {
			size = size<<8 | int(b)
		}
		body = body[n:]
		if size > len(body) {
			return nil, nil, malformed("element longer than its input")
		}
		return berContent(tag, body[:size], body[size:], depth)
	}
}

// berContent converts a definite-length element whose content is content.
func berContent(tag byte, content, rest []byte, depth int) ([]byte, []byte, error) {
	if tag == 0 && len(content) == 0 {
		return nil, nil, malformed("unexpected end-of-contents")
	}
	if tag&0x20 == 0 {
		return derHeader(tag, content), rest, nil
	}
	var children [][]byte
	for len(content) > 0 {
		child, r, err := berElement(content, depth+1)
		if err != nil {
			return nil, nil, err
		}
		children = append(children, child)
		content = r
	}
	out, err := joinChildren(tag, children)
	return out, rest, err
}

// joinChildren encodes a constructed element from its converted children;
// a constructed OCTET STRING becomes one primitive OCTET STRING.
func joinChildren(tag byte, children [][]byte) ([]byte, error) {
	var content []byte
	if tag == 0x24 {
		for _, c := range children {
			if c[0] != 0x04 {
				return nil, malformed("constructed octet string holds a non-octet-string")
			}
			_, body, err := splitDER(c)
			if err != nil {
				return nil, err
			}
			content = append(content, body...)
		}
		return derHeader(0x04, content), nil
	}
	for _, c := range children {
		content = append(content, c...)
	}
	return derHeader(tag, content), nil
}

// splitDER returns the header length and content of a DER element this
// file produced.
func splitDER(der []byte) (int, []byte, error) {
	if len(der) < 2 {
		return 0, nil, malformed("truncated element")
	}
	if der[1] < 0x80 {
		return 2, der[2:], nil
	}
	n := int(der[1] & 0x7f)
	if len(der) < 2+n {
		return 0, nil, malformed("truncated element")
	}
	return 2 + n, der[2+n:], nil
}

// derHeader returns tag, the minimal DER length of content, and content.
func derHeader(tag byte, content []byte) []byte {
	n := len(content)
	var hdr []byte
	switch {
	case n < 0x80:
		hdr = []byte{tag, byte(n)}
	case n < 0x100:
		hdr = []byte{tag, 0x81, byte(n)}
	case n < 0x10000:
		hdr = []byte{tag, 0x82, byte(n >> 8), byte(n)}
	default:
		hdr = []byte{tag, 0x83, byte(n >> 16), byte(n >> 8), byte(n)}
	}
	return append(hdr, content...)
}
