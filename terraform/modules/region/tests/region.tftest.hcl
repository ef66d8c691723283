# Plan-time tests of the region module: `tofu test` in
# terraform/modules/region. No server is needed: the topology data sources
# read the file, and planning a create does not dial the provider's server.
# testdata/tree.hcl has x509pop agents and no warnings (tofu test counts a
# failed check block in a nested module as a failure of the run).

provider "arbor" {
  alias        = "parent"
  admin_socket = "/nonexistent/parent/admin.sock"
}

provider "arbor" {
  admin_socket = "/nonexistent/own/admin.sock"
}

variables {
  topology_path    = "tests/testdata/tree.hcl"
  node             = "region-a"
  install_dir      = "/etc/arbor/region-a"
  leaf_install_dir = "/srv/arbor"
  arbor_binary     = "/usr/bin/arbor"
  run_as_uid       = 998
}

run "leaves_wait_for_the_region" {
  command = plan

  providers = {
    arbor        = arbor
    arbor.parent = arbor.parent
  }

  assert {
    condition     = length(module.leaf) == 0
    error_message = "leaves planned while the region does not serve"
  }
  assert {
    condition     = nonsensitive(output.region.agent_id) == "spiffe://example.org/spire/agent/x509pop/03c534962a08fd2b41937b985c1c926a48450268"
    error_message = "region agent_id is not the x509pop ID of testdata/agent.pem"
  }
  assert {
    condition     = jsonencode(nonsensitive(sort(keys(output.region.files)))) == jsonencode(["/etc/arbor/region-a/bundle.pem", "/etc/arbor/region-a/topology.hcl"])
    error_message = "region files: ${jsonencode(nonsensitive(keys(output.region.files)))}, want no join token for x509pop"
  }
  assert {
    condition     = nonsensitive(output.region.join_token) == null && length(nonsensitive(output.leaves)) == 0
    error_message = "an x509pop region has a join token, or leaves are output before serving"
  }
}

run "leaves_registered_once_serving" {
  command = plan

  providers = {
    arbor        = arbor
    arbor.parent = arbor.parent
  }

  variables {
    serving = true
  }

  assert {
    condition     = jsonencode(sort(keys(module.leaf))) == jsonencode(["leaf-a1", "leaf-a2"])
    error_message = "leaves planned: ${jsonencode(keys(module.leaf))}"
  }
  assert {
    condition = jsonencode(module.leaf["leaf-a1"].agent_command) == jsonencode([
      "/usr/bin/arbor", "agent", "run", "--topology", "/srv/arbor/leaf-a1/topology.hcl", "--node", "leaf-a1",
      "--trust-bundle", "/srv/arbor/leaf-a1/bundle.pem",
    ])
    error_message = "leaf-a1 agent_command = ${jsonencode(module.leaf["leaf-a1"].agent_command)}"
  }
  assert {
    condition     = module.leaf["leaf-a2"].spiffe_id == "spiffe://example.org/arbor/server/leaf-a2" && module.leaf["leaf-a2"].parent == "region-a"
    error_message = "leaf-a2 is not registered as region-a's child"
  }
  assert {
    condition     = module.leaf["leaf-a2"].agent_socket_path == "/run/arbor/leaf-a2/agent.sock" && module.leaf["leaf-a1"].bootstrap == "x509pop"
    error_message = "leaf-a2's socket or leaf-a1's bootstrap differ from the file"
  }
}
