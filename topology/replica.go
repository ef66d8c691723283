package topology

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrUnknownReplica is returned (wrapped) by File.Replica when a node names
// a server block but no replica of it.
var ErrUnknownReplica = errors.New("topology: unknown replica")

// ReplicaDirPrefix names the state directory of replica K inside the
// block's state directory: <state_dir>/replica-K.
const ReplicaDirPrefix = "replica-"

// SplitNode splits a node name as given to --node: "NAME" and "NAME/1" are
// replica 1 of the server block NAME, "NAME/K" is replica K. It checks only
// the form; File.Replica checks K against the block's replicas.
func SplitNode(node string) (name string, k int, err error) {
	name, rest, ok := strings.Cut(node, "/")
	if !ok {
		return node, 1, nil
	}
	k, err = strconv.Atoi(rest)
	if err != nil || k < 1 || name == "" || strings.HasPrefix(rest, "+") {
		return "", 0, fmt.Errorf("%w: node %q: write NAME or NAME/K, K a replica number from 1 to the block's replicas", ErrUnknownReplica, node)
	}
	return name, k, nil
}

// NodeName is the node name of replica k of the server block name: name
// for replica 1, name/k for the others.
func NodeName(name string, k int) string {
	if k <= 1 {
		return name
	}
	return name + "/" + strconv.Itoa(k)
}

// Node is the node name of s: its block name, followed by /K for replica K
// of K ≥ 2 (see Server.Replica).
func (s *Server) Node() string { return NodeName(s.Name, s.ReplicaNumber) }

// Replica returns the server block or replica named by node (see SplitNode):
// the block itself for NAME and NAME/1, its replica K (Server.Replica) for
// NAME/K. An unknown block wraps ErrUnknownServer; K beyond the block's
// replicas, or a malformed node, wraps ErrUnknownReplica.
func (f *File) Replica(node string) (*Server, error) {
	name, k, err := SplitNode(node)
	if err != nil {
		before, _, _ := strings.Cut(node, "/")
		if s := f.server(before); s != nil {
			return nil, fmt.Errorf("%w %q: %s", ErrUnknownReplica, node, replicaHint(s))
		}
		return nil, err
	}
	s, err := f.Server(name)
	if err != nil {
		return nil, err
	}
	if k > s.Replicas {
		return nil, fmt.Errorf("%w %q: %s", ErrUnknownReplica, node, replicaHint(s))
	}
	return s.Replica(k), nil
}

// replicaHint says which node names run s.
func replicaHint(s *Server) string {
	if s.Replicas <= 1 {
		return fmt.Sprintf("server %q runs one process (replicas = 1); name it %q", s.Name, s.Name)
	}
	return fmt.Sprintf("server %q has %d replicas, named %s (replica 1) to %s", s.Name, s.Replicas, s.Name, NodeName(s.Name, s.Replicas))
}

// ReplicaList returns every replica of s, replica 1 (s itself) first.
func (s *Server) ReplicaList() []*Server {
	out := make([]*Server, 0, s.Replicas)
	for k := 1; k <= max(s.Replicas, 1); k++ {
		out = append(out, s.Replica(k))
	}
	return out
}

// Replica returns replica k of the server block s. Replica 1 is s itself,
// with the paths and ports written in (or defaulted by) the block. Replica
// k ≥ 2 is a copy that differs where two processes of one block on one
// machine must differ:
//
//   - every port (listen, health_listen, bundle_endpoint and oidc_discovery
//     listen) is the block's plus k-1; port 0 (pick any) stays 0;
//   - the state directory is <state_dir>/replica-k, and every path under
//     the block's state directory (the default admin socket, SQLite file,
//     co-located agent's socket and data directory) moves under it
//     unchanged; a path set outside it gets -k before its extension (an
//     admin_socket of /run/arbor/root.sock becomes /run/arbor/root-2.sock),
//     a directory gets /replica-k;
//
// Everything else (the addresses agents and children reach the tier at,
// the datastore DSN, TTLs, attestors, entries, SPIFFE ID) is the block's:
// the replicas are one tier.
func (s *Server) Replica(k int) *Server {
	if k <= 1 {
		return s
	}
	r := *s
	r.ReplicaNumber = k
	shift := k - 1
	dir := filepath.Join(s.StateDir, ReplicaDirPrefix+strconv.Itoa(k))
	path := func(p string, isDir bool) string { return replicaPath(s.StateDir, dir, p, k, isDir) }
	r.Listen = shiftPort(s.Listen, shift)
	if s.HealthListen != "" {
		r.HealthListen = shiftPort(s.HealthListen, shift)
	}
	r.StateDir = dir
	r.AdminSocket = path(s.AdminSocket, false)
	if s.Datastore.Kind == DatastoreSQLite && s.Datastore.Path != "" {
		r.Datastore.Path = path(s.Datastore.Path, false)
	}
	if be := s.BundleEndpoint; be != nil {
		c := *be
		c.Listen = shiftPort(be.Listen, shift)
		r.BundleEndpoint = &c
	}
	if o := s.OIDCDiscovery; o != nil {
		c := *o
		c.Listen = shiftPort(o.Listen, shift)
		r.OIDCDiscovery = &c
	}
	if ag := s.Agent; ag != nil {
		c := *ag
		c.SocketPath = path(ag.SocketPath, false)
		c.DataDir = path(ag.DataDir, true)
		r.Agent = &c
	}
	if u := s.Upstream; u != nil && u.SPIRE != nil {
		c, sp := *u, *u.SPIRE
		sp.WorkloadAPISocket = path(u.SPIRE.WorkloadAPISocket, false)
		c.SPIRE = &sp
		r.Upstream = &c
	}
	return &r
}

// replicaPath is where replica k keeps what replica 1 keeps at p: under the
// replica's state directory dir when p is under the block's stateDir, else
// beside p.
func replicaPath(stateDir, dir, p string, k int, isDir bool) string {
	if p == "" {
		return ""
	}
	if rel, err := filepath.Rel(stateDir, p); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return filepath.Join(dir, rel)
	}
	if isDir {
		return filepath.Join(p, ReplicaDirPrefix+strconv.Itoa(k))
	}
	ext := filepath.Ext(p)
	return strings.TrimSuffix(p, ext) + "-" + strconv.Itoa(k) + ext
}

// shiftPort adds n to the port of the host:port address addr. Port 0 and
// an address that does not parse are returned unchanged; a port beyond
// 65535 is returned as is, for validation to report.
func shiftPort(addr string, n int) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	p, err := strconv.Atoi(port)
	if err != nil || p == 0 {
		return addr
	}
	return net.JoinHostPort(host, strconv.Itoa(p+n))
}
