package azuremsi

import (
	"fmt"
	"github.com/arborid/arbor/internal/nodeattest/agentpath"
	"strings"

	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/idpolicy"
)

// DefaultAgentPathTemplate is SPIRE's default azure_msi agent path
// template: agent IDs are
// spiffe://<trust domain>/spire/agent/azure_msi/<tenant ID>/<principal ID>.
const DefaultAgentPathTemplate = "/{{ .PluginName }}/{{ .TenantID }}/{{ .PrincipalID }}"

// templateData is what a path template sees, with the names of SPIRE's
// (its agentPathTemplateData: the token's MSITokenClaims and PluginName), so
// that an agent_path_template written for SPIRE renders the same: .Issuer,
// .Audience, .Expiry, .NotBefore, .IssuedAt and .ID of the token, .TenantID
// (tid), .PrincipalID (sub), .PluginName ("azure_msi"). As in SPIRE,
// .Subject is empty, sub having gone to .PrincipalID.
type templateData struct {
	jwt.Claims
	TenantID    string
	PrincipalID string
	PluginName  string
}

func newTemplateData(c *tokenClaims) templateData {
	return templateData{Claims: c.Claims, TenantID: c.TenantID, PrincipalID: c.PrincipalID, PluginName: Type}
}

// withoutSlashes returns d with every "/" of the token's strings replaced.
func (d templateData) withoutSlashes() templateData {
	r := func(s string) string { return strings.ReplaceAll(s, "/", "_") }
	out := d
	out.Issuer, out.Subject, out.ID = r(d.Issuer), r(d.Subject), r(d.ID)
	out.TenantID, out.PrincipalID = r(d.TenantID), r(d.PrincipalID)
	out.Audience = make(jwt.Audience, len(d.Audience))
	for i, a := range d.Audience {
		out.Audience[i] = r(a)
	}
	return out
}

// pathTemplate renders the path of an agent ID below /spire/agent.
type pathTemplate struct{ t *agentpath.Template }

func newPathTemplate(text string) (*pathTemplate, error) {
	t, err := agentpath.Parse(text)
	if err != nil {
		return nil, fmt.Errorf("azuremsi: parsing agent path template: %w", err)
	}
	return &pathTemplate{t: t}, nil
}

func (p *pathTemplate) render(data templateData) (string, error) { return p.t.Render(data) }

// agentID renders the template and returns spiffe://<td>/spire/agent<path>.
// The rendered path must be a canonical SPIFFE ID path — no "." or ".."
// segment, no empty segment, no character outside [A-Za-z0-9._-] (so no
// percent-encoding) — and no "/" inside a claim may have become a path
// separator: a claim reaches the agent ID as part of one segment, never as
// segments of its own (the class of CVE-2021-27099).
func (p *pathTemplate) agentID(td spiffeid.TrustDomain, data templateData) (spiffeid.ID, error) {
	rendered, err := p.render(data)
	if err != nil {
		return spiffeid.ID{}, err
	}
	id, err := agentpath.ID(td, rendered)
	if err != nil {
		return spiffeid.ID{}, err
	}
	plain, err := p.render(data.withoutSlashes())
	if err != nil {
		return spiffeid.ID{}, err
	}
	if !agentpath.SameSegments(rendered, plain) {
		return spiffeid.ID{}, fmt.Errorf("agent path template rendered %q, where a \"/\" of a token claim became a segment separator", rendered)
	}
	if err := idpolicy.AgentID(td, id); err != nil {
		return spiffeid.ID{}, fmt.Errorf("agent ID: %v", err)
	}
	return id, nil
}
