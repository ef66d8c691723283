package nested

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/arborid/arbor/internal/ca"
)

var seedFlag = flag.Uint64("tree.seed", 0, "seed of TestJWTKeysConvergeOnEveryTier's rotation order; 0 picks one")

const (
	// regionals is the number of regional tiers, each with one leaf: the
	// shape of spiffe/spire#6083.
	regionals = 8
	// extraRotations follow one rotation of every tier, on random tiers
	// (so some tiers rotate twice or more).
	extraRotations = 8
	// convergeBound is the asserted bound on the time from a tier starting
	// a rotation step to every tier's bundle listing the same JWT
	// authorities. A new key reaches the root synchronously (the publishing
	// tier's parent forwards PublishJWTAuthority before it answers); from
	// there it is one bundle sync per level down, and the deepest tiers are
	// two levels below the root: 2 sync periods, plus the RPCs and SQLite
	// writes on a loaded machine (measured: 1.3 periods median, at most 2.2
	// to 3.2 periods with a load average of 12 on 2 cores).
	convergeBound = 2*syncEvery + 800*time.Millisecond
	// agentBound is the asserted bound on the time from every server
	// bundle agreeing to every leaf's agent validating every other leaf's
	// JWT-SVID: one agent sync.
	agentBound = syncEvery + 800*time.Millisecond
	// giveUp ends a wait that is far past its bound.
	giveUp = 20 * time.Second
)

// jwtAuthority is one JWT authority of a bundle.
type jwtAuthority struct {
	KeyID     string
	PublicKey []byte
	ExpiresAt int64
}

func jwtAuthorities(b *types.Bundle) []jwtAuthority {
	out := make([]jwtAuthority, 0, len(b.JwtAuthorities))
	for _, k := range b.JwtAuthorities {
		out = append(out, jwtAuthority{KeyID: k.KeyId, PublicKey: k.PublicKey, ExpiresAt: k.ExpiresAt})
	}
	slices.SortFunc(out, func(a, b jwtAuthority) int { return strings.Compare(a.KeyID, b.KeyID) })
	return out
}

// converged checks once that every tier's bundle lists exactly the same JWT
// authorities and that they include every tier's active and prepared key.
// It reads the bundles concurrently and returns the number of authorities.
func (tr *tree) converged(ctx context.Context) (int, error) {
	var want []string
	for _, n := range tr.all {
		st := n.srv.CA().Status()
		want = append(want, n.name+"="+st.JWTKey.KeyID)
		if st.NextJWTKey != nil {
			want = append(want, n.name+"(next)="+st.NextJWTKey.KeyID)
		}
	}
	got := make([][]jwtAuthority, len(tr.all))
	errs := make([]error, len(tr.all))
	var wg sync.WaitGroup
	for i, n := range tr.all {
		wg.Go(func() {
			bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			b, err := n.bundle(bctx)
			if err != nil {
				errs[i] = err
				return
			}
			got[i] = jwtAuthorities(b)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	ref := got[0]
	for _, w := range want {
		_, kid, _ := strings.Cut(w, "=")
		if !slices.ContainsFunc(ref, func(a jwtAuthority) bool { return a.KeyID == kid }) {
			return 0, fmt.Errorf("%s's bundle lacks the JWT key %s", tr.all[0].name, w)
		}
	}
	for i, n := range tr.all[1:] {
		if diff := cmp.Diff(ref, got[i+1]); diff != "" {
			return 0, fmt.Errorf("JWT authorities of %s and %s differ (-%s +%s):\n%s", tr.all[0].name, n.name, tr.all[0].name, n.name, diff)
		}
	}
	return len(ref), nil
}

// convergence is when the bundles agreed, as far as polling can tell: not
// yet when the last failing poll began (after), by the end of the first
// successful one (by).
type convergence struct {
	after, by time.Duration
	keys      int
}

// waitConverged polls converged until it holds; it fails the test after
// giveUp.
func (tr *tree) waitConverged(t *testing.T, start time.Time, what string) convergence {
	t.Helper()
	ctx := callCtx(t)
	var c convergence
	for {
		began := time.Since(start)
		n, err := tr.converged(ctx)
		if err == nil {
			c.by, c.keys = time.Since(start), n
			return c
		}
		c.after = began
		if time.Since(start) > giveUp {
			t.Fatalf("%s: JWT authorities not converged after %v: %v", what, giveUp, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// prepareAt and activateAt are when the CA manager prepares the successor of
// a JWT key (half of its lifetime) and activates it (a sixth remaining).
func prepareAt(k *ca.JWTKeyStatus) time.Time {
	return k.NotBefore.Add(k.NotAfter.Sub(k.NotBefore) / 2)
}

func activateAt(k *ca.JWTKeyStatus) time.Time {
	return k.NotAfter.Add(-k.NotAfter.Sub(k.NotBefore) / 6)
}

// sample is one measured rotation step.
type sample struct {
	tier     string
	depth    int
	phase    string        // "prepare" or "activate"
	step     time.Duration // the Rotate call: for prepare, publishing up to the root
	converge convergence   // from the start of Rotate to every bundle agreeing
	agents   convergence   // after activate: from then until every agent validated every leaf's token
}

// TestJWTKeysConvergeOnEveryTier: with a root, 8 regional tiers and a leaf
// under each (spiffe/spire#6083's shape), every tier's JWT key is rotated
// in random order, then random tiers again. Each rotation moves the tier's
// own clock to its key's half-life and runs a rotation step (the next key
// is prepared and published), then to its activation point (the next key
// becomes active). After each step every tier's bundle must list exactly the
// same JWT authorities, including every tier's active and prepared keys,
// within convergeBound; after activation a JWT-SVID minted on each leaf (and
// on the rotated tier) must validate against every other leaf's bundle, and
// one fetched from each leaf's agent must validate through every other
// leaf's agent (Workload API ValidateJWTSVID).
func TestJWTKeysConvergeOnEveryTier(t *testing.T) {
	setupStart := time.Now()
	tr := startTree(t, regionals)
	c := tr.waitConverged(t, setupStart, "tree start")
	t.Logf("%d servers up and converged on %d JWT authorities in %v", len(tr.all), c.keys, c.by.Round(time.Millisecond))
	var workloads []*workload
	for _, l := range tr.leaves {
		workloads = append(workloads, startWorkload(t, l, l.name))
	}

	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("rotation order seed %d (rerun with -args -tree.seed=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	order := rng.Perm(len(tr.all))
	for range extraRotations {
		order = append(order, rng.IntN(len(tr.all)))
	}

	ctx := ctxFor(t, 5*time.Minute)
	var samples []sample
	for round, idx := range order {
		n := tr.all[idx]
		cur := n.srv.CA().Status().JWTKey

		start := time.Now()
		if err := n.rotateAt(ctx, prepareAt(cur).Add(time.Second)); err != nil {
			t.Fatalf("rotation %d, %s: prepare step: %v", round, n.name, err)
		}
		step := time.Since(start)
		st := n.srv.CA().Status()
		if st.JWTKey.KeyID != cur.KeyID || st.NextJWTKey == nil {
			t.Fatalf("rotation %d, %s: after the step at the key's half-life, active %s next %v; want %s active and a next key",
				round, n.name, st.JWTKey.KeyID, st.NextJWTKey, cur.KeyID)
		}
		next := st.NextJWTKey.KeyID
		conv := tr.waitConverged(t, start, fmt.Sprintf("rotation %d, %s prepared %s", round, n.name, next))
		samples = append(samples, sample{tier: n.name, depth: n.depth(), phase: "prepare", step: step, converge: conv})

		start = time.Now()
		if err := n.rotateAt(ctx, activateAt(cur).Add(time.Second)); err != nil {
			t.Fatalf("rotation %d, %s: activate step: %v", round, n.name, err)
		}
		step = time.Since(start)
		if st := n.srv.CA().Status(); st.JWTKey.KeyID != next {
			t.Fatalf("rotation %d, %s: after the step at the activation point the active key is %s, want %s", round, n.name, st.JWTKey.KeyID, next)
		}
		conv = tr.waitConverged(t, start, fmt.Sprintf("rotation %d, %s activated %s", round, n.name, next))
		s := sample{tier: n.name, depth: n.depth(), phase: "activate", step: step, converge: conv}

		audience := fmt.Sprintf("round-%d", round)
		tr.checkMinted(t, ctx, n, audience)
		s.agents = checkThroughAgents(t, ctx, workloads, audience)
		samples = append(samples, s)
	}
	report(t, samples)
}

// checkMinted mints a JWT-SVID on every leaf and on rotated (MintJWTSVID on
// the admin socket): each is signed by its tier's active key and validates
// against every other leaf's bundle.
func (tr *tree) checkMinted(t *testing.T, ctx context.Context, rotated *tier, audience string) {
	t.Helper()
	bundles := map[*tier]*jwtbundle.Bundle{}
	for _, l := range tr.leaves {
		b, err := l.jwtBundle(ctx)
		if err != nil {
			t.Fatal(err)
		}
		bundles[l] = b
	}
	minters := tr.leaves
	if rotated.depth() < 2 {
		minters = append([]*tier{rotated}, minters...)
	}
	for _, m := range minters {
		id := idOf("/minted/" + m.name)
		resp, err := svidv1.NewSVIDClient(m.admin).MintJWTSVID(ctx, &svidv1.MintJWTSVIDRequest{Id: protoID(id), Audience: []string{audience}})
		if err != nil {
			t.Fatalf("%s: MintJWTSVID: %v", m.name, err)
		}
		kid, err := jwtKeyID(resp.Svid.Token)
		if want := m.srv.CA().Status().JWTKey.KeyID; err != nil || kid != want {
			t.Fatalf("%s minted a JWT-SVID with kid %q (%v), want its active key %s", m.name, kid, err, want)
		}
		for _, l := range tr.leaves {
			if l == m {
				continue
			}
			svid, err := jwtsvid.ParseAndValidate(resp.Svid.Token, bundles[l], []string{audience})
			if err != nil {
				t.Errorf("JWT-SVID minted on %s (kid %s) against %s's bundle: %v", m.name, kid, l.name, err)
			} else if svid.ID != id {
				t.Errorf("JWT-SVID minted on %s validated as %s, want %s", m.name, svid.ID, id)
			}
		}
	}
}

// checkThroughAgents fetches a JWT-SVID for each leaf's workload from its
// agent and validates it through every other leaf's agent, retrying until
// each has synced its bundle; it returns how long that took.
func checkThroughAgents(t *testing.T, ctx context.Context, ws []*workload, audience string) convergence {
	t.Helper()
	start := time.Now()
	tokens := make([]string, len(ws))
	for i, w := range ws {
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		svid, err := w.client.FetchJWTSVID(fctx, jwtsvid.Params{Audience: audience})
		cancel()
		if err != nil {
			t.Fatalf("FetchJWTSVID from %s's agent: %v", w.tier.name, err)
		}
		tokens[i] = svid.Marshal()
		kid, _ := jwtKeyID(tokens[i])
		if want := w.tier.srv.CA().Status().JWTKey.KeyID; kid != want {
			t.Fatalf("%s's agent served a JWT-SVID with kid %q, want the leaf's active key %s", w.tier.name, kid, want)
		}
	}
	type pair struct{ from, via int }
	var pending []pair
	for i := range ws {
		for j := range ws {
			if i != j {
				pending = append(pending, pair{i, j})
			}
		}
	}
	var lastErr error
	var c convergence
	for len(pending) > 0 {
		began := time.Since(start)
		var left []pair
		for _, p := range pending {
			vctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			got, err := ws[p.via].client.ValidateJWTSVID(vctx, tokens[p.from], audience)
			cancel()
			switch {
			case err != nil:
				lastErr = fmt.Errorf("%s's JWT-SVID through %s's agent: %w", ws[p.from].tier.name, ws[p.via].tier.name, err)
				left = append(left, p)
			case got.ID != ws[p.from].id:
				t.Fatalf("%s's agent validated %s's JWT-SVID as %s", ws[p.via].tier.name, ws[p.from].tier.name, got.ID)
			}
		}
		pending = left
		if len(pending) > 0 {
			c.after = began
			if time.Since(start) > giveUp {
				t.Fatalf("%d of %d agent validations still failing after %v; last: %v", len(pending), len(ws)*(len(ws)-1), giveUp, lastErr)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	c.by = time.Since(start)
	return c
}

// report logs every step and a summary, and fails a step whose bundles (or
// agents) were seen to disagree after its bound.
func report(t *testing.T, samples []sample) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "sync interval %v. converged: from the start of the rotation step until every tier's bundle lists the same JWT authorities,\n", syncEvery)
	fmt.Fprintf(&b, "as \"after..by\": still disagreeing when the last failing poll began .. agreeing when the first good poll ended.\n")
	fmt.Fprintf(&b, "agents: from then until every leaf's agent validated every other leaf's JWT-SVID.\n")
	fmt.Fprintf(&b, "%-10s %5s %-8s %8s %17s %8s %5s %17s\n", "tier", "depth", "step", "rotate", "converged", "periods", "keys", "agents")
	span := func(c convergence) string {
		return fmt.Sprintf("%v..%v", c.after.Round(time.Millisecond), c.by.Round(time.Millisecond))
	}
	var prepare, activate, agents []time.Duration
	for _, s := range samples {
		ag := ""
		if s.phase == "activate" {
			ag = span(s.agents)
			agents = append(agents, s.agents.after)
			activate = append(activate, s.converge.after)
		} else {
			prepare = append(prepare, s.converge.after)
		}
		fmt.Fprintf(&b, "%-10s %5d %-8s %8v %17s %8.2f %5d %17s\n", s.tier, s.depth, s.phase, s.step.Round(time.Millisecond),
			span(s.converge), float64(s.converge.after)/float64(syncEvery), s.converge.keys, ag)
		if s.converge.after > convergeBound {
			t.Errorf("%s %s: bundles still disagreed %v after the rotation step began, want agreement within %v", s.tier, s.phase, s.converge.after, convergeBound)
		}
		if s.phase == "activate" && s.agents.after > agentBound {
			t.Errorf("%s activate: an agent still failed to validate a leaf's JWT-SVID %v after the bundles agreed, want within %v", s.tier, s.agents.after, agentBound)
		}
	}
	for _, x := range []struct {
		what string
		ds   []time.Duration
	}{{"prepare: bundles disagreed for", prepare}, {"activate: bundles disagreed for", activate}, {"agents lagged the bundles by", agents}} {
		slices.Sort(x.ds)
		fmt.Fprintf(&b, "%-32s median %v, max %v (%.2f sync periods), n=%d\n", x.what,
			x.ds[len(x.ds)/2].Round(time.Millisecond), x.ds[len(x.ds)-1].Round(time.Millisecond),
			float64(x.ds[len(x.ds)-1])/float64(syncEvery), len(x.ds))
	}
	t.Log("\n" + b.String())
}
