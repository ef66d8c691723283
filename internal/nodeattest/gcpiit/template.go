package gcpiit

import (
	"bytes"
	"crypto/sha1" //nolint:gosec // offered to templates as SPIRE's sha1sum
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
	"text/template"

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

// pathTemplate renders the path of an agent ID below /spire/agent.
type pathTemplate struct{ tmpl *template.Template }

func newPathTemplate(text string) (*pathTemplate, error) {
	t, err := template.New("agent_path_template").Option("missingkey=error").Funcs(templateFuncs).Parse(text)
	if err != nil {
		return nil, fmt.Errorf("gcpiit: parsing agent path template: %w", err)
	}
	return &pathTemplate{tmpl: t}, nil
}

func (p *pathTemplate) render(data templateData) (string, error) {
	var buf bytes.Buffer
	if err := p.tmpl.Execute(&buf, data); err != nil {
		return "", fmt.Errorf("rendering agent path template: %v", err)
	}
	return buf.String(), nil
}

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
	if rendered == "" {
		return spiffeid.ID{}, errors.New("agent path template rendered an empty path")
	}
	if err := spiffeid.ValidatePath(rendered); err != nil {
		return spiffeid.ID{}, fmt.Errorf("agent path template rendered invalid path %q: %v", rendered, err)
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
		if strings.Count(again, "/") != strings.Count(rendered, "/") {
			return spiffeid.ID{}, fmt.Errorf("a \"/\" in the value of label %s becomes a separator in the agent ID path %q", strings.Join(keys, ", "), rendered)
		}
	}
	id, err := spiffeid.FromPath(td, "/spire/agent"+rendered)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("agent ID: %v", err)
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
