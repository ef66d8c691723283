variable "topology_path" {
  description = "Path of the topology file (HCL) that describes the tree this tier belongs to."
  type        = string
}

variable "vars" {
  description = "The topology file's variables (NAME = VALUE), given to the data sources and, as --var NAME=VALUE, to the commands the tier runs."
  type        = map(string)
  default     = {}
}

variable "node" {
  description = "Name of the tier's server block in the topology file."
  type        = string
}

variable "register" {
  description = "Register the tier at its parent (one downstream entry and, for join_token agents, a join token, made with provider arbor.parent). false for the root."
  type        = bool
  default     = true
}

variable "serving" {
  description = "The tier's own server already serves on its admin socket: only then are its entry blocks applied with provider arbor. Apply once with false, start the tier from the outputs, apply again with true."
  type        = bool
  default     = false
}

variable "install_dir" {
  description = "Directory on the tier's machine that receives the files of the files output (topology.hcl, join-token, bundle.pem); the commands refer to them there."
  type        = string
  default     = "/etc/arbor"
}

variable "arbor_binary" {
  description = "Path of the arbor binary on the tier's machine, the first element of server_command and agent_command."
  type        = string
  default     = "/usr/local/bin/arbor"
}

variable "run_as_uid" {
  description = "uid the tier's server process runs as: the downstream entry selects it with unix:uid:<uid> when the topology's agent block has no server_selectors."
  type        = number
  default     = 0

  validation {
    condition     = var.run_as_uid >= 0 && floor(var.run_as_uid) == var.run_as_uid
    error_message = "run_as_uid must be a non-negative whole number, got ${var.run_as_uid}."
  }
}

variable "join_token_ttl" {
  description = "Lifetime of the join token made for a join_token agent (a duration such as \"1h\" or \"30m\"); an unused token expires after it."
  type        = string
  default     = "1h"
}

variable "expect_parent" {
  description = "When set, the plan fails unless node's parent in the topology file is this server (the region module sets it for its leaves); null: any parent."
  type        = string
  default     = null
}

variable "expect_children" {
  description = "When set, the plan fails unless each of these is a child of node in the topology file (the region module sets it to its leaves); null: no check."
  type        = list(string)
  default     = null
}
