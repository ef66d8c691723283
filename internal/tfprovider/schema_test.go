package tfprovider

import (
	"context"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/resource"
)

// The schema documents every attribute: the provider's reference is
// generated from these descriptions.
func TestEveryAttributeHasADescription(t *testing.T) {
	ctx := context.Background()
	names := map[string]bool{}
	for _, f := range resources() {
		r := f()
		var meta resource.MetadataResponse
		r.Metadata(ctx, resource.MetadataRequest{ProviderTypeName: "arbor"}, &meta)
		var resp resource.SchemaResponse
		r.Schema(ctx, resource.SchemaRequest{}, &resp)
		if resp.Diagnostics.HasError() {
			t.Fatalf("%s schema: %v", meta.TypeName, resp.Diagnostics)
		}
		names[meta.TypeName] = true
		if resp.Schema.Description == "" {
			t.Errorf("resource %s has no description", meta.TypeName)
		}
		for name, a := range resp.Schema.Attributes {
			if a.GetDescription() == "" {
				t.Errorf("resource %s: attribute %s has no description", meta.TypeName, name)
			}
		}
	}
	for _, f := range dataSources() {
		d := f()
		var meta datasource.MetadataResponse
		d.Metadata(ctx, datasource.MetadataRequest{ProviderTypeName: "arbor"}, &meta)
		var resp datasource.SchemaResponse
		d.Schema(ctx, datasource.SchemaRequest{}, &resp)
		names[meta.TypeName] = true
		if resp.Schema.Description == "" {
			t.Errorf("data source %s has no description", meta.TypeName)
		}
		for name, a := range resp.Schema.Attributes {
			if a.GetDescription() == "" {
				t.Errorf("data source %s: attribute %s has no description", meta.TypeName, name)
			}
		}
	}
	for _, want := range []string{"arbor_entry", "arbor_join_token", "arbor_downstream", "arbor_federation_relationship", "arbor_bundle"} {
		if !names[want] {
			t.Errorf("%s is not registered", want)
		}
	}
}
