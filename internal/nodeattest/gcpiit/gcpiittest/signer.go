// Package gcpiittest provides fakes of the Google services gcp_iit
// attestation talks to, for tests: a Compute Engine metadata server that
// issues RS256-signed instance identity tokens (MetadataServer), and a
// Google API server (Google) that publishes the signing keys, as a JSON Web
// Key Set and as Google's v1 PEM certificates, and answers the Compute
// API's instances.get. Both speak Google's wire formats over TLS, on
// loopback.
package gcpiittest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"time"
)

// Signer signs instance identity tokens as Google does: RS256, with the
// key's ID in the header.
type Signer struct {
	Key   *rsa.PrivateKey
	KeyID string
}

// NewSigner returns a signer with a fresh RSA-2048 key.
func NewSigner(keyID string) (*Signer, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	return &Signer{Key: k, KeyID: keyID}, nil
}

// LoadSigner reads an RSA private key in PEM (PKCS #8 "PRIVATE KEY" or
// PKCS #1 "RSA PRIVATE KEY").
func LoadSigner(pemData []byte, keyID string) (*Signer, error) {
	block, _ := pem.Decode(pemData)
	if block == nil {
		return nil, errors.New("gcpiittest: no PEM block")
	}
	var k any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("gcpiittest: PEM block %q is not a private key", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("gcpiittest: %w", err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("gcpiittest: %T is not an RSA key", k)
	}
	return &Signer{Key: rk, KeyID: keyID}, nil
}

// Header is the JOSE header Google's tokens carry.
func (s *Signer) Header() map[string]any {
	return map[string]any{"alg": "RS256", "kid": s.KeyID, "typ": "JWT"}
}

// Sign returns the compact JWS of claims (JSON-encoded) under Header.
func (s *Signer) Sign(claims any) (string, error) { return s.SignWithHeader(s.Header(), claims) }

// SignWithHeader returns the compact JWS of claims under header, signed
// RS256 whatever header says: tokens with another alg, kid or extensions.
func (s *Signer) SignWithHeader(header, claims any) (string, error) {
	h, err := json.Marshal(header)
	if err != nil {
		return "", err
	}
	c, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	return s.SignRaw(h, c)
}

// SignRaw signs header and claims as given, byte for byte.
func (s *Signer) SignRaw(header, claims []byte) (string, error) {
	input := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(claims)
	sum := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(nil, s.Key, crypto.SHA256, sum[:])
	if err != nil {
		return "", err
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// JWK is the signer's public key as an entry of Google's JSON Web Key Set.
func (s *Signer) JWK() map[string]string {
	return map[string]string{
		"kty": "RSA",
		"alg": "RS256",
		"use": "sig",
		"kid": s.KeyID,
		"n":   base64.RawURLEncoding.EncodeToString(s.Key.N.Bytes()),
		"e":   base64.RawURLEncoding.EncodeToString(big.NewInt(int64(s.Key.E)).Bytes()),
	}
}

// CertificatePEM is the signer's public key in a self-signed certificate,
// as Google's v1 certs endpoint publishes each key. It is the same for the
// same key.
func (s *Signer) CertificatePEM() (string, error) {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: s.KeyID},
		NotBefore:    time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Date(2036, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, &s.Key.PublicKey, s.Key)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), nil
}

// Claims are an instance identity token's claims in Google's JSON.
type Claims struct {
	Audience        string       `json:"aud"`
	AuthorizedParty string       `json:"azp,omitempty"`
	Expiry          int64        `json:"exp"`
	Google          *GoogleClaim `json:"google,omitempty"`
	IssuedAt        int64        `json:"iat"`
	Issuer          string       `json:"iss"`
	Subject         string       `json:"sub,omitempty"`
}

// GoogleClaim is the "google" claim of a full-format token.
type GoogleClaim struct {
	ComputeEngine ComputeEngine `json:"compute_engine"`
}

// ComputeEngine is the google.compute_engine claim.
type ComputeEngine struct {
	InstanceCreationTimestamp int64    `json:"instance_creation_timestamp"`
	InstanceID                string   `json:"instance_id"`
	InstanceName              string   `json:"instance_name"`
	LicenseID                 []string `json:"license_id,omitempty"`
	ProjectID                 string   `json:"project_id"`
	ProjectNumber             int64    `json:"project_number"`
	Zone                      string   `json:"zone"`
}

// Instance is a Compute Engine instance: what its tokens say about it and
// what instances.get answers.
type Instance struct {
	ProjectID     string
	ProjectNumber int64
	Zone          string
	ID            uint64
	Name          string
	Created       time.Time
	Licenses      []string // license IDs, in tokens asked for with licenses=TRUE
	Status        string   // "" means RUNNING

	// ServiceAccounts are the instance's; the metadata server's "default"
	// is the first.
	ServiceAccounts []ServiceAccount
	Labels          map[string]string
	Metadata        []MetadataItem
	Tags            []string // network tags
}

// ServiceAccount is a service account attached to an instance.
type ServiceAccount struct {
	Email    string
	UniqueID string // the sub and azp of its tokens
	Scopes   []string
}

// MetadataItem is one custom metadata entry; a nil Value is a key without
// a value.
type MetadataItem struct {
	Key   string
	Value *string
}

// TokenLifetime is how long Google's identity tokens are valid.
const TokenLifetime = time.Hour

// Claims returns the claims Google puts in a token for the instance's
// service account sa (nil: the default one) and audience, issued at now;
// full adds the google.compute_engine claim, licenses its license IDs.
func (i Instance) Claims(sa *ServiceAccount, audience string, full, licenses bool, now time.Time) Claims {
	c := Claims{
		Issuer:   "https://accounts.google.com",
		Audience: audience,
		IssuedAt: now.Unix(),
		Expiry:   now.Add(TokenLifetime).Unix(),
	}
	if sa == nil && len(i.ServiceAccounts) > 0 {
		sa = &i.ServiceAccounts[0]
	}
	if sa != nil {
		c.AuthorizedParty, c.Subject = sa.UniqueID, sa.UniqueID
	}
	if full {
		c.Google = &GoogleClaim{ComputeEngine: ComputeEngine{
			ProjectID:                 i.ProjectID,
			ProjectNumber:             i.ProjectNumber,
			Zone:                      i.Zone,
			InstanceID:                strconv.FormatUint(i.ID, 10),
			InstanceName:              i.Name,
			InstanceCreationTimestamp: i.Created.Unix(),
		}}
		if licenses {
			c.Google.ComputeEngine.LicenseID = i.Licenses
		}
	}
	return c
}
