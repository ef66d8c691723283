package ca_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/arborid/arbor/downstream"
	"github.com/arborid/arbor/internal/ca"
	"github.com/arborid/arbor/upstream"
)

// childWith is child with the config edited before Init.
func childWith(t *testing.T, parent *env, up upstream.Authority, edit func(*ca.Config)) *env {
	t.Helper()
	e := &env{clock: parent.clock, bundles: newMemBundles(t)}
	e.cfg = ca.Config{TrustDomain: td, Upstream: up, ChooseDownstreamCA: downstream.ChooseSigningCA, Bundles: e.bundles, Now: parent.clock.Now}
	if p, ok := up.(*parentUpstream); ok {
		e.cfg.JWTPublisher = p // a parent tier takes the child's JWT keys
	}
	if edit != nil {
		edit(&e.cfg)
	}
	e.m = e.start(t)
	return e
}

// rotate runs a rotation step on each manager at the clock's time.
func rotateAll(t *testing.T, es ...*env) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, e := range es {
		if err := e.m.Rotate(ctx); err != nil {
			t.Fatalf("Rotate at %v: %v", e.clock.Now(), err)
		}
	}
}

// checkSVID signs an X509-SVID with the default TTL on e and checks that it
// is honest: valid now, ending at now+ttl or, if the chain ends first,
// exactly at the chain's end (Status().X509NotAfter), and verifying against
// the tier's bundle. It reports whether the SVID got its full TTL.
func checkSVID(t *testing.T, e *env, ttl time.Duration) (full bool) {
	t.Helper()
	now := e.clock.Now()
	key := mustKey(t, ca.KeyTypeECP256)
	id := spiffeid.RequireFromPath(td, "/w")
	certs, err := e.m.SignX509SVID(context.Background(), ca.X509SVIDParams{ID: id, PublicKey: key.Public()})
	if err != nil {
		t.Fatalf("SignX509SVID at %v: %v", now, err)
	}
	leaf := certs[0]
	budget := e.m.Status().X509NotAfter
	want := now.Add(ttl)
	if budget.Before(want) {
		want = budget
	}
	if !leaf.NotAfter.After(now) {
		t.Fatalf("at %v: SVID expired on issue (NotAfter %v)", now, leaf.NotAfter)
	}
	if !leaf.NotAfter.Equal(want) {
		t.Fatalf("at %v: SVID NotAfter = %v, want %v (full TTL or the chain's end %v)", now, leaf.NotAfter, want, budget)
	}
	for _, c := range certs[1:] {
		if leaf.NotAfter.After(c.NotAfter) {
			t.Fatalf("at %v: SVID outlives chain certificate %v (%v > %v)", now, c.Subject, leaf.NotAfter, c.NotAfter)
		}
	}
	if _, _, err := x509svid.Verify(certs, e.bundles.x509Bundle(t, td), x509svid.WithTime(now)); err != nil {
		t.Fatalf("at %v: SVID does not verify against the tier's bundle: %v", now, err)
	}
	return leaf.NotAfter.Equal(now.Add(ttl))
}

// TestCappedIntermediateIsReplaced walks a root (ca_ttl 6h) and a child
// (ca_ttl 3h, half the root's as topology validation requires; X509-SVID
// TTL 20m, within the sixth of ca_ttl that rotation leaves) through several
// root rotations minute by minute. When the child prepares its next CA
// shortly before the root activates its own next CA, the root caps the
// child's CA at the old root's expiry; the child must ask again once the
// root has rotated, so that every X509-SVID it signs gets its full TTL. (A
// manager that keeps the capped CA activates it with 30 minutes left and
// cuts SVIDs short for its last 20 minutes: spiffe/spire#7199.)
func TestCappedIntermediateIsReplaced(t *testing.T) {
	rootTier := newEnv(t, nil)
	up := &parentUpstream{parent: rootTier.m, parentBundles: rootTier.bundles}
	childTier := childWith(t, rootTier, up, func(c *ca.Config) {
		c.CATTL = 3 * time.Hour
		c.X509SVIDTTL = 20 * time.Minute
	})
	sawCapped, activations := 0, 0
	prev := childTier.m.Status().X509CA
	for at := epoch; at.Before(epoch.Add(20 * time.Hour)); at = at.Add(time.Minute) {
		rootTier.clock.Set(at)
		rotateAll(t, rootTier, childTier)
		st := childTier.m.Status()
		if st.NextX509Capped || st.X509Capped {
			sawCapped++
		}
		if !st.X509CA.Equal(prev) {
			activations++
			prev = st.X509CA
		}
		if !checkSVID(t, childTier, 20*time.Minute) {
			t.Fatalf("at %v: X509-SVID cut short to %v although the tree's TTLs allow its full TTL", at, st.X509NotAfter)
		}
	}
	if sawCapped == 0 {
		t.Fatal("the scenario never produced a capped intermediate; it tests nothing")
	}
	if activations < 5 {
		t.Errorf("the child activated %d CAs in 20h with ca_ttl 3h, want at least 5", activations)
	}
}

// TestCappedIntermediateHonestWhenParentCannotRotate: the root does not
// rotate (its process is stuck), so every CA the child gets ends with the
// root's. The child keeps asking, reports the capped CA and its budget, and
// its SVIDs end at the chain's end — never past it, never expired on issue —
// until the chain has expired, when signing is refused.
func TestCappedIntermediateHonestWhenParentCannotRotate(t *testing.T) {
	rootTier := newEnv(t, nil)
	rootCA, _ := rootTier.m.X509CA()
	mints := 0
	real := &parentUpstream{parent: rootTier.m, parentBundles: rootTier.bundles}
	up := upstreamFunc(func(ctx context.Context, k crypto.Signer, ttl time.Duration) (*upstream.MintedCA, error) {
		mints++
		return real.MintX509CA(ctx, k, ttl)
	})
	childTier := childWith(t, rootTier, up, func(c *ca.Config) { c.CATTL = 3 * time.Hour })
	shortened, steps := 0, 0
	for at := epoch; at.Before(rootCA.NotAfter); at = at.Add(20 * time.Second) {
		steps++
		childTier.clock.Set(at) // the root's clock too, but only the child rotates
		rotateAll(t, childTier)
		if !checkSVID(t, childTier, time.Hour) {
			shortened++
		}
		st := childTier.m.Status()
		if st.X509NotAfter.After(rootCA.NotAfter) {
			t.Fatalf("at %v: chain budget %v past the root's end %v", at, st.X509NotAfter, rootCA.NotAfter)
		}
		if at.After(rootCA.NotAfter.Add(-90*time.Minute+time.Minute)) && !st.X509Capped && !st.NextX509Capped {
			t.Errorf("at %v: neither the active nor the prepared CA is reported capped, though the root caps them", at)
		}
	}
	if shortened == 0 {
		t.Error("no SVID was shortened although the root's CA ends; the scenario tests nothing")
	}
	// From 4h30m (the child's CA then ends with the root's) a better CA is
	// asked for at most every max(RotateInterval, CATTL/200) = 54s: about
	// 100 times in the last 90 minutes, not at each of the 270 steps.
	if mints > 110 {
		t.Errorf("%d mints in %d rotation steps: retries are not throttled", mints, steps)
	}
	childTier.clock.Set(rootCA.NotAfter)
	if _, err := childTier.m.SignX509SVID(context.Background(), ca.X509SVIDParams{ID: spiffeid.RequireFromPath(td, "/w"), PublicKey: mustKey(t, ca.KeyTypeECP256).Public()}); !errors.Is(err, ca.ErrExpired) {
		t.Errorf("SignX509SVID once the chain expired: %v, want ErrExpired", err)
	}
}

// TestKeepsCurrentCAOverShortPrepared: after a restart that lowers ca_ttl
// to 30m while X509-SVIDs keep a 1h TTL, every prepared CA ends no later
// than the active one (from the first configuration) and has less than an
// SVID TTL left at the activation point. The active CA must stay until it
// expires instead of being swapped for one that is no better.
func TestKeepsCurrentCAOverShortPrepared(t *testing.T) {
	rootTier := newEnvAt(t, epoch, func(c *ca.Config) { c.CATTL = 48 * time.Hour })
	up := &parentUpstream{parent: rootTier.m, parentBundles: rootTier.bundles}
	dir := t.TempDir()
	childTier := childWith(t, rootTier, up, func(c *ca.Config) { c.CATTL, c.Dir = 3*time.Hour, dir })
	first, _ := childTier.m.X509CA()

	childTier.cfg.CATTL, childTier.cfg.X509SVIDTTL = 30*time.Minute, time.Hour
	childTier.m = childTier.start(t)
	held := 0
	for at := halfLife(first); at.Before(first.NotAfter.Add(-time.Minute)); at = at.Add(time.Minute) {
		childTier.clock.Set(at)
		rotateAll(t, childTier)
		cur, _ := childTier.m.X509CA()
		if !cur.Equal(first) {
			t.Fatalf("at %v: activated a CA ending %v over the active one ending %v", at, cur.NotAfter, first.NotAfter)
		}
		if !at.Before(lastSixth(first)) && childTier.m.Status().NextX509CA != nil {
			held++
		}
		checkSVID(t, childTier, time.Hour)
	}
	if held == 0 {
		t.Fatal("no CA was prepared past the activation point; the scenario tests nothing")
	}
	childTier.clock.Set(first.NotAfter)
	rotateAll(t, childTier)
	if cur, _ := childTier.m.X509CA(); cur.Equal(first) {
		t.Fatal("the expired CA is still active")
	}
	checkSVID(t, childTier, time.Hour)
}

// TestChildPrunesOldUpstreamRoot: a root rotates to a new root CA; once the
// old root has expired for longer than the grace period it leaves the
// child's bundle too, even though the child's own CA was minted while the
// parent still listed it (spiffe/spire#6198). The root's old JWT key, which
// reached the child through the publish response, leaves as well.
func TestChildPrunesOldUpstreamRoot(t *testing.T) {
	grace := time.Hour
	rootTier := newEnv(t, func(c *ca.Config) { c.PruneGrace = grace })
	up := &parentUpstream{parent: rootTier.m, parentBundles: rootTier.bundles}
	childTier := childWith(t, rootTier, up, func(c *ca.Config) {
		c.CATTL = 3 * time.Hour
		c.PruneGrace = grace
	})
	oldRoot, _ := rootTier.m.X509CA()
	oldKID := rootTier.m.Status().JWTKey.KeyID
	has := func(e *env, der []byte) bool {
		return slices.ContainsFunc(e.bundles.rootsDER(t, td), func(d []byte) bool { return bytes.Equal(d, der) })
	}
	if !slices.Contains(childTier.bundles.kids(t, td), oldKID) {
		t.Fatalf("the root's JWT key %q never reached the child", oldKID)
	}
	deadline := oldRoot.NotAfter.Add(grace)
	for at := epoch; !at.After(deadline.Add(time.Minute)); at = at.Add(time.Minute) {
		rootTier.clock.Set(at)
		rotateAll(t, rootTier, childTier)
		if at.Before(oldRoot.NotAfter) && !has(childTier, oldRoot.Raw) {
			t.Fatalf("at %v: the old root left the child's bundle before it expired", at)
		}
	}
	for name, e := range map[string]*env{"root": rootTier, "child": childTier} {
		if has(e, oldRoot.Raw) {
			t.Errorf("%s bundle still holds the old root %v, expired at %v, %v after expiry + grace", name, oldRoot.SerialNumber, oldRoot.NotAfter, time.Minute)
		}
		if slices.Contains(e.bundles.kids(t, td), oldKID) {
			t.Errorf("%s bundle still holds the root's expired JWT key %q", name, oldKID)
		}
		newRoot, _ := rootTier.m.X509CA()
		if !has(e, newRoot.Raw) {
			t.Errorf("%s bundle lacks the current root", name)
		}
	}
}

// TestPruneBundleOnDemand: PruneBundle removes what expired more than grace
// ago at once, without waiting for PruneGrace, keeps the authorities held,
// and refuses a negative grace.
func TestPruneBundleOnDemand(t *testing.T) {
	rootTier := newEnv(t, nil) // PruneGrace 24h: Rotate alone would keep A a day
	a, _ := rootTier.m.X509CA()
	aKID := rootTier.m.Status().JWTKey.KeyID
	at := a.NotAfter.Add(2 * time.Hour)
	rootTier.rotateAt(t, halfLife(a))
	rootTier.rotateAt(t, lastSixth(a))
	rootTier.rotateAt(t, at)
	if !slices.ContainsFunc(rootTier.bundles.rootsDER(t, td), func(d []byte) bool { return bytes.Equal(d, a.Raw) }) {
		t.Fatal("expired root pruned before PruneGrace; the test needs it present")
	}
	ctx := context.Background()
	if res, err := rootTier.m.PruneBundle(ctx, 3*time.Hour); err != nil || res != (ca.PruneResult{}) {
		t.Errorf("PruneBundle(3h) = %+v, %v; want nothing pruned (expired only 2h ago)", res, err)
	}
	res, err := rootTier.m.PruneBundle(ctx, time.Hour)
	if err != nil || res != (ca.PruneResult{X509: 1, JWT: 1}) {
		t.Errorf("PruneBundle(1h) = %+v, %v; want the old root and the old JWT key", res, err)
	}
	if slices.ContainsFunc(rootTier.bundles.rootsDER(t, td), func(d []byte) bool { return bytes.Equal(d, a.Raw) }) ||
		slices.Contains(rootTier.bundles.kids(t, td), aKID) {
		t.Error("the expired authorities are still in the bundle")
	}
	cur, _ := rootTier.m.X509CA()
	if !slices.ContainsFunc(rootTier.bundles.rootsDER(t, td), func(d []byte) bool { return bytes.Equal(d, cur.Raw) }) ||
		!slices.Contains(rootTier.bundles.kids(t, td), rootTier.m.Status().JWTKey.KeyID) {
		t.Error("the held authorities left the bundle")
	}
	if _, err := rootTier.m.PruneBundle(ctx, -time.Second); !errors.Is(err, ca.ErrInvalidArgument) {
		t.Errorf("PruneBundle(-1s) error = %v, want ErrInvalidArgument", err)
	}
}

// TestSVIDBoundedByRootOfChain: an upstream (a misconfigured external CA)
// signs an intermediate that outlives its own root. The root still ends the
// chain: the tier's budget and every SVID stop at the root's NotAfter.
func TestSVIDBoundedByRootOfChain(t *testing.T) {
	clk := newClock(epoch)
	rootKey := mustKey(t, ca.KeyTypeECP256)
	rootTmpl, err := upstream.CATemplate(td, rootKey.Public(), big.NewInt(1), pkix.Name{CommonName: "short root"}, epoch.Add(-time.Minute), epoch.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	rootCert, _ := x509.ParseCertificate(rootDER)
	serial := int64(1)
	up := upstreamFunc(func(ctx context.Context, k crypto.Signer, ttl time.Duration) (*upstream.MintedCA, error) {
		serial++
		now := clk.Now()
		tmpl, err := upstream.CATemplate(td, k.Public(), big.NewInt(serial), pkix.Name{CommonName: "long intermediate"}, now.Add(-time.Minute), now.Add(ttl))
		if err != nil {
			return nil, err
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, rootCert, k.Public(), rootKey)
		if err != nil {
			return nil, err
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		return &upstream.MintedCA{Cert: c, Roots: []*x509.Certificate{rootCert}}, nil
	})
	e := &env{clock: clk, bundles: newMemBundles(t)}
	e.cfg = ca.Config{TrustDomain: td, Upstream: up, Bundles: e.bundles, CATTL: 6 * time.Hour, Now: clk.Now}
	e.m = e.start(t)
	st := e.m.Status()
	if !st.X509CA.NotAfter.After(rootCert.NotAfter) {
		t.Fatalf("the intermediate ends %v, not after its root (%v); the test needs it to", st.X509CA.NotAfter, rootCert.NotAfter)
	}
	if !st.X509NotAfter.Equal(rootCert.NotAfter) {
		t.Errorf("X509NotAfter = %v, want the root's %v", st.X509NotAfter, rootCert.NotAfter)
	}
	clk.Set(rootCert.NotAfter.Add(-10 * time.Minute))
	if full := checkSVID(t, e, time.Hour); full {
		t.Error("an SVID 10 minutes before the root's end got a full hour")
	}
}

// TestParentSignsDownstreamWithPreparedCA: in the last part of its active
// CA's life a regional tier signs a child's CA with its prepared CA when that
// chains to the same root, so the child gets the full length it asked for;
// a root tier, whose prepared CA is a new root that may not have reached
// every verifier yet, keeps signing with the active one (and the child asks
// again once the root has rotated: TestCappedIntermediateIsReplaced).
func TestParentSignsDownstreamWithPreparedCA(t *testing.T) {
	rootTier := newEnvAt(t, epoch, func(c *ca.Config) { c.CATTL = 48 * time.Hour })
	up := &parentUpstream{parent: rootTier.m, parentBundles: rootTier.bundles}
	regional := childWith(t, rootTier, up, func(c *ca.Config) { c.CATTL = 6 * time.Hour })
	cur, _ := regional.m.X509CA()
	key := mustKey(t, ca.KeyTypeECP256)
	ctx := context.Background()

	regional.clock.Set(halfLife(cur))
	rotateAll(t, regional)
	next := regional.m.Status().NextX509CA
	if next == nil {
		t.Fatal("regional prepared no CA at half-life")
	}
	tests := []struct {
		name   string
		at     time.Time
		signer *x509.Certificate
	}{
		{"active CA covers the TTL", halfLife(cur), cur},
		{"active CA ends first", cur.NotAfter.Add(-90 * time.Minute), next},
	}
	for _, tt := range tests {
		regional.clock.Set(tt.at)
		chain, err := regional.m.SignDownstreamX509CA(ctx, key.Public(), 3*time.Hour)
		if err != nil {
			t.Fatalf("%s: SignDownstreamX509CA: %v", tt.name, err)
		}
		if !chain[0].NotAfter.Equal(tt.at.Add(3 * time.Hour)) {
			t.Errorf("%s: child CA ends %v, want the full 3h (%v)", tt.name, chain[0].NotAfter, tt.at.Add(3*time.Hour))
		}
		if !chain[1].Equal(tt.signer) {
			t.Errorf("%s: signed by %v, want %v", tt.name, chain[1].SerialNumber, tt.signer.SerialNumber)
		}
		opts := x509.VerifyOptions{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool(), CurrentTime: tt.at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
		for _, r := range rootTier.bundles.x509Bundle(t, td).X509Authorities() {
			opts.Roots.AddCert(r)
		}
		for _, c := range chain[1:] {
			opts.Intermediates.AddCert(c)
		}
		if _, err := chain[0].Verify(opts); err != nil {
			t.Errorf("%s: child CA does not verify against the root's bundle: %v", tt.name, err)
		}
	}

	// The root tier: its prepared CA is a new root; the child's CA is
	// capped at the active root's end instead.
	a, _ := rootTier.m.X509CA()
	rootTier.rotateAt(t, halfLife(a))
	if rootTier.m.Status().NextX509CA == nil {
		t.Fatal("the root prepared no CA at half-life")
	}
	at := a.NotAfter.Add(-time.Hour)
	rootTier.clock.Set(at)
	chain, err := rootTier.m.SignDownstreamX509CA(ctx, key.Public(), 3*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !chain[0].NotAfter.Equal(a.NotAfter) || chain[0].CheckSignatureFrom(a) != nil {
		t.Errorf("root tier: child CA ends %v signed by the active root: %v; want capped at %v by the active root", chain[0].NotAfter, chain[0].CheckSignatureFrom(a) == nil, a.NotAfter)
	}
}
