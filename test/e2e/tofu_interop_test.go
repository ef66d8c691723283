package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/internal/testkit"
)

// spireAgentAttestsOnce runs the check both trust-on-first-use interop tests
// make (aws_iid, gcp_iit): an arbor server with att; a real spire-agent with
// plugin (its NodeAttestor block) and env attests to it and gets wantID
// with exactly wantSels; a workload of that agent gets an SVID; a second
// spire-agent presenting the same machine is refused ('already been used')
// and the server still holds one agent.
func spireAgentAttestsOnce(t *testing.T, p *spirePeer, name string, att nodeattest.Attestor, env []string, plugin string,
	wantID spiffeid.ID, wantSels []string) {
	t.Helper()
	dir := shortTempDir(t, name)
	ts := testkit.StartServer(t, server.Config{Name: name, TrustDomain: td, ListenAddr: "127.0.0.1:0",
		StateDir: filepath.Join(dir, "arbor"), AdminSocket: filepath.Join(dir, "admin.sock"),
		NodeAttestors: []nodeattest.Attestor{att}})
	arbor := &arborServer{adminSock: filepath.Join(dir, "admin.sock"), port: ts.AgentAddr().(*net.TCPAddr).Port, spire: p}
	_, arborPEM := arbor.bundlePEM(t)
	spireAgent := startSpireAgentWith(t, p, td.Name(), arbor.port, arborPEM, env, "", plugin)
	var got types.Agent
	poll(t, waitTimeout, "spire-agent attested to arbor with "+att.Type(), func() error {
		if spireAgent.proc.exited() {
			t.Fatalf("spire-agent exited: %v\n%s", spireAgent.proc.err, tail(spireAgent.proc.log, 30))
		}
		r := arbor.cliRun(t, "agent", "show", "-spiffeID", wantID.String(), "-output", "json")
		if r.err != nil {
			return fmt.Errorf("%v: %s%s", r.err, r.stdout, r.stderr)
		}
		return protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal([]byte(r.stdout), &got)
	})
	var sels []string
	for _, s := range got.GetSelectors() {
		sels = append(sels, s.GetType()+":"+s.GetValue())
	}
	slices.Sort(sels)
	if !slices.Equal(sels, wantSels) {
		t.Errorf("agent selectors\n  got  %s\n  want %s", strings.Join(sels, " "), strings.Join(wantSels, " "))
	}
	workload := mustID(t, "/wl/"+name)
	arbor.createEntry(t, wantID, workload, fmt.Sprintf("unix:uid:%d", os.Getuid()))
	spireAgent.waitX509SVID(t, workload)

	// The same machine again, from a second spire-agent: refused.
	replay := launchSpireAgent(t, p, td.Name(), arbor.port, arborPEM, env, "", plugin)
	poll(t, waitTimeout, "the second spire-agent giving up", func() error {
		if !replay.proc.exited() {
			return fmt.Errorf("still running")
		}
		return nil
	})
	if log := replay.proc.logText(t); !strings.Contains(log, "already been used") {
		t.Errorf("the second spire-agent's log does not show the refusal:\n%s", tail(replay.proc.log, 15))
	}
	if n := arbor.cli(t, "agent", "count"); !strings.Contains(n, "1 attested") {
		t.Errorf("agent count after the second agent: %q, want 1 attested", strings.TrimSpace(n))
	}
}
