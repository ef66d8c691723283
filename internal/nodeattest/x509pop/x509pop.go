// Package x509pop attests nodes provisioned out of band with an X.509
// certificate and its private key (SPIRE's "x509pop" attestation type): the
// server checks that the certificate chains to configured roots and that the
// agent holds the key by having it sign a challenge. Both halves live here —
// the server's Attestor and the agent's AttestationPayload and
// ChallengeResponse — speaking the same JSON as SPIRE's x509pop plugins, so
// either side can be a real SPIRE v1.13 peer.
package x509pop

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // the agent ID fingerprint is SHA-1 by SPIRE's definition
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/selector"
)

// Type is the attestation data type, and the type of the selectors produced.
const Type = "x509pop"

// maxCertificates bounds the chain an agent may send, so a hostile payload
// cannot make chain building expensive. Real chains have a handful.
const maxCertificates = 32

// Config configures an Attestor. It must not be modified after New.
type Config struct {
	// TrustDomain is the server's trust domain; required.
	TrustDomain spiffeid.TrustDomain
	// TrustRoots are the CA certificates node certificates must chain to
	// (SPIRE's ca_bundle_path / ca_bundle_paths); at least one is required.
	TrustRoots []*x509.Certificate
	// AgentPathTemplate is a text/template for the agent ID's path below
	// /spire/agent (SPIRE's agent_path_template); it must render an absolute
	// path. If empty, DefaultAgentPathTemplate is used. See NewPathTemplate
	// for the data and functions available.
	AgentPathTemplate string
	// Now returns the current time, at which certificates must be valid; if
	// nil, time.Now is used.
	Now func() time.Time
	// Rand is the source of challenge nonces; if nil, crypto/rand.Reader.
	// Attest reads it from concurrent calls, so it must be safe for
	// concurrent use (tests pass a fixed reader to pin the nonce).
	Rand io.Reader
}

// Attestor verifies x509pop attestations on the server.
type Attestor struct {
	td    spiffeid.TrustDomain
	roots *x509.CertPool
	path  *PathTemplate
	now   func() time.Time
	rand  io.Reader
}

var _ nodeattest.Attestor = (*Attestor)(nil)

// New returns an Attestor for c.
func New(c Config) (*Attestor, error) {
	if c.TrustDomain.IsZero() {
		return nil, errors.New("x509pop: trust domain is required")
	}
	if len(c.TrustRoots) == 0 {
		return nil, errors.New("x509pop: at least one trust root is required")
	}
	roots := x509.NewCertPool()
	for _, r := range c.TrustRoots {
		if r == nil {
			return nil, errors.New("x509pop: nil trust root")
		}
		roots.AddCert(r)
	}
	text := c.AgentPathTemplate
	if text == "" {
		text = DefaultAgentPathTemplate
	}
	path, err := NewPathTemplate(text)
	if err != nil {
		return nil, err
	}
	a := &Attestor{td: c.TrustDomain, roots: roots, path: path, now: c.Now, rand: c.Rand}
	if a.now == nil {
		a.now = time.Now
	}
	if a.rand == nil {
		a.rand = rand.Reader
	}
	return a, nil
}

// Type returns "x509pop".
func (a *Attestor) Type() string { return Type }

// Attest verifies the certificate chain in payload at Now, sends one
// challenge for the leaf's key, verifies the signature in the response and
// returns the agent ID rendered by the path template and SPIRE's selectors:
//
//	x509pop:subject:cn:<leaf subject common name>     (when not empty)
//	x509pop:ca:fingerprint:<SHA-1 hex>                 (each certificate above the leaf in a verified chain)
//	x509pop:serialnumber:<leaf serial, lowercase hex, even length>
//	x509pop:san:<key>:<value>                          (each leaf URI SAN x509pop://<trust domain>/<key>/<value>)
//
// The agent can re-attest with the same certificate.
func (a *Attestor) Attest(ctx context.Context, payload []byte, challenge nodeattest.ChallengeFunc) (*nodeattest.Result, error) {
	leaf, intermediates, err := parsePayload(payload)
	if err != nil {
		return nil, err
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         a.roots,
		Intermediates: intermediates,
		CurrentTime:   a.now(),
		// Like SPIRE: node certificates need not carry the clientAuth
		// extended key usage; possession of the key is proven below.
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, fmt.Errorf("x509pop: %w: certificate verification failed: %v", nodeattest.ErrDenied, err)
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return nil, fmt.Errorf("x509pop: %w: leaf certificate key usage lacks digitalSignature", nodeattest.ErrDenied)
	}

	nonce := make([]byte, nonceSize)
	if _, err := io.ReadFull(a.rand, nonce); err != nil {
		return nil, fmt.Errorf("x509pop: generating challenge nonce: %w", err)
	}
	var msg challengeMessage
	switch leaf.PublicKey.(type) {
	case *rsa.PublicKey:
		msg.RSASignature = &nonceChallenge{Nonce: nonce}
	case *ecdsa.PublicKey:
		msg.ECDSASignature = &nonceChallenge{Nonce: nonce}
	default:
		return nil, fmt.Errorf("x509pop: %w: unsupported leaf public key type %T (want RSA or ECDSA)", nodeattest.ErrDenied, leaf.PublicKey)
	}
	challengeJSON, err := json.Marshal(&msg)
	if err != nil {
		return nil, fmt.Errorf("x509pop: encoding challenge: %w", err)
	}
	responseJSON, err := challenge(ctx, challengeJSON)
	if err != nil {
		return nil, fmt.Errorf("x509pop: challenge: %w", err)
	}
	if err := verifyResponse(leaf.PublicKey, nonce, responseJSON); err != nil {
		return nil, err
	}

	sans := uriSANSelectors(leaf, a.td)
	agentID, err := a.path.AgentID(a.td, leaf, sans)
	if err != nil {
		return nil, fmt.Errorf("x509pop: %w: %v", nodeattest.ErrDenied, err)
	}
	return &nodeattest.Result{
		AgentID:     agentID,
		Selectors:   buildSelectors(leaf, chains, sans),
		CanReattest: true,
	}, nil
}

func parsePayload(payload []byte) (*x509.Certificate, *x509.CertPool, error) {
	var data attestationData
	if err := json.Unmarshal(payload, &data); err != nil {
		return nil, nil, fmt.Errorf("x509pop: %w: decoding payload: %v", nodeattest.ErrInvalid, err)
	}
	switch n := len(data.Certificates); {
	case n == 0:
		return nil, nil, fmt.Errorf("x509pop: %w: payload has no certificate", nodeattest.ErrInvalid)
	case n > maxCertificates:
		return nil, nil, fmt.Errorf("x509pop: %w: payload has %d certificates, at most %d allowed", nodeattest.ErrInvalid, n, maxCertificates)
	}
	leaf, err := x509.ParseCertificate(data.Certificates[0])
	if err != nil {
		return nil, nil, fmt.Errorf("x509pop: %w: parsing leaf certificate: %v", nodeattest.ErrInvalid, err)
	}
	intermediates := x509.NewCertPool()
	for i, der := range data.Certificates[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil, fmt.Errorf("x509pop: %w: parsing intermediate certificate %d: %v", nodeattest.ErrInvalid, i, err)
		}
		intermediates.AddCert(c)
	}
	return leaf, intermediates, nil
}

// verifyResponse checks that responseJSON answers the challenge nonce with a
// signature by the leaf's key. A response that does not parse or does not
// fit the challenge is ErrInvalid; a signature that does not verify is
// ErrDenied.
func verifyResponse(pub crypto.PublicKey, challengeNonce, responseJSON []byte) error {
	var resp responseMessage
	if err := json.Unmarshal(responseJSON, &resp); err != nil {
		return fmt.Errorf("x509pop: %w: decoding challenge response: %v", nodeattest.ErrInvalid, err)
	}
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		r := resp.RSASignature
		if r == nil {
			return fmt.Errorf("x509pop: %w: challenge response lacks rsa_signature", nodeattest.ErrInvalid)
		}
		digest, err := signedDigest(challengeNonce, r.Nonce)
		if err != nil {
			return fmt.Errorf("x509pop: %w: challenge response: %v", nodeattest.ErrInvalid, err)
		}
		// SPIRE's agent signs with the maximum salt length; accept any.
		opts := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: crypto.SHA256}
		if err := rsa.VerifyPSS(pub, crypto.SHA256, digest, r.Signature, opts); err != nil {
			return fmt.Errorf("x509pop: %w: RSA signature verification failed", nodeattest.ErrDenied)
		}
	case *ecdsa.PublicKey:
		e := resp.ECDSASignature
		if e == nil {
			return fmt.Errorf("x509pop: %w: challenge response lacks ecdsa_signature", nodeattest.ErrInvalid)
		}
		digest, err := signedDigest(challengeNonce, e.Nonce)
		if err != nil {
			return fmt.Errorf("x509pop: %w: challenge response: %v", nodeattest.ErrInvalid, err)
		}
		r, s := new(big.Int).SetBytes(e.R), new(big.Int).SetBytes(e.S)
		if !ecdsa.Verify(pub, digest, r, s) {
			return fmt.Errorf("x509pop: %w: ECDSA signature verification failed", nodeattest.ErrDenied)
		}
	default:
		return fmt.Errorf("x509pop: %w: unsupported public key type %T", nodeattest.ErrDenied, pub)
	}
	return nil
}

// Fingerprint returns the SHA-1 hash of the certificate's DER encoding as
// lowercase hex, the default last segment of an x509pop agent ID.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha1.Sum(cert.Raw) //nolint:gosec // SPIRE's definition, not a security boundary
	return hex.EncodeToString(sum[:])
}

// SerialNumberHex returns a serial number as lowercase hex padded to an even
// number of digits, as SPIRE formats it in selectors and templates.
func SerialNumberHex(serial *big.Int) string {
	s := serial.Text(16)
	if len(s)%2 == 1 {
		s = "0" + s
	}
	return s
}

// uriSANSelectors returns key -> value for every leaf URI SAN of the form
// x509pop://<trust domain>/<key>/<value> (the value may contain slashes; a
// later URI with the same key wins, as in SPIRE).
func uriSANSelectors(leaf *x509.Certificate, td spiffeid.TrustDomain) map[string]string {
	prefix := Type + "://" + td.Name() + "/"
	out := map[string]string{}
	for _, u := range leaf.URIs {
		if !strings.HasPrefix(u.String(), prefix) {
			continue
		}
		key, value, ok := strings.Cut(strings.Trim(u.Path, "/"), "/")
		if !ok {
			continue
		}
		out[key] = value
	}
	return out
}

func buildSelectors(leaf *x509.Certificate, chains [][]*x509.Certificate, sans map[string]string) []selector.Selector {
	var sels []selector.Selector
	add := func(value string) { sels = append(sels, selector.Selector{Type: Type, Value: value}) }
	if cn := leaf.Subject.CommonName; cn != "" {
		add("subject:cn:" + cn)
	}
	for _, chain := range chains {
		for _, c := range chain[1:] {
			add("ca:fingerprint:" + Fingerprint(c))
		}
	}
	if leaf.SerialNumber != nil {
		add("serialnumber:" + SerialNumberHex(leaf.SerialNumber))
	}
	for k, v := range sans {
		add("san:" + k + ":" + v)
	}
	return selector.Sorted(sels)
}
