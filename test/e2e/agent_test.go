package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
)

// TestAgentJoinToken attests a real spire-agent to arbor with a join token
// and has a go-spiffe workload fetch an X509-SVID and a JWT-SVID through it,
// both verified against the bundle arbor serves to the spire-server CLI.
// Against every SPIRE release in spirePeers.
func TestAgentJoinToken(t *testing.T) {
	requireSetup(t)
	t.Parallel()
	forEachSpire(t, testAgentJoinToken)
}

func testAgentJoinToken(t *testing.T, p *spirePeer) {
	a := newArbor(t, `datastore "sqlite" {}`)
	a.spire = p
	a.start(t)
	hostID := mustID(t, "/host")
	workloadID := mustID(t, "/workload")

	token := a.generateToken(t, hostID)
	ag := startAgent(t, a, token)
	a.createEntry(t, hostID, workloadID, "unix:uid:"+strconv.Itoa(os.Getuid()))

	// The X509-SVID: poll the Workload API (go-spiffe's one-shot fetch)
	// until the agent has synced the new entry.
	var svid *x509svid.SVID
	poll(t, waitTimeout, "workloadapi.FetchX509SVID", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := workloadapi.FetchX509SVID(ctx, ag.addr())
		if err != nil {
			return err
		}
		if s.ID != workloadID {
			return fmt.Errorf("got X509-SVID for %s, want %s", s.ID, workloadID)
		}
		svid = s
		return nil
	})

	_, pemOut := a.bundlePEM(t)
	x509Bundle, err := x509bundle.Parse(td, pemOut)
	if err != nil {
		t.Fatalf("x509bundle.Parse(bundle show) = %v", err)
	}
	id, chains, err := x509svid.Verify(svid.Certificates, x509Bundle)
	if err != nil {
		t.Fatalf("x509svid.Verify(workload SVID, arbor bundle) = %v", err)
	}
	if id != workloadID {
		t.Errorf("verified SVID ID = %s, want %s", id, workloadID)
	}
	if len(chains) == 0 {
		t.Error("x509svid.Verify returned no chains")
	}
	if svid.PrivateKey == nil {
		t.Error("workload SVID has no private key")
	}

	// The agent's own identity is the join-token agent ID.
	var agents agentv1.ListAgentsResponse
	a.cliJSON(t, &agents, "agent", "list")
	wantAgent := mustID(t, "/spire/agent/join_token/"+token)
	if len(agents.Agents) != 1 || agents.Agents[0].GetId().GetPath() != wantAgent.Path() {
		t.Errorf("agent list = %v, want one agent %s", &agents, wantAgent)
	}

	// The JWT-SVID, validated against arbor's JWT authorities.
	const audience = "e2e-audience"
	var jwt *jwtsvid.SVID
	poll(t, waitTimeout, "workloadapi.FetchJWTSVID", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		jwt, err = workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: audience, Subject: workloadID}, ag.addr())
		return err
	})
	spiffeOut := a.cli(t, "bundle", "show", "-format", "spiffe")
	bundle, err := spiffebundle.Parse(td, []byte(spiffeOut))
	if err != nil {
		t.Fatalf("spiffebundle.Parse(bundle show -format spiffe) = %v\n%s", err, spiffeOut)
	}
	if len(bundle.JWTAuthorities()) == 0 {
		t.Fatalf("bundle show -format spiffe has no JWT authorities:\n%s", spiffeOut)
	}
	parsed, err := jwtsvid.ParseAndValidate(jwt.Marshal(), bundle, []string{audience})
	if err != nil {
		t.Fatalf("jwtsvid.ParseAndValidate(agent JWT-SVID, arbor bundle) = %v", err)
	}
	if parsed.ID != workloadID {
		t.Errorf("JWT-SVID subject = %s, want %s", parsed.ID, workloadID)
	}
	if _, err := jwtsvid.ParseAndValidate(jwt.Marshal(), bundle, []string{"another-audience"}); err == nil {
		t.Error("jwtsvid.ParseAndValidate with a wrong audience succeeded")
	}
	// And the JWT-SVID must not validate against a bundle without arbor's keys.
	if _, err := jwtsvid.ParseAndValidate(jwt.Marshal(), spiffebundle.New(td), []string{audience}); err == nil {
		t.Error("jwtsvid.ParseAndValidate against an empty bundle succeeded")
	}
}

// TestEvictedAgentShutsDown evicts an attested join-token agent. Against a
// SPIRE server the agent's next sync gets PermissionDenied with
// PermissionDeniedDetails{Reason: AGENT_NOT_ATTESTED}; a join-token agent
// cannot re-attest, so it removes its SVID and exits. An arbor server must
// give the same signal.
func TestEvictedAgentShutsDown(t *testing.T) {
	requireSetup(t)
	t.Parallel()

	a := newArbor(t, `datastore "sqlite" {}`)
	a.start(t)
	hostID := mustID(t, "/host")
	token := a.generateToken(t, hostID)
	ag := startAgent(t, a, token)

	// startAgent returned once the Workload API serves, which spire-agent
	// does only after attesting; its SVID is in its data file by then.
	if n := ag.storedSVIDLen(t); n == 0 {
		t.Fatal("attested spire-agent stored no SVID")
	}
	agentID := mustID(t, "/spire/agent/join_token/"+token)
	if out := a.cli(t, "agent", "evict", "-spiffeID", agentID.String()); out != "Agent evicted successfully\n" {
		t.Errorf("agent evict printed %q, want %q", out, "Agent evicted successfully\n")
	}

	select {
	case <-ag.proc.done:
	case <-time.After(waitTimeout):
		t.Fatalf("spire-agent still runs %v after its eviction; want it to exit as it does against a SPIRE server "+
			"(it logged %d \"Synchronize failed\" lines; arbor's PermissionDenied must carry "+
			"spire.api.types.PermissionDeniedDetails{reason: AGENT_NOT_ATTESTED})",
			waitTimeout, ag.countLines(t, "Synchronize failed"))
	}
	if n := ag.storedSVIDLen(t); n != 0 {
		t.Errorf("evicted spire-agent kept its SVID (%d certificates) in its data file, want it removed", n)
	}
	if n := ag.countLines(t, "removing SVID and shutting down"); n == 0 {
		t.Errorf("spire-agent log has no \"removing SVID and shutting down\" line")
	}
}
