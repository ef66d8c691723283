package svidcli

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

var (
	td      = spiffeid.RequireTrustDomainFromString("example.org")
	partner = spiffeid.RequireTrustDomainFromString("partner.org")
	webID   = spiffeid.RequireFromString("spiffe://example.org/web")
	dbID    = spiffeid.RequireFromString("spiffe://example.org/db")
)

const jwtKeyID = "k1"

// pki is the fixed material the test Workload API serves: a root CA and an
// intermediate for example.org, a partner.org root, two X509-SVIDs signed by
// the intermediate, and a JWT signing key.
type pki struct {
	root, intermediate, partnerRoot *x509.Certificate
	svids                           []testSVID
	jwtKey                          *ecdsa.PrivateKey
}

type testSVID struct {
	id   spiffeid.ID
	hint string
	leaf *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func issue(t *testing.T, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func caTemplate(serial int64, id spiffeid.TrustDomain, notAfter time.Time) *x509.Certificate {
	u := id.ID().URL()
	return &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{Organization: []string{"arbor test"}, CommonName: id.Name()},
		URIs:                  []*url.URL{u},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	now := time.Now()
	rootKey, interKey, partnerKey := newKey(t), newKey(t), newKey(t)
	p := &pki{jwtKey: newKey(t)}
	p.root = issue(t, caTemplate(1, td, now.Add(48*time.Hour)), nil, rootKey.Public(), rootKey)
	p.intermediate = issue(t, caTemplate(2, td, now.Add(24*time.Hour)), p.root, interKey.Public(), rootKey)
	p.partnerRoot = issue(t, caTemplate(3, partner, now.Add(72*time.Hour)), nil, partnerKey.Public(), partnerKey)
	for i, s := range []struct {
		id   spiffeid.ID
		hint string
	}{{webID, "internal"}, {dbID, ""}} {
		key := newKey(t)
		leaf := issue(t, &x509.Certificate{
			SerialNumber: big.NewInt(int64(100 + i)),
			URIs:         []*url.URL{s.id.URL()},
			NotBefore:    now.Add(-time.Minute),
			NotAfter:     now.Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}, p.intermediate, key.Public(), interKey)
		p.svids = append(p.svids, testSVID{id: s.id, hint: s.hint, leaf: leaf, key: key})
	}
	return p
}

// signJWT makes a JWT-SVID for sub and aud signed with key under kid.
func signJWT(key *ecdsa.PrivateKey, kid string, sub spiffeid.ID, aud []string, exp time.Time) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		return "", err
	}
	return jwt.Signed(signer).Claims(jwt.Claims{
		Subject:  sub.String(),
		Audience: jwt.Audience(aud),
		Expiry:   jwt.NewNumericDate(exp),
		IssuedAt: jwt.NewNumericDate(time.Now()),
	}).Serialize()
}

func mustSignJWT(t *testing.T, key *ecdsa.PrivateKey, kid string, sub spiffeid.ID, aud []string, exp time.Time) string {
	t.Helper()
	tok, err := signJWT(key, kid, sub, aud, exp)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (p *pki) jwtBundles() *jwtbundle.Set {
	return jwtbundle.NewSet(jwtbundle.FromJWTAuthorities(td, map[string]crypto.PublicKey{jwtKeyID: p.jwtKey.Public()}))
}

// workloadServer is a minimal SPIFFE Workload API serving the pki.
type workloadServer struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	pki *pki
	// deny makes every call answer PermissionDenied, as an agent does for a
	// process no entry matches.
	deny bool
	// hang makes every call wait for the caller to give up.
	hang bool
}

func (s *workloadServer) check(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("workload.spiffe.io"); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	if s.hang {
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	}
	if s.deny {
		return status.Error(codes.PermissionDenied, "no identity issued")
	}
	return nil
}

func (s *workloadServer) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	if err := s.check(stream.Context()); err != nil {
		return err
	}
	resp := &workload.X509SVIDResponse{
		FederatedBundles: map[string][]byte{partner.IDString(): s.pki.partnerRoot.Raw},
	}
	for _, sv := range s.pki.svids {
		key, err := x509.MarshalPKCS8PrivateKey(sv.key)
		if err != nil {
			return err
		}
		resp.Svids = append(resp.Svids, &workload.X509SVID{
			SpiffeId:    sv.id.String(),
			X509Svid:    append(append([]byte(nil), sv.leaf.Raw...), s.pki.intermediate.Raw...),
			X509SvidKey: key,
			Bundle:      s.pki.root.Raw,
			Hint:        sv.hint,
		})
	}
	if err := stream.Send(resp); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

func (s *workloadServer) FetchJWTSVID(ctx context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if len(req.Audience) == 0 {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	resp := &workload.JWTSVIDResponse{}
	for _, sv := range s.pki.svids {
		if req.SpiffeId != "" && req.SpiffeId != sv.id.String() {
			continue
		}
		tok, err := signJWT(s.pki.jwtKey, jwtKeyID, sv.id, req.Audience, time.Now().Add(5*time.Minute))
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		resp.Svids = append(resp.Svids, &workload.JWTSVID{SpiffeId: sv.id.String(), Svid: tok, Hint: sv.hint})
	}
	if len(resp.Svids) == 0 {
		return nil, status.Errorf(codes.PermissionDenied, "no identity issued for %s", req.SpiffeId)
	}
	return resp, nil
}

func (s *workloadServer) ValidateJWTSVID(ctx context.Context, req *workload.ValidateJWTSVIDRequest) (*workload.ValidateJWTSVIDResponse, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if req.Audience == "" || req.Svid == "" {
		return nil, status.Error(codes.InvalidArgument, "audience and svid must be specified")
	}
	svid, err := jwtsvid.ParseAndValidate(req.Svid, s.pki.jwtBundles(), []string{req.Audience})
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	claims, err := structpb.NewStruct(svid.Claims)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &workload.ValidateJWTSVIDResponse{SpiffeId: svid.ID.String(), Claims: claims}, nil
}

// sockDir returns a short directory for Unix sockets (their paths are limited
// to 108 bytes, and t.TempDir embeds the test name).
func sockDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// serve runs s on a new Unix socket and returns its address.
func serve(t *testing.T, s *workloadServer) string {
	t.Helper()
	path := filepath.Join(sockDir(t), "api.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(srv, s)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return "unix://" + path
}
