package agent_test

import (
	"bytes"
	"crypto/x509"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	localauthorityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/localauthority/v1"

	"github.com/arborid/arbor/internal/ca"
	"github.com/arborid/arbor/internal/server"
)

// verifiesWithOnly reports whether the SVID chains to root alone.
func verifiesWithOnly(s *x509svid.SVID, root *x509.Certificate) bool {
	pool := x509.NewCertPool()
	pool.AddCert(root)
	inter := x509.NewCertPool()
	for _, c := range s.Certificates[1:] {
		inter.AddCert(c)
	}
	_, err := s.Certificates[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil
}

func agentSerial(t *testing.T, srv *testServer) string {
	t.Helper()
	resp, err := agentv1.NewAgentClient(srv.admin).ListAgents(ctxT(t), &agentv1.ListAgentsRequest{})
	mustOK(t, err, "ListAgents")
	if len(resp.Agents) != 1 {
		t.Fatalf("ListAgents = %d agents, want 1", len(resp.Agents))
	}
	return resp.Agents[0].X509SvidSerialNumber
}

// TestTaintedAuthorityRemints: a go-spiffe workload holds an X509-SVID (1h,
// far from its half-life) signed by the server's first CA; the operator
// prepares and activates a second CA and taints the first: the workload
// receives a new SVID signed by the second, the agent renews its own SVID,
// a JWT-SVID of a tainted key is not served from the cache again, and after
// the revoke the first CA is gone from the workload's bundle.
func TestTaintedAuthorityRemints(t *testing.T) {
	srv := startServer(t, func(c *server.Config) { c.X509SVIDTTL, c.CATTL = time.Hour, 24*time.Hour })
	token := srv.token()
	srv.workloadEntry(agentPath(token), "w", 3600)
	att := newPIDAttestor()
	att.set(os.Getpid(), "w")
	cfg := srv.agentConfig(t, token, att)
	runAgent(t, cfg)
	ctx := ctxT(t)
	la := localauthorityv1.NewLocalAuthorityClient(srv.admin)

	ch := watchX509(t, socketAddr(cfg))
	first := next(t, ch, 10*time.Second, "first SVID")
	rootA := srv.roots[0]
	if !verifiesWithOnly(first.DefaultSVID(), rootA) {
		t.Fatal("the first SVID does not chain to the server's first CA")
	}
	agentSerialA := agentSerial(t, srv)
	jwtA, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "aud"}, workloadapi.WithAddr(socketAddr(cfg)))
	mustOK(t, err, "FetchJWTSVID")
	kidA := must(la.GetJWTAuthorityState(ctx, &localauthorityv1.GetJWTAuthorityStateRequest{}))(t).Active.AuthorityId

	// Prepare: the workload's bundle gets the second CA; its SVID stays.
	idB := must(la.PrepareX509Authority(ctx, &localauthorityv1.PrepareX509AuthorityRequest{}))(t).PreparedAuthority.AuthorityId
	kidB := must(la.PrepareJWTAuthority(ctx, &localauthorityv1.PrepareJWTAuthorityRequest{}))(t).PreparedAuthority.AuthorityId
	var rootB *x509.Certificate
	for rootB == nil {
		c := next(t, ch, 10*time.Second, "bundle with the prepared CA")
		b, _ := c.Bundles.Get(td)
		for _, r := range b.X509Authorities() {
			if ca.SubjectKeyID(r) == idB {
				rootB = r
			}
		}
		if got := leafOf(c); !got.Equal(first.DefaultSVID().Certificates[0]) {
			t.Fatal("the workload got a new SVID when a CA was only prepared")
		}
	}
	must(la.ActivateX509Authority(ctx, &localauthorityv1.ActivateX509AuthorityRequest{AuthorityId: idB}))(t)
	must(la.ActivateJWTAuthority(ctx, &localauthorityv1.ActivateJWTAuthorityRequest{AuthorityId: kidB}))(t)
	// Activation alone re-mints nothing before half-life.
	if jwt, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "aud"}, workloadapi.WithAddr(socketAddr(cfg))); err != nil || jwt.Marshal() != jwtA.Marshal() {
		t.Fatalf("JWT-SVID after activation = %v, want the cached one", err)
	}

	must(la.TaintX509Authority(ctx, &localauthorityv1.TaintX509AuthorityRequest{AuthorityId: ca.SubjectKeyID(rootA)}))(t)
	must(la.TaintJWTAuthority(ctx, &localauthorityv1.TaintJWTAuthorityRequest{AuthorityId: kidA}))(t)
	start := time.Now()
	var renewed *workloadapi.X509Context
	for renewed == nil {
		c := next(t, ch, 15*time.Second, "a new SVID after the taint")
		if !leafOf(c).Equal(first.DefaultSVID().Certificates[0]) {
			renewed = c
		}
	}
	t.Logf("taint to new workload SVID: %v (agent sync interval %v)", time.Since(start).Round(time.Millisecond), cfg.SyncInterval)
	svid := renewed.DefaultSVID()
	if !verifiesWithOnly(svid, rootB) || verifiesWithOnly(svid, rootA) {
		t.Fatal("the re-minted SVID does not chain to the second CA only")
	}
	// The workload's own bundle verifies it (go-spiffe's verification).
	if _, _, err := x509svid.Verify(svid.Certificates, renewed.Bundles); err != nil {
		t.Fatalf("the re-minted SVID does not verify against the workload's bundle: %v", err)
	}
	poll(t, 15*time.Second, "the agent renewing its own SVID", func() error {
		if agentSerial(t, srv) == agentSerialA {
			return errors.New("not yet")
		}
		return nil
	})
	jwtB, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "aud"}, workloadapi.WithAddr(socketAddr(cfg)))
	mustOK(t, err, "FetchJWTSVID after taint")
	if jwtB.Marshal() == jwtA.Marshal() {
		t.Fatal("the agent served a JWT-SVID signed by a tainted key from its cache")
	}

	// Revoke: the first CA leaves the workload's bundle.
	must(la.RevokeX509Authority(ctx, &localauthorityv1.RevokeX509AuthorityRequest{AuthorityId: ca.SubjectKeyID(rootA)}))(t)
	for {
		c := next(t, ch, 15*time.Second, "the bundle without the revoked CA")
		b, _ := c.Bundles.Get(td)
		if !hasCert(b.X509Authorities(), rootA.Raw) {
			if !hasCert(b.X509Authorities(), rootB.Raw) || !bytes.Equal(leafOf(c).Raw, svid.Certificates[0].Raw) {
				t.Fatal("after the revoke the workload lost the second CA or its SVID changed")
			}
			break
		}
	}
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
