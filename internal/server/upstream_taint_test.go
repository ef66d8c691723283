package server_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/federation"
	localauthorityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/localauthority/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"

	"github.com/arborid/arbor/internal/ca"
	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/upstream/disk"
)

// writeUpstreamRoot makes a self-signed root CA and writes its certificate
// and key where the disk upstream reads them (through a rename, as an
// operator replacing the files would).
func writeUpstreamRoot(t *testing.T, dir, name string) *x509.Certificate {
	t.Helper()
	key := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(30 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der := must(x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key))(t)
	kder := must(x509.MarshalPKCS8PrivateKey(key))(t)
	for file, data := range map[string][]byte{
		"ca.pem":  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"key.pem": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
	} {
		tmp := filepath.Join(dir, "."+file+".tmp")
		must(struct{}{}, os.WriteFile(tmp, data, 0o600))(t)
		must(struct{}{}, os.Rename(tmp, filepath.Join(dir, file)))(t)
	}
	return must(x509.ParseCertificate(der))(t)
}

// TestUpstreamAuthorityTaint: a root tier whose CA comes from a disk
// upstream. The operator replaces the upstream CA files, prepares and
// activates a CA signed by the new upstream root, then taints and revokes
// the old upstream root with TaintX509UpstreamAuthority and
// RevokeX509UpstreamAuthority; the refusals are SPIRE's.
func TestUpstreamAuthorityTaint(t *testing.T) {
	dir := t.TempDir()
	u1 := writeUpstreamRoot(t, dir, "upstream 1")
	up := must(disk.New(disk.Config{TrustDomain: td, CertFile: filepath.Join(dir, "ca.pem"), KeyFile: filepath.Join(dir, "key.pem")}))(t)
	h := startServer(t, func(c *server.Config) { c.Upstream = up })
	ctx := ctxT(t)
	la := localauthorityv1.NewLocalAuthorityClient(h.admin)
	st := must(la.GetX509AuthorityState(ctx, &localauthorityv1.GetX509AuthorityStateRequest{}))(t)
	if got, want := st.Active.GetUpstreamAuthoritySubjectKeyId(), ca.SubjectKeyID(u1); got != want {
		t.Fatalf("active authority's upstream authority = %q, want the upstream root's %q", got, want)
	}
	first := st.Active.AuthorityId
	seq := h.snapshot().Bundle.SequenceNumber
	_, err := la.TaintX509Authority(ctx, &localauthorityv1.TaintX509AuthorityRequest{AuthorityId: first})
	h.wantRefusal(t, "local taint with an upstream", err, codes.FailedPrecondition, "local authority can't be tainted if there is an upstream authority", seq)
	_, err = la.RevokeX509Authority(ctx, &localauthorityv1.RevokeX509AuthorityRequest{AuthorityId: first})
	h.wantRefusal(t, "local revoke with an upstream", err, codes.FailedPrecondition, "local authority can't be revoked if there is an upstream authority", seq)
	_, err = la.TaintX509UpstreamAuthority(ctx, &localauthorityv1.TaintX509UpstreamAuthorityRequest{SubjectKeyId: ca.SubjectKeyID(u1)})
	h.wantRefusal(t, "upstream taint of the authority signing the active CA", err, codes.InvalidArgument, "unable to use upstream authority signing current authority", seq)

	// The operator moves the upstream to a new root; prepare and activate.
	time.Sleep(10 * time.Millisecond) // a new modification time for the disk upstream's reload
	u2 := writeUpstreamRoot(t, dir, "upstream 2")
	second := must(la.PrepareX509Authority(ctx, &localauthorityv1.PrepareX509AuthorityRequest{}))(t).PreparedAuthority
	if second.UpstreamAuthoritySubjectKeyId != ca.SubjectKeyID(u2) {
		t.Fatalf("prepared authority signed by %q, want the new upstream root %q", second.UpstreamAuthoritySubjectKeyId, ca.SubjectKeyID(u2))
	}
	must(la.ActivateX509Authority(ctx, &localauthorityv1.ActivateX509AuthorityRequest{AuthorityId: second.AuthorityId}))(t)
	h.bundle = h.snapshotBundle()
	seq = h.snapshot().Bundle.SequenceNumber
	_, err = la.TaintX509UpstreamAuthority(ctx, &localauthorityv1.TaintX509UpstreamAuthorityRequest{SubjectKeyId: ca.SubjectKeyID(u2)})
	h.wantRefusal(t, "upstream taint of the new upstream root", err, codes.InvalidArgument, "unable to use upstream authority signing current authority", seq)
	_, err = la.TaintX509UpstreamAuthority(ctx, &localauthorityv1.TaintX509UpstreamAuthorityRequest{SubjectKeyId: "00ff"})
	h.wantRefusal(t, "upstream taint of an unknown authority", err, codes.InvalidArgument, "upstream authority didn't sign the old local authority", seq)
	_, err = la.TaintX509UpstreamAuthority(ctx, &localauthorityv1.TaintX509UpstreamAuthorityRequest{})
	h.wantRefusal(t, "upstream taint without an ID", err, codes.InvalidArgument, "no subject key ID provided", seq)
	_, err = la.RevokeX509UpstreamAuthority(ctx, &localauthorityv1.RevokeX509UpstreamAuthorityRequest{SubjectKeyId: ca.SubjectKeyID(u1)})
	h.wantRefusal(t, "upstream revoke of an untainted authority", err, codes.InvalidArgument, "it is not possible to revoke an untainted root CA", seq)

	// Taint, named in upper case as an operator may copy it.
	got := must(la.TaintX509UpstreamAuthority(ctx, &localauthorityv1.TaintX509UpstreamAuthorityRequest{SubjectKeyId: strings.ToUpper(ca.SubjectKeyID(u1))}))(t)
	if got.UpstreamAuthoritySubjectKeyId != ca.SubjectKeyID(u1) {
		t.Fatalf("tainted %q, want %q", got.UpstreamAuthoritySubjectKeyId, ca.SubjectKeyID(u1))
	}
	b := h.snapshot().Bundle
	if a := x509Authority(t, b, ca.SubjectKeyID(u1)); a == nil || !a.Tainted {
		t.Fatalf("old upstream root after taint = %v, want tainted", a)
	}
	if a := x509Authority(t, b, ca.SubjectKeyID(u2)); a == nil || a.Tainted {
		t.Fatalf("new upstream root after taint = %v, want present and untainted", a)
	}
	agent := h.newAgent()
	entry := h.createEntry(&types.Entry{ParentId: protoID(agent.ID.Path()), SpiffeId: protoID("/u"), Selectors: []*types.Selector{sel("unix", "uid:3")}})
	svid := must(h.workloadSVID(agent, entry))(t)
	if !chainsTo(t, svid, b, ca.SubjectKeyID(u2)) || chainsTo(t, svid, b, ca.SubjectKeyID(u1)) {
		t.Fatal("a workload SVID after the upstream taint does not chain to the new upstream root only")
	}
	_, err = la.TaintX509UpstreamAuthority(ctx, &localauthorityv1.TaintX509UpstreamAuthorityRequest{SubjectKeyId: ca.SubjectKeyID(u1)})
	h.wantRefusal(t, "upstream taint again", err, codes.InvalidArgument, "root CA is already tainted", b.SequenceNumber)

	must(la.RevokeX509UpstreamAuthority(ctx, &localauthorityv1.RevokeX509UpstreamAuthorityRequest{SubjectKeyId: ca.SubjectKeyID(u1)}))(t)
	must(struct{}{}, h.srv.CA().Rotate(ctx))(t)
	b = h.snapshot().Bundle
	if x509Authority(t, b, ca.SubjectKeyID(u1)) != nil || x509Authority(t, b, ca.SubjectKeyID(u2)) == nil {
		t.Fatal("after the upstream revoke and a rotation step the old upstream root is back or the new one gone")
	}
}

// TestRevokedAuthorityLeavesBundleEndpoint: after a taint and a revoke the
// SPIFFE bundle endpoint serves neither the revoked X.509 CA nor the
// revoked JWT key, and still the active ones.
func TestRevokedAuthorityLeavesBundleEndpoint(t *testing.T) {
	h := startServer(t, func(c *server.Config) {
		c.BundleEndpoint = &server.BundleEndpointConfig{ListenAddr: "127.0.0.1:0"}
	})
	ctx := ctxT(t)
	la := localauthorityv1.NewLocalAuthorityClient(h.admin)
	x1 := must(la.GetX509AuthorityState(ctx, &localauthorityv1.GetX509AuthorityStateRequest{}))(t).Active.AuthorityId
	j1 := must(la.GetJWTAuthorityState(ctx, &localauthorityv1.GetJWTAuthorityStateRequest{}))(t).Active.AuthorityId
	x2 := must(la.PrepareX509Authority(ctx, &localauthorityv1.PrepareX509AuthorityRequest{}))(t).PreparedAuthority.AuthorityId
	j2 := must(la.PrepareJWTAuthority(ctx, &localauthorityv1.PrepareJWTAuthorityRequest{}))(t).PreparedAuthority.AuthorityId
	must(la.ActivateX509Authority(ctx, &localauthorityv1.ActivateX509AuthorityRequest{AuthorityId: x2}))(t)
	must(la.ActivateJWTAuthority(ctx, &localauthorityv1.ActivateJWTAuthorityRequest{AuthorityId: j2}))(t)
	h.bundle = h.snapshotBundle() // the endpoint's certificate chains to the new root
	served := func() (x509IDs map[string]bool, kids map[string]bool) {
		t.Helper()
		b, err := federation.FetchBundle(ctx, td, "https://"+h.srv.BundleEndpointAddr().String(), federation.WithSPIFFEAuth(h.bundle, spiffeID("/spire/server")))
		if err != nil {
			t.Fatalf("FetchBundle: %v", err)
		}
		x509IDs, kids = map[string]bool{}, map[string]bool{}
		for _, c := range b.X509Authorities() {
			x509IDs[ca.SubjectKeyID(c)] = true
		}
		for kid := range b.JWTAuthorities() {
			kids[kid] = true
		}
		return x509IDs, kids
	}
	if xs, ks := served(); !xs[x1] || !xs[x2] || !ks[j1] || !ks[j2] {
		t.Fatalf("before the revoke the endpoint serves X.509 %v and JWT %v, want both of each", xs, ks)
	}
	must(la.TaintX509Authority(ctx, &localauthorityv1.TaintX509AuthorityRequest{AuthorityId: x1}))(t)
	must(la.TaintJWTAuthority(ctx, &localauthorityv1.TaintJWTAuthorityRequest{AuthorityId: j1}))(t)
	must(la.RevokeX509Authority(ctx, &localauthorityv1.RevokeX509AuthorityRequest{AuthorityId: x1}))(t)
	must(la.RevokeJWTAuthority(ctx, &localauthorityv1.RevokeJWTAuthorityRequest{AuthorityId: j1}))(t)
	if xs, ks := served(); xs[x1] || !xs[x2] || ks[j1] || !ks[j2] {
		t.Fatalf("after the revoke the endpoint serves X.509 %v and JWT %v, want only %s and %s", xs, ks, x2, j2)
	}
}
