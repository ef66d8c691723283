package gcpiit

import (
	"fmt"
	"github.com/arborid/arbor/internal/nodeattest/agentpath"
	"maps"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/idpolicy"
)

// DefaultAgentPathTemplate is SPIRE's default gcp_iit agent path template:
// agent IDs are spiffe://<trust domain>/spire/agent/gcp_iit/<project>/<instance ID>.
const DefaultAgentPathTemplate = "/{{ .PluginName }}/{{ .ProjectID }}/{{ .InstanceID }}"

// templateData is what a path template sees. The names are SPIRE's (its
// template data embeds the token's ComputeEngine claim beside PluginName),
// so an agent_path_template written for SPIRE works unchanged; TrustDomain
// and Labels are arbor's.
type templateData struct {
	PluginName                string // "gcp_iit"
	TrustDomain               string // the trust domain name
	ProjectID                 string // from the verified token, as the rest
	ProjectNumber             int64
	Zone                      string
	InstanceID                string
	InstanceName              string
	InstanceCreationTimestamp int64
	// Labels are the instance's labels of allowed_label_keys, from the
	// Compute API; nil without use_instance_metadata. Anyone who may label
	// the instance sets them.
	Labels map[string]string
}

// pathTemplate renders the path of an agent ID below /spire/agent.
type pathTemplate struct{ t *agentpath.Template }

func newPathTemplate(text string) (*pathTemplate, error) {
	t, err := agentpath.Parse(text)
	if err != nil {
		return nil, fmt.Errorf("gcpiit: parsing agent path template: %w", err)
	}
	return &pathTemplate{t: t}, nil
}

func (p *pathTemplate) render(data templateData) (string, error) { return p.t.Render(data) }

// agentID renders the template and returns spiffe://<td>/spire/agent<path>.
// The rendered path must be a canonical SPIFFE ID path — no "." or ".."
// segment, no empty segment, no character outside [A-Za-z0-9._-] (so no
// percent-encoding) — and no "/" of a label value may have become a path
// separator: labels are set by whoever may label the instance, and a label
// that adds segments would let them choose the shape of the agent ID
// (CVE-2021-27099). The token's fields cannot hold a "/" (checkClaims).
func (p *pathTemplate) agentID(td spiffeid.TrustDomain, data templateData) (spiffeid.ID, error) {
	rendered, err := p.render(data)
	if err != nil {
		return spiffeid.ID{}, err
	}
	id, err := agentpath.ID(td, rendered)
	if err != nil {
		return spiffeid.ID{}, err
	}
	if keys := slashLabels(data.Labels); len(keys) > 0 {
		flat := data
		flat.Labels = maps.Clone(data.Labels)
		for _, k := range keys {
			flat.Labels[k] = strings.ReplaceAll(flat.Labels[k], "/", "_")
		}
		again, err := p.render(flat)
		if err != nil {
			return spiffeid.ID{}, err
		}
		if !agentpath.SameSegments(rendered, again) {
			return spiffeid.ID{}, fmt.Errorf("a \"/\" in the value of label %s becomes a separator in the agent ID path %q", strings.Join(keys, ", "), rendered)
		}
	}
	if err := idpolicy.AgentID(td, id); err != nil {
		return spiffeid.ID{}, fmt.Errorf("agent ID: %v", err)
	}
	return id, nil
}

// slashLabels returns the sorted keys of the labels whose value holds a "/".
func slashLabels(labels map[string]string) []string {
	var keys []string
	for k, v := range labels {
		if strings.Contains(v, "/") {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}
