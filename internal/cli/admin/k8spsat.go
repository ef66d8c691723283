package admin

import (
	"context"
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/arborid/arbor/internal/nodeattest/k8spsat"
)

// arbor's own admin calls for a running k8s_psat attestor's clusters
// (internal/api/k8spsat.go): the JSON of a map from cluster name to its
// configuration in a google.protobuf.BytesValue.
const (
	getK8sPSATClustersMethod = "/arbor.admin.v1.NodeAttestation/GetK8sPSATClusters"
	setK8sPSATClustersMethod = "/arbor.admin.v1.NodeAttestation/SetK8sPSATClusters"
)

// K8sPSATClusters returns the clusters the server's k8s_psat attestor
// accepts agents from. A server without one answers FailedPrecondition.
func (c *Client) K8sPSATClusters(ctx context.Context) (map[string]k8spsat.ClusterConfig, error) {
	const op = "k8s_psat clusters"
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	out := new(wrapperspb.BytesValue)
	if err := c.conn.Invoke(ctx, getK8sPSATClustersMethod, &emptypb.Empty{}, out); err != nil {
		return nil, c.rpcError(op, err)
	}
	return decodeClusters(op, out.GetValue())
}

// SetK8sPSATClusters replaces the server's k8s_psat clusters with clusters,
// all or nothing, without a restart, and returns the set now in force.
func (c *Client) SetK8sPSATClusters(ctx context.Context, clusters map[string]k8spsat.ClusterConfig) (map[string]k8spsat.ClusterConfig, error) {
	const op = "k8s_psat clusters set"
	body, err := json.Marshal(clusters)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	out := new(wrapperspb.BytesValue)
	if err := c.conn.Invoke(ctx, setK8sPSATClustersMethod, wrapperspb.Bytes(body), out); err != nil {
		return nil, c.rpcError(op, err)
	}
	return decodeClusters(op, out.GetValue())
}

func decodeClusters(op string, body []byte) (map[string]k8spsat.ClusterConfig, error) {
	var m map[string]k8spsat.ClusterConfig
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("%s: the server's answer: %w", op, err)
	}
	return m, nil
}
