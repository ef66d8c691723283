package tfprovider

import (
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/resource"
)

// resources lists every resource type the provider serves.
func resources() []func() resource.Resource {
	return []func() resource.Resource{
		newEntryResource,
		newJoinTokenResource,
		newDownstreamResource,
		newFederationResource,
	}
}

// dataSources lists the data sources that read a server (the topology ones
// are internal/tftopology's).
func dataSources() []func() datasource.DataSource {
	return []func() datasource.DataSource{
		newBundleDataSource,
	}
}
