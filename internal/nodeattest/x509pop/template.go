package x509pop

import (
	"bytes"
	"crypto/sha1" //nolint:gosec // offered to templates as SPIRE's sha1sum
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"strings"
	"text/template"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultAgentPathTemplate is SPIRE's default agent path template for
// certificates from an external PKI: agent IDs are
// spiffe://<trust domain>/spire/agent/x509pop/<fingerprint>.
const DefaultAgentPathTemplate = "/{{ .PluginName }}/{{ .Fingerprint }}"

// PathTemplate renders the path of an agent ID below /spire/agent from the
// attested leaf certificate.
type PathTemplate struct {
	tmpl *template.Template
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

// templateFuncs is the subset of the sprig functions SPIRE offers templates
// that agent paths plausibly need, with sprig's argument order (the piped
// value last). A template using another function fails to parse.
var templateFuncs = template.FuncMap{
	"lower":      strings.ToLower,
	"upper":      strings.ToUpper,
	"trim":       strings.TrimSpace,
	"trimAll":    func(cut, s string) string { return strings.Trim(s, cut) },
	"trimPrefix": func(prefix, s string) string { return strings.TrimPrefix(s, prefix) },
	"trimSuffix": func(suffix, s string) string { return strings.TrimSuffix(s, suffix) },
	"replace":    func(old, new, s string) string { return strings.ReplaceAll(s, old, new) },
	"contains":   func(sub, s string) bool { return strings.Contains(s, sub) },
	"hasPrefix":  func(prefix, s string) bool { return strings.HasPrefix(s, prefix) },
	"hasSuffix":  func(suffix, s string) bool { return strings.HasSuffix(s, suffix) },
	"base":       path.Base,
	"dir":        path.Dir,
	"sha1sum": func(s string) string {
		sum := sha1.Sum([]byte(s)) //nolint:gosec // see import
		return hex.EncodeToString(sum[:])
	},
	"sha256sum": func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return hex.EncodeToString(sum[:])
	},
}

// NewPathTemplate parses a Go text/template for agent ID paths. Templates see
// the leaf *x509.Certificate's fields (.Subject.CommonName, ...) and
// .PluginName, .TrustDomain, .Fingerprint, .SerialNumberHex and
// .URISanSelectors (key -> value of the x509pop://<trust domain>/<key>/<value>
// URI SANs), and the functions lower, upper, trim, trimAll, trimPrefix,
// trimSuffix, replace, contains, hasPrefix, hasSuffix, base, dir, sha1sum and
// sha256sum (sprig's, as SPIRE offers them). A missing map key is an error.
func NewPathTemplate(text string) (*PathTemplate, error) {
	t, err := template.New("agent_path_template").Option("missingkey=error").Funcs(templateFuncs).Parse(text)
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
	var buf bytes.Buffer
	if err := p.tmpl.Execute(&buf, data); err != nil {
		return spiffeid.ID{}, fmt.Errorf("rendering agent path template: %v", err)
	}
	suffix := buf.String()
	if suffix == "" {
		return spiffeid.ID{}, errors.New("agent path template rendered an empty path")
	}
	if err := spiffeid.ValidatePath(suffix); err != nil {
		return spiffeid.ID{}, fmt.Errorf("agent path template rendered invalid path %q: %v", suffix, err)
	}
	id, err := spiffeid.FromPath(td, "/spire/agent"+suffix)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("agent ID: %v", err)
	}
	return id, nil
}
