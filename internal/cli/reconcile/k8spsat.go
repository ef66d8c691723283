package reconcile

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/arborid/arbor/internal/cli/admin"
	"github.com/arborid/arbor/internal/nodeattest/k8spsat"
	"github.com/arborid/arbor/internal/tier/attestcfg"
	"github.com/arborid/arbor/topology"
)

// ClusterAction is one k8s_psat cluster of a server: added, changed,
// removed or unchanged. Unlike entries and federation relationships, the
// file is the whole set: a cluster the server accepts agents from that the
// file no longer lists is removed.
type ClusterAction struct {
	Server string
	Kind   string // "create", "update", "delete", "unchanged"
	Name   string
	// Changes names the attributes an update changes.
	Changes []string
}

func (a ClusterAction) String() string {
	switch a.Kind {
	case "update":
		return fmt.Sprintf("~ %s: update k8s_psat cluster %s: %s", a.Server, a.Name, strings.Join(a.Changes, ", "))
	case "delete":
		return fmt.Sprintf("- %s: delete k8s_psat cluster %s (not in the file; its agents can no longer attest)", a.Server, a.Name)
	}
	sign := map[string]string{"create": "+", "unchanged": "="}[a.Kind]
	return fmt.Sprintf("%s %s: %s k8s_psat cluster %s", sign, a.Server, a.Kind, a.Name)
}

// DesiredK8sPSATClusters is the clusters the file gives server s's k8s_psat
// attestor, and whether s has one.
func DesiredK8sPSATClusters(s *topology.Server) (map[string]k8spsat.ClusterConfig, bool) {
	for _, a := range s.NodeAttestors {
		if a.Kind == topology.NodeAttestorK8sPSAT {
			return attestcfg.K8sPSATClusters(a.K8sPSAT), true
		}
	}
	return nil, false
}

// PlanK8sPSATClusters compares the clusters the server's k8s_psat attestor
// holds with want, by name.
func PlanK8sPSATClusters(server string, have, want map[string]k8spsat.ClusterConfig) []ClusterAction {
	var out []ClusterAction
	for _, name := range slices.Sorted(maps.Keys(want)) {
		old, ok := have[name]
		switch changes := clusterChanges(old, want[name]); {
		case !ok:
			out = append(out, ClusterAction{Server: server, Kind: "create", Name: name})
		case len(changes) > 0:
			out = append(out, ClusterAction{Server: server, Kind: "update", Name: name, Changes: changes})
		default:
			out = append(out, ClusterAction{Server: server, Kind: "unchanged", Name: name})
		}
	}
	for _, name := range slices.Sorted(maps.Keys(have)) {
		if _, ok := want[name]; !ok {
			out = append(out, ClusterAction{Server: server, Kind: "delete", Name: name})
		}
	}
	return out
}

// clusterChanges names the attributes that differ, with SPIRE's names.
func clusterChanges(a, b k8spsat.ClusterConfig) []string {
	var out []string
	for _, f := range []struct {
		name string
		x, y any
	}{
		{"service_account_allow_list", a.ServiceAccountAllowList, b.ServiceAccountAllowList},
		{"audience", a.Audience, b.Audience},
		{"kube_config_file", a.KubeConfigFile, b.KubeConfigFile},
		{"allowed_node_label_keys", a.AllowedNodeLabelKeys, b.AllowedNodeLabelKeys},
		{"allowed_pod_label_keys", a.AllowedPodLabelKeys, b.AllowedPodLabelKeys},
	} {
		x, _ := json.Marshal(f.x)
		y, _ := json.Marshal(f.y)
		if string(x) != string(y) && !(emptyJSON(x) && emptyJSON(y)) {
			out = append(out, f.name)
		}
	}
	return out
}

// emptyJSON is true for null and [], which mean the same for every
// attribute but audience (whose null the server never returns: the file and
// the attestor both fill in the default).
func emptyJSON(b []byte) bool { return string(b) == "null" || string(b) == "[]" || string(b) == `""` }

// reconcileK8sPSAT plans and (unless dryRun) applies the server's k8s_psat
// clusters, printing one line per cluster; it returns how many change.
func reconcileK8sPSAT(ctx context.Context, conn *admin.Client, s *topology.Server, want map[string]k8spsat.ClusterConfig, opts Options) (int, error) {
	have, err := conn.K8sPSATClusters(ctx)
	if err != nil {
		return 0, err
	}
	actions := PlanK8sPSATClusters(s.Name, have, want)
	changes := 0
	for _, a := range actions {
		fmt.Fprintln(opts.Out, a)
		if a.Kind != "unchanged" {
			changes++
		}
	}
	if changes == 0 || opts.DryRun {
		return changes, nil
	}
	// The set is replaced whole, all or nothing: a cluster whose
	// kubeconfig the server cannot read leaves every cluster as it was.
	if _, err := conn.SetK8sPSATClusters(ctx, want); err != nil {
		return 0, err
	}
	return changes, nil
}
