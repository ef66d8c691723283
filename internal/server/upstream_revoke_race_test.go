package server_test

import (
	"path/filepath"
	"testing"
	"time"

	localauthorityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/localauthority/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/arborid/arbor/internal/ca"
	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/upstream/disk"
)

// TestUpstreamRevokeRacingReplica: two replicas of a root tier share one
// PostgreSQL and one disk upstream. On A the operator moves the upstream to
// a new root, activates a CA under it, and taints and revokes the old root
// back to back, before B (whose active CA still chains to the old root)
// has taken a rotation step. B's next step must not put the revoked root
// back into the shared bundle (it did: B re-published the anchors of the
// CA it held, untainted), and B must replace its CA, which chains to a
// revoked authority, at once.
func TestUpstreamRevokeRacingReplica(t *testing.T) {
	dsn := postgresDSN(t)
	dir := t.TempDir()
	u1 := writeUpstreamRoot(t, dir, "upstream 1")
	replica := func(c *server.Config) {
		c.Datastore, c.PostgresDSN, c.PollInterval = "postgres", dsn, 100*time.Millisecond
		c.Upstream = must(disk.New(disk.Config{TrustDomain: td, CertFile: filepath.Join(dir, "ca.pem"), KeyFile: filepath.Join(dir, "key.pem")}))(t)
	}
	a := startServer(t, replica)
	b := startServer(t, replica)
	ctx := ctxT(t)

	time.Sleep(10 * time.Millisecond) // a new modification time for the disk upstream's reload
	u2 := writeUpstreamRoot(t, dir, "upstream 2")
	la := localauthorityv1.NewLocalAuthorityClient(a.admin)
	prepared := must(la.PrepareX509Authority(ctx, &localauthorityv1.PrepareX509AuthorityRequest{}))(t).PreparedAuthority
	must(la.ActivateX509Authority(ctx, &localauthorityv1.ActivateX509AuthorityRequest{AuthorityId: prepared.AuthorityId}))(t)
	must(la.TaintX509UpstreamAuthority(ctx, &localauthorityv1.TaintX509UpstreamAuthorityRequest{SubjectKeyId: ca.SubjectKeyID(u1)}))(t)
	must(la.RevokeX509UpstreamAuthority(ctx, &localauthorityv1.RevokeX509UpstreamAuthorityRequest{SubjectKeyId: ca.SubjectKeyID(u1)}))(t)

	// B's steps, whenever they come (forced here; its loop may run too).
	must(struct{}{}, b.srv.CA().Rotate(ctx))(t)
	must(struct{}{}, a.srv.CA().Rotate(ctx))(t)

	waitFor(t, "B replacing its CA, which chains to the revoked root", func() bool {
		must(struct{}{}, b.srv.CA().Rotate(ctx))(t)
		st := must(localauthorityv1.NewLocalAuthorityClient(b.admin).GetX509AuthorityState(ctx, &localauthorityv1.GetX509AuthorityStateRequest{}))(t)
		return st.Active.GetUpstreamAuthoritySubjectKeyId() == ca.SubjectKeyID(u2)
	})
	for name, h := range map[string]*harness{"A": a, "B": b} {
		waitFor(t, name+"'s bundle without the revoked root", func() bool {
			bundle := h.snapshot().Bundle
			return x509Authority(t, bundle, ca.SubjectKeyID(u1)) == nil && x509Authority(t, bundle, ca.SubjectKeyID(u2)) != nil
		})
	}
	// And it stays out: more steps on both do not bring it back.
	for range 3 {
		must(struct{}{}, b.srv.CA().Rotate(ctx))(t)
		must(struct{}{}, a.srv.CA().Rotate(ctx))(t)
	}
	time.Sleep(300 * time.Millisecond) // three poll intervals
	b.bundle = b.snapshotBundle()
	for name, h := range map[string]*harness{"A": a, "B": b} {
		bundle := h.snapshot().Bundle
		if x509Authority(t, bundle, ca.SubjectKeyID(u1)) != nil {
			t.Errorf("%s's bundle holds the revoked upstream root again", name)
		}
	}
	agent := b.newAgent()
	entry := b.createEntry(&types.Entry{ParentId: protoID(agent.ID.Path()), SpiffeId: protoID("/r"), Selectors: []*types.Selector{sel("unix", "uid:4")}})
	svid := must(b.workloadSVID(agent, entry))(t)
	if bundle := b.snapshot().Bundle; !chainsTo(t, svid, bundle, ca.SubjectKeyID(u2)) {
		t.Error("a workload SVID from B does not chain to the new upstream root")
	}
}
