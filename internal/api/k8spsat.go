package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/arborid/arbor/internal/nodeattest/k8spsat"
)

// SPIRE configures a k8s_psat server's clusters only at start; arbor lets an
// administrator read and replace them on a running server, so that clusters
// are added and removed without a restart. The calls are served on the admin
// socket, described by hand as PruneBundle is: the body is the JSON of a
// map from cluster name to k8spsat.ClusterConfig (SPIRE's attribute names) in
// a google.protobuf.BytesValue.
const (
	// GetK8sPSATClustersMethod returns the clusters in force.
	GetK8sPSATClustersMethod = "/" + nodeAttestationServiceName + "/GetK8sPSATClusters"
	// SetK8sPSATClustersMethod replaces them, whole, and returns the new set.
	SetK8sPSATClustersMethod = "/" + nodeAttestationServiceName + "/SetK8sPSATClusters"

	nodeAttestationServiceName = "arbor.admin.v1.NodeAttestation"
	// maxClustersJSON bounds the body of SetK8sPSATClusters.
	maxClustersJSON = 1 << 20
)

// K8sPSATClusters is a running k8s_psat attestor's set of clusters
// (*k8spsat.Attestor).
type K8sPSATClusters interface {
	Clusters() map[string]k8spsat.ClusterConfig
	SetClusters(map[string]k8spsat.ClusterConfig) error
}

type nodeAttestationServer interface {
	GetK8sPSATClusters(context.Context, *emptypb.Empty) (*wrapperspb.BytesValue, error)
	SetK8sPSATClusters(context.Context, *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error)
}

var nodeAttestationServiceDesc = grpc.ServiceDesc{
	ServiceName: nodeAttestationServiceName,
	HandlerType: (*nodeAttestationServer)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "GetK8sPSATClusters", Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			return unary(srv, ctx, dec, interceptor, GetK8sPSATClustersMethod, new(emptypb.Empty), nodeAttestationServer.GetK8sPSATClusters)
		}},
		{MethodName: "SetK8sPSATClusters", Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			return unary(srv, ctx, dec, interceptor, SetK8sPSATClustersMethod, new(wrapperspb.BytesValue), nodeAttestationServer.SetK8sPSATClusters)
		}},
	},
	Metadata: "internal/api/k8spsat.go",
}

// unary is the handler of a hand-described unary method of S: it decodes
// the request into in and calls call through the interceptor.
func unary[S any, In any, Out any](srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor,
	method string, in In, call func(S, context.Context, In) (Out, error)) (any, error) {
	if err := dec(in); err != nil {
		return nil, err
	}
	s := srv.(S)
	if interceptor == nil {
		return call(s, ctx, in)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: method}
	return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
		return call(s, ctx, req.(In))
	})
}

func (s *Service) k8sPSAT() (K8sPSATClusters, error) {
	if s.cfg.K8sPSATClusters == nil {
		return nil, status.Error(codes.FailedPrecondition,
			`this server has no k8s_psat node attestor: add a node_attestor "k8s_psat" block to its server block and restart it`)
	}
	return s.cfg.K8sPSATClusters, nil
}

// GetK8sPSATClusters returns the k8s_psat clusters in force.
func (s *Service) GetK8sPSATClusters(ctx context.Context, _ *emptypb.Empty) (*wrapperspb.BytesValue, error) {
	k, err := s.k8sPSAT()
	if err != nil {
		return nil, err
	}
	return clustersValue(ctx, s, k.Clusters())
}

// SetK8sPSATClusters replaces the k8s_psat clusters with the request's, all
// or nothing: a cluster that does not validate, or whose kubeconfig cannot
// be read, leaves the clusters in force as they were (InvalidArgument).
// Attestations under way finish with the clusters they started with.
func (s *Service) SetK8sPSATClusters(ctx context.Context, req *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
	k, err := s.k8sPSAT()
	if err != nil {
		return nil, err
	}
	body := req.GetValue()
	if len(body) > maxClustersJSON {
		return nil, status.Errorf(codes.InvalidArgument, "clusters: %d bytes, more than %d", len(body), maxClustersJSON)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var want map[string]k8spsat.ClusterConfig
	if err := dec.Decode(&want); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "clusters: not a JSON object of cluster name to its configuration: %v", err)
	}
	if dec.More() {
		return nil, status.Error(codes.InvalidArgument, "clusters: data after the JSON object")
	}
	before := k.Clusters()
	if err := k.SetClusters(want); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	after := k.Clusters()
	var added, removed, changed []string
	for name, c := range after {
		old, ok := before[name]
		switch {
		case !ok:
			added = append(added, name)
		case !sameCluster(old, c):
			changed = append(changed, name)
		}
	}
	for name := range before {
		if _, ok := after[name]; !ok {
			removed = append(removed, name)
		}
	}
	slices.Sort(added)
	slices.Sort(removed)
	slices.Sort(changed)
	s.log.InfoContext(ctx, "k8s_psat clusters replaced", "clusters", slices.Sorted(maps.Keys(after)),
		"added", added, "removed", removed, "changed", changed)
	return clustersValue(ctx, s, after)
}

func sameCluster(a, b k8spsat.ClusterConfig) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func clustersValue(ctx context.Context, s *Service, clusters map[string]k8spsat.ClusterConfig) (*wrapperspb.BytesValue, error) {
	out, err := json.Marshal(clusters)
	if err != nil {
		return nil, s.internalError(ctx, "failed to encode k8s_psat clusters", fmt.Errorf("encoding clusters: %w", err))
	}
	return wrapperspb.Bytes(out), nil
}
