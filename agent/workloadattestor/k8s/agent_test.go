package k8s

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/arborid/arbor/agent"
	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/internal/testkit"
)

// Two containers of one pod get different SVIDs from a real arbor agent by
// k8s:container-name alone, and a process outside any container gets
// neither.
//
// What is real: an arbor server and agent (join token attestation, entry
// sync, SVID minting), the Workload API over its Unix socket with the
// caller's pid taken from SO_PEERCRED, go-spiffe's workloadapi client, this
// attestor, and the kubelet's wire protocol (TLS verified against its CA,
// bearer token required, the JSON of a v1 PodList from k8s.io/api).
// What is staged: this test process cannot be moved into a pod's
// containers, so the attestor's proc root is a directory holding a cgroup
// file for this process's own pid, rewritten between calls to the kernel's
// rendering of the web container, of the sidecar, and of a login session;
// and the kubelet is a fake serving the pod those cgroups name.
func TestAgentContainersOfOnePod(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	dir := testkit.ShortDir(t)
	srv := testkit.StartServer(t, server.Config{
		Name: "test", TrustDomain: td, ListenAddr: "127.0.0.1:0",
		AdminSocket: filepath.Join(dir, "admin.sock"), StateDir: filepath.Join(dir, "state"),
		JoinToken: true,
	})
	ctx := testkit.Context(t, 60*time.Second)
	b, err := bundlev1.NewBundleClient(srv.Admin).GetBundle(ctx, &bundlev1.GetBundleRequest{})
	if err != nil {
		t.Fatalf("GetBundle: %v", err)
	}
	var roots []*x509.Certificate
	for _, a := range b.X509Authorities {
		c, err := x509.ParseCertificate(a.Asn1)
		if err != nil {
			t.Fatal(err)
		}
		roots = append(roots, c)
	}
	jt, err := agentv1.NewAgentClient(srv.Admin).CreateJoinToken(ctx, &agentv1.CreateJoinTokenRequest{Ttl: 600})
	if err != nil {
		t.Fatalf("CreateJoinToken: %v", err)
	}
	agentID := spiffeid.RequireFromPath(td, "/spire/agent/join_token/"+jt.Value)
	web := spiffeid.RequireFromPath(td, "/ns/shop/sa/web-sa/web")
	sidecar := spiffeid.RequireFromPath(td, "/ns/shop/sa/web-sa/sidecar")
	for id, container := range map[spiffeid.ID]string{web: "web", sidecar: "sidecar"} {
		resp, err := entryv1.NewEntryClient(srv.Admin).BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{{
			ParentId: &types.SPIFFEID{TrustDomain: td.Name(), Path: agentID.Path()},
			SpiffeId: &types.SPIFFEID{TrustDomain: td.Name(), Path: id.Path()},
			Selectors: []*types.Selector{
				{Type: "k8s", Value: "ns:shop"}, {Type: "k8s", Value: "sa:web-sa"},
				{Type: "k8s", Value: "pod-label:app:web"}, {Type: "k8s", Value: "container-name:" + container},
			},
		}}})
		if err != nil || resp.Results[0].Status.Code != 0 {
			t.Fatalf("BatchCreateEntry(%v) = %v, %v", id, resp, err)
		}
	}

	kubelet := newFakeKubelet(t, webPod())
	cfg := kubelet.config(t)
	att := newAttestor(t, cfg)
	testkit.StartAgent(t, agent.Config{
		TrustDomain: td, ServerAddress: srv.AgentAddr().String(), TrustBundle: roots,
		DataDir: filepath.Join(dir, "data"), SocketPath: filepath.Join(dir, "api.sock"),
		JoinToken: jt.Value, SyncInterval: 200 * time.Millisecond,
		WorkloadAttestors: []agent.WorkloadAttestor{att},
	}, 30*time.Second)

	pid := os.Getpid()
	addr := workloadapi.WithAddr("unix://" + filepath.Join(dir, "api.sock"))
	// fetch returns the SPIFFE IDs of the SVIDs this process gets now.
	fetch := func() ([]spiffeid.ID, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		svids, err := workloadapi.FetchX509SVIDs(ctx, addr)
		var ids []spiffeid.ID
		for _, s := range svids {
			ids = append(ids, s.ID)
		}
		return ids, err
	}
	want := func(container, cgroupFile string, id spiffeid.ID) {
		t.Helper()
		stageCgroup(t, cfg.ProcRoot, pid, cgroupFile)
		testkit.Poll(t, 20*time.Second, container+"'s SVID", func() error {
			ids, err := fetch()
			if err != nil {
				return err
			}
			if len(ids) != 1 || ids[0] != id {
				return fmt.Errorf("the %s container got %v, want only %v", container, ids, id)
			}
			return nil
		})
	}
	want("web", inContainer(podUID, webID), web)
	want("sidecar", inContainer(podUID, sidecarID), sidecar)
	want("web", inContainer(podUID, webID), web)

	// A login session's process: no k8s selectors, so no entry matches. It
	// is refused as having no identity, not as a failed attestation.
	stageCgroup(t, cfg.ProcRoot, pid, onHost)
	before := kubelet.requests.Load()
	ids, err := fetch()
	if status.Code(err) != codes.PermissionDenied || len(ids) != 0 {
		t.Errorf("a process outside any container got %v, %v; want PermissionDenied and no SVID", ids, err)
	}
	if n := kubelet.requests.Load(); n != before {
		t.Errorf("attesting a host process asked the kubelet %d times, want 0", n-before)
	}

	// A container the kubelet does not list (another runtime's, or gone)
	// fails its attestation: no SVID either.
	stageCgroup(t, cfg.ProcRoot, pid, inContainer(otherUID, initID[:63]+"0"))
	ids, err = fetch()
	if err == nil || len(ids) != 0 || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a container of no listed pod got %v, %v; want a refusal and no SVID", ids, err)
	}
}
