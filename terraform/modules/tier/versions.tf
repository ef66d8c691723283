terraform {
  required_version = ">= 1.6.0"

  required_providers {
    arbor = {
      source = "arborid/arbor"
      # arbor        = the tier's own server (its entry blocks, once it serves)
      # arbor.parent = the parent tier's server (the tier's registration)
      configuration_aliases = [arbor.parent]
    }
  }
}
