package x509pop

import (
	"crypto/x509"
	"fmt"
	"github.com/arborid/arbor/internal/nodeattest/agentpath"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultAgentPathTemplate is SPIRE's default agent path template for
// certificates from an external PKI: agent IDs are
// spiffe://<trust domain>/spire/agent/x509pop/<fingerprint>.
const DefaultAgentPathTemplate = "/{{ .PluginName }}/{{ .Fingerprint }}"

// PathTemplate renders the path of an agent ID below /spire/agent from the
// attested leaf certificate.
type PathTemplate struct {
	tmpl *agentpath.Template
}

// templateData is what a path template sees; the names are SPIRE's so that
// an agent_path_template written for SPIRE works unchanged.
type templateData struct {
	*x509.Certificate // .Subject.CommonName, .SerialNumber, .URIs, ...

	PluginName      string // "x509pop"
	TrustDomain     string // the trust domain name
	Fingerprint     string // SHA-1 of the leaf DER, lowercase hex
	SerialNumberHex string // leaf serial, lowercase hex, even length
	SVIDPathTrimmed string // always empty: SPIRE's "spiffe" mode is not implemented
	URISanSelectors map[string]string
}

// NewPathTemplate parses a Go text/template for agent ID paths. Templates see
// the leaf *x509.Certificate's fields (.Subject.CommonName, ...) and
// .PluginName, .TrustDomain, .Fingerprint, .SerialNumberHex and
// .URISanSelectors (key -> value of the x509pop://<trust domain>/<key>/<value>
// URI SANs), and the functions lower, upper, trim, trimAll, trimPrefix,
// trimSuffix, replace, contains, hasPrefix, hasSuffix, base, dir, sha1sum and
// sha256sum (sprig's, as SPIRE offers them). A missing map key is an error.
func NewPathTemplate(text string) (*PathTemplate, error) {
	t, err := agentpath.Parse(text)
	if err != nil {
		return nil, fmt.Errorf("x509pop: parsing agent path template: %w", err)
	}
	return &PathTemplate{tmpl: t}, nil
}

// AgentID renders the template for leaf and returns
// spiffe://<td>/spire/agent<rendered path>. The rendered path must be a
// valid absolute SPIFFE ID path ("/x509pop/<fingerprint>").
func (p *PathTemplate) AgentID(td spiffeid.TrustDomain, leaf *x509.Certificate, uriSANs map[string]string) (spiffeid.ID, error) {
	data := templateData{
		Certificate:     leaf,
		PluginName:      Type,
		TrustDomain:     td.Name(),
		Fingerprint:     Fingerprint(leaf),
		URISanSelectors: uriSANs,
	}
	if leaf.SerialNumber != nil {
		data.SerialNumberHex = SerialNumberHex(leaf.SerialNumber)
	}
	rendered, err := p.tmpl.Render(data)
	if err != nil {
		return spiffeid.ID{}, err
	}
	return agentpath.ID(td, rendered)
}
