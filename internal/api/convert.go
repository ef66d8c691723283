package api

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/idpolicy"
	"github.com/arborid/arbor/internal/selector"
)

// idFromProto parses a SPIFFE ID message; field names the request field for errors.
func idFromProto(field string, p *types.SPIFFEID) (spiffeid.ID, error) {
	if p == nil {
		return spiffeid.ID{}, fmt.Errorf("%s: missing SPIFFE ID", field)
	}
	td, err := spiffeid.TrustDomainFromString(p.TrustDomain)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%s: invalid trust domain %q: %v", field, p.TrustDomain, err)
	}
	id, err := spiffeid.FromPath(td, p.Path)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%s: invalid path %q: %v", field, p.Path, err)
	}
	return id, nil
}

func idToProto(id spiffeid.ID) *types.SPIFFEID {
	if id.IsZero() {
		return nil
	}
	return &types.SPIFFEID{TrustDomain: id.TrustDomain().Name(), Path: id.Path()}
}

func selectorsFromProto(field string, ps []*types.Selector) ([]selector.Selector, error) {
	out := make([]selector.Selector, 0, len(ps))
	for _, p := range ps {
		if p == nil {
			return nil, fmt.Errorf("%s: nil selector", field)
		}
		s := selector.Selector{Type: p.Type, Value: p.Value}
		if err := s.Validate(); err != nil {
			return nil, fmt.Errorf("%s: %v", field, err)
		}
		out = append(out, s)
	}
	return out, nil
}

func selectorsToProto(sels []selector.Selector) []*types.Selector {
	out := make([]*types.Selector, len(sels))
	for i, s := range sels {
		out[i] = &types.Selector{Type: s.Type, Value: s.Value}
	}
	return out
}

// entryFromProto validates and converts an entry from a create or update request.
func (s *Service) entryFromProto(p *types.Entry) (*datastore.Entry, error) {
	if p == nil {
		return nil, errors.New("missing entry")
	}
	// The parent first, then the SPIFFE ID, as SPIRE checks them.
	parentID, err := idFromProto("parent_id", p.ParentId)
	if err != nil {
		return nil, err
	}
	if err := idpolicy.ParentID(s.td, parentID); err != nil {
		return nil, fmt.Errorf("parent_id: %v", err)
	}
	spiffeID, err := idFromProto("spiffe_id", p.SpiffeId)
	if err != nil {
		return nil, err
	}
	if err := idpolicy.WorkloadID(s.td, spiffeID); err != nil {
		return nil, fmt.Errorf("spiffe_id: %v", err)
	}
	if len(p.Selectors) == 0 {
		return nil, errors.New("selectors: at least one selector is required")
	}
	sels, err := selectorsFromProto("selectors", p.Selectors)
	if err != nil {
		return nil, err
	}
	if p.X509SvidTtl < 0 {
		return nil, fmt.Errorf("x509_svid_ttl: %d is negative", p.X509SvidTtl)
	}
	if p.JwtSvidTtl < 0 {
		return nil, fmt.Errorf("jwt_svid_ttl: %d is negative", p.JwtSvidTtl)
	}
	if p.ExpiresAt < 0 {
		return nil, fmt.Errorf("expires_at: %d is negative", p.ExpiresAt)
	}
	var feds []spiffeid.TrustDomain
	for _, f := range p.FederatesWith {
		td, err := spiffeid.TrustDomainFromString(f)
		if err != nil {
			return nil, fmt.Errorf("federates_with: invalid trust domain %q: %v", f, err)
		}
		if td == s.td {
			return nil, fmt.Errorf("federates_with: %q is this server's own trust domain", f)
		}
		feds = append(feds, td)
	}
	for _, d := range p.DnsNames {
		if err := validateDNSName(d); err != nil {
			return nil, fmt.Errorf("dns_names: %v", err)
		}
	}
	if len(p.Hint) > 1024 {
		return nil, errors.New("hint: longer than 1024 bytes")
	}
	e := &datastore.Entry{
		ID:            p.Id,
		SPIFFEID:      spiffeID,
		ParentID:      parentID,
		Selectors:     sels,
		X509SVIDTTL:   p.X509SvidTtl,
		JWTSVIDTTL:    p.JwtSvidTtl,
		FederatesWith: feds,
		Admin:         p.Admin,
		Downstream:    p.Downstream,
		DNSNames:      p.DnsNames,
		StoreSVID:     p.StoreSvid,
		Hint:          p.Hint,
		ExpiresAt:     p.ExpiresAt,
	}
	if a := p.AdditionalAttributes; a != nil {
		e.DisableX509SVIDPrefetch = a.DisableX509SvidPrefetch
		e.JWTSVIDIncludeJTI = a.JwtSvidIncludeJti
	}
	return e, nil
}

func validateDNSName(d string) error {
	if d == "" {
		return errors.New("empty DNS name")
	}
	if len(d) > 253 {
		return fmt.Errorf("DNS name %q is longer than 253 characters", d)
	}
	if net.ParseIP(d) != nil {
		return nil
	}
	for i, label := range strings.Split(strings.TrimPrefix(d, "*."), ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("DNS name %q has an empty or too long label", d)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("DNS name %q has invalid character %q", d, r)
			}
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("DNS name %q label %d starts or ends with '-'", d, i)
		}
	}
	return nil
}

// entryToProto converts e, honouring mask (nil means every field).
func entryToProto(e *datastore.Entry, mask *types.EntryMask) *types.Entry {
	all := mask == nil
	p := &types.Entry{Id: e.ID}
	if all || mask.SpiffeId {
		p.SpiffeId = idToProto(e.SPIFFEID)
	}
	if all || mask.ParentId {
		p.ParentId = idToProto(e.ParentID)
	}
	if all || mask.Selectors {
		p.Selectors = selectorsToProto(e.Selectors)
	}
	if all || mask.X509SvidTtl {
		p.X509SvidTtl = e.X509SVIDTTL
	}
	if all || mask.JwtSvidTtl {
		p.JwtSvidTtl = e.JWTSVIDTTL
	}
	if all || mask.FederatesWith {
		for _, td := range e.FederatesWith {
			p.FederatesWith = append(p.FederatesWith, td.Name())
		}
	}
	if all || mask.Admin {
		p.Admin = e.Admin
	}
	if all || mask.Downstream {
		p.Downstream = e.Downstream
	}
	if all || mask.ExpiresAt {
		p.ExpiresAt = e.ExpiresAt
	}
	if all || mask.DnsNames {
		p.DnsNames = e.DNSNames
	}
	if all || mask.RevisionNumber {
		p.RevisionNumber = e.RevisionNumber
	}
	if all || mask.StoreSvid {
		p.StoreSvid = e.StoreSVID
	}
	if all || mask.Hint {
		p.Hint = e.Hint
	}
	if all || mask.CreatedAt {
		p.CreatedAt = e.CreatedAt
	}
	if (all || mask.AdditionalAttributes) && (e.DisableX509SVIDPrefetch || e.JWTSVIDIncludeJTI) {
		p.AdditionalAttributes = &types.Entry_AdditionalAttributes{
			DisableX509SvidPrefetch: e.DisableX509SVIDPrefetch,
			JwtSvidIncludeJti:       e.JWTSVIDIncludeJTI,
		}
	}
	return p
}

func nodeToProto(n *datastore.Node, mask *types.AgentMask) *types.Agent {
	all := mask == nil
	p := &types.Agent{Id: idToProto(n.ID)}
	if all || mask.AttestationType {
		p.AttestationType = n.AttestationType
	}
	if all || mask.X509SvidSerialNumber {
		p.X509SvidSerialNumber = n.CertSerial
	}
	if all || mask.X509SvidExpiresAt {
		p.X509SvidExpiresAt = n.CertNotAfter
	}
	if all || mask.Selectors {
		p.Selectors = selectorsToProto(n.Selectors)
	}
	if all || mask.Banned {
		p.Banned = n.Banned()
	}
	if all || mask.CanReattest {
		p.CanReattest = n.CanReattest
	}
	if all || mask.AgentVersion {
		p.AgentVersion = n.AgentVersion
	}
	return p
}

func bundleToProto(b *datastore.Bundle, mask *types.BundleMask) *types.Bundle {
	all := mask == nil
	p := &types.Bundle{TrustDomain: b.TrustDomain.Name()}
	if all || mask.X509Authorities {
		for _, a := range b.X509Authorities {
			p.X509Authorities = append(p.X509Authorities, &types.X509Certificate{Asn1: a.Cert, Tainted: a.Tainted})
		}
	}
	if all || mask.JwtAuthorities {
		for _, a := range b.JWTAuthorities {
			p.JwtAuthorities = append(p.JwtAuthorities, jwtKeyToProto(a))
		}
	}
	if all || mask.RefreshHint {
		p.RefreshHint = b.RefreshHint
	}
	if all || mask.SequenceNumber {
		p.SequenceNumber = b.SequenceNumber
	}
	return p
}

func jwtKeyToProto(a datastore.JWTAuthority) *types.JWTKey {
	return &types.JWTKey{PublicKey: a.PublicKey, KeyId: a.KeyID, ExpiresAt: a.ExpiresAt, Tainted: a.Tainted}
}

func jwtKeyFromProto(p *types.JWTKey) (datastore.JWTAuthority, error) {
	if p == nil {
		return datastore.JWTAuthority{}, errors.New("missing JWT key")
	}
	if p.KeyId == "" {
		return datastore.JWTAuthority{}, errors.New("JWT key: missing key ID")
	}
	if _, err := x509.ParsePKIXPublicKey(p.PublicKey); err != nil {
		return datastore.JWTAuthority{}, fmt.Errorf("JWT key %q: invalid PKIX public key: %v", p.KeyId, err)
	}
	return datastore.JWTAuthority{KeyID: p.KeyId, PublicKey: p.PublicKey, ExpiresAt: p.ExpiresAt, Tainted: p.Tainted}, nil
}

func x509AuthorityFromProto(p *types.X509Certificate) (datastore.X509Authority, error) {
	if p == nil {
		return datastore.X509Authority{}, errors.New("missing X.509 authority")
	}
	cert, err := x509.ParseCertificate(p.Asn1)
	if err != nil {
		return datastore.X509Authority{}, fmt.Errorf("X.509 authority: invalid certificate: %v", err)
	}
	if !cert.IsCA {
		return datastore.X509Authority{}, fmt.Errorf("X.509 authority %q is not a CA certificate", cert.Subject)
	}
	return datastore.X509Authority{Cert: p.Asn1, Tainted: p.Tainted}, nil
}

// bundleFromProto validates a federated bundle from a request.
func bundleFromProto(p *types.Bundle) (*datastore.Bundle, error) {
	if p == nil {
		return nil, errors.New("missing bundle")
	}
	td, err := spiffeid.TrustDomainFromString(p.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("trust_domain: invalid %q: %v", p.TrustDomain, err)
	}
	b := &datastore.Bundle{TrustDomain: td, RefreshHint: p.RefreshHint, SequenceNumber: p.SequenceNumber}
	for _, a := range p.X509Authorities {
		xa, err := x509AuthorityFromProto(a)
		if err != nil {
			return nil, err
		}
		b.X509Authorities = append(b.X509Authorities, xa)
	}
	for _, k := range p.JwtAuthorities {
		ja, err := jwtKeyFromProto(k)
		if err != nil {
			return nil, err
		}
		b.JWTAuthorities = append(b.JWTAuthorities, ja)
	}
	return b, nil
}

func x509SVIDToProto(id spiffeid.ID, chain []*x509.Certificate, hint string) *types.X509SVID {
	p := &types.X509SVID{Id: idToProto(id), ExpiresAt: chain[0].NotAfter.Unix(), Hint: hint}
	for _, c := range chain {
		p.CertChain = append(p.CertChain, c.Raw)
	}
	return p
}
