package agent

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"

	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/arborid/arbor/internal/selector"
	"github.com/arborid/arbor/internal/unixsock"
)

// This file is the SPIFFE Workload API: served from the cache only, so a
// workload is never blocked on the server (except to mint a JWT-SVID that
// is not cached).

// PeerInfo is the AuthInfo of a Workload API connection: the calling
// process's credentials, read with SO_PEERCRED when it connected.
type PeerInfo struct {
	credentials.CommonAuthInfo
	PID      int32
	UID, GID uint32
}

// AuthType implements credentials.AuthInfo.
func (PeerInfo) AuthType() string { return "peercred" }

// peerCredentials is a transport that does no handshake but records the
// peer's credentials of a Unix socket connection.
type peerCredentials struct{}

func (peerCredentials) ClientHandshake(_ context.Context, _ string, c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c, PeerInfo{}, nil
}

func (peerCredentials) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, nil, fmt.Errorf("agent: workload API connection is %T, not a Unix socket", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, nil, fmt.Errorf("agent: workload API connection: %w", err)
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return nil, nil, fmt.Errorf("agent: reading peer credentials: %w", err)
	}
	if credErr != nil {
		return nil, nil, fmt.Errorf("agent: reading peer credentials: %w", credErr)
	}
	info := PeerInfo{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}
	info.SecurityLevel = credentials.NoSecurity
	return c, info, nil
}

func (peerCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}
func (p peerCredentials) Clone() credentials.TransportCredentials { return p }
func (peerCredentials) OverrideServerName(string) error           { return nil }

type workloadListener struct {
	srv *grpc.Server
	lis net.Listener
}

// listenWorkloadAPI creates the socket (mode 0777: any local process may
// ask; attestation decides what it gets) and the gRPC server.
func (a *Agent) listenWorkloadAPI() (*workloadListener, error) {
	if err := socketDir(a.cfg.SocketPath); err != nil {
		return nil, fmt.Errorf("agent: workload API socket directory: %w", err)
	}
	// A socket another process answers on is refused; a stale one replaced.
	lis, err := unixsock.Listen(a.cfg.SocketPath)
	if err != nil {
		return nil, fmt.Errorf("agent: workload API: %w", err)
	}
	if err := os.Chmod(a.cfg.SocketPath, 0o777); err != nil {
		lis.Close()
		return nil, fmt.Errorf("agent: workload API socket mode: %w", err)
	}
	srv := grpc.NewServer(
		grpc.Creds(peerCredentials{}),
		grpc.ChainUnaryInterceptor(a.unaryInterceptor),
		grpc.ChainStreamInterceptor(a.streamInterceptor),
	)
	workload.RegisterSpiffeWorkloadAPIServer(srv, &workloadHandler{a: a})
	if !a.cfg.SDS.Disabled {
		secretv3.RegisterSecretDiscoveryServiceServer(srv, newSDSHandler(a))
	}
	return &workloadListener{srv: srv, lis: lis}, nil
}

// errNoSecurityHeader is what SPIRE answers a call without the header.
var errNoSecurityHeader = status.Error(codes.InvalidArgument, "security header missing from request")

// needsSecurityHeader tells whether method must carry the header: the
// Workload API's do; Envoy's SDS calls on the same socket do not (Envoy
// does not send it), as in spire-agent.
func needsSecurityHeader(method string) bool {
	return strings.HasPrefix(method, "/SpiffeWorkloadAPI/")
}

func hasSecurityHeader(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return false
	}
	v := md.Get("workload.spiffe.io")
	return len(v) == 1 && v[0] == "true"
}

func (a *Agent) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	var resp any
	var err error
	if needsSecurityHeader(info.FullMethod) && !hasSecurityHeader(ctx) {
		err = errNoSecurityHeader
	} else {
		resp, err = h(ctx, req)
	}
	a.metrics.requests.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
	return resp, err
}

func (a *Agent) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	var err error
	if needsSecurityHeader(info.FullMethod) && !hasSecurityHeader(ss.Context()) {
		err = errNoSecurityHeader
	} else {
		err = h(srv, ss)
	}
	a.metrics.requests.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
	return err
}

// attestWorkload returns the selectors of the calling process.
func (a *Agent) attestWorkload(ctx context.Context) ([]selector.Selector, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Internal, "no peer information on the workload API connection")
	}
	info, ok := p.AuthInfo.(PeerInfo)
	if !ok || info.PID == 0 {
		return nil, status.Error(codes.Internal, "no peer credentials on the workload API connection")
	}
	var sels []selector.Selector
	for _, w := range a.cfg.WorkloadAttestors {
		s, err := w.Attest(ctx, info.PID)
		if err != nil {
			a.log.Error("workload attestation failed", "pid", info.PID, "err", err)
			return nil, status.Error(codes.Internal, "workload attestation failed")
		}
		sels = append(sels, s...)
	}
	return sels, nil
}

// waitReady waits for the first sync; streams and calls made while the agent
// starts block instead of failing.
func (a *Agent) waitReady(ctx context.Context) error {
	select {
	case <-a.ready:
		return nil
	case <-ctx.Done():
		return status.Error(codes.Unavailable, "agent is not ready: it has not synced with the server yet")
	}
}

var errNoIdentity = status.Error(codes.PermissionDenied, "no identity issued")

type workloadHandler struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	a *Agent
}

// sentX509 is what a stream last sent, to skip identical updates.
type sentX509 struct {
	svids     []*x509SVID
	bundle    *bundleView
	federated []*bundleView
}

func (s *sentX509) same(ids []identity, b *bundleView, fed []*bundleView) bool {
	if s == nil || s.bundle != b || len(s.svids) != len(ids) || len(s.federated) != len(fed) {
		return false
	}
	for i, id := range ids {
		if s.svids[i] != id.svid {
			return false
		}
	}
	for i, f := range fed {
		if s.federated[i] != f {
			return false
		}
	}
	return true
}

func (h *workloadHandler) FetchX509SVID(_ *workload.X509SVIDRequest, stream workload.SpiffeWorkloadAPI_FetchX509SVIDServer) error {
	ctx := stream.Context()
	sels, err := h.a.attestWorkload(ctx)
	if err != nil {
		return err
	}
	var last *sentX509
	for {
		v, changed := h.a.cache.load()
		if v.ready && v.bundle != nil {
			matched := v.match(sels)
			if len(matched) == 0 {
				return errNoIdentity
			}
			ids := identities(matched)
			fed := v.federatedFor(matched)
			if len(ids) > 0 && !last.same(ids, v.bundle, fed) {
				if err := stream.Send(x509SVIDResponse(ids, v.bundle, fed)); err != nil {
					return err
				}
				last = &sentX509{bundle: v.bundle, federated: fed}
				for _, id := range ids {
					last.svids = append(last.svids, id.svid)
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

func x509SVIDResponse(ids []identity, b *bundleView, fed []*bundleView) *workload.X509SVIDResponse {
	resp := &workload.X509SVIDResponse{Svids: make([]*workload.X509SVID, len(ids))}
	for i, id := range ids {
		resp.Svids[i] = &workload.X509SVID{
			SpiffeId:    id.entry.spiffeID.String(),
			X509Svid:    id.svid.chainDER,
			X509SvidKey: id.svid.keyDER,
			Bundle:      b.x509DER,
			Hint:        id.entry.hint,
		}
	}
	if len(fed) > 0 {
		resp.FederatedBundles = make(map[string][]byte, len(fed))
		for _, f := range fed {
			resp.FederatedBundles[f.td.IDString()] = f.x509DER
		}
	}
	return resp
}

// bundleStream runs FetchX509Bundles and FetchJWTBundles: every bundle the
// workload may use, sent again whenever one changes. Like SPIRE, a workload
// with no identity gets PermissionDenied.
func (h *workloadHandler) bundleStream(ctx context.Context, send func(own *bundleView, fed []*bundleView) error) error {
	sels, err := h.a.attestWorkload(ctx)
	if err != nil {
		return err
	}
	var lastOwn *bundleView
	var lastFed []*bundleView
	sent := false
	for {
		v, changed := h.a.cache.load()
		if v.ready && v.bundle != nil {
			matched := v.match(sels)
			if len(matched) == 0 {
				return errNoIdentity
			}
			if len(identities(matched)) > 0 {
				fed := v.federatedFor(matched)
				if !sent || lastOwn != v.bundle || !samePtrs(lastFed, fed) {
					if err := send(v.bundle, fed); err != nil {
						return err
					}
					sent, lastOwn, lastFed = true, v.bundle, fed
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

func samePtrs(a, b []*bundleView) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (h *workloadHandler) FetchX509Bundles(_ *workload.X509BundlesRequest, stream workload.SpiffeWorkloadAPI_FetchX509BundlesServer) error {
	return h.bundleStream(stream.Context(), func(own *bundleView, fed []*bundleView) error {
		resp := &workload.X509BundlesResponse{Bundles: map[string][]byte{own.td.IDString(): own.x509DER}}
		for _, f := range fed {
			resp.Bundles[f.td.IDString()] = f.x509DER
		}
		return stream.Send(resp)
	})
}

func (h *workloadHandler) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream workload.SpiffeWorkloadAPI_FetchJWTBundlesServer) error {
	return h.bundleStream(stream.Context(), func(own *bundleView, fed []*bundleView) error {
		resp := &workload.JWTBundlesResponse{Bundles: map[string][]byte{own.td.IDString(): own.jwks}}
		for _, f := range fed {
			resp.Bundles[f.td.IDString()] = f.jwks
		}
		return stream.Send(resp)
	})
}

func (h *workloadHandler) FetchJWTSVID(ctx context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	if len(req.Audience) == 0 {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	for _, aud := range req.Audience {
		if aud == "" {
			return nil, status.Error(codes.InvalidArgument, "audience must not contain an empty string")
		}
	}
	var want spiffeid.ID
	if req.SpiffeId != "" {
		id, err := spiffeid.FromString(req.SpiffeId)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "invalid requested SPIFFE ID: %v", err)
		}
		want = id
	}
	sels, err := h.a.attestWorkload(ctx)
	if err != nil {
		return nil, err
	}
	if err := h.a.waitReady(ctx); err != nil {
		return nil, err
	}
	v, _ := h.a.cache.load()
	resp := &workload.JWTSVIDResponse{}
	for _, ce := range v.match(sels) {
		if !want.IsZero() && ce.info.spiffeID != want {
			continue
		}
		token, err := h.a.fetchJWT(ctx, ce.info, req.Audience)
		if err != nil {
			h.a.log.Error("could not fetch JWT-SVID", "entry_id", ce.info.id, "spiffe_id", ce.info.spiffeID.String(), "err", err)
			return nil, status.Errorf(codes.Unavailable, "could not fetch JWT-SVID: %v", err)
		}
		resp.Svids = append(resp.Svids, &workload.JWTSVID{SpiffeId: ce.info.spiffeID.String(), Svid: token, Hint: ce.info.hint})
	}
	if len(resp.Svids) == 0 {
		return nil, errNoIdentity
	}
	return resp, nil
}

func (h *workloadHandler) ValidateJWTSVID(ctx context.Context, req *workload.ValidateJWTSVIDRequest) (*workload.ValidateJWTSVIDResponse, error) {
	if req.Audience == "" {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	if req.Svid == "" {
		return nil, status.Error(codes.InvalidArgument, "svid must be specified")
	}
	sels, err := h.a.attestWorkload(ctx)
	if err != nil {
		return nil, err
	}
	if err := h.a.waitReady(ctx); err != nil {
		return nil, err
	}
	v, _ := h.a.cache.load()
	if v.bundle == nil {
		return nil, status.Error(codes.Unavailable, "agent has no trust bundle yet")
	}
	set := jwtbundle.NewSet(v.bundle.jwt)
	for _, f := range v.federatedFor(v.match(sels)) {
		set.Add(f.jwt)
	}
	svid, err := jwtsvid.ParseAndValidate(req.Svid, set, []string{req.Audience})
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	claims := make(map[string]any, len(svid.Claims))
	for k, c := range svid.Claims {
		claims[k] = normalizeClaim(c)
	}
	if aud, ok := claims["aud"].(string); ok {
		claims["aud"] = []any{aud}
	}
	s, err := structpb.NewStruct(claims)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "JWT-SVID claims: %v", err)
	}
	return &workload.ValidateJWTSVIDResponse{SpiffeId: svid.ID.String(), Claims: s}, nil
}

// normalizeClaim converts what the JWT library decodes into values
// structpb accepts.
func normalizeClaim(v any) any {
	switch c := v.(type) {
	case []string:
		out := make([]any, len(c))
		for i, s := range c {
			out[i] = s
		}
		return out
	case []any:
		out := make([]any, len(c))
		for i, s := range c {
			out[i] = normalizeClaim(s)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(c))
		for k, s := range c {
			out[k] = normalizeClaim(s)
		}
		return out
	case int64:
		return float64(c)
	case int:
		return float64(c)
	}
	return v
}
