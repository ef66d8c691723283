package x509pop

import (
	"crypto"
	"crypto/ecdsa"
	cryptorand "crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"

	"github.com/arborid/arbor/upstream"
)

// This file is the agent's half: what an agent sends to attest with a
// certificate and key provisioned on its node.

// AttestationPayload returns the payload an agent sends as
// types.AttestationData{Type: "x509pop"}: certs[0] is the node's leaf
// certificate, followed by any intermediates the server needs to chain it to
// its trust roots.
func AttestationPayload(certs []*x509.Certificate) ([]byte, error) {
	if len(certs) == 0 {
		return nil, errors.New("x509pop: no certificate to attest with")
	}
	data := attestationData{Certificates: make([][]byte, len(certs))}
	for i, c := range certs {
		if c == nil || len(c.Raw) == 0 {
			return nil, fmt.Errorf("x509pop: certificate %d has no DER encoding", i)
		}
		data.Certificates[i] = c.Raw
	}
	out, err := json.Marshal(&data)
	if err != nil {
		return nil, fmt.Errorf("x509pop: encoding payload: %w", err)
	}
	return out, nil
}

// ChallengeResponse answers a server's challenge by signing it with key, the
// private key of the leaf certificate sent in the payload (RSA or ECDSA; any
// crypto.Signer, so the key may live in an HSM or TPM). rand supplies the
// agent's nonce and signing randomness; if nil, crypto/rand.Reader is used.
func ChallengeResponse(key crypto.Signer, challenge []byte, rand io.Reader) ([]byte, error) {
	if rand == nil {
		rand = cryptorand.Reader
	}
	var msg challengeMessage
	if err := json.Unmarshal(challenge, &msg); err != nil {
		return nil, fmt.Errorf("x509pop: decoding challenge: %w", err)
	}
	nonce := make([]byte, nonceSize)
	if _, err := io.ReadFull(rand, nonce); err != nil {
		return nil, fmt.Errorf("x509pop: generating response nonce: %w", err)
	}
	var resp responseMessage
	switch key.Public().(type) {
	case *rsa.PublicKey:
		if msg.RSASignature == nil {
			return nil, errors.New("x509pop: challenge has no rsa_signature for an RSA key")
		}
		digest, err := signedDigest(msg.RSASignature.Nonce, nonce)
		if err != nil {
			return nil, fmt.Errorf("x509pop: challenge: %w", err)
		}
		// Salt as long as the hash: what hardware signers support widely;
		// SPIRE's server verifies any salt length.
		sig, err := key.Sign(rand, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256})
		if err != nil {
			return nil, fmt.Errorf("x509pop: signing challenge: %w", err)
		}
		resp.RSASignature = &rsaResponse{Nonce: nonce, Signature: sig}
	case *ecdsa.PublicKey:
		if msg.ECDSASignature == nil {
			return nil, errors.New("x509pop: challenge has no ecdsa_signature for an ECDSA key")
		}
		digest, err := signedDigest(msg.ECDSASignature.Nonce, nonce)
		if err != nil {
			return nil, fmt.Errorf("x509pop: challenge: %w", err)
		}
		der, err := key.Sign(rand, digest, crypto.SHA256)
		if err != nil {
			return nil, fmt.Errorf("x509pop: signing challenge: %w", err)
		}
		var sig struct{ R, S *big.Int }
		if rest, err := asn1.Unmarshal(der, &sig); err != nil || len(rest) != 0 {
			return nil, errors.New("x509pop: signer returned a malformed ECDSA signature")
		}
		resp.ECDSASignature = &ecdsaResponse{Nonce: nonce, R: sig.R.Bytes(), S: sig.S.Bytes()}
	default:
		return nil, fmt.Errorf("x509pop: unsupported key type %T (want RSA or ECDSA)", key.Public())
	}
	out, err := json.Marshal(&resp)
	if err != nil {
		return nil, fmt.Errorf("x509pop: encoding challenge response: %w", err)
	}
	return out, nil
}

// LoadCertificates reads every CERTIFICATE block of the PEM files at paths,
// in order: a server's trust roots (SPIRE's ca_bundle_path(s)) or an agent's
// certificate chain. A file without certificates is an error.
func LoadCertificates(paths ...string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("x509pop: %w", err)
		}
		certs, err := upstream.ParseCertificatesPEM(data)
		if err != nil {
			return nil, fmt.Errorf("x509pop: %s: %w", p, err)
		}
		out = append(out, certs...)
	}
	return out, nil
}

// LoadIdentity reads an agent's x509pop identity as SPIRE's agent plugin
// configures it: certPath holds the leaf certificate optionally followed by
// intermediates, intermediatesPath (optional, "" for none) more
// intermediates appended to the chain, and keyPath the leaf's private key as
// PEM PKCS#8, PKCS#1 (RSA) or SEC 1 (EC). The key must match the leaf.
func LoadIdentity(certPath, keyPath, intermediatesPath string) ([]*x509.Certificate, crypto.Signer, error) {
	paths := []string{certPath}
	if intermediatesPath != "" {
		paths = append(paths, intermediatesPath)
	}
	certs, err := LoadCertificates(paths...)
	if err != nil {
		return nil, nil, err
	}
	data, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("x509pop: %w", err)
	}
	key, err := parsePrivateKeyPEM(data)
	if err != nil {
		return nil, nil, fmt.Errorf("x509pop: %s: %w", keyPath, err)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if pub, ok := key.Public().(equaler); !ok || !pub.Equal(certs[0].PublicKey) {
		return nil, nil, fmt.Errorf("x509pop: private key %s does not match certificate %s", keyPath, certPath)
	}
	return certs, key, nil
}

// parsePrivateKeyPEM parses the key as every PEM key of arbor is parsed
// and keeps the types x509pop signs challenges with.
func parsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	key, err := upstream.ParsePrivateKeyPEM(data)
	if err != nil {
		return nil, err
	}
	switch key.(type) {
	case *rsa.PrivateKey, *ecdsa.PrivateKey:
		return key, nil
	}
	return nil, fmt.Errorf("unsupported private key type %T (want RSA or ECDSA)", key)
}
