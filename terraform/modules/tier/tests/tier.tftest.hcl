# Plan-time tests of the tier module against the example tree's topology:
# `tofu test` in terraform/modules/tier (the provider installed as
# docs/terraform.md says). No server is needed: the topology data sources
# read the file, and planning a create does not dial the provider's server.

provider "arbor" {
  alias        = "parent"
  admin_socket = "/nonexistent/parent/admin.sock"
}

provider "arbor" {
  admin_socket = "/nonexistent/own/admin.sock"
}

variables {
  topology_path = "../../examples/tree/topology.hcl"
  vars          = { state_root = "/var/lib/arbor" }
  node          = "region-a"
  install_dir   = "/etc/arbor/region-a"
  arbor_binary  = "/usr/bin/arbor"
  run_as_uid    = 998
}

run "region_registered_at_parent" {
  command = plan

  # The example's join-token agents are warnings, which tofu test counts
  # as failures of the check block.
  expect_failures = [check.topology_warnings]

  assert {
    condition     = arbor_downstream.this[0].spiffe_id == "spiffe://example.org/arbor/server/region-a"
    error_message = "downstream spiffe_id = ${arbor_downstream.this[0].spiffe_id}, want the server's"
  }
  assert {
    condition     = arbor_downstream.this[0].agent_id == "spiffe://example.org/arbor/agent/region-a"
    error_message = "downstream agent_id = ${arbor_downstream.this[0].agent_id}, want the agent's alias"
  }
  assert {
    condition     = arbor_downstream.this[0].selectors == toset(["unix:uid:998"])
    error_message = "downstream selectors are not unix:uid:<run_as_uid>"
  }
  assert {
    condition     = length(arbor_entry.this) == 0
    error_message = "entry blocks planned while serving = false"
  }
  assert {
    condition = jsonencode(output.server_command) == jsonencode([
      "/usr/bin/arbor", "server", "--topology", "/etc/arbor/region-a/topology.hcl", "--node", "region-a",
      "--var", "state_root=/var/lib/arbor",
    ])
    error_message = "server_command = ${jsonencode(output.server_command)}"
  }
  assert {
    condition = jsonencode(output.agent_command) == jsonencode([
      "/usr/bin/arbor", "agent", "run", "--topology", "/etc/arbor/region-a/topology.hcl", "--node", "region-a",
      "--trust-bundle", "/etc/arbor/region-a/bundle.pem", "--join-token-file", "/etc/arbor/region-a/join-token",
      "--var", "state_root=/var/lib/arbor",
    ])
    error_message = "agent_command = ${jsonencode(output.agent_command)}"
  }
  assert {
    condition     = output.admin_socket == "/var/lib/arbor/region-a/admin.sock" && output.parent == "root"
    error_message = "admin_socket ${output.admin_socket}, parent ${output.parent}"
  }
  assert {
    condition     = jsonencode(output.children) == jsonencode(["leaf-a1", "leaf-a2"])
    error_message = "children = ${jsonencode(output.children)}"
  }
}

run "entry_blocks_once_serving" {
  command = plan

  # The example's join-token agents are warnings, which tofu test counts
  # as failures of the check block.
  expect_failures = [check.topology_warnings]

  variables {
    serving = true
  }

  assert {
    condition     = jsonencode(keys(arbor_entry.this)) == jsonencode(["ops"])
    error_message = "entries planned: ${jsonencode(keys(arbor_entry.this))}, want [\"ops\"]"
  }
  assert {
    condition     = arbor_entry.this["ops"].parent_id == "spiffe://example.org/region-a/workers" && arbor_entry.this["ops"].selectors == toset(["unix:uid:1000"])
    error_message = "entry ops does not match its block"
  }
}

run "root_not_registered" {
  command = plan

  # The example's join-token agents are warnings, which tofu test counts
  # as failures of the check block.
  expect_failures = [check.topology_warnings]

  variables {
    node     = "root"
    register = false
    serving  = true
  }

  assert {
    condition     = length(arbor_downstream.this) == 0 && length(output.agent_command) == 0 && output.bootstrap_bundle == null
    error_message = "the root has a registration or an agent command"
  }
  assert {
    condition     = jsonencode(keys(arbor_entry.this)) == jsonencode(["dashboard"])
    error_message = "root entries planned: ${jsonencode(keys(arbor_entry.this))}"
  }
}

run "unknown_node_fails" {
  command = plan

  variables {
    node = "region-c"
  }

  expect_failures = [data.arbor_tier_config.hcl, check.topology_warnings]
}

run "registered_root_fails" {
  command = plan

  variables {
    node = "root"
  }

  expect_failures = [arbor_downstream.this, check.topology_warnings]
}

run "wrong_parent_fails" {
  command = plan

  variables {
    node          = "leaf-b1"
    expect_parent = "region-a"
  }

  expect_failures = [data.arbor_tier_config.hcl, check.topology_warnings]
}
