package nested

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
)

// jwtChecker continuously fetches a JWT-SVID from one workload and validates
// it through another workload's agent (ValidateJWTSVID).
type jwtChecker struct {
	cancel func()
	done   chan struct{}

	mu       sync.Mutex
	checks   int
	failures []string
	kids     map[string]bool
}

func startJWTChecker(t *testing.T, from, via *workload, audience string, every time.Duration) *jwtChecker {
	ctx, cancel := context.WithCancel(context.Background())
	c := &jwtChecker{cancel: cancel, done: make(chan struct{}), kids: map[string]bool{}}
	go func() {
		defer close(c.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			kid, err := checkJWT(ctx, from, via, audience)
			if ctx.Err() != nil {
				return
			}
			c.mu.Lock()
			c.checks++
			if err != nil {
				c.failures = append(c.failures, time.Now().Format("15:04:05.000")+" "+err.Error())
			} else {
				c.kids[kid] = true
			}
			c.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(c.stop)
	return c
}

func checkJWT(ctx context.Context, from, via *workload, audience string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	svid, err := from.client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: audience})
	if err != nil {
		return "", fmt.Errorf("FetchJWTSVID from %s: %w", from.id, err)
	}
	got, err := via.client.ValidateJWTSVID(ctx, svid.Marshal(), audience)
	if err != nil {
		return "", fmt.Errorf("ValidateJWTSVID of %s's token (expires %v) through %s's agent: %w", from.id, svid.Expiry.Format(time.TimeOnly), via.id, err)
	}
	if got.ID != from.id {
		return "", fmt.Errorf("validated token is %s's, want %s's", got.ID, from.id)
	}
	kid, _ := jwtKeyID(svid.Marshal())
	return kid, nil
}

func (c *jwtChecker) stop() {
	c.cancel()
	<-c.done
}

func (c *jwtChecker) assertClean(t *testing.T, what string, minChecks, minKeys int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.failures) > 0 {
		t.Errorf("%s: %d of %d JWT checks failed; first ones:\n%s", what, len(c.failures), c.checks, joinFirst(c.failures, 5))
	}
	if c.checks < minChecks {
		t.Errorf("%s: only %d JWT checks ran, want at least %d", what, c.checks, minChecks)
	}
	if len(c.kids) < minKeys {
		t.Errorf("%s: JWT-SVIDs were signed by %d key(s), want at least %d (the leaf's JWT key rotates with its CA TTL)", what, len(c.kids), minKeys)
	}
}

// TestRotationAtEveryTier runs root -> {region-a -> leaf-a, region-b ->
// leaf-b} with CA lifetimes of 120s/60s/30s for a little over two leaf CA
// lifetimes, while a checker on each leaf workload verifies its X509-SVID
// against its own agent's bundle every 100ms and a JWT-SVID of leaf-a's
// workload is validated through leaf-b's agent (and back) every 500ms. No
// check may fail; every tier's CA must have rotated.
func TestRotationAtEveryTier(t *testing.T) {
	const leafCATTL = 30 * time.Second
	root := startRoot(t, "root", ttls{ca: 4 * leafCATTL, x509: 20 * time.Second, jwt: 10 * time.Second, agent: 2 * leafCATTL})
	regA := startChild(t, root, "region-a", ttls{ca: 2 * leafCATTL, x509: 12 * time.Second, jwt: 10 * time.Second})
	regB := startChild(t, root, "region-b", ttls{ca: 2 * leafCATTL, x509: 12 * time.Second, jwt: 10 * time.Second})
	leafA := startChild(t, regA, "leaf-a", ttls{ca: leafCATTL, x509: 12 * time.Second, jwt: 10 * time.Second})
	leafB := startChild(t, regB, "leaf-b", ttls{ca: leafCATTL, x509: 12 * time.Second, jwt: 10 * time.Second})
	wA := startWorkload(t, leafA, "a")
	wB := startWorkload(t, leafB, "b")

	start := time.Now()
	chkA := startChecker(t, wA, 100*time.Millisecond)
	chkB := startChecker(t, wB, 100*time.Millisecond)
	// Start-up: each leaf's first JWT key is active at once (there is no
	// older one to keep using), so wait until both have crossed the tree.
	poll(t, 30*time.Second, "leaf-a's JWT key reaches leaf-b's agent", func() error {
		_, err := checkJWT(callCtx(t), wA, wB, "b")
		return err
	})
	poll(t, 30*time.Second, "leaf-b's JWT key reaches leaf-a's agent", func() error {
		_, err := checkJWT(callCtx(t), wB, wA, "a")
		return err
	})
	jAB := startJWTChecker(t, wA, wB, "b", 500*time.Millisecond)
	jBA := startJWTChecker(t, wB, wA, "a", 500*time.Millisecond)

	// Two leaf CA lifetimes (each backdated by 10s), and until the root's
	// next CA — prepared at its half-life — is in both leaf agents' bundles.
	rootCA, _ := root.srv.CA().X509CA()
	end := start.Add(2 * (leafCATTL + 10*time.Second))
	if err := sleepUntil(ctxFor(t, 3*time.Minute), end); err != nil {
		t.Fatal(err)
	}
	err := pollErr(60*time.Second, "the root's next CA reaches both leaf workloads' bundles", func() error {
		next := root.srv.CA().Status().NextX509CA
		if next == nil {
			if cur, _ := root.srv.CA().X509CA(); !cur.Equal(rootCA) {
				next = cur
			} else {
				return fmt.Errorf("the root has not prepared its next CA yet (half-life %v)", halfLife(rootCA).Format(time.TimeOnly))
			}
		}
		for _, w := range []*workload{wA, wB} {
			set, err := w.client.FetchX509Bundles(callCtx(t))
			if err != nil {
				return err
			}
			b, err := set.GetX509BundleForTrustDomain(td)
			if err != nil {
				return err
			}
			if !b.HasX509Authority(next) {
				return fmt.Errorf("%s's agent bundle lacks the root's next CA %v", w.id, next.SerialNumber)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	elapsed := time.Since(start)
	for _, c := range []*checker{chkA, chkB} {
		c.stop()
		c.assertClean(t, int(elapsed/(100*time.Millisecond))/3)
		// Chains are [SVID, leaf CA, regional CA]; at least two leaf CA
		// rotations and one regional rotation in two leaf lifetimes.
		for _, want := range []struct {
			pos  string
			what string
			min  int
		}{{"0", "X509-SVIDs", 10}, {"1", "leaf CAs", 3}, {"2", "regional CAs", 2}} {
			if n, _ := c.distinct(want.pos, start, time.Now()); n < want.min {
				t.Errorf("workload %s saw %d %s in %v, want at least %d", c.w.id, n, want.what, elapsed.Round(time.Second), want.min)
			}
		}
	}
	jAB.stop()
	jBA.stop()
	minJWT := int(elapsed/(500*time.Millisecond)) / 3
	jAB.assertClean(t, "leaf-a JWT-SVID through leaf-b's agent", minJWT, 2)
	jBA.assertClean(t, "leaf-b JWT-SVID through leaf-a's agent", minJWT, 2)
	t.Logf("ran %v: %d+%d X.509 checks, JWT keys seen a->b %d, b->a %d", elapsed.Round(time.Second), chkA.checks, chkB.checks, len(jAB.kids), len(jBA.kids))
}
