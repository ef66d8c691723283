package doctest

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"
)

// TestEnvoyBootstrapInWorkloadDoc: the Envoy bootstrap of docs/workload.md
// ("An Envoy bootstrap") is a valid envoy.config.bootstrap.v3.Bootstrap by
// Envoy's own protos and validation rules (every typed_config resolved and
// checked), its SDS secrets come from the agent's socket cluster over gRPC,
// and it asks only for names the agent serves by default.
func TestEnvoyBootstrapInWorkloadDoc(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "docs", "workload.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	start := strings.Index(doc, "### An Envoy bootstrap")
	if start < 0 {
		t.Fatal(`docs/workload.md has no "### An Envoy bootstrap" section`)
	}
	doc = doc[start:]
	open := strings.Index(doc, "```yaml\n")
	if open < 0 {
		t.Fatal("the section has no yaml block")
	}
	doc = doc[open+len("```yaml\n"):]
	block := doc[:strings.Index(doc, "```\n")]
	js, err := yaml.YAMLToJSON([]byte(block))
	if err != nil {
		t.Fatalf("the bootstrap is not YAML: %v", err)
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &b); err != nil {
		t.Fatalf("the bootstrap is not an Envoy v3 Bootstrap: %v", err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("the bootstrap breaks Envoy's rules: %v", err)
	}
	var agentCluster string
	for _, c := range b.StaticResources.Clusters {
		for _, e := range c.GetLoadAssignment().GetEndpoints() {
			for _, lb := range e.LbEndpoints {
				if lb.GetEndpoint().GetAddress().GetPipe().GetPath() == "/tmp/arbor-agent/public/api.sock" {
					agentCluster = c.Name
				}
			}
		}
	}
	if agentCluster == "" {
		t.Fatal("no cluster reaches the agent's default socket /tmp/arbor-agent/public/api.sock")
	}
	served := []string{"default", "ROOTCA", "ALL", "spiffe://example.org", "spiffe://example.org/web"}
	var names []string
	check := func(what string, cfgs ...*tlsv3.SdsSecretConfig) {
		for _, s := range cfgs {
			names = append(names, s.Name)
			if !slices.Contains(served, s.Name) {
				t.Errorf("%s asks for %q, which the agent does not serve for spiffe://example.org/web", what, s.Name)
			}
			src := s.GetSdsConfig().GetApiConfigSource()
			if src.GetApiType().String() != "GRPC" || len(src.GetGrpcServices()) != 1 || src.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() != agentCluster {
				t.Errorf("%s: secret %q is not fetched over gRPC from cluster %q: %v", what, s.Name, agentCluster, src)
			}
		}
	}
	for _, l := range b.StaticResources.Listeners {
		for _, fc := range l.FilterChains {
			for _, f := range fc.Filters {
				var hcm hcmv3.HttpConnectionManager
				if err := f.GetTypedConfig().UnmarshalTo(&hcm); err != nil {
					t.Fatalf("listener %s: %v", l.Name, err)
				}
				if err := hcm.ValidateAll(); err != nil {
					t.Errorf("listener %s: %v", l.Name, err)
				}
			}
			var tc tlsv3.DownstreamTlsContext
			if err := fc.GetTransportSocket().GetTypedConfig().UnmarshalTo(&tc); err != nil {
				t.Fatalf("listener %s: %v", l.Name, err)
			}
			if err := tc.ValidateAll(); err != nil {
				t.Errorf("listener %s: %v", l.Name, err)
			}
			ctx := tc.CommonTlsContext
			check("listener "+l.Name, append(ctx.TlsCertificateSdsSecretConfigs, ctx.GetCombinedValidationContext().GetValidationContextSdsSecretConfig())...)
		}
	}
	for _, c := range b.StaticResources.Clusters {
		if c.TransportSocket == nil {
			continue
		}
		var tc tlsv3.UpstreamTlsContext
		if err := c.TransportSocket.GetTypedConfig().UnmarshalTo(&tc); err != nil {
			t.Fatalf("cluster %s: %v", c.Name, err)
		}
		if err := tc.ValidateAll(); err != nil {
			t.Errorf("cluster %s: %v", c.Name, err)
		}
		ctx := tc.CommonTlsContext
		check("cluster "+c.Name, append(ctx.TlsCertificateSdsSecretConfigs, ctx.GetCombinedValidationContext().GetValidationContextSdsSecretConfig())...)
	}
	slices.Sort(names)
	if want := []string{"ROOTCA", "default", "spiffe://example.org", "spiffe://example.org/web"}; !slices.Equal(names, want) {
		t.Errorf("the bootstrap asks for %v, want %v", names, want)
	}
}
