// Package x509poptest generates throwaway x509pop PKIs — a root CA, optional
// intermediates, node certificates and keys — and writes them as PEM files,
// for tests of any package that attests agents with x509pop (the attestor
// itself, the agent API, end-to-end tests with real spire-agents).
package x509poptest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// KeyType selects a key algorithm.
type KeyType string

// Key types. The zero value means ECP256.
const (
	ECP256  KeyType = "ec-p256"
	ECP384  KeyType = "ec-p384"
	RSA2048 KeyType = "rsa-2048"
)

// GenerateKey returns a new key of type t.
func GenerateKey(t KeyType) (crypto.Signer, error) {
	switch t {
	case "", ECP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case ECP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case RSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	default:
		return nil, fmt.Errorf("x509poptest: unknown key type %q", t)
	}
}

// CA is a certificate authority that issues intermediates and node
// certificates.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// Chain is this CA's certificate followed by the intermediates above it,
	// excluding the root (empty for a root): what a node certificate it
	// issues must carry to chain to the root.
	Chain []*x509.Certificate
}

// CAOptions configures NewRootCA.
type CAOptions struct {
	CommonName string    // default "x509pop test root"
	KeyType    KeyType   // default ECP256
	NotBefore  time.Time // default one hour before now
	NotAfter   time.Time // default 24 hours from now
}

// NewRootCA returns a self-signed root CA.
func NewRootCA(opts CAOptions) (*CA, error) {
	if opts.CommonName == "" {
		opts.CommonName = "x509pop test root"
	}
	if opts.NotBefore.IsZero() {
		opts.NotBefore = time.Now().Add(-time.Hour)
	}
	if opts.NotAfter.IsZero() {
		opts.NotAfter = time.Now().Add(24 * time.Hour)
	}
	key, err := GenerateKey(opts.KeyType)
	if err != nil {
		return nil, err
	}
	tmpl, err := caTemplate(opts.CommonName, opts.NotBefore, opts.NotAfter)
	if err != nil {
		return nil, err
	}
	cert, err := create(tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// NewIntermediate returns an intermediate CA signed by ca, valid as long as
// ca, with an EC P-256 key.
func (ca *CA) NewIntermediate(commonName string) (*CA, error) {
	key, err := GenerateKey(ECP256)
	if err != nil {
		return nil, err
	}
	tmpl, err := caTemplate(commonName, ca.Cert.NotBefore, ca.Cert.NotAfter)
	if err != nil {
		return nil, err
	}
	cert, err := create(tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, Chain: append([]*x509.Certificate{cert}, ca.Chain...)}, nil
}

// NodeOptions configures a node certificate.
type NodeOptions struct {
	CommonName string  // default "node"
	KeyType    KeyType // default ECP256
	// NotBefore and NotAfter default to the CA's validity.
	NotBefore, NotAfter time.Time
	// URIs become URI SANs, e.g. x509pop://example.org/datacenter/us-east-1.
	URIs []*url.URL
	// SerialNumber defaults to a random 128-bit number.
	SerialNumber *big.Int
	// KeyUsage defaults to digitalSignature, which x509pop requires.
	KeyUsage x509.KeyUsage
}

// Node is a node's x509pop identity.
type Node struct {
	// Chain is the node certificate followed by the intermediates up to (not
	// including) the root: what the agent sends.
	Chain []*x509.Certificate
	Key   crypto.Signer
}

// Leaf returns the node certificate.
func (n *Node) Leaf() *x509.Certificate { return n.Chain[0] }

// NewNode issues a node certificate and key.
func (ca *CA) NewNode(opts NodeOptions) (*Node, error) {
	if opts.CommonName == "" {
		opts.CommonName = "node"
	}
	if opts.NotBefore.IsZero() {
		opts.NotBefore = ca.Cert.NotBefore
	}
	if opts.NotAfter.IsZero() {
		opts.NotAfter = ca.Cert.NotAfter
	}
	if opts.KeyUsage == 0 {
		opts.KeyUsage = x509.KeyUsageDigitalSignature
	}
	serial := opts.SerialNumber
	if serial == nil {
		var err error
		if serial, err = randomSerial(); err != nil {
			return nil, err
		}
	}
	key, err := GenerateKey(opts.KeyType)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: opts.CommonName},
		NotBefore:             opts.NotBefore,
		NotAfter:              opts.NotAfter,
		KeyUsage:              opts.KeyUsage,
		BasicConstraintsValid: true,
		URIs:                  opts.URIs,
	}
	cert, err := create(tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, err
	}
	return &Node{Chain: append([]*x509.Certificate{cert}, ca.Chain...), Key: key}, nil
}

// WriteBundle writes the CA certificate as PEM to path: a server's
// ca_bundle_path.
func (ca *CA) WriteBundle(path string) error {
	return os.WriteFile(path, EncodeCertificates(ca.Cert), 0o644)
}

// WriteFiles writes the node's chain (leaf first) to certPath and its key as
// PEM PKCS#8 to keyPath (mode 0600): an agent's certificate_path and
// private_key_path.
func (n *Node) WriteFiles(certPath, keyPath string) error {
	der, err := x509.MarshalPKCS8PrivateKey(n.Key)
	if err != nil {
		return fmt.Errorf("x509poptest: encoding key: %w", err)
	}
	if err := os.WriteFile(certPath, EncodeCertificates(n.Chain...), 0o644); err != nil {
		return err
	}
	return os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// EncodeCertificates returns certs as concatenated PEM blocks.
func EncodeCertificates(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// PKI is what Generate creates and writes.
type PKI struct {
	Root *CA
	Node *Node
	// CABundlePath holds the root certificate (server: ca_bundle_path).
	CABundlePath string
	// CertPath holds the node certificate and any intermediate (agent:
	// certificate_path); KeyPath its key (agent: private_key_path).
	CertPath, KeyPath string
}

// GenerateOptions configures Generate.
type GenerateOptions struct {
	CA   CAOptions
	Node NodeOptions
	// Intermediate, when true, puts an intermediate CA between the root and
	// the node certificate.
	Intermediate bool
}

// Generate creates a root CA, optionally an intermediate, and a node
// certificate and key, and writes them into dir as ca.pem, node.pem and
// node-key.pem.
func Generate(dir string, opts GenerateOptions) (*PKI, error) {
	root, err := NewRootCA(opts.CA)
	if err != nil {
		return nil, err
	}
	issuer := root
	if opts.Intermediate {
		if issuer, err = root.NewIntermediate("x509pop test intermediate"); err != nil {
			return nil, err
		}
	}
	node, err := issuer.NewNode(opts.Node)
	if err != nil {
		return nil, err
	}
	p := &PKI{
		Root:         root,
		Node:         node,
		CABundlePath: filepath.Join(dir, "ca.pem"),
		CertPath:     filepath.Join(dir, "node.pem"),
		KeyPath:      filepath.Join(dir, "node-key.pem"),
	}
	if err := root.WriteBundle(p.CABundlePath); err != nil {
		return nil, err
	}
	if err := node.WriteFiles(p.CertPath, p.KeyPath); err != nil {
		return nil, err
	}
	return p, nil
}

func caTemplate(cn string, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil
}

func create(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("x509poptest: creating certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	return x509.ParseCertificate(der)
}

func randomSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("x509poptest: serial number: %w", err)
	}
	// Serial numbers must be positive.
	return serial.Add(serial, big.NewInt(1)), nil
}
