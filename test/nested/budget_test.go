package nested

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"

	"github.com/arborid/arbor/downstream"
	"github.com/arborid/arbor/topology"
	"github.com/arborid/arbor/upstream"
)

// budgetTopology is root -> regional -> leaf with short TTLs. The regional's
// CA is long enough (6x the leaf's) that it never caps the leaf's CA during
// the test, so the leaf's CA lifetime is exactly its ca_ttl, as Simulate
// assumes.
const budgetTopology = `
trust_domain = "example.org"

defaults {
  x509_svid_ttl     = "12s"
  jwt_svid_ttl      = "10s"
  min_outage_budget = "1s"
}

server "root" {
  listen        = "127.0.0.1:18401"
  health_listen = "off"
  ca_ttl        = "6m"
  agent_svid_ttl = "2m"
}

server "regional" {
  parent        = "root"
  listen        = "127.0.0.1:18402"
  health_listen = "off"
  ca_ttl        = "3m"
}

server "leaf" {
  parent        = "regional"
  listen        = "127.0.0.1:18403"
  health_listen = "off"
  ca_ttl        = "30s"
}
`

func ttlsOf(s *topology.Server) ttls {
	return ttls{ca: s.CATTL, x509: s.X509SVIDTTL, jwt: s.JWTSVIDTTL, agent: s.AgentSVIDTTL}
}

// TestOutageBudgetMatchesSimulate stops the regional tier for longer than
// the leaf's outage budget, at the worst moment (just before the leaf would
// prepare its next CA), and checks that the leaf stops issuing when
// topology.Simulate said it would at worst.
func TestOutageBudgetMatchesSimulate(t *testing.T) {
	dir := shortDir(t)
	path := filepath.Join(dir, "tree.hcl")
	if err := os.WriteFile(path, []byte(budgetTopology), 0o600); err != nil {
		t.Fatal(err)
	}
	f, diags := topology.Parse([]byte(budgetTopology), path)
	if diags.HasErrors() {
		t.Fatalf("topology.Parse: %v", diags)
	}
	server := func(name string) *topology.Server {
		s, err := f.Server(name)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	const outage = 60 * time.Second
	sim, err := topology.Simulate(f, "regional", outage, time.Time{})
	if err != nil {
		t.Fatalf("Simulate: %v", err)
	}
	var predicted *topology.Event
	for i, e := range sim.Events {
		if e.Kind == topology.EventCAExpired && e.Server == "leaf" {
			predicted = &sim.Events[i]
		}
	}
	if predicted == nil {
		var b strings.Builder
		sim.WriteText(&b)
		t.Fatalf("Simulate predicts no expiry of the leaf's CA within %v:\n%s", outage, b.String())
	}
	t.Logf("Simulate: leaf CA expires at +%v at worst, +%v at the latest", predicted.At, predicted.Latest)

	root := startRoot(t, "root", ttlsOf(server("root")))
	reg := startChild(t, root, "regional", ttlsOf(server("regional")))
	leaf := startChild(t, reg, "leaf", ttlsOf(server("leaf")))
	w := startWorkload(t, leaf, "leaf-app")
	chk := startChecker(t, w, 100*time.Millisecond)

	leafCA, _ := leaf.srv.CA().X509CA()
	if leafCA.NotAfter.Sub(leafCA.NotBefore) != server("leaf").CATTL+upstream.Backdate {
		t.Fatalf("the leaf's CA lives %v (backdated by %v), want its ca_ttl %v: the parent capped it",
			leafCA.NotAfter.Sub(leafCA.NotBefore), upstream.Backdate, server("leaf").CATTL)
	}
	stopAt := halfLife(leafCA).Add(-time.Second)
	if time.Until(stopAt) < 0 || leaf.srv.CA().Status().NextX509CA != nil {
		t.Fatalf("set-up took too long: the leaf's CA %v reached half-life at %v", leafCA.SerialNumber, halfLife(leafCA).Format(time.TimeOnly))
	}
	if err := sleepUntil(ctxFor(t, time.Minute), stopAt); err != nil {
		t.Fatal(err)
	}
	reg.stop()
	down := time.Now()
	t.Logf("regional stopped at %s; leaf CA %v not after %s", down.Format(time.TimeOnly), leafCA.SerialNumber, leafCA.NotAfter.Format(time.TimeOnly))

	// Probe the leaf's ability to issue through its admin API.
	probe := svidv1.NewSVIDClient(leaf.admin)
	key := newKey(t)
	var failedAt time.Time
	poll(t, predicted.Latest+20*time.Second, "the leaf stops issuing", func() error {
		_, err := probe.MintX509SVID(callCtx(t), &svidv1.MintX509SVIDRequest{Csr: csr(t, key, "spiffe://example.org/probe")})
		if err == nil {
			return fmt.Errorf("the leaf still issues %v after the regional stopped", time.Since(down).Round(time.Second))
		}
		failedAt = time.Now()
		t.Logf("leaf refuses to issue: %v", err)
		return nil
	})
	elapsed := failedAt.Sub(down)
	t.Logf("the leaf stopped issuing %v after the regional went down (Simulate: +%v at worst, +%v at the latest)",
		elapsed.Round(100*time.Millisecond), predicted.At, predicted.Latest)
	if elapsed < predicted.At-2*time.Second {
		t.Errorf("the leaf stopped issuing after %v, earlier than Simulate's worst case %v", elapsed.Round(100*time.Millisecond), predicted.At)
	}
	// arbor prepares the next CA at half of the backdated lifetime, so the
	// true worst case is half the backdate later than Simulate's.
	if limit := predicted.At + upstream.Backdate/2 + 3*time.Second; elapsed > limit {
		t.Errorf("the leaf stopped issuing after %v; Simulate's worst case is %v (allowing %v)", elapsed.Round(100*time.Millisecond), predicted.At, limit)
	}
	if elapsed > predicted.Latest+2*time.Second {
		t.Errorf("the leaf kept issuing %v, longer than Simulate's latest %v", elapsed.Round(100*time.Millisecond), predicted.Latest)
	}

	// The workload's SVID stops verifying at the same moment: SVIDs never
	// outlive the CA that signed them.
	poll(t, 10*time.Second, "the leaf workload's SVID stops verifying", func() error {
		if _, failures := chk.result(); len(failures) == 0 {
			return fmt.Errorf("the leaf workload still holds a valid SVID")
		}
		return nil
	})
	chk.stop()
	_, failures := chk.result()
	first, err := time.Parse("15:04:05.000", strings.Fields(failures[0])[0])
	if err != nil {
		t.Fatal(err)
	}
	firstAt := time.Date(down.Year(), down.Month(), down.Day(), first.Hour(), first.Minute(), first.Second(), first.Nanosecond(), down.Location())
	if d := firstAt.Sub(failedAt); d < -2*time.Second || d > 2*time.Second {
		t.Errorf("the workload's SVID stopped verifying at %s, the leaf stopped issuing at %s: want within 2s; first failure: %s",
			firstAt.Format(time.TimeOnly), failedAt.Format(time.TimeOnly), failures[0])
	}
}

// TestChildCAAtMaxRatioIsFullLength: topology validation accepts a child
// ca_ttl of half its parent's, saying "the parent, rotating at half-life,
// can always sign a full-length child CA", and Simulate's worst case (half
// the child's ca_ttl) relies on it. The parent signs from its active CA,
// which it keeps until a sixth of its lifetime remains; a child that asks
// in that last part must still get its full ca_ttl.
func TestChildCAAtMaxRatioIsFullLength(t *testing.T) {
	const childTTL = 30 * time.Second
	root := startRoot(t, "root", ttls{ca: 8 * childTTL, x509: 20 * time.Second, agent: 2 * childTTL})
	reg := startChild(t, root, "regional", ttls{ca: 2 * childTTL, x509: childTTL})
	leaf := startChild(t, reg, "leaf", ttls{ca: childTTL, x509: 12 * time.Second})

	// Wait until the regional's active CA has less than childTTL left but
	// is still the active one (it is replaced at its last sixth).
	regCA, _ := reg.srv.CA().X509CA()
	at := regCA.NotAfter.Add(-childTTL + 8*time.Second)
	if err := sleepUntil(ctxFor(t, 2*time.Minute), at); err != nil {
		t.Fatal(err)
	}
	if cur, _ := reg.srv.CA().X509CA(); !cur.Equal(regCA) {
		t.Fatalf("the regional replaced its CA before %v", at.Format(time.TimeOnly))
	}
	// A fresh connection through the leaf's co-located agent (so that the
	// leaf's long-lived connection, see TestChildKeepsParentAccessAfterItsSVIDRotates,
	// plays no part).
	up, err := downstream.New(callCtx(t), downstream.Config{TrustDomain: td, ParentAddress: reg.addr(), WorkloadAPIAddr: "unix://" + leaf.colo.sock})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	now := time.Now()
	minted, err := up.MintX509CA(callCtx(t), newKey(t), childTTL)
	if err != nil {
		t.Fatalf("MintX509CA: %v", err)
	}
	if got := minted.Cert.NotAfter.Sub(now); got < childTTL-2*time.Second {
		t.Errorf("a child with ca_ttl %v (half its parent's %v) got a CA valid for %v (not after %v, the parent's active CA's end %v): its outage budget is %v, not the %v Simulate reports",
			childTTL, 2*childTTL, got.Round(time.Second), minted.Cert.NotAfter.Format(time.TimeOnly), regCA.NotAfter.Format(time.TimeOnly),
			(got / 2).Round(time.Second), childTTL/2)
	}
}
