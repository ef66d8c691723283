output "node" {
  description = "The tier's server block name."
  value       = var.node
}

output "parent" {
  description = "The parent tier's name (\"\" for the root)."
  value       = data.arbor_tier_config.hcl.parent
}

output "spiffe_id" {
  description = "The tier's server SPIFFE ID (the spiffe_id of its downstream entry at the parent)."
  value       = data.arbor_tier_config.hcl.spiffe_id
}

output "agent_id" {
  description = "SPIFFE ID of the co-located agent at the parent (the downstream entry's parent_id); null for a tier without an agent."
  value       = var.register ? one(arbor_downstream.this[*].agent_id) : (data.arbor_tier_config.hcl.agent_spiffe_id == "" ? null : data.arbor_tier_config.hcl.agent_spiffe_id)
}

output "admin_socket" {
  description = "The tier's admin socket, for a provider block of the tier's own server."
  value       = data.arbor_tier_config.hcl.admin_socket
}

output "address" {
  description = "How agents and child tiers reach the tier (host:port)."
  value       = data.arbor_tier_config.hcl.address
}

output "listen" {
  description = "The address the tier's server listens on."
  value       = data.arbor_tier_config.hcl.listen
}

output "state_dir" {
  description = "The tier's state directory (CA keys, datastore, sockets by default)."
  value       = data.arbor_tier_config.hcl.state_dir
}

output "server_config" {
  description = "The tier's resolved server configuration (`arbor topology render --node NODE`)."
  value       = data.arbor_tier_config.hcl.server_config
}

output "agent_config" {
  description = "The resolved configuration of the tier's co-located agent (\"\" without an agent block)."
  value       = data.arbor_tier_config.hcl.agent_config
}

output "spire_server_config" {
  description = "server.conf for a real spire-server in the tier's place (`arbor topology render --format spire`)."
  value       = data.arbor_tier_config.spire.server_config
}

output "spire_agent_config" {
  description = "agent.conf for the spire-agent beside such a spire-server (\"\" without an agent block)."
  value       = data.arbor_tier_config.spire.agent_config
}

output "downstream_entry_id" {
  description = "ID of the tier's downstream entry at the parent (null when register = false)."
  value       = one(arbor_downstream.this[*].id)
}

output "bootstrap_bundle" {
  description = "The parent's X.509 roots (PEM) when the tier was registered, for the agent's first attestation; stable across CA rotations. null when register = false."
  value       = local.bootstrap_bundle
}

output "join_token" {
  description = "The single-use join token of the co-located agent (join_token bootstrap only, else null)."
  value       = local.join_token
  sensitive   = true
}

output "entry_ids" {
  description = "Entry block name => entry ID at the tier's own server ({} until serving = true)."
  value       = { for name, e in arbor_entry.this : name => e.id }
}

output "files" {
  description = "Absolute path => content of every file the tier's machine needs: INSTALL_DIR/topology.hcl, INSTALL_DIR/join-token (join_token bootstrap), INSTALL_DIR/bundle.pem (registered tiers)."
  value       = local.files
  sensitive   = true
}

output "server_command" {
  description = "argv that runs the tier's server: ARBOR server --topology INSTALL_DIR/topology.hcl --node NODE [--var K=V ...]."
  value       = local.server_command
}

output "agent_command" {
  description = "argv that runs the tier's co-located agent: ARBOR agent run --topology ... --node NODE --trust-bundle INSTALL_DIR/bundle.pem [--join-token-file INSTALL_DIR/join-token] [--var K=V ...]; [] without an agent block."
  value       = local.agent_command
}

output "cloud_init" {
  description = "A #cloud-config document that writes files and two systemd units (agent, server) running the commands above, and starts them."
  value       = local.cloud_init
  sensitive   = true
}

output "children" {
  description = "Names of the tier's child tiers in the topology file, in file order."
  value       = local.children
}

output "bootstrap" {
  description = "How the tier's co-located agent attests to the parent: \"join_token\", \"x509pop\", another attestor's name, or \"\" without an agent."
  value       = local.bootstrap
}

output "agent_socket_path" {
  description = "The co-located agent's Workload API socket, which the tier's server dials (\"\" without an agent)."
  value       = data.arbor_tier_config.hcl.agent_socket_path
}

output "topology_content" {
  description = "The topology file's text (what files holds at INSTALL_DIR/topology.hcl)."
  value       = data.arbor_topology.this.content
}
