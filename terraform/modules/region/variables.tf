variable "topology_path" {
  description = "Path of the topology file (HCL) that describes the tree the region belongs to."
  type        = string
}

variable "vars" {
  description = "The topology file's variables (NAME = VALUE), given to the data sources and, as --var NAME=VALUE, to the commands the region and its leaves run."
  type        = map(string)
  default     = {}
}

variable "node" {
  description = "Name of the region's server block in the topology file."
  type        = string
}

variable "register" {
  description = "Register the region at its parent (one downstream entry and, for a join_token agent, a join token, made with provider arbor.parent)."
  type        = bool
  default     = true
}

variable "serving" {
  description = "The region's own server already serves on its admin socket: only then are its entry blocks applied and its leaves registered, with provider arbor. Apply once with false, start the region from the region output, apply again with true."
  type        = bool
  default     = false
}

variable "install_dir" {
  description = "Directory on the region's machine that receives its files (topology.hcl, join-token, bundle.pem); its commands refer to them there."
  type        = string
  default     = "/etc/arbor"
}

variable "arbor_binary" {
  description = "Path of the arbor binary on the region's and the leaves' machines, the first element of their commands."
  type        = string
  default     = "/usr/local/bin/arbor"
}

variable "run_as_uid" {
  description = "uid the region's and the leaves' server processes run as: their downstream entries select them with unix:uid:<uid> when the topology's agent block has no server_selectors."
  type        = number
  default     = 0

  validation {
    condition     = var.run_as_uid >= 0 && floor(var.run_as_uid) == var.run_as_uid
    error_message = "run_as_uid must be a non-negative whole number, got ${var.run_as_uid}."
  }
}

variable "join_token_ttl" {
  description = "Lifetime of the join tokens made for join_token agents (the region's and each leaf's) (a duration such as \"1h\" or \"30m\"); an unused token expires after it."
  type        = string
  default     = "1h"
}

variable "leaves" {
  description = "The leaf tiers this module registers at the region (server block names whose parent is node); null = every child of node in the topology file."
  type        = list(string)
  default     = null
}

variable "leaf_install_dir" {
  description = "Directory under which each leaf's files go, one folder per leaf: LEAF_INSTALL_DIR/LEAF/topology.hcl, join-token, bundle.pem."
  type        = string
  default     = "/etc/arbor"
}

variable "namespace" {
  description = "Kubernetes namespace of the leaves' manifests (kubernetes_manifests)."
  type        = string
  default     = "arbor"
}

variable "image" {
  description = "Container image holding the arbor binary (on PATH as arbor), for the leaves' manifests."
  type        = string
  default     = "ghcr.io/arborid/arbor:latest"
}
