package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"

	"github.com/go-jose/go-jose/v4"
)

// KeyType is the algorithm and size of a key the manager generates. The zero
// value is KeyTypeECP256.
type KeyType int

// Key types, named as in the topology file's key_type.
const (
	KeyTypeECP256 KeyType = iota
	KeyTypeECP384
	KeyTypeRSA2048
	KeyTypeRSA4096
)

var keyTypeNames = [...]string{
	KeyTypeECP256:  "ec-p256",
	KeyTypeECP384:  "ec-p384",
	KeyTypeRSA2048: "rsa-2048",
	KeyTypeRSA4096: "rsa-4096",
}

// ErrUnknownKeyType is returned by ParseKeyType for a name it does not know.
var ErrUnknownKeyType = errors.New("ca: unknown key type")

// ParseKeyType parses "ec-p256", "ec-p384", "rsa-2048" or "rsa-4096".
func ParseKeyType(s string) (KeyType, error) {
	for k, name := range keyTypeNames {
		if s == name {
			return KeyType(k), nil
		}
	}
	return 0, fmt.Errorf("%w %q (want ec-p256, ec-p384, rsa-2048 or rsa-4096)", ErrUnknownKeyType, s)
}

// String returns the key type's name as accepted by ParseKeyType.
func (k KeyType) String() string {
	if k < 0 || int(k) >= len(keyTypeNames) {
		return fmt.Sprintf("KeyType(%d)", int(k))
	}
	return keyTypeNames[k]
}

// Generate returns a new private key of type k.
func (k KeyType) Generate(rand io.Reader) (crypto.Signer, error) {
	var (
		key crypto.Signer
		err error
	)
	switch k {
	case KeyTypeECP256:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand)
	case KeyTypeECP384:
		key, err = ecdsa.GenerateKey(elliptic.P384(), rand)
	case KeyTypeRSA2048:
		key, err = rsa.GenerateKey(rand, 2048)
	case KeyTypeRSA4096:
		key, err = rsa.GenerateKey(rand, 4096)
	default:
		return nil, fmt.Errorf("%w %v", ErrUnknownKeyType, k)
	}
	if err != nil {
		return nil, fmt.Errorf("ca: generate %v key: %w", k, err)
	}
	return key, nil
}

func (k KeyType) valid() bool { return k >= 0 && int(k) < len(keyTypeNames) }

// jwtAlgorithm returns the JWS algorithm a JWT signing key uses.
func jwtAlgorithm(key crypto.Signer) (jose.SignatureAlgorithm, error) {
	switch pub := key.Public().(type) {
	case *ecdsa.PublicKey:
		switch pub.Curve {
		case elliptic.P256():
			return jose.ES256, nil
		case elliptic.P384():
			return jose.ES384, nil
		case elliptic.P521():
			return jose.ES512, nil
		}
	case *rsa.PublicKey:
		return jose.RS256, nil
	}
	return "", fmt.Errorf("ca: no JWT algorithm for a %T key", key.Public())
}
