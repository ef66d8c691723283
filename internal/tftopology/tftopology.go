// Package tftopology holds the Terraform data sources that read a topology
// file at plan time, with no server: arbor_topology (the tree, each tier's
// outage budget, warnings; an invalid file fails the plan with the
// topology's file:line:col diagnostics) and arbor_tier_config (one node's
// rendered server and agent configuration).
package tftopology

import "github.com/hashicorp/terraform-plugin-framework/datasource"

// DataSources lists the topology data sources.
func DataSources() []func() datasource.DataSource {
	return []func() datasource.DataSource{}
}
