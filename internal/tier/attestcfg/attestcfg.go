// Package attestcfg translates a topology's node attestor blocks into the
// configuration of the attestors that run them, for the two places that
// need it: internal/tier, when a server starts, and the reconciler of
// `arbor topology apply`, which gives a running server its changed k8s_psat
// clusters. It imports neither of them.
package attestcfg

import (
	"github.com/arborid/arbor/internal/nodeattest/k8spsat"
	"github.com/arborid/arbor/topology"
)

// K8sPSATClusters translates the cluster blocks of a k8s_psat attestor.
func K8sPSATClusters(k topology.K8sPSAT) map[string]k8spsat.ClusterConfig {
	out := make(map[string]k8spsat.ClusterConfig, len(k.Clusters))
	for _, c := range k.Clusters {
		out[c.Name] = k8spsat.ClusterConfig{
			ServiceAccountAllowList: c.ServiceAccountAllowList,
			// The file's default audience is already filled in, and an
			// empty list means what it means to the attestor: none asked.
			Audience:             nonNil(c.Audience),
			KubeConfigFile:       c.KubeConfigFile,
			AllowedNodeLabelKeys: c.AllowedNodeLabelKeys,
			AllowedPodLabelKeys:  c.AllowedPodLabelKeys,
		}
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
