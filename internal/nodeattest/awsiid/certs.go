package awsiid

import (
	"crypto/rsa"
	"crypto/x509"
	"embed"
	"encoding/pem"
	"fmt"
	"path"
	"slices"
	"strings"
)

// awsCertificates holds AWS's published RSA-2048 instance identity
// certificates, one PEM file per region (certs/rsa2048/<region>.pem), as
// listed in the EC2 user guide ("AWS public certificates for instance
// identity document signatures"). Provenance and cross-checks:
// certs_test.go.
//
//go:embed certs/rsa2048/*.pem
var awsCertificates embed.FS

// Key sizes accepted for an instance identity certificate. AWS's are 2048
// bits; the upper bound keeps an override from making each verification
// expensive.
const (
	minAnchorBits = 2048
	maxAnchorBits = 4096
)

// Regions returns the regions whose AWS RSA-2048 instance identity
// certificate ships with arbor, sorted.
func Regions() []string {
	entries, err := awsCertificates.ReadDir("certs/rsa2048")
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		out = append(out, strings.TrimSuffix(e.Name(), ".pem"))
	}
	slices.Sort(out)
	return out
}

// everyRegion is the key of loadAnchors' result under which the anchors of
// every region without its own are; it is no region's name.
const everyRegion = "*"

// loadAnchors parses the shipped certificates and applies overrides:
// a region in overrides trusts exactly the certificates given for it. When
// every is not empty, no shipped certificate is used and every other
// region trusts exactly every.
func loadAnchors(overrides map[string][]*x509.Certificate, every []*x509.Certificate) (map[string][]*anchor, error) {
	out := map[string][]*anchor{}
	if len(every) > 0 {
		anchors, err := newAnchors("every region", every)
		if err != nil {
			return nil, err
		}
		out[everyRegion] = anchors
	}
	for _, region := range Regions() {
		if len(every) > 0 {
			break
		}
		data, err := awsCertificates.ReadFile(path.Join("certs/rsa2048", region+".pem"))
		if err != nil {
			return nil, err
		}
		block, rest := pem.Decode(data)
		if block == nil || block.Type != "CERTIFICATE" || len(strings.TrimSpace(string(rest))) != 0 {
			return nil, fmt.Errorf("awsiid: shipped certificate for %s is not one PEM certificate", region)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("awsiid: shipped certificate for %s: %w", region, err)
		}
		a, err := newAnchor(cert)
		if err != nil {
			return nil, fmt.Errorf("awsiid: shipped certificate for %s: %w", region, err)
		}
		out[region] = []*anchor{a}
	}
	for region, certs := range overrides {
		if !validRegion(region) {
			return nil, fmt.Errorf("awsiid: certificate override for invalid region %q", region)
		}
		anchors, err := newAnchors(region, certs)
		if err != nil {
			return nil, err
		}
		out[region] = anchors
	}
	return out, nil
}

// newAnchors makes the anchors of an override; what names it in errors.
func newAnchors(what string, certs []*x509.Certificate) ([]*anchor, error) {
	if len(certs) == 0 {
		return nil, fmt.Errorf("awsiid: certificate override for %s is empty", what)
	}
	var anchors []*anchor
	for _, c := range certs {
		if c == nil {
			return nil, fmt.Errorf("awsiid: nil certificate override for %s", what)
		}
		a, err := newAnchor(c)
		if err != nil {
			return nil, fmt.Errorf("awsiid: certificate override for %s: %w", what, err)
		}
		anchors = append(anchors, a)
	}
	return anchors, nil
}

func newAnchor(cert *x509.Certificate) (*anchor, error) {
	key, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key is %T, want RSA", cert.PublicKey)
	}
	if n := key.N.BitLen(); n < minAnchorBits || n > maxAnchorBits {
		return nil, fmt.Errorf("RSA key of %d bits, want %d to %d", n, minAnchorBits, maxAnchorBits)
	}
	return &anchor{cert: cert, key: key}, nil
}
