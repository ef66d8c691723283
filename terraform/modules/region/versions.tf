terraform {
  required_version = ">= 1.6.0"

  required_providers {
    arbor = {
      source = "arborid/arbor"
      # arbor        = the region's own server (its entry blocks and its leaves' registrations, once it serves)
      # arbor.parent = the region's parent (the root, usually): the region's registration
      configuration_aliases = [arbor.parent]
    }
  }
}
