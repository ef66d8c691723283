package awsiid

import (
	"bytes"
	"crypto/sha1" //nolint:gosec // offered to templates as SPIRE's sha1sum
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"text/template"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultAgentPathTemplate is SPIRE's default aws_iid agent path template:
// agent IDs are spiffe://<trust domain>/spire/agent/aws_iid/<account>/<region>/<instance>.
const DefaultAgentPathTemplate = "/{{ .PluginName }}/{{ .AccountID }}/{{ .Region }}/{{ .InstanceID }}"

// templateData is what a path template sees; the names are SPIRE's so that
// an agent_path_template written for SPIRE works unchanged. (SPIRE leaves
// TrustDomain empty for aws_iid; arbor fills it in.)
type templateData struct {
	PluginName  string            // "aws_iid"
	TrustDomain string            // the trust domain name
	AccountID   string            // from the signed document
	Region      string            // from the signed document
	InstanceID  string            // from the signed document
	Tags        map[string]string // the instance's EC2 tags, from DescribeInstances
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
type pathTemplate struct {
	text string
	tmpl *template.Template
}

func newPathTemplate(text string) (*pathTemplate, error) {
	t, err := template.New("agent_path_template").Option("missingkey=error").Funcs(templateFuncs).Parse(text)
	if err != nil {
		return nil, fmt.Errorf("awsiid: parsing agent path template: %w", err)
	}
	return &pathTemplate{text: text, tmpl: t}, nil
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
// percent-encoding) — and no "/" of an instance tag value may have become a
// path separator: tags are set by whoever can tag the instance, and a tag
// that adds segments would let it choose the shape of the agent ID
// (CVE-2021-27099).
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
	if key, err := p.slashFromTag(data, rendered); err != nil {
		return spiffeid.ID{}, err
	} else if key != "" {
		return spiffeid.ID{}, fmt.Errorf("instance tag %q holds a \"/\" that would become a segment of the agent ID", key)
	}
	id, err := spiffeid.FromPath(td, "/spire/agent"+rendered)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("agent ID: %v", err)
	}
	return id, nil
}

// slashFromTag finds a tag whose "/" reaches the rendered path as a
// separator: rendering again with that tag's slashes replaced must not
// change the number of segments. It returns the first such tag key, or ""
// when none does.
func (p *pathTemplate) slashFromTag(data templateData, rendered string) (string, error) {
	want := strings.Count(rendered, "/")
	var withSlash []string
	for k, v := range data.Tags {
		if strings.Contains(v, "/") {
			withSlash = append(withSlash, k)
		}
	}
	if len(withSlash) == 0 {
		return "", nil
	}
	slices.Sort(withSlash)
	// The template author may combine tags; checking all of them together
	// as well catches slashes that only add up.
	all := templateData{PluginName: data.PluginName, TrustDomain: data.TrustDomain, AccountID: data.AccountID, Region: data.Region, InstanceID: data.InstanceID, Tags: map[string]string{}}
	for k, v := range data.Tags {
		all.Tags[k] = v
	}
	for _, k := range withSlash {
		one := all
		one.Tags = map[string]string{}
		for kk, vv := range data.Tags {
			one.Tags[kk] = vv
		}
		one.Tags[k] = strings.ReplaceAll(data.Tags[k], "/", "_")
		all.Tags[k] = one.Tags[k]
		got, err := p.render(one)
		if err != nil {
			return "", err
		}
		if strings.Count(got, "/") != want {
			return k, nil
		}
	}
	got, err := p.render(all)
	if err != nil {
		return "", err
	}
	if strings.Count(got, "/") != want {
		return withSlash[0], nil
	}
	return "", nil
}
