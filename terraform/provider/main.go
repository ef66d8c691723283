// Command terraform-provider-arbor is arbor's Terraform/OpenTofu provider,
// source address arborid/arbor. Build it with
//
//	go build -o terraform-provider-arbor ./terraform/provider
//
// and install it for tofu/terraform through a filesystem mirror or
// dev_overrides (docs/terraform.md).
package main

import (
	"context"
	"flag"
	"log"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"

	"github.com/arborid/arbor/internal/tfprovider"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	debug := flag.Bool("debug", false, "run the provider for a debugger (prints TF_REATTACH_PROVIDERS)")
	flag.Parse()
	err := providerserver.Serve(context.Background(), tfprovider.New(version), providerserver.ServeOpts{
		Address: tfprovider.Address,
		Debug:   *debug,
	})
	if err != nil {
		log.Fatal(err)
	}
}
