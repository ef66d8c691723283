package nested

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	localauthorityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/localauthority/v1"

	"github.com/arborid/arbor/internal/ca"
)

// chainsTo reports whether any certificate of chain is root or was signed
// by it.
func chainsTo(chain []*x509.Certificate, root *x509.Certificate) bool {
	for _, c := range chain {
		if bytes.Equal(c.Raw, root.Raw) || (bytes.Equal(c.RawIssuer, root.RawSubject) && c.CheckSignatureFrom(root) == nil) {
			return true
		}
	}
	return false
}

// crossChecker verifies one workload's X509-SVID against another
// workload's bundle (the two leaves verifying each other), continuously.
type crossChecker struct {
	from, to *workload
	stopc    chan struct{}
	done     chan struct{}

	mu       sync.Mutex
	checks   int
	failures []string
}

func startCrossChecker(t *testing.T, from, to *workload, every time.Duration) *crossChecker {
	c := &crossChecker{from: from, to: to, stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			ctx := callCtx(t)
			svid, err := from.client.FetchX509SVID(ctx)
			if err == nil {
				set, berr := to.client.FetchX509Bundles(ctx)
				if berr != nil {
					err = berr
				} else {
					_, _, err = x509svid.Verify(svid.Certificates, set)
				}
			}
			c.mu.Lock()
			c.checks++
			if err != nil {
				c.failures = append(c.failures, time.Now().Format("15:04:05.000")+" "+err.Error())
			}
			c.mu.Unlock()
			select {
			case <-c.stopc:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(c.stop)
	return c
}

func (c *crossChecker) stop() {
	select {
	case <-c.stopc:
	default:
		close(c.stopc)
	}
	<-c.done
}

func (c *crossChecker) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.checks
}

func (c *crossChecker) assertClean(t *testing.T, minChecks int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.failures) > 0 {
		t.Errorf("%s's SVID against %s's bundle: %d of %d checks failed; first ones:\n%s", c.from.id, c.to.id, len(c.failures), c.checks, joinFirst(c.failures, 5))
	}
	if c.checks < minChecks {
		t.Errorf("%s's SVID against %s's bundle: only %d checks, want at least %d", c.from.id, c.to.id, c.checks, minChecks)
	}
}

// TestForcedRotationThroughTiers retires the root CA early, through
// root -> regional -> two leaves, with a workload under each leaf verifying
// its own SVID and the other leaf's throughout: the root prepares and
// activates a new root CA, then taints the old one; every tier below gets a
// new intermediate and every agent re-mints, without one failed check; then
// the root revokes the old one and it leaves every bundle. It reports the
// time from the taint until no tier's CA and no workload SVID chains to the
// old root, against the sync interval.
func TestForcedRotationThroughTiers(t *testing.T) {
	long := ttls{ca: 24 * time.Hour, x509: time.Hour, jwt: 5 * time.Minute}
	root := startRoot(t, "root", long)
	reg := startChild(t, root, "region", ttls{ca: 12 * time.Hour, x509: time.Hour, jwt: 5 * time.Minute})
	leafA := startChild(t, reg, "leaf-a", ttls{ca: 6 * time.Hour, x509: time.Hour, jwt: 5 * time.Minute})
	leafB := startChild(t, reg, "leaf-b", ttls{ca: 6 * time.Hour, x509: time.Hour, jwt: 5 * time.Minute})
	wA := startWorkload(t, leafA, "a")
	wB := startWorkload(t, leafB, "b")
	tiers := []*tier{root, reg, leafA, leafB}
	workloads := []*workload{wA, wB}

	const every = 100 * time.Millisecond
	checks := []*checker{startChecker(t, wA, every), startChecker(t, wB, every)}
	cross := []*crossChecker{startCrossChecker(t, wA, wB, every), startCrossChecker(t, wB, wA, every)}
	start := time.Now()

	ctx := ctxFor(t, 3*time.Minute)
	la := localauthorityv1.NewLocalAuthorityClient(root.admin)
	r1, _ := root.srv.CA().X509CA()
	idR2 := must(la.PrepareX509Authority(ctx, &localauthorityv1.PrepareX509AuthorityRequest{}))(t).PreparedAuthority.AuthorityId
	r2 := root.srv.CA().Status().NextX509CA
	poll(t, 30*time.Second, "the new root CA in every tier's and workload's bundle", func() error {
		for _, tr := range tiers {
			if !hasRoot(tr.roots(), r2) {
				return fmt.Errorf("%s's bundle lacks the new root", tr.name)
			}
		}
		for _, w := range workloads {
			set, err := w.client.FetchX509Bundles(callCtx(t))
			if err != nil {
				return err
			}
			b, _ := set.GetX509BundleForTrustDomain(td)
			if b == nil || !b.HasX509Authority(r2) {
				return fmt.Errorf("%s's bundle lacks the new root", w.id)
			}
		}
		return nil
	})
	must(la.ActivateX509Authority(ctx, &localauthorityv1.ActivateX509AuthorityRequest{AuthorityId: idR2}))(t)

	tainted := time.Now()
	must(la.TaintX509Authority(ctx, &localauthorityv1.TaintX509AuthorityRequest{AuthorityId: ca.SubjectKeyID(r1)}))(t)
	caClean := map[string]time.Duration{}
	var svidsClean time.Duration
	poll(t, 60*time.Second, "no tier CA and no workload SVID chaining to the tainted root", func() error {
		var pending []string
		for _, tr := range tiers[1:] {
			cur, chain := tr.srv.CA().X509CA()
			if chainsTo(append([]*x509.Certificate{cur}, chain...), r1) {
				pending = append(pending, tr.name+"'s CA")
			} else if _, ok := caClean[tr.name]; !ok {
				caClean[tr.name] = time.Since(tainted)
			}
		}
		for _, w := range workloads {
			svid, err := w.client.FetchX509SVID(callCtx(t))
			if err != nil {
				return err
			}
			if chainsTo(svid.Certificates, r1) {
				pending = append(pending, w.id.String()+"'s SVID")
			}
		}
		if len(pending) > 0 {
			return fmt.Errorf("still chaining to the tainted root: %s", strings.Join(pending, ", "))
		}
		svidsClean = time.Since(tainted)
		return nil
	})
	for _, tr := range tiers[1:] {
		t.Logf("%s: CA no longer chains to the tainted root %v after the taint (%.1f sync intervals)", tr.name, caClean[tr.name].Round(time.Millisecond), float64(caClean[tr.name])/float64(syncEvery))
	}
	t.Logf("taint to no workload SVID chaining to the tainted root: %v (%.1f sync intervals of %v, tree depth 2 below the root)",
		svidsClean.Round(time.Millisecond), float64(svidsClean)/float64(syncEvery), syncEvery)

	// Every tier marks it tainted; then the root revokes it and it leaves
	// every bundle, the workloads' included.
	poll(t, 30*time.Second, "every tier marking the old root tainted", func() error {
		for _, tr := range tiers {
			b, err := tr.bundle(callCtx(t))
			if err != nil {
				return err
			}
			for _, a := range b.X509Authorities {
				if bytes.Equal(a.Asn1, r1.Raw) && !a.Tainted {
					return fmt.Errorf("%s holds the old root untainted", tr.name)
				}
			}
		}
		return nil
	})
	must(la.RevokeX509Authority(ctx, &localauthorityv1.RevokeX509AuthorityRequest{AuthorityId: ca.SubjectKeyID(r1)}))(t)
	revoked := time.Now()
	poll(t, 30*time.Second, "the revoked root leaving every bundle", func() error {
		for _, tr := range tiers {
			if hasRoot(tr.roots(), r1) {
				return fmt.Errorf("%s still holds the revoked root", tr.name)
			}
		}
		for _, w := range workloads {
			set, err := w.client.FetchX509Bundles(callCtx(t))
			if err != nil {
				return err
			}
			if b, _ := set.GetX509BundleForTrustDomain(td); b != nil && b.HasX509Authority(r1) {
				return fmt.Errorf("%s's bundle still holds the revoked root", w.id)
			}
		}
		return nil
	})
	t.Logf("revoke to the old root gone from every bundle: %v (%.1f sync intervals)", time.Since(revoked).Round(time.Millisecond), float64(time.Since(revoked))/float64(syncEvery))
	// Every checker runs a few more times after the revoke.
	var base []int
	for _, c := range checks {
		n, _ := c.result()
		base = append(base, n)
	}
	for _, c := range cross {
		base = append(base, c.count())
	}
	poll(t, 30*time.Second, "three more checks of each checker after the revoke", func() error {
		for i, c := range checks {
			if n, _ := c.result(); n < base[i]+3 {
				return fmt.Errorf("%s: %d checks", c.w.id, n)
			}
		}
		for i, c := range cross {
			if n := c.count(); n < base[len(checks)+i]+3 {
				return fmt.Errorf("%s against %s: %d checks", c.from.id, c.to.id, n)
			}
		}
		return nil
	})
	elapsed := time.Since(start)
	for _, c := range checks {
		c.stop()
		c.assertClean(t, int(elapsed/every)/3)
	}
	for _, c := range cross {
		c.stop()
		c.assertClean(t, int(elapsed/every)/3)
	}
}

func hasRoot(roots []*x509.Certificate, c *x509.Certificate) bool {
	for _, r := range roots {
		if r.Equal(c) {
			return true
		}
	}
	return false
}

func must[T any](v T, err error) func(*testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}
