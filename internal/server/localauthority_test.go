package server_test

import (
	"crypto/x509"
	"encoding/hex"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	localauthorityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/localauthority/v1"
	loggerv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/logger/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/arborid/arbor/internal/server"
)

// wantRefusal checks that err is a status with code and a message that
// contains msg, and that the own bundle did not change.
func (h *harness) wantRefusal(t *testing.T, what string, err error, code codes.Code, msg string, seq uint64) {
	t.Helper()
	if st, _ := status.FromError(err); err == nil || st.Code() != code || !strings.Contains(st.Message(), msg) {
		t.Errorf("%s = %v, want %v containing %q", what, err, code, msg)
	}
	if got := h.snapshot().Bundle.SequenceNumber; got != seq {
		t.Errorf("%s changed the bundle: sequence number %d, want %d", what, got, seq)
	}
}

// x509Authority is the bundle's X.509 authority whose subject key ID is id.
func x509Authority(t *testing.T, b *types.Bundle, id string) *types.X509Certificate {
	t.Helper()
	for _, a := range b.X509Authorities {
		c := must(x509.ParseCertificate(a.Asn1))(t)
		if hex.EncodeToString(c.SubjectKeyId) == id {
			return a
		}
	}
	return nil
}

func jwtAuthority(b *types.Bundle, kid string) *types.JWTKey {
	for _, k := range b.JwtAuthorities {
		if k.KeyId == kid {
			return k
		}
	}
	return nil
}

// TestLocalAuthorityX509 drives the X.509 state machine through the admin
// socket, on SQLite and PostgreSQL: prepare publishes the new root, activate
// switches signing to it, taint marks the old root in the bundle, revoke
// removes it; every refusal has SPIRE's code and changes nothing; the state
// survives a restart and the scheduled rotation undoes no taint.
func TestLocalAuthorityX509(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			var opts []option
			if backend == "postgres" {
				dsn := postgresDSN(t)
				opts = append(opts, func(c *server.Config) { c.Datastore, c.PostgresDSN = "postgres", dsn })
			}
			h := startServer(t, opts...)
			ctx := ctxT(t)
			la := localauthorityv1.NewLocalAuthorityClient(h.admin)
			st := must(la.GetX509AuthorityState(ctx, &localauthorityv1.GetX509AuthorityStateRequest{}))(t)
			if st.Active == nil || st.Prepared != nil || st.Old != nil {
				t.Fatalf("state after start = %v, want only an active authority", st)
			}
			cur, _ := h.srv.CA().X509CA()
			first := st.Active.AuthorityId
			if want := hex.EncodeToString(cur.SubjectKeyId); first != want || st.Active.ExpiresAt != cur.NotAfter.Unix() {
				t.Fatalf("active = %v, want authority ID %s expiring %d", st.Active, want, cur.NotAfter.Unix())
			}
			seq := h.snapshot().Bundle.SequenceNumber

			// Refusals with nothing prepared or old.
			_, err := la.ActivateX509Authority(ctx, &localauthorityv1.ActivateX509AuthorityRequest{})
			h.wantRefusal(t, "activate without ID", err, codes.InvalidArgument, "no authority ID provided", seq)
			_, err = la.ActivateX509Authority(ctx, &localauthorityv1.ActivateX509AuthorityRequest{AuthorityId: "00ff"})
			h.wantRefusal(t, "activate with nothing prepared", err, codes.InvalidArgument, "unexpected authority ID", seq)
			_, err = la.ActivateX509Authority(ctx, &localauthorityv1.ActivateX509AuthorityRequest{AuthorityId: first})
			h.wantRefusal(t, "activate the active one", err, codes.FailedPrecondition, "only Prepared authorities can be activated", seq)
			_, err = la.TaintX509Authority(ctx, &localauthorityv1.TaintX509AuthorityRequest{AuthorityId: first})
			h.wantRefusal(t, "taint the active one", err, codes.InvalidArgument, "unable to taint current local authority", seq)
			_, err = la.TaintX509Authority(ctx, &localauthorityv1.TaintX509AuthorityRequest{AuthorityId: "00ff"})
			h.wantRefusal(t, "taint an unknown one", err, codes.InvalidArgument, "unexpected authority ID", seq)
			_, err = la.RevokeX509Authority(ctx, &localauthorityv1.RevokeX509AuthorityRequest{AuthorityId: first})
			h.wantRefusal(t, "revoke the active one", err, codes.InvalidArgument, "unable to use current authority", seq)
			_, err = la.TaintX509UpstreamAuthority(ctx, &localauthorityv1.TaintX509UpstreamAuthorityRequest{SubjectKeyId: first})
			h.wantRefusal(t, "upstream taint on a self-signed tier", err, codes.FailedPrecondition, "upstream authority is not configured", seq)
			_, err = la.RevokeX509UpstreamAuthority(ctx, &localauthorityv1.RevokeX509UpstreamAuthorityRequest{SubjectKeyId: first})
			h.wantRefusal(t, "upstream revoke on a self-signed tier", err, codes.FailedPrecondition, "upstream authority is not configured", seq)

			// Prepare: the new root is in the bundle, the old one still signs.
			prep := must(la.PrepareX509Authority(ctx, &localauthorityv1.PrepareX509AuthorityRequest{}))(t).PreparedAuthority
			second := prep.AuthorityId
			if second == "" || second == first {
				t.Fatalf("prepared authority %q, want a new one (active %q)", second, first)
			}
			b := h.snapshot().Bundle
			if x509Authority(t, b, second) == nil || x509Authority(t, b, first) == nil {
				t.Fatalf("bundle after prepare lacks the prepared or the active root")
			}
			seq = b.SequenceNumber
			_, err = la.TaintX509Authority(ctx, &localauthorityv1.TaintX509AuthorityRequest{AuthorityId: second})
			h.wantRefusal(t, "taint the prepared one", err, codes.InvalidArgument, "only Old local authorities can be tainted", seq)

			// A workload SVID from the first authority, then activation.
			agent := h.newAgent()
			entry := h.createEntry(&types.Entry{ParentId: protoID(agent.ID.Path()), SpiffeId: protoID("/w"), Selectors: []*types.Selector{sel("unix", "uid:1")}})
			before := must(h.workloadSVID(agent, entry))(t)
			act := must(la.ActivateX509Authority(ctx, &localauthorityv1.ActivateX509AuthorityRequest{AuthorityId: second}))(t).ActivatedAuthority
			if act.AuthorityId != second {
				t.Fatalf("activated %q, want %q", act.AuthorityId, second)
			}
			h.bundle = h.snapshotBundle() // the server's TLS certificate chains to the new root now
			st = must(la.GetX509AuthorityState(ctx, &localauthorityv1.GetX509AuthorityStateRequest{}))(t)
			if st.Active.GetAuthorityId() != second || st.Old.GetAuthorityId() != first || st.Prepared != nil {
				t.Fatalf("state after activate = %v, want active %s, old %s", st, second, first)
			}
			after := must(h.workloadSVID(agent, entry))(t)
			if !chainsTo(t, after, b, second) || chainsTo(t, after, b, first) {
				t.Fatalf("SVID after activation does not chain to the new authority only")
			}
			if !chainsTo(t, before, b, first) {
				t.Fatalf("SVID before activation does not chain to the first authority")
			}

			// Revoke an untainted one; taint; taint again.
			seq = h.snapshot().Bundle.SequenceNumber
			_, err = la.RevokeX509Authority(ctx, &localauthorityv1.RevokeX509AuthorityRequest{AuthorityId: first})
			h.wantRefusal(t, "revoke an untainted one", err, codes.InvalidArgument, "it is not possible to revoke an untainted root CA", seq)
			_, err = la.ActivateX509Authority(ctx, &localauthorityv1.ActivateX509AuthorityRequest{AuthorityId: first})
			h.wantRefusal(t, "activate the old one", err, codes.FailedPrecondition, "only Prepared authorities can be activated", seq)
			tainted := must(la.TaintX509Authority(ctx, &localauthorityv1.TaintX509AuthorityRequest{AuthorityId: first}))(t).TaintedAuthority
			if tainted.AuthorityId != first {
				t.Fatalf("tainted %q, want %q", tainted.AuthorityId, first)
			}
			b = h.snapshot().Bundle
			if a := x509Authority(t, b, first); a == nil || !a.Tainted {
				t.Fatalf("bundle after taint: old root %v, want it tainted", a)
			}
			if a := x509Authority(t, b, second); a == nil || a.Tainted {
				t.Fatalf("bundle after taint: active root %v, want it untainted", a)
			}
			_, err = la.TaintX509Authority(ctx, &localauthorityv1.TaintX509AuthorityRequest{AuthorityId: first})
			h.wantRefusal(t, "taint again", err, codes.InvalidArgument, "root CA is already tainted", b.SequenceNumber)

			// Neither a rotation step nor a restart undoes the taint or
			// forgets the old authority.
			must(struct{}{}, h.srv.CA().Rotate(ctx))(t)
			h.restart()
			h.bundle = h.snapshotBundle()
			la = localauthorityv1.NewLocalAuthorityClient(h.admin)
			st = must(la.GetX509AuthorityState(ctx, &localauthorityv1.GetX509AuthorityStateRequest{}))(t)
			if st.Active.GetAuthorityId() != second || st.Old.GetAuthorityId() != first {
				t.Fatalf("state after restart = %v, want active %s, old %s", st, second, first)
			}
			if a := x509Authority(t, h.snapshot().Bundle, first); a == nil || !a.Tainted {
				t.Fatalf("after a rotation step and a restart the old root is %v, want it tainted", a)
			}

			// Revoke: gone from the bundle and from the state.
			rev := must(la.RevokeX509Authority(ctx, &localauthorityv1.RevokeX509AuthorityRequest{AuthorityId: first}))(t).RevokedAuthority
			if rev.AuthorityId != first {
				t.Fatalf("revoked %q, want %q", rev.AuthorityId, first)
			}
			b = h.snapshot().Bundle
			if x509Authority(t, b, first) != nil || x509Authority(t, b, second) == nil {
				t.Fatalf("bundle after revoke: old root present or active root missing")
			}
			st = must(la.GetX509AuthorityState(ctx, &localauthorityv1.GetX509AuthorityStateRequest{}))(t)
			if st.Old != nil {
				t.Errorf("state after revoke still has old %v", st.Old)
			}
			_, err = la.RevokeX509Authority(ctx, &localauthorityv1.RevokeX509AuthorityRequest{AuthorityId: first})
			h.wantRefusal(t, "revoke again", err, codes.InvalidArgument, "only Old local authority can be revoked", b.SequenceNumber)
			must(struct{}{}, h.srv.CA().Rotate(ctx))(t)
			if x509Authority(t, h.snapshot().Bundle, first) != nil {
				t.Fatal("a rotation step put the revoked root back into the bundle")
			}
		})
	}
}

// chainsTo reports whether svid verifies against the bundle's authority id
// alone.
func chainsTo(t *testing.T, svid *x509svid.SVID, b *types.Bundle, id string) bool {
	t.Helper()
	a := x509Authority(t, b, id)
	if a == nil {
		return false
	}
	root := must(x509.ParseCertificate(a.Asn1))(t)
	pool := x509.NewCertPool()
	pool.AddCert(root)
	inter := x509.NewCertPool()
	for _, c := range svid.Certificates[1:] {
		inter.AddCert(c)
	}
	_, err := svid.Certificates[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: svid.Certificates[0].NotBefore.Add(time.Second), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil
}

// TestLocalAuthorityJWT drives the JWT key state machine and its refusals.
func TestLocalAuthorityJWT(t *testing.T) {
	h := startServer(t)
	ctx := ctxT(t)
	la := localauthorityv1.NewLocalAuthorityClient(h.admin)
	st := must(la.GetJWTAuthorityState(ctx, &localauthorityv1.GetJWTAuthorityStateRequest{}))(t)
	first := st.Active.GetAuthorityId()
	if first == "" || st.Prepared != nil || st.Old != nil {
		t.Fatalf("JWT state after start = %v, want only an active key", st)
	}
	seq := h.snapshot().Bundle.SequenceNumber
	_, err := la.ActivateJWTAuthority(ctx, &localauthorityv1.ActivateJWTAuthorityRequest{AuthorityId: "nope"})
	h.wantRefusal(t, "activate JWT with nothing prepared", err, codes.InvalidArgument, "unexpected authority ID", seq)
	_, err = la.TaintJWTAuthority(ctx, &localauthorityv1.TaintJWTAuthorityRequest{AuthorityId: first})
	h.wantRefusal(t, "taint the active JWT key", err, codes.InvalidArgument, "unable to taint current local authority", seq)
	_, err = la.RevokeJWTAuthority(ctx, &localauthorityv1.RevokeJWTAuthorityRequest{AuthorityId: first})
	h.wantRefusal(t, "revoke the active JWT key", err, codes.InvalidArgument, "unable to use current authority", seq)
	_, err = la.RevokeJWTAuthority(ctx, &localauthorityv1.RevokeJWTAuthorityRequest{AuthorityId: "nope"})
	h.wantRefusal(t, "revoke an unknown JWT key", err, codes.InvalidArgument, "no JWT authority found with provided authority ID", seq)

	second := must(la.PrepareJWTAuthority(ctx, &localauthorityv1.PrepareJWTAuthorityRequest{}))(t).PreparedAuthority.GetAuthorityId()
	if jwtAuthority(h.snapshot().Bundle, second) == nil {
		t.Fatalf("prepared JWT key %q is not in the bundle", second)
	}
	seq = h.snapshot().Bundle.SequenceNumber
	_, err = la.RevokeJWTAuthority(ctx, &localauthorityv1.RevokeJWTAuthorityRequest{AuthorityId: second})
	h.wantRefusal(t, "revoke the prepared JWT key", err, codes.InvalidArgument, "unable to use a prepared key", seq)
	must(la.ActivateJWTAuthority(ctx, &localauthorityv1.ActivateJWTAuthorityRequest{AuthorityId: second}))(t)
	st = must(la.GetJWTAuthorityState(ctx, &localauthorityv1.GetJWTAuthorityStateRequest{}))(t)
	if st.Active.GetAuthorityId() != second || st.Old.GetAuthorityId() != first {
		t.Fatalf("JWT state after activate = %v, want active %s, old %s", st, second, first)
	}
	seq = h.snapshot().Bundle.SequenceNumber
	_, err = la.RevokeJWTAuthority(ctx, &localauthorityv1.RevokeJWTAuthorityRequest{AuthorityId: first})
	h.wantRefusal(t, "revoke an untainted JWT key", err, codes.InvalidArgument, "it is not possible to revoke an untainted key", seq)
	must(la.TaintJWTAuthority(ctx, &localauthorityv1.TaintJWTAuthorityRequest{AuthorityId: first}))(t)
	if k := jwtAuthority(h.snapshot().Bundle, first); k == nil || !k.Tainted {
		t.Fatalf("old JWT key after taint = %v, want tainted", k)
	}
	_, err = la.TaintJWTAuthority(ctx, &localauthorityv1.TaintJWTAuthorityRequest{AuthorityId: first})
	h.wantRefusal(t, "taint the JWT key again", err, codes.InvalidArgument, "key is already tainted", h.snapshot().Bundle.SequenceNumber)
	must(la.RevokeJWTAuthority(ctx, &localauthorityv1.RevokeJWTAuthorityRequest{AuthorityId: first}))(t)
	if jwtAuthority(h.snapshot().Bundle, first) != nil {
		t.Fatal("revoked JWT key still in the bundle")
	}
	must(struct{}{}, h.srv.CA().Rotate(ctx))(t)
	if jwtAuthority(h.snapshot().Bundle, first) != nil {
		t.Fatal("a rotation step put the revoked JWT key back")
	}
}

// TestLocalAuthorityAdminOnly: an agent's SVID on the agent port may not
// call the service.
func TestLocalAuthorityAdminOnly(t *testing.T) {
	h := startServer(t, func(c *server.Config) { c.LogLevel = new(slog.LevelVar) })
	agent := h.newAgent()
	_, err := localauthorityv1.NewLocalAuthorityClient(h.dial(agent)).PrepareX509Authority(ctxT(t), &localauthorityv1.PrepareX509AuthorityRequest{})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("PrepareX509Authority with an agent SVID = %v, want PermissionDenied", err)
	}
	_, err = loggerv1.NewLoggerClient(h.dial(agent)).SetLogLevel(ctxT(t), &loggerv1.SetLogLevelRequest{NewLevel: types.LogLevel_DEBUG})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("SetLogLevel with an agent SVID = %v, want PermissionDenied", err)
	}
	if st := must(localauthorityv1.NewLocalAuthorityClient(h.admin).GetX509AuthorityState(ctxT(t), &localauthorityv1.GetX509AuthorityStateRequest{}))(t); st.Prepared != nil {
		t.Fatalf("a refused prepare left a prepared authority: %v", st.Prepared)
	}
}

// TestTaintReachesReplicas: two servers of one tier on one PostgreSQL
// schema; a taint on A shows in B's bundle, and B's rotation steps (racing
// with the taint) keep it.
func TestTaintReachesReplicas(t *testing.T) {
	dsn := postgresDSN(t)
	pg := func(c *server.Config) {
		c.Datastore, c.PostgresDSN, c.PollInterval = "postgres", dsn, 100*time.Millisecond
	}
	a := startServer(t, pg)
	b := startServer(t, pg)
	ctx := ctxT(t)
	la := localauthorityv1.NewLocalAuthorityClient(a.admin)
	first := must(la.GetX509AuthorityState(ctx, &localauthorityv1.GetX509AuthorityStateRequest{}))(t).Active.AuthorityId
	second := must(la.PrepareX509Authority(ctx, &localauthorityv1.PrepareX509AuthorityRequest{}))(t).PreparedAuthority.AuthorityId
	must(la.ActivateX509Authority(ctx, &localauthorityv1.ActivateX509AuthorityRequest{AuthorityId: second}))(t)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := b.srv.CA().Rotate(ctx); err != nil {
				t.Errorf("B rotation step: %v", err)
				return
			}
		}
	})
	must(la.TaintX509Authority(ctx, &localauthorityv1.TaintX509AuthorityRequest{AuthorityId: first}))(t)
	waitFor(t, "B's bundle showing A's old root tainted", func() bool {
		got := must(bundlev1.NewBundleClient(b.admin).GetBundle(ctx, &bundlev1.GetBundleRequest{}))(t)
		x := x509Authority(t, got, first)
		return x != nil && x.Tainted
	})
	close(stop)
	wg.Wait()
	for _, h := range []*harness{a, b} {
		if x := x509Authority(t, h.snapshot().Bundle, first); x == nil || !x.Tainted {
			t.Errorf("after B's rotation steps, old root in %s's bundle = %v, want tainted", h.cfg.Name, x)
		}
	}
}

// TestLoggerService: GetLogger, SetLogLevel and ResetLogLevel change the
// level of the server's handler; UNSPECIFIED is refused.
func TestLoggerService(t *testing.T) {
	lv := new(slog.LevelVar)
	lv.Set(slog.LevelWarn)
	h := startServer(t, func(c *server.Config) { c.LogLevel = lv })
	ctx := ctxT(t)
	lc := loggerv1.NewLoggerClient(h.admin)
	got := must(lc.GetLogger(ctx, &loggerv1.GetLoggerRequest{}))(t)
	if got.CurrentLevel != types.LogLevel_WARN || got.LaunchLevel != types.LogLevel_WARN {
		t.Fatalf("GetLogger = %v, want WARN/WARN", got)
	}
	got = must(lc.SetLogLevel(ctx, &loggerv1.SetLogLevelRequest{NewLevel: types.LogLevel_DEBUG}))(t)
	if got.CurrentLevel != types.LogLevel_DEBUG || lv.Level() != slog.LevelDebug {
		t.Fatalf("after SetLogLevel(DEBUG): %v, handler level %v", got, lv.Level())
	}
	got = must(lc.SetLogLevel(ctx, &loggerv1.SetLogLevelRequest{NewLevel: types.LogLevel_TRACE}))(t)
	if got.CurrentLevel != types.LogLevel_TRACE || lv.Level() >= slog.LevelDebug {
		t.Fatalf("after SetLogLevel(TRACE): %v, handler level %v", got, lv.Level())
	}
	if _, err := lc.SetLogLevel(ctx, &loggerv1.SetLogLevelRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("SetLogLevel(UNSPECIFIED) = %v, want InvalidArgument", err)
	}
	if _, err := lc.SetLogLevel(ctx, &loggerv1.SetLogLevelRequest{NewLevel: 42}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("SetLogLevel(42) = %v, want InvalidArgument", err)
	}
	if lv.Level() >= slog.LevelDebug {
		t.Fatalf("a refused SetLogLevel changed the level to %v", lv.Level())
	}
	got = must(lc.ResetLogLevel(ctx, &loggerv1.ResetLogLevelRequest{}))(t)
	if got.CurrentLevel != types.LogLevel_WARN || lv.Level() != slog.LevelWarn {
		t.Fatalf("after ResetLogLevel: %v, handler level %v", got, lv.Level())
	}
}
