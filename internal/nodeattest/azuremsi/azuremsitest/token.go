// Package azuremsitest fakes the Azure services that azure_msi attestation
// talks to, each speaking its real wire format over TLS on loopback:
// Microsoft Entra ID's OpenID discovery, signing keys and client
// credentials grant (Entra), a VM's instance metadata service issuing
// managed identity tokens (IMDS), and the Azure Resource Manager reads of
// virtual machines and network interfaces (ARM). Tokens are real RS256
// JWTs, signed with test keys (Key) and carrying the claims Entra ID puts in
// a managed identity's v1 access token (Claims).
package azuremsitest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // x5t is a SHA-1 thumbprint by definition
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// Key is a token signing key, published by Entra under ID.
type Key struct {
	ID      string
	Private *rsa.PrivateKey
	// Cert is a self-signed certificate of the key, published as x5c as
	// Entra ID does (verifiers must not need it).
	Cert *x509.Certificate
}

// NewKey generates an RSA-2048 key with id.
func NewKey(id string) (*Key, error) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	return keyFrom(id, priv)
}

// LoadKey reads a PKCS #1 or PKCS #8 PEM RSA private key (a fixed test key,
// so that signatures are the same on every run) and names it id.
func LoadKey(id string, pemData []byte) (*Key, error) {
	block, _ := pem.Decode(pemData)
	if block == nil {
		return nil, errors.New("azuremsitest: no PEM block")
	}
	var priv *rsa.PrivateKey
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		priv = k
	} else if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		var ok bool
		if priv, ok = k.(*rsa.PrivateKey); !ok {
			return nil, errors.New("azuremsitest: not an RSA key")
		}
	} else {
		return nil, fmt.Errorf("azuremsitest: parsing key: %v", err)
	}
	return keyFrom(id, priv)
}

func keyFrom(id string, priv *rsa.PrivateKey) (*Key, error) {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "accounts.accesscontrol.windows.net"},
		NotBefore:    time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Key{ID: id, Private: priv, Cert: cert}, nil
}

// JWK is the key as Entra ID publishes it in a key set.
func (k *Key) JWK(issuer string) map[string]any {
	pub := &k.Private.PublicKey
	thumb := sha1.Sum(k.Cert.Raw) //nolint:gosec // see import
	return map[string]any{
		"kty":    "RSA",
		"use":    "sig",
		"kid":    k.ID,
		"x5t":    base64.RawURLEncoding.EncodeToString(thumb[:]),
		"n":      base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		"e":      base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
		"x5c":    []string{base64.StdEncoding.EncodeToString(k.Cert.Raw)},
		"issuer": issuer,
	}
}

// Header is the JOSE header Entra ID writes on access tokens.
func (k *Key) Header() map[string]any {
	thumb := sha1.Sum(k.Cert.Raw) //nolint:gosec // see import
	x5t := base64.RawURLEncoding.EncodeToString(thumb[:])
	return map[string]any{"typ": "JWT", "alg": "RS256", "x5t": x5t, "kid": k.ID}
}

// Sign returns c as a token signed by k.
func (k *Key) Sign(c Claims) (string, error) {
	payload, err := json.Marshal(c.Map())
	if err != nil {
		return "", err
	}
	return k.SignRaw(k.Header(), payload)
}

// SignRaw signs payload under header with RS256, whatever header says: for
// tokens Entra ID would not issue.
func (k *Key) SignRaw(header map[string]any, payload []byte) (string, error) {
	h, err := json.Marshal(header)
	if err != nil {
		return "", err
	}
	input := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(payload)
	sum := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(nil, k.Private, crypto.SHA256, sum[:])
	if err != nil {
		return "", err
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// Claims describe a managed identity's access token.
type Claims struct {
	// Tenant is tid (and names the v1 issuer); Principal is sub and oid,
	// the identity's object ID; Audience is aud, the resource asked for.
	Tenant, Principal, Audience string
	// MIResourceID is xms_mirid, the resource the identity belongs to:
	// VMID(...) for a VM's system-assigned identity.
	MIResourceID string
	// Issuer is iss; empty means "https://sts.windows.net/<Tenant>/".
	Issuer string
	// IssuedAt is iat and nbf; Expiry is exp (zero: 24 hours later, the
	// lifetime of managed identity tokens).
	IssuedAt, Expiry time.Time
	// Omit names claims to leave out; Extra adds or replaces claims.
	Omit  []string
	Extra map[string]any
}

// Map returns the claims as they are encoded, with those Entra ID adds to
// every managed identity token.
func (c Claims) Map() map[string]any {
	iss := c.Issuer
	if iss == "" {
		iss = "https://sts.windows.net/" + c.Tenant + "/"
	}
	exp := c.Expiry
	if exp.IsZero() {
		exp = c.IssuedAt.Add(24 * time.Hour)
	}
	m := map[string]any{
		"aud":       c.Audience,
		"iss":       iss,
		"iat":       c.IssuedAt.Unix(),
		"nbf":       c.IssuedAt.Unix(),
		"exp":       exp.Unix(),
		"aio":       "k2BgYFhy3vZ8f1n3lPk3AAA=",
		"appid":     "7c7c7c7c-1111-4a4a-8b8b-9d9d9d9d9d9d",
		"appidacr":  "2",
		"idp":       "https://sts.windows.net/" + c.Tenant + "/",
		"idtyp":     "app",
		"oid":       c.Principal,
		"rh":        "0.AAAA3kNXxZ1xT0eWvH1LXQAAAEZIf3kAutdPukPawfj2MBMAAAA.",
		"sub":       c.Principal,
		"tid":       c.Tenant,
		"uti":       "Zm9vYmFyYmF6cXV4cXV1",
		"ver":       "1.0",
		"xms_mirid": c.MIResourceID,
		"xms_tcdt":  1650000000,
	}
	for _, k := range c.Omit {
		delete(m, k)
	}
	for k, v := range c.Extra {
		m[k] = v
	}
	return m
}

// VMID is a virtual machine's resource ID as xms_mirid carries it
// ("resourcegroups" in lower case, as Entra ID writes it).
func VMID(subscription, resourceGroup, name string) string {
	return "/subscriptions/" + subscription + "/resourcegroups/" + resourceGroup + "/providers/Microsoft.Compute/virtualMachines/" + name
}

// The resource IDs Resource Manager writes.
func armID(subscription, resourceGroup, provider, name string) string {
	return "/subscriptions/" + subscription + "/resourceGroups/" + resourceGroup + "/providers/" + provider + "/" + name
}

// NICID is a network interface's resource ID.
func NICID(subscription, resourceGroup, name string) string {
	return armID(subscription, resourceGroup, "Microsoft.Network/networkInterfaces", name)
}

// NSGID is a network security group's resource ID.
func NSGID(subscription, resourceGroup, name string) string {
	return armID(subscription, resourceGroup, "Microsoft.Network/networkSecurityGroups", name)
}

// SubnetID is a virtual network subnet's resource ID.
func SubnetID(subscription, resourceGroup, vnet, subnet string) string {
	return armID(subscription, resourceGroup, "Microsoft.Network/virtualNetworks", vnet) + "/subnets/" + subnet
}
