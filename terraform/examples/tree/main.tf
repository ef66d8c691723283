# The tree of topology.hcl under Terraform/OpenTofu: the root's entry blocks,
# the two regions registered at the root, and, once the regions serve
# (regions_serving = true), their leaves registered at them. See README.md.

terraform {
  required_version = ">= 1.6.0"

  required_providers {
    arbor = {
      source = "arborid/arbor"
    }
  }
}

variable "state_root" {
  description = "The topology's state_root variable: every tier's state_dir is STATE_ROOT/<name>, its admin socket STATE_ROOT/<name>/admin.sock."
  type        = string
}

variable "install_root" {
  description = "Where each tier's files go on its machine: INSTALL_ROOT/<name>/topology.hcl, join-token, bundle.pem."
  type        = string
  default     = "/etc/arbor"
}

variable "arbor_binary" {
  description = "Path of the arbor binary on the tiers' machines."
  type        = string
  default     = "/usr/local/bin/arbor"
}

variable "run_as_uid" {
  description = "uid the tiers' server processes run as (their downstream entries select unix:uid:<uid>)."
  type        = number
  default     = 0
}

variable "regions_serving" {
  description = "The regions' servers run (started from the region outputs of a first apply): register their leaves and apply their entry blocks."
  type        = bool
  default     = false
}

locals {
  topology = "${path.module}/topology.hcl"
  vars     = { state_root = var.state_root }
}

# Each tier's own server, through its admin socket (the topology's default,
# STATE_DIR/admin.sock). A provider dials only when a resource needs it, so
# a region's provider is harmless while the region does not run yet.
provider "arbor" {
  alias        = "root"
  admin_socket = "${var.state_root}/root/admin.sock"
}

provider "arbor" {
  alias        = "region_a"
  admin_socket = "${var.state_root}/region-a/admin.sock"
}

provider "arbor" {
  alias        = "region_b"
  admin_socket = "${var.state_root}/region-b/admin.sock"
}

# The root runs before the first apply (arbor server --topology
# topology.hcl --node root --var state_root=...): its entry blocks.
module "root" {
  source = "../../modules/tier"
  providers = {
    arbor        = arbor.root
    arbor.parent = arbor.root
  }

  topology_path = local.topology
  vars          = local.vars
  node          = "root"
  register      = false
  serving       = true
  install_dir   = "${var.install_root}/root"
  arbor_binary  = var.arbor_binary
  run_as_uid    = var.run_as_uid
}

module "region_a" {
  source = "../../modules/region"
  providers = {
    arbor        = arbor.region_a
    arbor.parent = arbor.root
  }

  topology_path    = local.topology
  vars             = local.vars
  node             = "region-a"
  serving          = var.regions_serving
  install_dir      = "${var.install_root}/region-a"
  leaf_install_dir = var.install_root
  arbor_binary     = var.arbor_binary
  run_as_uid       = var.run_as_uid
}

module "region_b" {
  source = "../../modules/region"
  providers = {
    arbor        = arbor.region_b
    arbor.parent = arbor.root
  }

  topology_path    = local.topology
  vars             = local.vars
  node             = "region-b"
  serving          = var.regions_serving
  install_dir      = "${var.install_root}/region-b"
  leaf_install_dir = var.install_root
  arbor_binary     = var.arbor_binary
  run_as_uid       = var.run_as_uid
}

output "root" {
  description = "The root tier's module outputs (see terraform/modules/tier)."
  value       = module.root
  sensitive   = true
}

output "region_a" {
  description = "region-a: region (its tier's outputs) and leaves (leaf-a1, leaf-a2 once regions_serving = true)."
  value       = module.region_a
  sensitive   = true
}

output "region_b" {
  description = "region-b: region (its tier's outputs) and leaves (leaf-b1 once regions_serving = true)."
  value       = module.region_b
  sensitive   = true
}
