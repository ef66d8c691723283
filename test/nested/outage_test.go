package nested

import (
	"crypto/x509"
	"fmt"
	"testing"
	"time"

	"github.com/arborid/arbor/internal/server"
)

// caSerials returns the serials of a tier's active and prepared X.509 CAs.
func caSerials(s *server.Server) map[string]*x509.Certificate {
	st := s.CA().Status()
	out := map[string]*x509.Certificate{}
	for _, c := range []*x509.Certificate{st.X509CA, st.NextX509CA} {
		if c != nil {
			out[c.SerialNumber.String()] = c
		}
	}
	return out
}

// TestParentOutage stops the root of root -> regional -> leaf while the
// regional's CA reaches its half-life: the regional and the leaf keep
// issuing (their workloads keep receiving rotated SVIDs that verify against
// their own agents' bundles), the regional cannot prepare its next CA while
// the root is down, and when the root comes back on the same state directory
// and port the regional reconnects and obtains its next intermediate from it
// without anything being restarted.
func TestParentOutage(t *testing.T) {
	const outage = 15 * time.Second
	root := startRoot(t, "root", ttls{ca: 120 * time.Second, x509: 20 * time.Second, jwt: 10 * time.Second,
		// The regional's co-located agent joined with a (single-use) join
		// token: its agent SVID must outlive the outage or it could never
		// come back. 60s is half the root CA TTL.
		agent: 60 * time.Second})
	// SVID TTLs stay above upstream.Backdate (10s): a shorter one is past
	// half-life (counted from the backdated NotBefore) when it is issued, and
	// agents renew it on every sync.
	reg := startChild(t, root, "regional", ttls{ca: 60 * time.Second, x509: 12 * time.Second, jwt: 10 * time.Second})
	leaf := startChild(t, reg, "leaf", ttls{ca: 30 * time.Second, x509: 12 * time.Second, jwt: 10 * time.Second})

	leafApp := startWorkload(t, leaf, "leaf-app")
	regApp := startWorkload(t, reg, "regional-app")
	leafChk := startChecker(t, leafApp, 100*time.Millisecond)
	regChk := startChecker(t, regApp, 100*time.Millisecond)

	if !reg.up.Reachable() {
		// Reachable reflects the last call; the bundle sync calls every 200ms.
		poll(t, 10*time.Second, "regional reaches the root before the outage", func() error {
			if !reg.up.Reachable() {
				return fmt.Errorf("Reachable() = false")
			}
			return nil
		})
	}

	// Take the root down shortly before the regional's CA reaches half-life,
	// so the regional's attempt to prepare its next CA falls in the outage.
	regCA, _ := reg.srv.CA().X509CA()
	stopAt := halfLife(regCA).Add(-5 * time.Second)
	if err := sleepUntil(ctxFor(t, 2*time.Minute), stopAt); err != nil {
		t.Fatal(err)
	}
	rootCA, _ := root.srv.CA().X509CA()
	hadNext := reg.srv.CA().Status().NextX509CA != nil
	root.stop()
	down := time.Now()
	t.Logf("root stopped at %s (regional CA half-life %s, regional already had a next CA: %v)",
		down.Format(time.TimeOnly), halfLife(regCA).Format(time.TimeOnly), hadNext)

	poll(t, 10*time.Second, "regional notices the root is down", func() error {
		if reg.up.Reachable() {
			return fmt.Errorf("Reachable() = true with the root stopped")
		}
		return nil
	})
	if err := sleepUntil(ctxFor(t, time.Minute), down.Add(outage)); err != nil {
		t.Fatal(err)
	}
	known := caSerials(reg.srv)
	if !hadNext && time.Now().After(halfLife(regCA)) && reg.srv.CA().Status().NextX509CA != nil {
		t.Errorf("the regional prepared a next CA while its parent was down")
	}
	up := time.Now()

	// Both tiers kept issuing: new SVIDs were served during the outage and
	// every one verified (checked by the checkers throughout).
	for _, c := range []*checker{leafChk, regChk} {
		_, within := c.distinct("0", down, up)
		// X509-SVIDs live 12s and are renewed at half-life.
		if min := 2; within < min {
			t.Errorf("workload %s received %d new X509-SVIDs during the %v root outage, want at least %d (12s SVIDs rotate at half-life)",
				c.w.id, within, outage, min)
		}
	}

	root.start()
	if again, _ := root.srv.CA().X509CA(); !again.Equal(rootCA) {
		t.Errorf("root restarted on its state directory with a different CA: serial %v, was %v", again.SerialNumber, rootCA.SerialNumber)
	}
	t.Logf("root started again at %s on %s", time.Now().Format(time.TimeOnly), root.addr())

	poll(t, 60*time.Second, "regional reaches the root again", func() error {
		if !reg.up.Reachable() {
			return fmt.Errorf("Reachable() = false")
		}
		return nil
	})
	t.Logf("regional reachable again after %v", time.Since(up).Round(100*time.Millisecond))
	poll(t, 90*time.Second, "regional obtains a new intermediate from the returned root", func() error {
		for serial, c := range caSerials(reg.srv) {
			if _, ok := known[serial]; ok {
				continue
			}
			if err := c.CheckSignatureFrom(rootCA); err != nil {
				return fmt.Errorf("new regional CA %s is not signed by the root: %v", serial, err)
			}
			return nil
		}
		return fmt.Errorf("the regional holds only CAs it had before the root returned")
	})
	t.Logf("regional got a new intermediate %v after the root returned", time.Since(up).Round(100*time.Millisecond))

	// The leaf still works end to end after the recovery.
	if err := pollErr(30*time.Second, "leaf workload receives an SVID after the recovery", func() error {
		_, within := leafChk.distinct("0", time.Now().Add(-5*time.Second), time.Now().Add(time.Second))
		if within == 0 {
			n, failures := leafChk.result()
			return fmt.Errorf("no new SVID in the last 5s (%d checks, %d failed; last failures:\n%s)", n, len(failures), joinFirst(lastN(failures, 3), 3))
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	leafChk.stop()
	regChk.stop()
	leafChk.assertClean(t, 100)
	regChk.assertClean(t, 100)
}
