package agent_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"

	"github.com/arborid/arbor/agent"
	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/nodeattest/awsiid"
	"github.com/arborid/arbor/internal/nodeattest/k8spsat"
	"github.com/arborid/arbor/internal/selector"
	"github.com/arborid/arbor/internal/server"
)

// The agent halves of the cloud and Kubernetes attestors plug in as
// NodeAttestors.
var (
	_ agent.NodeAttestor = (*awsiid.AgentAttestor)(nil)
	_ agent.NodeAttestor = (*k8spsat.AgentAttestor)(nil)
)

// payloadType is the attestation type of the test attestor pair below: the
// payload names the node, and the server trusts it on first use, as the
// cloud instance attestors do.
const payloadType = "test_payload"

type payloadServer struct{}

func (payloadServer) Type() string { return payloadType }

func (payloadServer) Attest(_ context.Context, payload []byte, _ nodeattest.ChallengeFunc) (*nodeattest.Result, error) {
	name := string(payload)
	if name == "" || strings.ContainsAny(name, "/.") {
		return nil, fmt.Errorf("%w: bad node name %q", nodeattest.ErrInvalid, name)
	}
	id, err := spiffeid.FromSegments(td, "spire", "agent", payloadType, name)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", nodeattest.ErrInvalid, err)
	}
	return &nodeattest.Result{AgentID: id, Selectors: []selector.Selector{{Type: payloadType, Value: "name:" + name}}, FirstUse: true}, nil
}

type payloadAgent struct{ name string }

func (payloadAgent) Type() string                              { return payloadType }
func (p payloadAgent) Payload(context.Context) ([]byte, error) { return []byte(p.name), nil }
func (payloadAgent) CanReattest() bool                         { return false }

// TestPluggableNodeAttestorTrustsOnFirstUse: an agent attests with a node
// attestor given as agent.Config.NodeAttestor against its server half given
// as server.Config.NodeAttestors; a second agent presenting the same
// attestation data is refused (trust on first use) while the first one is
// attested, and attests once an operator evicts the first.
func TestPluggableNodeAttestorTrustsOnFirstUse(t *testing.T) {
	srv := startServer(t, func(c *server.Config) { c.NodeAttestors = []nodeattest.Attestor{payloadServer{}} })
	cfgFor := func() agent.Config {
		cfg := srv.agentConfig(t, "", newPIDAttestor())
		cfg.NodeAttestor = payloadAgent{name: "node-1"}
		return cfg
	}
	first := runAgent(t, cfgFor())
	want := spiffeid.RequireFromPath(td, "/spire/agent/test_payload/node-1")
	if got := first.SPIFFEID(); got != want {
		t.Fatalf("agent ID %v, want %v", got, want)
	}

	replay := startAgent(t, cfgFor())
	select {
	case err := <-replay.done:
		replay.done <- err // for the cleanup's stop
		if err == nil || !strings.Contains(err.Error(), "already been used") {
			t.Fatalf("the second agent with the same attestation data stopped with %v, want a refusal saying the data was already used", err)
		}
	case <-replay.Ready():
		t.Fatal("a second agent attested with attestation data already used by an attested agent")
	case <-time.After(30 * time.Second):
		t.Fatal("the second agent neither attested nor stopped within 30s")
	}
	if n := srv.countAgents(); n != 1 {
		t.Fatalf("%d agents attested after the refused replay, want 1", n)
	}

	if _, err := agentv1.NewAgentClient(srv.admin).DeleteAgent(ctxT(t), &agentv1.DeleteAgentRequest{Id: protoID(want)}); err != nil {
		t.Fatalf("DeleteAgent: %v", err)
	}
	if err := first.stop(t); err != nil && !errors.Is(err, context.Canceled) {
		t.Logf("the evicted agent stopped with %v", err)
	}
	again := runAgent(t, cfgFor())
	if got := again.SPIFFEID(); got != want {
		t.Fatalf("after eviction the agent attested as %v, want %v", got, want)
	}
}
