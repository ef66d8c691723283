# A region: one tier (module "region", registered at the region's parent)
# plus its leaf clusters, registered at the region once it serves (module
# "leaf", one per leaf), with what each leaf's machine or Kubernetes cluster
# needs to run it.

module "region" {
  source = "../tier"
  providers = {
    arbor        = arbor
    arbor.parent = arbor.parent
  }

  topology_path  = var.topology_path
  vars           = var.vars
  node           = var.node
  register       = var.register
  serving        = var.serving
  install_dir    = var.install_dir
  arbor_binary   = var.arbor_binary
  run_as_uid     = var.run_as_uid
  join_token_ttl = var.join_token_ttl

  # The plan fails when a leaf given is not a child of the region.
  expect_children = var.leaves
}

locals {
  leaves = var.leaves == null ? module.region.children : var.leaves
}

# Each leaf is a tier registered at the region's server (provider arbor as
# the leaf's parent). The leaf's own server is never called from here
# (serving = false): its entry blocks are applied with a tier module of its
# own, or with `arbor topology apply`, once it serves.
module "leaf" {
  source   = "../tier"
  for_each = var.serving ? toset(local.leaves) : toset([])
  providers = {
    arbor        = arbor
    arbor.parent = arbor
  }

  topology_path  = var.topology_path
  vars           = var.vars
  node           = each.key
  expect_parent  = var.node
  register       = true
  serving        = false
  install_dir    = "${var.leaf_install_dir}/${each.key}"
  arbor_binary   = var.arbor_binary
  run_as_uid     = var.run_as_uid
  join_token_ttl = var.join_token_ttl
}

locals {
  # In a leaf's pod the files are mounted at /etc/arbor, whatever
  # leaf_install_dir is on machines.
  k8s_dir  = "/etc/arbor"
  var_args = flatten([for k in sort(keys(var.vars)) : ["--var", "${k}=${var.vars[k]}"]])

  k8s = {
    for leaf, m in module.leaf : leaf => {
      name        = "arbor-${trim(replace(lower(leaf), "/[^a-z0-9-]+/", "-"), "-")}"
      labels      = { "app.kubernetes.io/name" = "arbor", "app.kubernetes.io/instance" = leaf, "app.kubernetes.io/component" = "leaf-tier" }
      port        = tonumber(regex("[0-9]+$", m.listen))
      state_dir   = m.state_dir
      socket_dir  = dirname(m.agent_socket_path)
      join_token  = m.join_token != null
      server_args = concat(["server", "--topology", "${local.k8s_dir}/topology.hcl", "--node", leaf], local.var_args)
      agent_args = concat(
        ["agent", "run", "--topology", "${local.k8s_dir}/topology.hcl", "--node", leaf, "--trust-bundle", "${local.k8s_dir}/bundle.pem"],
        m.bootstrap == "join_token" ? ["--join-token-file", "${local.k8s_dir}/join-token"] : [],
        local.var_args,
      )
    }
  }

  manifests = {
    for leaf, m in module.leaf : leaf => join("---\n", [for doc in [
      {
        apiVersion = "v1"
        kind       = "Namespace"
        metadata   = { name = var.namespace }
      },
      {
        apiVersion = "v1"
        kind       = "ConfigMap"
        metadata   = { name = "${local.k8s[leaf].name}-topology", namespace = var.namespace, labels = local.k8s[leaf].labels }
        data       = { "topology.hcl" = m.topology_content }
      },
      {
        apiVersion = "v1"
        kind       = "Secret"
        metadata   = { name = "${local.k8s[leaf].name}-bootstrap", namespace = var.namespace, labels = local.k8s[leaf].labels }
        type       = "Opaque"
        stringData = merge(
          { "bundle.pem" = m.bootstrap_bundle },
          local.k8s[leaf].join_token ? { "join-token" = m.join_token } : {},
        )
      },
      {
        apiVersion = "apps/v1"
        kind       = "StatefulSet"
        metadata   = { name = local.k8s[leaf].name, namespace = var.namespace, labels = local.k8s[leaf].labels }
        spec = {
          serviceName = local.k8s[leaf].name
          replicas    = 1
          selector    = { matchLabels = local.k8s[leaf].labels }
          template = {
            metadata = { labels = local.k8s[leaf].labels }
            spec = {
              # The agent attests the server by its process (unix:uid), so
              # both run as run_as_uid and see each other's processes.
              shareProcessNamespace = true
              securityContext       = { runAsUser = var.run_as_uid, runAsGroup = var.run_as_uid, fsGroup = var.run_as_uid }
              containers = [
                {
                  name         = "agent"
                  image        = var.image
                  command      = ["arbor"]
                  args         = local.k8s[leaf].agent_args
                  volumeMounts = local.k8s_mounts[leaf]
                },
                {
                  name         = "server"
                  image        = var.image
                  command      = ["arbor"]
                  args         = local.k8s[leaf].server_args
                  ports        = [{ name = "spire-api", containerPort = local.k8s[leaf].port }]
                  volumeMounts = local.k8s_mounts[leaf]
                },
              ]
              volumes = concat(
                [{
                  name = "config"
                  projected = {
                    defaultMode = 288 # 0440: the join token is a secret
                    sources = [
                      { configMap = { name = "${local.k8s[leaf].name}-topology" } },
                      { secret = { name = "${local.k8s[leaf].name}-bootstrap" } },
                    ]
                  }
                }],
                local.k8s_socket_volume[leaf] ? [{ name = "sockets", emptyDir = {} }] : [],
              )
            }
          }
          volumeClaimTemplates = [{
            metadata = { name = "state" }
            spec = {
              accessModes = ["ReadWriteOnce"]
              resources   = { requests = { storage = "1Gi" } }
            }
          }]
        }
      },
      {
        apiVersion = "v1"
        kind       = "Service"
        metadata   = { name = local.k8s[leaf].name, namespace = var.namespace, labels = local.k8s[leaf].labels }
        spec = {
          selector = local.k8s[leaf].labels
          ports    = [{ name = "spire-api", port = local.k8s[leaf].port, targetPort = local.k8s[leaf].port }]
        }
      },
    ] : yamlencode(doc)])
  }

  # The sockets get an emptyDir of their own when the topology puts them
  # outside state_dir (the defaults put them in it, on the state volume,
  # which both containers mount).
  k8s_socket_volume = { for leaf, k in local.k8s : leaf => !(k.socket_dir == k.state_dir || startswith(k.socket_dir, "${k.state_dir}/")) }
  k8s_mounts = {
    for leaf, k in local.k8s : leaf => concat(
      [
        { name = "config", mountPath = local.k8s_dir, readOnly = true },
        { name = "state", mountPath = k.state_dir },
      ],
      local.k8s_socket_volume[leaf] ? [{ name = "sockets", mountPath = k.socket_dir }] : [],
    )
  }
}
