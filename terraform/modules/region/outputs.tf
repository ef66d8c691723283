output "region" {
  description = "Every output of the region's tier module (node, parent, spiffe_id, agent_id, admin_socket, address, listen, state_dir, server_config, agent_config, spire_server_config, spire_agent_config, downstream_entry_id, bootstrap_bundle, join_token, entry_ids, files, server_command, agent_command, cloud_init)."
  value       = module.region
  sensitive   = true
}

output "leaves" {
  description = "Leaf name => what its machine or cluster needs ({} until serving = true, when the leaves are registered at the region)."
  sensitive   = true
  value = {
    for leaf, m in module.leaf : leaf => {
      spiffe_id            = m.spiffe_id
      agent_id             = m.agent_id
      parent               = m.parent
      admin_socket         = m.admin_socket
      address              = m.address
      listen               = m.listen
      state_dir            = m.state_dir
      downstream_entry_id  = m.downstream_entry_id
      join_token           = m.join_token
      bootstrap_bundle     = m.bootstrap_bundle
      server_config        = m.server_config
      agent_config         = m.agent_config
      files                = m.files
      server_command       = m.server_command
      agent_command        = m.agent_command
      cloud_init           = m.cloud_init
      kubernetes_manifests = local.manifests[leaf]
    }
  }
}
