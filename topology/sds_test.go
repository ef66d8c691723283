package topology

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/hcl/v2"
)

// TestParseSDS: an agent block's sds block reaches Agent.SDS; render writes
// it back, and render --format spire writes spire-agent's sds block inside
// its agent block (and a note for disabled, which spire-agent lacks).
func TestParseSDS(t *testing.T) {
	src := wlSrc(`    sds {
      default_svid_name              = "svid"
      default_bundle_name            = "bundle"
      default_all_bundles_name       = "every"
      disable_spiffe_cert_validation = true
      disabled                       = true
    }`)
	f, diags := Parse([]byte(src), testPath)
	if diags.HasErrors() {
		t.Fatal(FormatDiagnostics(diags, nil))
	}
	s, _ := f.Server("edge")
	want := SDS{DefaultSVIDName: "svid", DefaultBundleName: "bundle", DefaultAllBundlesName: "every", DisableSPIFFECertValidation: true, Disabled: true}
	if diff := cmp.Diff(want, s.Agent.SDS, cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Range" }, cmp.Ignore())); diff != "" {
		t.Errorf("SDS mismatch (-want +got):\n%s", diff)
	}
	if s.Agent.SDS.Range.Start.Line != 12 {
		t.Errorf("SDS range starts on line %d, want 12", s.Agent.SDS.Range.Start.Line)
	}

	sc, err := RenderSPIRE(f, "edge")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := sc.WriteAgentConf(&b); err != nil {
		t.Fatal(err)
	}
	conf := b.String()
	agentAt, sdsAt, pluginsAt := strings.Index(conf, "agent {"), strings.Index(conf, "  sds {"), strings.Index(conf, "plugins {")
	if agentAt < 0 || sdsAt < agentAt || pluginsAt < sdsAt {
		t.Errorf("agent.conf has no sds block inside its agent block:\n%s", conf)
	}
	for _, w := range []string{`default_svid_name              = "svid"`, `default_bundle_name            = "bundle"`,
		`default_all_bundles_name       = "every"`, `disable_spiffe_cert_validation = true`, "# sds: disabled left out"} {
		if !strings.Contains(conf, w) {
			t.Errorf("agent.conf lacks %q:\n%s", w, conf)
		}
	}
	if strings.Contains(conf, "disabled = true") || strings.Contains(conf, "disabled                       = true") {
		t.Errorf("agent.conf has arbor's disabled, which spire-agent refuses:\n%s", conf)
	}
	rc, err := Render(f, "edge")
	if err != nil {
		t.Fatal(err)
	}
	b.Reset()
	if err := rc.WriteHCL(&b); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"sds {", `default_svid_name              = "svid"`, `disabled                       = true`} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("render lacks %q:\n%s", w, b.String())
		}
	}

	// Without an sds block nothing is written: SPIRE's defaults hold.
	f, diags = Parse([]byte(wlSrc("")), testPath)
	if diags.HasErrors() {
		t.Fatal(FormatDiagnostics(diags, nil))
	}
	if s, _ := f.Server("edge"); s.Agent.SDS.configured() {
		t.Errorf("no sds block: SDS = %+v, want the zero value", s.Agent.SDS)
	}
	sc, err = RenderSPIRE(f, "edge")
	if err != nil {
		t.Fatal(err)
	}
	b.Reset()
	if err := sc.WriteAgentConf(&b); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "sds") {
		t.Errorf("agent.conf without an sds block mentions sds:\n%s", b.String())
	}
}

func TestSDSErrors(t *testing.T) {
	for _, tt := range []struct {
		name, body string
		want       []diagAt
	}{
		{"collides with a default", "    sds {\n      default_bundle_name = \"ALL\"\n    }", []diagAt{{"13:29", "SDS names collide"}}},
		{"two set alike", "    sds {\n      default_svid_name = \"x\"\n      default_all_bundles_name = \"x\"\n    }", []diagAt{{"14:34", "SDS names collide"}}},
		{"spiffe ID", "    sds {\n      default_svid_name = \"spiffe://example.org/web\"\n    }", []diagAt{{"13:27", "SDS name is a SPIFFE ID"}}},
		{"empty", "    sds {\n      default_bundle_name = \"\"\n    }", []diagAt{{"13:29", "Empty value"}}},
		{"not a bool", "    sds {\n      disabled = \"yes\"\n    }", []diagAt{{"13:18", "Wrong value type"}}},
		{"unknown attribute", "    sds {\n      enable = true\n    }", []diagAt{{"13:7", "Unsupported argument"}}},
		{"duplicate", "    sds {}\n    sds {}", []diagAt{{"13:5", "Duplicate sds block"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src := wlSrc(tt.body)
			_, diags := Parse([]byte(src), testPath)
			var got []diagAt
			for _, d := range diags {
				if d.Severity == hcl.DiagError && d.Subject != nil {
					got = append(got, diagAt{fmt.Sprintf("%d:%d", d.Subject.Start.Line, d.Subject.Start.Column), d.Summary})
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("diagnostics mismatch (-want +got):\n%s\nsource:\n%s\nall:\n%s", diff, src, FormatDiagnostics(diags, nil))
			}
		})
	}
}
