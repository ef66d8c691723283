package admin_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/arborid/arbor/agent"
	"github.com/arborid/arbor/agent/workloadattestor/unix"
	"github.com/arborid/arbor/internal/cli/admin"
	"github.com/arborid/arbor/internal/cli/svidcli"
	"github.com/arborid/arbor/internal/testkit"
)

// TestWrongKindOfSocket: an admin command pointed at a real agent's
// Workload API socket says that it reached an agent's socket and what to
// give instead, and a Workload API command pointed at a real server's
// admin socket says that it reached a server's admin socket.
func TestWrongKindOfSocket(t *testing.T) {
	srv, adminSock := startServer(t)
	ctx := testContext(t)
	conn, err := grpc.NewClient("unix://"+adminSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tok, err := agentv1.NewAgentClient(conn).CreateJoinToken(ctx, &agentv1.CreateJoinTokenRequest{Ttl: 600})
	if err != nil {
		t.Fatal(err)
	}
	dir := testkit.ShortDir(t)
	ua, err := unix.New(unix.Config{})
	if err != nil {
		t.Fatal(err)
	}
	agentSock := filepath.Join(dir, "api.sock")
	ag, err := agent.New(agent.Config{TrustDomain: td, ServerAddress: srv.AgentAddr().String(), TrustBundle: srv.Bundles().X509Bundle().X509Authorities(),
		DataDir: filepath.Join(dir, "data"), SocketPath: agentSock, JoinToken: tok.Value, WorkloadAttestors: []agent.WorkloadAttestor{ua}})
	if err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ag.Run(actx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-ag.Ready():
	case err := <-done:
		t.Fatalf("agent stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("agent not ready")
	}

	c := dial(t, agentSock)
	_, err = c.ListEntries(ctx, admin.EntryFilter{})
	if err == nil || !strings.Contains(err.Error(), agentSock+" is an agent's Workload API socket, not a server's admin socket") {
		t.Errorf("an admin call on the agent's socket = %v, want it to say it reached an agent's socket", err)
	}
	checkOneLine(t, err)

	var out strings.Builder
	addr := "unix://" + adminSock
	err = svidcli.FetchX509(ctx, &out, svidcli.Options{Addr: addr, Timeout: 10 * time.Second}, "")
	if err == nil || !strings.Contains(err.Error(), addr+" is a server's admin socket (the SPIRE server API), not an agent's Workload API socket") {
		t.Errorf("svid fetch x509 on the server's admin socket = %v, want it to say it reached a server's admin socket", err)
	}
}
