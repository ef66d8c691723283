package nested

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/arborid/arbor/agent"
	"github.com/arborid/arbor/downstream"
	"github.com/arborid/arbor/internal/nodeattest/x509pop"
	"github.com/arborid/arbor/internal/nodeattest/x509pop/x509poptest"
	"github.com/arborid/arbor/internal/server"
)

// logRecorder is a slog.Handler keeping every record's time and message, so
// a test can see what an agent reported (and, with NESTED_TEST_LOG, also
// printing it).
type logRecorder struct {
	mu   sync.Mutex
	recs []logRecord
	tee  slog.Handler // nil: record only
}

type logRecord struct {
	at  time.Time
	msg string
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *logRecorder) Handle(ctx context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.recs = append(r.recs, logRecord{at: rec.Time, msg: rec.Message})
	r.mu.Unlock()
	if r.tee != nil && r.tee.Enabled(ctx, rec.Level) {
		return r.tee.Handle(ctx, rec)
	}
	return nil
}

// WithAttrs and WithGroup drop the attributes: only messages are recorded.
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *logRecorder) WithGroup(string) slog.Handler      { return r }

// count returns how many records with message msg were logged at or after from.
func (r *logRecorder) count(msg string, from time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, rec := range r.recs {
		if rec.msg == msg && !rec.at.Before(from) {
			n++
		}
	}
	return n
}

// startX509PoPRoot starts a self-signed root tier accepting join tokens and
// x509pop node certificates that chain to the CA in caBundlePath.
func startX509PoPRoot(t *testing.T, name string, tt ttls, caBundlePath string) *tier {
	t.Helper()
	cfg := newTierConfig(t, name, tt)
	cfg.X509PoP = &server.X509PoPConfig{CABundlePaths: []string{caBundlePath}}
	tr := &tier{t: t, name: name, cfg: cfg}
	tr.start()
	t.Cleanup(tr.stop)
	return tr
}

// x509popColo is a downstream tier's co-located agent attested with x509pop.
type x509popColo struct {
	*runningAgent
	dataDir string
	log     *logRecorder
}

// storedSVID is the agent SVID the agent keeps in its data directory (what
// it would use after a restart).
func (c *x509popColo) storedSVID() (*x509.Certificate, error) {
	pemBytes, err := os.ReadFile(filepath.Join(c.dataDir, "agent-svid.pem"))
	if err != nil {
		return nil, err
	}
	b, _ := pem.Decode(pemBytes)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: no PEM certificate", filepath.Join(c.dataDir, "agent-svid.pem"))
	}
	return x509.ParseCertificate(b.Bytes)
}

// startX509PoPChild starts a downstream tier under parent whose co-located
// agent attests to parent with the x509pop node identity of pki; the
// downstream entry for the child server is parented to that agent's x509pop
// agent ID, which it returns.
func startX509PoPChild(t *testing.T, parent *tier, name string, tt ttls, pki *x509poptest.PKI) (*tier, *x509popColo, spiffeid.ID) {
	t.Helper()
	agentID := idOf("/spire/agent/x509pop/" + x509pop.Fingerprint(pki.Node.Leaf()))
	parent.createEntry(&types.Entry{
		ParentId:   protoID(agentID),
		SpiffeId:   protoID(serverIDOf(name)),
		Selectors:  []*types.Selector{{Type: "tier", Value: name}},
		Downstream: true,
	})

	dir := shortDir(t)
	rec := &logRecorder{}
	if l := testLogger(); l != nil {
		rec.tee = l.Handler()
	}
	cfg := agent.Config{
		TrustDomain:       td,
		ServerAddress:     parent.addr(),
		TrustBundle:       parent.roots(),
		DataDir:           filepath.Join(dir, "data"),
		SocketPath:        filepath.Join(dir, "api.sock"),
		X509PoP:           &agent.X509PoPConfig{CertPath: pki.CertPath, KeyPath: pki.KeyPath},
		SyncInterval:      syncEvery,
		WorkloadAttestors: []agent.WorkloadAttestor{constAttestor{{Type: "tier", Value: name}}},
		Logger:            slog.New(rec),
	}
	ag, err := agent.New(cfg)
	if err != nil {
		t.Fatalf("agent.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ra := &runningAgent{Agent: ag, sock: cfg.SocketPath, cancel: cancel, done: make(chan error, 1)}
	go func() { ra.done <- ag.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-ra.done:
			if err != nil {
				t.Errorf("co-located agent of %s: Run: %v", name, err)
			}
		case <-time.After(30 * time.Second):
			t.Error("co-located agent did not stop within 30s")
		}
	})
	select {
	case <-ag.Ready():
	case err := <-ra.done:
		t.Fatalf("co-located x509pop agent of %s stopped before ready: %v", name, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("co-located x509pop agent of %s not ready after 30s", name)
	}
	if got := ag.SPIFFEID(); got != agentID {
		t.Fatalf("co-located x509pop agent attested as %s, want %s", got, agentID)
	}
	colo := &x509popColo{runningAgent: ra, dataDir: cfg.DataDir, log: rec}

	life, lifeCancel := context.WithCancel(context.Background())
	t.Cleanup(lifeCancel)
	wctx, wcancel := context.WithTimeout(life, 30*time.Second)
	defer wcancel()
	up, err := downstream.New(wctx, downstream.Config{
		TrustDomain:     td,
		ParentAddress:   parent.addr(),
		WorkloadAPIAddr: "unix://" + ra.sock,
		CallTimeout:     5 * time.Second,
		Logger:          testLogger(),
	})
	if err != nil {
		t.Fatalf("downstream.New for %s: %v", name, err)
	}
	t.Cleanup(func() { up.Close() })

	tcfg := newTierConfig(t, name, tt)
	tcfg.Parent = up
	tcfg.ParentBundleSyncInterval = syncEvery
	tr := &tier{t: t, name: name, parent: parent, cfg: tcfg, up: up, colo: ra}
	tr.start()
	t.Cleanup(tr.stop)
	return tr, colo, agentID
}

// nodeRecord returns the parent's record of an attested agent.
func (tr *tier) nodeRecord(id spiffeid.ID) (*types.Agent, error) {
	return agentv1.NewAgentClient(tr.admin).GetAgent(callCtx(tr.t), &agentv1.GetAgentRequest{Id: protoID(id)})
}

// TestX509PoPAgentReattestsAfterOutage: root -> regional, the regional's
// co-located agent attested to the root with x509pop. The root stays down
// for longer than that agent's SVID (and the regional's downstream SVID it
// serves) lives, so both expire during the outage. When the root returns on
// the same state directory and port, the agent re-attests by itself with its
// node certificate (same agent ID, a new agent SVID in the root's node
// record), the regional reaches the root again through the downstream SVID
// the agent then fetches and obtains its next intermediate from it, and a
// workload under the regional holds a valid SVID throughout. Nothing is
// done to the agent or the regional after the root restarts.
func TestX509PoPAgentReattestsAfterOutage(t *testing.T) {
	const (
		agentTTL = 15 * time.Second
		outage   = 25 * time.Second
	)
	pki, err := x509poptest.Generate(shortDir(t), x509poptest.GenerateOptions{Node: x509poptest.NodeOptions{CommonName: "regional-node"}})
	if err != nil {
		t.Fatal(err)
	}
	// The root's X509-SVIDs (the regional's downstream SVID among them) and
	// agent SVIDs are both shorter than the outage; its CA outlives the test.
	root := startX509PoPRoot(t, "root", ttls{ca: 4 * time.Minute, x509: 20 * time.Second, jwt: 10 * time.Second, agent: agentTTL}, pki.CABundlePath)
	// The regional's CA outlives the outage: it keeps issuing throughout.
	reg, colo, agentID := startX509PoPChild(t, root, "regional", ttls{ca: 2 * time.Minute, x509: 12 * time.Second, jwt: 10 * time.Second}, pki)
	regApp := startWorkload(t, reg, "regional-app")
	chk := startChecker(t, regApp, 100*time.Millisecond)

	poll(t, 10*time.Second, "regional reaches the root before the outage", func() error {
		if !reg.up.Reachable() {
			return fmt.Errorf("Reachable() = false")
		}
		return nil
	})
	if got := colo.Agent.SPIFFEID(); got != agentID {
		t.Fatalf("co-located agent ID %s, want %s", got, agentID)
	}

	rootCA, _ := root.srv.CA().X509CA()
	regCA, _ := reg.srv.CA().X509CA()
	if outage >= time.Until(regCA.NotAfter) {
		t.Fatalf("set-up: the regional's CA (not after %s) would not outlive a %v outage", regCA.NotAfter.Format(time.TimeOnly), outage)
	}
	before, err := root.nodeRecord(agentID)
	if err != nil {
		t.Fatalf("root's node record of %s before the outage: %v", agentID, err)
	}
	known := caSerials(reg.srv)
	root.stop()
	down := time.Now()
	// The node record can still change in the instant before the stop; the
	// stored SVID is what the agent holds now.
	heldAtStop, err := colo.storedSVID()
	if err != nil {
		t.Fatalf("reading the co-located agent's stored SVID: %v", err)
	}
	t.Logf("root stopped at %s; agent SVID serial %v not after %s; node record serial %s",
		down.Format(time.TimeOnly), heldAtStop.SerialNumber, heldAtStop.NotAfter.Format(time.TimeOnly), before.X509SvidSerialNumber)
	if !heldAtStop.NotAfter.Before(down.Add(outage)) {
		t.Fatalf("set-up: the agent SVID (not after %s) would outlive the %v outage", heldAtStop.NotAfter.Format(time.TimeOnly), outage)
	}

	poll(t, 10*time.Second, "regional notices the root is down", func() error {
		if reg.up.Reachable() {
			return fmt.Errorf("Reachable() = true with the root stopped")
		}
		return nil
	})
	if err := sleepUntil(ctxFor(t, time.Minute), down.Add(outage)); err != nil {
		t.Fatal(err)
	}

	// The agent's own SVID has expired: it cannot renew it, only attest again.
	held, err := colo.storedSVID()
	if err != nil {
		t.Fatalf("reading the co-located agent's stored SVID: %v", err)
	}
	if now := time.Now(); now.Before(held.NotAfter) {
		t.Fatalf("the co-located agent holds an agent SVID valid until %s after a %v outage with %v agent SVIDs: it was renewed without the root?",
			held.NotAfter.Format(time.TimeOnly), outage, agentTTL)
	}
	up := time.Now()
	_, within := chk.distinct("0", down, up)
	if within < 2 {
		t.Errorf("the regional's workload received %d new X509-SVIDs during the %v root outage, want at least 2 (12s SVIDs rotate at half-life)", within, outage)
	}

	root.start()
	restarted := time.Now()
	if again, _ := root.srv.CA().X509CA(); !again.Equal(rootCA) {
		t.Fatalf("root restarted on its state directory with a different CA: serial %v, was %v", again.SerialNumber, rootCA.SerialNumber)
	}
	t.Logf("root started again at %s on %s", restarted.Format(time.TimeOnly), root.addr())

	// From here on the test only observes.

	// 1. The agent re-attests: same agent ID, a node record whose SVID was
	// issued after the restart, and the agent says so.
	poll(t, 60*time.Second, "the co-located agent re-attests to the returned root", func() error {
		n, err := root.nodeRecord(agentID)
		if err != nil {
			return err
		}
		if n.X509SvidSerialNumber == before.X509SvidSerialNumber {
			return fmt.Errorf("node record still has serial %s", n.X509SvidSerialNumber)
		}
		if exp := time.Unix(n.X509SvidExpiresAt, 0); !exp.After(restarted) {
			return fmt.Errorf("node record's SVID expires at %s, before the restart", exp.Format(time.TimeOnly))
		}
		if n.Banned {
			return fmt.Errorf("the root has the agent banned")
		}
		return nil
	})
	t.Logf("agent re-attested %v after the root returned", time.Since(restarted).Round(100*time.Millisecond))
	if got := colo.Agent.SPIFFEID(); got != agentID {
		t.Errorf("after re-attestation the co-located agent is %s, want %s", got, agentID)
	}
	// The root records the new SVID before the agent has received and stored
	// it, so the agent's side is polled too.
	poll(t, 30*time.Second, "the co-located agent storing its re-attested SVID", func() error {
		renewed, err := colo.storedSVID()
		if err != nil {
			return fmt.Errorf("reading the co-located agent's stored SVID: %v", err)
		}
		if !renewed.NotAfter.After(restarted) || renewed.SerialNumber.Cmp(held.SerialNumber) == 0 {
			return fmt.Errorf("the co-located agent still stores agent SVID %v (not after %s)", renewed.SerialNumber, renewed.NotAfter.Format(time.TimeOnly))
		}
		if n := colo.log.count("agent re-attested", restarted); n == 0 {
			return fmt.Errorf("the co-located agent logged no re-attestation after the root returned")
		}
		return nil
	})

	// 2. The regional reaches the root again with a fresh downstream SVID
	// from the agent.
	poll(t, 60*time.Second, "regional reaches the root again", func() error {
		if !reg.up.Reachable() {
			return fmt.Errorf("Reachable() = false")
		}
		return nil
	})
	t.Logf("regional reachable again %v after the root returned", time.Since(restarted).Round(100*time.Millisecond))
	ds, err := fetchSVID(colo.sock)
	if err != nil {
		t.Fatalf("fetching the regional's downstream SVID from its co-located agent: %v", err)
	}
	if ds.ID != serverIDOf("regional") {
		t.Errorf("co-located agent serves %s, want the downstream SVID %s", ds.ID, serverIDOf("regional"))
	}
	if leaf := ds.Certificates[0]; !leaf.NotAfter.After(restarted) {
		t.Errorf("the regional's downstream SVID expires at %s, before the root returned", leaf.NotAfter.Format(time.TimeOnly))
	} else if _, err := leaf.Verify(x509.VerifyOptions{Roots: poolOf(rootCA), Intermediates: poolOf(ds.Certificates[1:]...),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("the regional's downstream SVID does not verify against the root CA: %v", err)
	}

	// 3. The regional obtains its next intermediate from the returned root
	// (at its CA's half-life).
	poll(t, time.Until(halfLife(regCA))+60*time.Second, "regional obtains a new intermediate from the returned root", func() error {
		for serial, c := range caSerials(reg.srv) {
			if _, ok := known[serial]; ok {
				continue
			}
			if err := c.CheckSignatureFrom(rootCA); err != nil {
				return fmt.Errorf("new regional CA %s is not signed by the root: %v", serial, err)
			}
			return nil
		}
		return fmt.Errorf("the regional holds only CAs it had before the outage")
	})
	t.Logf("regional got a new intermediate %v after the root returned", time.Since(restarted).Round(100*time.Millisecond))

	// 4. The workload under the regional held a valid SVID throughout and
	// keeps receiving new ones.
	poll(t, 30*time.Second, "the regional's workload receives an SVID after the recovery", func() error {
		if _, within := chk.distinct("0", restarted, time.Now().Add(time.Second)); within == 0 {
			return fmt.Errorf("no new SVID since the root returned")
		}
		return nil
	})
	chk.stop()
	chk.assertClean(t, 300)
}

// fetchSVID fetches the X509-SVID a Workload API socket serves the test process.
func fetchSVID(sock string) (*x509svid.SVID, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+sock))
}

func poolOf(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}
