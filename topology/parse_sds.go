package topology

import (
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// SPIRE's default SDS resource names, which an empty SDS name means.
const (
	DefaultSDSSVIDName       = "default"
	DefaultSDSBundleName     = "ROOTCA"
	DefaultSDSAllBundlesName = "ALL"
)

// sdsBlocks parses an agent block's sds blocks (at most one).
func (p *parser) sdsBlocks(blocks []*hcl.Block, s *Server) SDS {
	var out SDS
	for i, b := range blocks {
		if i > 0 {
			p.errorf(b.DefRange, "Duplicate sds block",
				"The agent of server %q already has an sds block (line %d). Merge the two.", s.Name, blocks[0].DefRange.Start.Line)
			continue
		}
		out = p.sds(b, s)
	}
	return out
}

func (p *parser) sds(b *hcl.Block, s *Server) SDS {
	out := SDS{Range: b.DefRange}
	a := p.content(b.Body, sdsSchema).Attributes
	type named struct {
		attr     *hcl.Attribute
		value    string
		attrName string
	}
	var names []named
	for _, n := range []struct {
		name, def string
		dst       *string
	}{
		{"default_svid_name", DefaultSDSSVIDName, &out.DefaultSVIDName},
		{"default_bundle_name", DefaultSDSBundleName, &out.DefaultBundleName},
		{"default_all_bundles_name", DefaultSDSAllBundlesName, &out.DefaultAllBundlesName},
	} {
		attr, ok := a[n.name]
		if !ok {
			names = append(names, named{value: n.def, attrName: n.name})
			continue
		}
		v, ok := p.nonEmptyStr(attr)
		if !ok {
			continue
		}
		if strings.HasPrefix(v, "spiffe://") {
			p.errorf(attr.Expr.Range(), "SDS name is a SPIFFE ID",
				"%s = %q: names starting with spiffe:// are the SVIDs' and trust domains' own. Choose a name without it, like %q.", n.name, v, n.def)
			continue
		}
		*n.dst = v
		names = append(names, named{attr: attr, value: v, attrName: n.name})
	}
	for i, x := range names {
		for _, y := range names[:i] {
			if x.value != y.value {
				continue
			}
			rng := b.DefRange
			if x.attr != nil {
				rng = x.attr.Expr.Range()
			} else if y.attr != nil {
				rng = y.attr.Expr.Range()
			}
			p.errorf(rng, "SDS names collide",
				"The agent of server %q would serve %s and %s under one name, %q; Envoy could not ask for either. Give them different names.", s.Name, y.attrName, x.attrName, x.value)
		}
	}
	if attr, ok := a["disable_spiffe_cert_validation"]; ok {
		out.DisableSPIFFECertValidation, _ = p.boolean(attr)
	}
	if attr, ok := a["disabled"]; ok {
		out.Disabled, _ = p.boolean(attr)
	}
	return out
}

// configured reports whether the sds block changes anything.
func (c SDS) configured() bool {
	return c != SDS{Range: c.Range}
}

// render writes the attributes set, as spire-agent's sds block takes them
// and with disabled when withDisabled (arbor's own rendering).
func (c SDS) render(b *Block, withDisabled bool) {
	b.setIf("default_svid_name", c.DefaultSVIDName).
		setIf("default_bundle_name", c.DefaultBundleName).
		setIf("default_all_bundles_name", c.DefaultAllBundlesName)
	if c.DisableSPIFFECertValidation {
		b.set("disable_spiffe_cert_validation", true)
	}
	if withDisabled && c.Disabled {
		b.set("disabled", true)
	}
}

// renderSPIRESDS writes spire-agent's sds block (inside its agent block)
// when the agent's is not the default. spire-agent always serves SDS, so a
// disabled one is a note.
func renderSPIRESDS(cfg *SPIREConfig, ab *Block, c SDS) {
	if c.Disabled {
		cfg.AgentNotes = append(cfg.AgentNotes, "sds: disabled left out: spire-agent always serves Envoy SDS on its socket")
	}
	if c.DefaultSVIDName != "" || c.DefaultBundleName != "" || c.DefaultAllBundlesName != "" || c.DisableSPIFFECertValidation {
		c.render(ab.block("sds"), false)
	}
}
