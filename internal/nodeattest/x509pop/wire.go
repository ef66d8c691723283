package x509pop

// The JSON messages exchanged with the agent, field for field as SPIRE's
// x509pop NodeAttestor plugins (agent and server, v1.13.3) encode them; learned
// from SPIRE's plugin docs (doc/plugin_{agent,server}_nodeattestor_x509pop.md)
// and the public source of pkg/common/plugin/x509pop, and checked against
// vectors produced by that package (testdata/spire_v1.13.3_vectors.json).
// []byte fields are standard base64 strings, as encoding/json writes them.
//
//	payload   {"certificates":["<DER leaf>","<DER intermediate>",...]}
//	challenge {"rsa_signature":{"nonce":"<32 bytes>"},"ecdsa_signature":null}
//	          {"rsa_signature":null,"ecdsa_signature":{"nonce":"<32 bytes>"}}
//	response  {"rsa_signature":{"nonce":"<32 bytes>","signature":"<RSA-PSS>"},"ecdsa_signature":null}
//	          {"rsa_signature":null,"ecdsa_signature":{"nonce":"<32 bytes>","r":"<big-endian>","s":"<big-endian>"}}
//
// The signed digest is SHA-256(challenge nonce || response nonce), signed
// directly (not hashed again): RSA-PSS with SHA-256, or ECDSA with r and s as
// minimal big-endian integers. Which member is used follows the leaf's key.

import (
	"crypto/sha256"
	"errors"
)

// nonceSize is the length of both nonces; a response with any other length
// is malformed.
const nonceSize = 32

type attestationData struct {
	// Certificates holds the leaf certificate (first) followed by the
	// intermediates that chain it to a trusted root, each ASN.1 DER.
	Certificates [][]byte `json:"certificates"`
}

type challengeMessage struct {
	RSASignature   *nonceChallenge `json:"rsa_signature"`
	ECDSASignature *nonceChallenge `json:"ecdsa_signature"`
}

type nonceChallenge struct {
	Nonce []byte `json:"nonce"`
}

type responseMessage struct {
	RSASignature   *rsaResponse   `json:"rsa_signature"`
	ECDSASignature *ecdsaResponse `json:"ecdsa_signature"`
}

type rsaResponse struct {
	Nonce     []byte `json:"nonce"`
	Signature []byte `json:"signature"`
}

type ecdsaResponse struct {
	Nonce []byte `json:"nonce"`
	R     []byte `json:"r"`
	S     []byte `json:"s"`
}

var errNonceSize = errors.New("nonce is not 32 bytes")

// signedDigest is what the agent signs: both parties contribute a nonce, so
// neither can choose the signed value alone.
func signedDigest(challengeNonce, responseNonce []byte) ([]byte, error) {
	if len(challengeNonce) != nonceSize || len(responseNonce) != nonceSize {
		return nil, errNonceSize
	}
	h := sha256.New()
	h.Write(challengeNonce)
	h.Write(responseNonce)
	return h.Sum(nil), nil
}
