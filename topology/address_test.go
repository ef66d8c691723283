package topology

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// address is one host:port or a list of them; without it a block is
// reached at every replica's listen address.
func TestParseAddressList(t *testing.T) {
	for _, c := range []struct {
		name, attrs string
		want        []string
	}{
		{"one address", `address = "lb.example.org:8081"`, []string{"lb.example.org:8081"}},
		{"a list", `address = ["10.0.0.1:8081", "10.0.0.2:8081"]`, []string{"10.0.0.1:8081", "10.0.0.2:8081"}},
		{"a list from a variable", `address = var.servers`, []string{"10.0.0.7:8081", "10.0.0.8:8081"}},
		{"no address, one process", ``, []string{"127.0.0.1:8081"}},
		{"no address, three replicas", "replicas = 3\nhealth_listen = \"off\"\ndatastore \"postgres\" { dsn = \"postgres://db/arbor\" }", []string{"127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"}},
		{"a load balancer over replicas", "replicas = 2\nhealth_listen = \"off\"\naddress = \"lb:8081\"\ndatastore \"postgres\" { dsn = \"postgres://db/arbor\" }", []string{"lb:8081"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := `trust_domain = "example.org"
variable "servers" { default = ["10.0.0.7:8081", "10.0.0.8:8081"] }
server "root" {
` + c.attrs + "\n}\n"
			f, diags := Parse([]byte(src), testPath)
			if diags.HasErrors() {
				t.Fatalf("Parse: %s", FormatDiagnostics(diags, nil))
			}
			s := f.Servers[0]
			if !slices.Equal(s.Addresses, c.want) || s.Address != c.want[0] {
				t.Errorf("Addresses = %q, Address = %q; want %q, %q", s.Addresses, s.Address, c.want, c.want[0])
			}
		})
	}
}

// A bad address list is reported at the element at fault, with what to
// write instead.
func TestParseAddressListErrors(t *testing.T) {
	for _, c := range []struct{ attr, pos, summary, detail string }{
		{`address = ["10.0.0.1:8081", 8081]`, "3:31", "Wrong value type", "address[1] must be a host:port string; got number"},
		{`address = ["10.0.0.1:8081", ["a:1"]]`, "3:31", "Wrong value type", "address[1] must be a host:port string; got tuple"},
		{`address = ["10.0.0.1", "10.0.0.2:8081"]`, "3:14", "Invalid address", `address[0] = "10.0.0.1" is not a host:port address`},
		{`address = ["a:1", "b:2", "a:1"]`, "3:28", "Duplicate address", `address[2] = "a:1" is also address[0]`},
		{`address = []`, "3:13", "Empty address list", "address lists no server"},
		{`address = 8081`, "3:13", "Wrong value type", "address must be a host:port string or a list of them; got number"},
		{`address = "nope"`, "3:13", "Invalid address", `address = "nope" is not a host:port address`},
		{`address = {a = "b:1"}`, "3:13", "Wrong value type", "got object"},
	} {
		src := `trust_domain = "example.org"
server "root" {
  ` + c.attr + "\n}\n"
		_, diags := Parse([]byte(src), testPath)
		found := false
		for _, d := range diags {
			if d.Subject != nil && d.Summary == c.summary && strings.Contains(d.Detail, c.detail) &&
				fmt.Sprintf("%d:%d", d.Subject.Start.Line, d.Subject.Start.Column) == c.pos {
				found = true
			}
		}
		if !found {
			t.Errorf("Parse(%s) did not report %s %s %q; it reported:\n%s", c.attr, c.pos, c.summary, c.detail, FormatDiagnostics(diags, nil))
		}
	}
}

// Two servers may not share an address, whether it is written alone or in
// a list.
func TestValidateAddressInTwoLists(t *testing.T) {
	src := `trust_domain = "example.org"
server "root" {
  address = ["10.0.0.1:8081", "10.0.0.2:8081"]
}
server "region" {
  parent  = "root"
  listen  = "127.0.0.1:8082"
  ca_ttl  = "12h"
  address = ["10.0.0.3:8081", "10.0.0.2:8081"]
}
`
	_, diags := Parse([]byte(src), testPath)
	if !hasDiag(diags, "9:13 Duplicate address", `Servers "region" and "root" (line 2) are both reached at 10.0.0.2:8081`) {
		t.Errorf("Parse did not report the shared address; it reported:\n%s", FormatDiagnostics(diags, nil))
	}
}

// render writes the list; render --format spire, whose spire-agent and
// UpstreamAuthority "spire" take one address, names the first and says to
// put a load balancer in front.
func TestRenderAddressList(t *testing.T) {
	src := `trust_domain = "example.org"
server "root" {
  address = ["10.0.0.1:8081", "10.0.0.2:8081"]
}
server "region" {
  parent = "root"
  listen = "127.0.0.1:8082"
  ca_ttl = "12h"
}
`
	f, diags := Parse([]byte(src), testPath)
	if diags.HasErrors() {
		t.Fatalf("Parse: %s", FormatDiagnostics(diags, nil))
	}
	cfg, err := Render(f, "region")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := cfg.WriteHCL(&b); err != nil {
		t.Fatal(err)
	}
	if want := `["10.0.0.1:8081", "10.0.0.2:8081"]`; strings.Count(b.String(), want) != 2 {
		t.Errorf("Render(region) should write %s as parent_address and the agent's server_address:\n%s", want, b.String())
	}
	sc, err := RenderSPIRE(f, "region")
	if err != nil {
		t.Fatal(err)
	}
	var server, agent strings.Builder
	if err := sc.WriteServerConf(&server); err != nil {
		t.Fatal(err)
	}
	if err := sc.WriteAgentConf(&agent); err != nil {
		t.Fatal(err)
	}
	for name, out := range map[string]string{"server.conf": server.String(), "agent.conf": agent.String()} {
		flat := strings.Join(strings.Fields(out), " ")
		if !strings.Contains(flat, `server_address = "10.0.0.1"`) || strings.Contains(flat, `"10.0.0.2"`) {
			t.Errorf("%s should dial the first address only:\n%s", name, out)
		}
		if !strings.Contains(flat, "takes one server address; root is reached at 10.0.0.1:8081, 10.0.0.2:8081") ||
			!strings.Contains(flat, "TCP load balancer") {
			t.Errorf("%s lacks the note about one address:\n%s", name, out)
		}
	}
}
