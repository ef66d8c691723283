# One tier of a topology file: its registration at the parent (provider
# arbor.parent), its entry blocks at its own server (provider arbor, once it
# serves), and everything its machine needs to run it (files, commands, a
# cloud-init document).

data "arbor_topology" "this" {
  path = var.topology_path
  vars = var.vars
}

locals {
  # The tier as the topology file describes it; null when var.node names no
  # server block (the preconditions below say so).
  server = try(data.arbor_topology.this.servers[var.node], null)
  exists = local.server != null
  parent = try(local.server.parent, "")
  agent  = try(local.server.agent, null)

  # How the co-located agent attests to the parent: "join_token" or
  # "x509pop" ("" when the tier has no agent: the root).
  bootstrap       = try(local.agent.node_attestor, "")
  join_token_mode = var.register && local.bootstrap == "join_token"

  # The downstream entry selects the server process: the agent block's
  # server_selectors, else the uid the server runs as (what `arbor topology
  # apply` does with its own uid).
  selectors = length(try(local.agent.server_selectors, [])) > 0 ? local.agent.server_selectors : ["unix:uid:${var.run_as_uid}"]

  entries  = try([for e in local.server.entries : e], [])
  children = try([for c in local.server.children : c], [])
  unexpected_children = var.expect_children == null ? [] : [
    for c in var.expect_children : c if !contains(local.children, c)
  ]

  # Warnings about this tier (they name it in quotes); the root, which has
  # the whole tree below it, reports every warning of the file.
  warnings = local.parent == "" ? data.arbor_topology.this.warnings : [
    for w in data.arbor_topology.this.warnings : w if strcontains(w, "\"${var.node}\"")
  ]

  topology_file = "${var.install_dir}/topology.hcl"
  token_file    = "${var.install_dir}/join-token"
  bundle_file   = "${var.install_dir}/bundle.pem"

  # --var NAME=VALUE for every variable, sorted by name.
  var_args = flatten([for k in sort(keys(var.vars)) : ["--var", "${k}=${var.vars[k]}"]])
}

data "arbor_tier_config" "hcl" {
  path   = var.topology_path
  vars   = var.vars
  node   = var.node
  format = "hcl"

  lifecycle {
    precondition {
      condition     = local.exists
      error_message = "node \"${var.node}\" is not a server block of ${var.topology_path} (its servers: ${join(", ", sort(keys(data.arbor_topology.this.servers)))})"
    }
    precondition {
      condition     = !local.exists || var.expect_parent == null || local.parent == var.expect_parent
      error_message = "server \"${var.node}\" of ${var.topology_path} has parent \"${local.parent}\", not \"${coalesce(var.expect_parent, "-")}\""
    }
    precondition {
      condition     = !local.exists || length(local.unexpected_children) == 0
      error_message = "${join(", ", [for c in local.unexpected_children : "\"${c}\""])} ${length(local.unexpected_children) == 1 ? "is not a child" : "are not children"} of server \"${var.node}\" in ${var.topology_path} (its children: ${join(", ", local.children)})"
    }
  }
}

# The same tier as a real SPIRE server and agent would run it
# (`arbor topology render --format spire`), for users of spire-server.
data "arbor_tier_config" "spire" {
  path   = var.topology_path
  vars   = var.vars
  node   = data.arbor_tier_config.hcl.node # read after the precondition above
  format = "spire"
}

# The tier's registration at its parent: one downstream entry (spiffe_id =
# the tier's server, parent_id = its co-located agent) and, for a join_token
# agent, a join token aliased to the agent's SPIFFE ID.
resource "arbor_downstream" "this" {
  provider = arbor.parent
  count    = var.register ? 1 : 0

  spiffe_id = data.arbor_tier_config.hcl.spiffe_id
  # join_token: the token's alias; x509pop: computed by the provider from the
  # agent's certificate, as the parent will name the agent.
  agent_id            = local.bootstrap == "join_token" ? local.agent.spiffe_id : null
  bootstrap           = local.bootstrap == "" ? null : local.bootstrap
  x509pop_certificate = local.bootstrap == "x509pop" ? file(local.agent.x509pop_certificate_path) : null
  selectors           = local.selectors
  join_token_ttl      = local.bootstrap == "join_token" ? var.join_token_ttl : null

  lifecycle {
    # One failure at a time: the node exists (data.arbor_tier_config.hcl
    # says so otherwise), then each condition given the one before.
    precondition {
      condition     = local.parent != ""
      error_message = "server \"${var.node}\" is the root of ${var.topology_path}: it has no parent to register at; set register = false"
    }
    precondition {
      condition     = local.parent == "" || local.agent != null
      error_message = "server \"${var.node}\" has no agent block: a registered tier needs the co-located agent that attests to its parent \"${local.parent}\""
    }
    precondition {
      condition     = local.agent == null || contains(["join_token", "x509pop"], local.bootstrap)
      error_message = "server \"${var.node}\"'s agent attests with \"${local.bootstrap}\": arbor_downstream registers join_token and x509pop agents only (register it with arbor_downstream and arbor_entry directly)"
    }
  }
}

# The tier's entry blocks, at its own server once it serves.
resource "arbor_entry" "this" {
  for_each = var.serving ? { for e in local.entries : e.name => e } : {}

  spiffe_id      = each.value.spiffe_id
  parent_id      = each.value.parent_id
  selectors      = each.value.selectors
  x509_svid_ttl  = try(each.value.x509_svid_ttl, "") == "" ? null : each.value.x509_svid_ttl
  jwt_svid_ttl   = try(each.value.jwt_svid_ttl, "") == "" ? null : each.value.jwt_svid_ttl
  dns_names      = length(try(each.value.dns_names, [])) > 0 ? each.value.dns_names : null
  federates_with = length(try(each.value.federates_with, [])) > 0 ? toset(each.value.federates_with) : null
  hint           = try(each.value.hint, "") == "" ? null : each.value.hint
  admin          = try(each.value.admin, false)
  downstream     = try(each.value.downstream, false)
}

# The topology validator's warnings (join-token agents, short outage
# budgets, ...) as plan warnings; errors fail data.arbor_topology itself.
check "topology_warnings" {
  assert {
    condition     = length(local.warnings) == 0
    error_message = "${var.topology_path} has ${length(local.warnings)} warning(s) about ${local.parent == "" ? "its tree" : "server \"${var.node}\""}:\n${join("\n", local.warnings)}"
  }
}

locals {
  join_token       = local.join_token_mode ? one(arbor_downstream.this[*].join_token) : null
  bootstrap_bundle = one(arbor_downstream.this[*].bootstrap_bundle)

  files = merge(
    { (local.topology_file) = data.arbor_topology.this.content },
    local.join_token_mode ? { (local.token_file) = local.join_token } : {},
    var.register ? { (local.bundle_file) = local.bootstrap_bundle } : {},
  )

  server_command = concat(
    [var.arbor_binary, "server", "--topology", local.topology_file, "--node", var.node],
    local.var_args,
  )
  agent_command = local.agent == null ? [] : concat(
    [var.arbor_binary, "agent", "run", "--topology", local.topology_file, "--node", var.node],
    var.register ? ["--trust-bundle", local.bundle_file] : [],
    local.join_token_mode ? ["--join-token-file", local.token_file] : [],
    local.var_args,
  )

  # systemd units for cloud_init: the agent first (the server asks it for
  # the SVID of its downstream entry), then the server.
  agent_unit  = "arbor-agent-${var.node}.service"
  server_unit = "arbor-server-${var.node}.service"
  user_line   = var.run_as_uid == 0 ? "" : "User=${var.run_as_uid}\n"
  units = merge(
    local.agent == null ? {} : {
      (local.agent_unit) = <<-UNIT
        [Unit]
        Description=arbor agent of tier ${var.node} (attests to ${local.parent == "" ? "its upstream" : local.parent})
        Wants=network-online.target
        After=network-online.target

        [Service]
        ExecStart=${join(" ", [for a in local.agent_command : jsonencode(replace(replace(a, "%", "%%"), "$", "$$"))])}
        ${local.user_line}Restart=on-failure
        RestartSec=5

        [Install]
        WantedBy=multi-user.target
      UNIT
    },
    {
      (local.server_unit) = <<-UNIT
        [Unit]
        Description=arbor server of tier ${var.node}
        Wants=network-online.target${local.agent == null ? "" : " ${local.agent_unit}"}
        After=network-online.target${local.agent == null ? "" : " ${local.agent_unit}"}

        [Service]
        ExecStart=${join(" ", [for a in local.server_command : jsonencode(replace(replace(a, "%", "%%"), "$", "$$"))])}
        ${local.user_line}Restart=on-failure
        RestartSec=5

        [Install]
        WantedBy=multi-user.target
      UNIT
    },
  )

  cloud_init = "#cloud-config\n${yamlencode({
    write_files = concat(
      [for path in sort(keys(local.files)) : {
        path        = path
        content     = local.files[path]
        permissions = path == local.token_file ? "0600" : (path == local.topology_file ? "0640" : "0644")
      }],
      [for name in sort(keys(local.units)) : {
        path        = "/etc/systemd/system/${name}"
        content     = local.units[name]
        permissions = "0644"
      }],
    )
    runcmd = concat(
      [["install", "-d", "-m", "0700", "-o", tostring(var.run_as_uid), data.arbor_tier_config.hcl.state_dir]],
      var.run_as_uid == 0 ? [] : [["chown", "-R", tostring(var.run_as_uid), var.install_dir]],
      [["systemctl", "daemon-reload"]],
      local.agent == null ? [] : [["systemctl", "enable", "--now", local.agent_unit]],
      [["systemctl", "enable", "--now", local.server_unit]],
    )
  })}"
}
