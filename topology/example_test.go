package topology_test

import (
	"fmt"

	"github.com/arborid/arbor/topology"
)

func ExampleParse() {
	src := []byte(`
trust_domain = "example.org"

defaults {
  x509_svid_ttl = "2h"
}

server "root" {
  listen = "127.0.0.1:8081"
  ca_ttl = "7d"
}
`)
	f, diags := topology.Parse(src, "/etc/arbor/topology.hcl")
	if diags.HasErrors() {
		fmt.Print(topology.FormatDiagnostics(diags, nil))
		return
	}
	s, err := f.Server("root")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(s.Listen, s.CATTL, s.X509SVIDTTL, s.KeyType)
	fmt.Println(s.StateDir, s.Datastore.Kind)
	// Output:
	// 127.0.0.1:8081 168h0m0s 2h0m0s ec-p256
	// /etc/arbor/.arbor/topology/root sqlite
}

func ExampleFormatDiagnostics() {
	src := []byte(`trust_domain = "example.org"
server "root" {
  lisen = "127.0.0.1:8081"
}
`)
	_, diags := topology.Parse(src, "topology.hcl")
	fmt.Print(topology.FormatDiagnostics(diags, nil))
	// Output:
	// topology.hcl:3:3: error: Unsupported argument
	//   An argument named "lisen" is not expected here. Did you mean "listen"?
}
