package awsiid

import (
	"fmt"
	"github.com/arborid/arbor/internal/nodeattest/agentpath"
	"slices"
	"strings"

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

// pathTemplate renders the path of an agent ID below /spire/agent.
type pathTemplate struct{ t *agentpath.Template }

func newPathTemplate(text string) (*pathTemplate, error) {
	t, err := agentpath.Parse(text)
	if err != nil {
		return nil, fmt.Errorf("awsiid: parsing agent path template: %w", err)
	}
	return &pathTemplate{t: t}, nil
}

func (p *pathTemplate) render(data templateData) (string, error) { return p.t.Render(data) }

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
	id, err := agentpath.ID(td, rendered)
	if err != nil {
		return spiffeid.ID{}, err
	}
	if key, err := p.slashFromTag(data, rendered); err != nil {
		return spiffeid.ID{}, err
	} else if key != "" {
		return spiffeid.ID{}, fmt.Errorf("instance tag %q holds a \"/\" that would become a segment of the agent ID", key)
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
