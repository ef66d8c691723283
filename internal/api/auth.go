package api

import (
	"context"
	"crypto/x509"
	"errors"
	"runtime"
	"sync"
	"time"
	"weak"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/idpolicy"
)

// Rule is the single authorization rule of an RPC (docs/security.md).
type Rule int

const (
	// RuleAdmin: the local admin socket, or an X509-SVID whose SPIFFE ID has an
	// entry with admin = true.
	RuleAdmin Rule = iota + 1
	// RuleAgent: an attested agent presenting its current agent SVID.
	RuleAgent
	// RuleDownstream: an X509-SVID whose SPIFFE ID has an entry with downstream = true.
	RuleDownstream
	// RuleAdminOrAgent: admin (as RuleAdmin) or attested agent (as RuleAgent).
	RuleAdminOrAgent
	// RuleAnyone: no authentication.
	RuleAnyone
	// RuleAdminOrDownstream: admin (as RuleAdmin) or a downstream server (as
	// RuleDownstream): what a child tier reads of its parent beyond its own
	// bundle (the federated bundles, which flow down the tree).
	RuleAdminOrDownstream
)

func (r Rule) String() string {
	switch r {
	case RuleAdmin:
		return "admin"
	case RuleAgent:
		return "agent"
	case RuleDownstream:
		return "downstream"
	case RuleAdminOrAgent:
		return "admin or agent"
	case RuleAnyone:
		return "anyone"
	case RuleAdminOrDownstream:
		return "admin or downstream"
	}
	return "unknown"
}

// rules maps every served RPC's full method name to its rule. A method missing
// here is denied to everyone, so a new RPC cannot be exposed by accident. It
// is not exported: nothing outside this package may change who may call what.
var rules = map[string]Rule{
	"/spire.api.server.agent.v1.Agent/CountAgents":     RuleAdmin,
	"/spire.api.server.agent.v1.Agent/ListAgents":      RuleAdmin,
	"/spire.api.server.agent.v1.Agent/GetAgent":        RuleAdmin,
	"/spire.api.server.agent.v1.Agent/DeleteAgent":     RuleAdmin,
	"/spire.api.server.agent.v1.Agent/BanAgent":        RuleAdmin,
	"/spire.api.server.agent.v1.Agent/CreateJoinToken": RuleAdmin,
	"/spire.api.server.agent.v1.Agent/AttestAgent":     RuleAnyone,
	"/spire.api.server.agent.v1.Agent/RenewAgent":      RuleAgent,
	"/spire.api.server.agent.v1.Agent/PostStatus":      RuleAgent,

	"/spire.api.server.entry.v1.Entry/CountEntries":          RuleAdmin,
	"/spire.api.server.entry.v1.Entry/ListEntries":           RuleAdmin,
	"/spire.api.server.entry.v1.Entry/GetEntry":              RuleAdmin,
	"/spire.api.server.entry.v1.Entry/BatchCreateEntry":      RuleAdmin,
	"/spire.api.server.entry.v1.Entry/BatchUpdateEntry":      RuleAdmin,
	"/spire.api.server.entry.v1.Entry/BatchDeleteEntry":      RuleAdmin,
	"/spire.api.server.entry.v1.Entry/GetAuthorizedEntries":  RuleAgent,
	"/spire.api.server.entry.v1.Entry/SyncAuthorizedEntries": RuleAgent,

	"/spire.api.server.svid.v1.SVID/MintX509SVID":        RuleAdmin,
	"/spire.api.server.svid.v1.SVID/MintJWTSVID":         RuleAdmin,
	"/spire.api.server.svid.v1.SVID/BatchNewX509SVID":    RuleAgent,
	"/spire.api.server.svid.v1.SVID/NewJWTSVID":          RuleAgent,
	"/spire.api.server.svid.v1.SVID/NewDownstreamX509CA": RuleDownstream,

	"/spire.api.server.bundle.v1.Bundle/GetBundle":                  RuleAnyone,
	"/spire.api.server.bundle.v1.Bundle/CountBundles":               RuleAdmin,
	"/spire.api.server.bundle.v1.Bundle/AppendBundle":               RuleAdmin,
	"/spire.api.server.bundle.v1.Bundle/PublishJWTAuthority":        RuleDownstream,
	"/spire.api.server.bundle.v1.Bundle/ListFederatedBundles":       RuleAdminOrDownstream,
	"/spire.api.server.bundle.v1.Bundle/GetFederatedBundle":         RuleAdminOrAgent,
	"/spire.api.server.bundle.v1.Bundle/BatchCreateFederatedBundle": RuleAdmin,
	"/spire.api.server.bundle.v1.Bundle/BatchUpdateFederatedBundle": RuleAdmin,
	"/spire.api.server.bundle.v1.Bundle/BatchSetFederatedBundle":    RuleAdmin,
	"/spire.api.server.bundle.v1.Bundle/BatchDeleteFederatedBundle": RuleAdmin,
	PruneBundleMethod: RuleAdmin,

	GetK8sPSATClustersMethod: RuleAdmin,
	SetK8sPSATClustersMethod: RuleAdmin,

	"/spire.api.server.trustdomain.v1.TrustDomain/ListFederationRelationships":       RuleAdmin,
	"/spire.api.server.trustdomain.v1.TrustDomain/GetFederationRelationship":         RuleAdmin,
	"/spire.api.server.trustdomain.v1.TrustDomain/BatchCreateFederationRelationship": RuleAdmin,
	"/spire.api.server.trustdomain.v1.TrustDomain/BatchUpdateFederationRelationship": RuleAdmin,
	"/spire.api.server.trustdomain.v1.TrustDomain/BatchDeleteFederationRelationship": RuleAdmin,
	"/spire.api.server.trustdomain.v1.TrustDomain/RefreshBundle":                     RuleAdmin,

	"/spire.api.server.localauthority.v1.LocalAuthority/GetJWTAuthorityState":        RuleAdmin,
	"/spire.api.server.localauthority.v1.LocalAuthority/PrepareJWTAuthority":         RuleAdmin,
	"/spire.api.server.localauthority.v1.LocalAuthority/ActivateJWTAuthority":        RuleAdmin,
	"/spire.api.server.localauthority.v1.LocalAuthority/TaintJWTAuthority":           RuleAdmin,
	"/spire.api.server.localauthority.v1.LocalAuthority/RevokeJWTAuthority":          RuleAdmin,
	"/spire.api.server.localauthority.v1.LocalAuthority/GetX509AuthorityState":       RuleAdmin,
	"/spire.api.server.localauthority.v1.LocalAuthority/PrepareX509Authority":        RuleAdmin,
	"/spire.api.server.localauthority.v1.LocalAuthority/ActivateX509Authority":       RuleAdmin,
	"/spire.api.server.localauthority.v1.LocalAuthority/TaintX509Authority":          RuleAdmin,
	"/spire.api.server.localauthority.v1.LocalAuthority/RevokeX509Authority":         RuleAdmin,
	"/spire.api.server.localauthority.v1.LocalAuthority/TaintX509UpstreamAuthority":  RuleAdmin,
	"/spire.api.server.localauthority.v1.LocalAuthority/RevokeX509UpstreamAuthority": RuleAdmin,

	"/spire.api.server.logger.v1.Logger/GetLogger":     RuleAdmin,
	"/spire.api.server.logger.v1.Logger/SetLogLevel":   RuleAdmin,
	"/spire.api.server.logger.v1.Logger/ResetLogLevel": RuleAdmin,

	"/grpc.health.v1.Health/Check": RuleAnyone,
	"/grpc.health.v1.Health/Watch": RuleAnyone,
	"/grpc.health.v1.Health/List":  RuleAnyone,
}

// verifyCache remembers chains that verified against a given bundle, so a
// long-lived agent connection pays for chain verification once, not per call.
//
// An entry lives as long as its leaf certificate: the key holds the leaf
// weakly and a cleanup removes the entry once the leaf (parsed once per TLS
// connection, so in practice the connection) is collected. The cache thus
// holds one entry per live connection, however many there are; a fixed size
// with a reset when full made every call verify again once more agents were
// connected than the size (8192 then), as a fleet calling in turn evicted
// the others before their next call.
type verifyCache struct {
	mu sync.Mutex
	ok map[verifyKey]spiffeid.ID
}

type verifyKey struct {
	leaf   weak.Pointer[x509.Certificate]
	bundle *x509bundle.Bundle
}

// maxVerified bounds the cache against leaves kept alive by something
// other than connections; above any fleet one server serves.
const maxVerified = 1 << 20

// lookup returns the SPIFFE ID of a leaf whose chain verified against
// bundle, if it did: parsing the ID from the certificate's URI on every
// call was a measurable part of a sync.
func (v *verifyCache) lookup(leaf *x509.Certificate, bundle *x509bundle.Bundle) (spiffeid.ID, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	id, ok := v.ok[verifyKey{leaf: weak.Make(leaf), bundle: bundle}]
	return id, ok
}

// verify checks the chain against bundle and remembers it, with the leaf's
// ID, when it verifies.
func (v *verifyCache) verify(certs []*x509.Certificate, bundle *x509bundle.Bundle, id spiffeid.ID, now time.Time) error {
	if _, _, err := x509svid.Verify(certs, bundle, x509svid.WithTime(now)); err != nil {
		return err
	}
	key := verifyKey{leaf: weak.Make(certs[0]), bundle: bundle}
	v.mu.Lock()
	if v.ok == nil || len(v.ok) >= maxVerified {
		v.ok = make(map[verifyKey]spiffeid.ID)
	}
	_, again := v.ok[key] // a concurrent call on the same connection
	v.ok[key] = id
	v.mu.Unlock()
	if !again {
		runtime.AddCleanup(certs[0], v.forget, key)
	}
	return nil
}

func (v *verifyCache) forget(key verifyKey) {
	v.mu.Lock()
	delete(v.ok, key)
	v.mu.Unlock()
}

// size is the number of remembered chains (for tests).
func (v *verifyCache) size() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.ok)
}

// Caller is who made a request, as established by the authorization interceptor.
type Caller struct {
	// Local is true on the admin Unix socket.
	Local bool
	// ID is the SPIFFE ID of the caller's verified X509-SVID (zero when none).
	ID spiffeid.ID
	// Cert is the caller's verified leaf certificate (nil when none).
	Cert *x509.Certificate
	// Node is set when the caller is an attested agent in good standing.
	Node *datastore.Node
}

type callerKey struct{}

// CallerFrom returns the caller stored in ctx by the interceptor.
func CallerFrom(ctx context.Context) Caller {
	c, _ := ctx.Value(callerKey{}).(Caller)
	return c
}

// withCaller returns ctx carrying c (used by the interceptors and by tests).
func withCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// localAuthInfo marks connections accepted on the admin socket.
type localAuthInfo struct{ credentials.CommonAuthInfo }

func (localAuthInfo) AuthType() string { return "arbor-local" }

// LocalCredentials returns transport credentials for the admin Unix socket;
// callers on it are administrators (the socket's file mode is the control).
func LocalCredentials() credentials.TransportCredentials { return localCreds{} }

// notServed lists the methods of SPIRE's API that arbor registers (they
// come with the services it implements) but does not implement: WIT-SVIDs
// and their authorities. They have no rule, so no handler ever runs; every
// caller gets Unimplemented, which says "not here" (spire-server's CLI
// prints it as such) where PermissionDenied would send an operator looking
// for a credentials problem.
var notServed = map[string]bool{
	"/spire.api.server.bundle.v1.Bundle/PublishWITAuthority":                  true,
	"/spire.api.server.localauthority.v1.LocalAuthority/ActivateWITAuthority": true,
	"/spire.api.server.localauthority.v1.LocalAuthority/GetWITAuthorityState": true,
	"/spire.api.server.localauthority.v1.LocalAuthority/PrepareWITAuthority":  true,
	"/spire.api.server.localauthority.v1.LocalAuthority/RevokeWITAuthority":   true,
	"/spire.api.server.localauthority.v1.LocalAuthority/TaintWITAuthority":    true,
	"/spire.api.server.svid.v1.SVID/BatchNewWITSVID":                          true,
	"/spire.api.server.svid.v1.SVID/MintWITSVID":                              true,
}

// authorize establishes the caller and applies the method's rule.
func (s *Service) authorize(ctx context.Context, method string) (context.Context, error) {
	rule, ok := rules[method]
	if !ok && notServed[method] {
		return nil, status.Errorf(codes.Unimplemented, "%s: arbor does not issue WIT-SVIDs", method)
	}
	if !ok {
		return nil, status.Errorf(codes.PermissionDenied, "method %s is not authorized for any caller", method)
	}
	caller, err := s.identify(ctx)
	if err != nil {
		if rule != RuleAnyone {
			return nil, err
		}
		// A bad client certificate does not stop what anyone may do (an
		// agent re-attesting with an expired SVID, say); it is ignored.
		caller = Caller{}
	}
	// An SVID caller not (yet) known here as an admin or a downstream tier
	// may have been registered on another replica since the last poll:
	// catch up once before refusing. It can only add what the datastore
	// committed.
	isAdmin := func() bool {
		return s.isAdmin(caller) || (!caller.ID.IsZero() && s.catchUp(ctx) && s.isAdmin(caller))
	}
	isDownstream := func() bool {
		return s.isDownstream(caller) || (!caller.ID.IsZero() && s.catchUp(ctx) && s.isDownstream(caller))
	}
	switch rule {
	case RuleAnyone:
	case RuleAdmin:
		if !isAdmin() {
			return nil, denied(caller, rule)
		}
	case RuleAgent:
		if err := s.checkAgent(ctx, &caller); err != nil {
			return nil, err
		}
	case RuleAdminOrAgent:
		if !s.isAdmin(caller) {
			if err := s.checkAgent(ctx, &caller); err != nil {
				return nil, err
			}
		}
	case RuleDownstream:
		if !isDownstream() {
			return nil, denied(caller, rule)
		}
	case RuleAdminOrDownstream:
		if !s.isAdmin(caller) && !s.isDownstream(caller) && !(!caller.ID.IsZero() && s.catchUp(ctx) && (s.isAdmin(caller) || s.isDownstream(caller))) {
			return nil, denied(caller, rule)
		}
	}
	return withCaller(ctx, caller), nil
}

func denied(c Caller, rule Rule) error {
	if !c.Local && c.ID.IsZero() {
		return status.Errorf(codes.Unauthenticated, "caller presented no X509-SVID; this call needs %s credentials", rule)
	}
	who := "local caller"
	if !c.ID.IsZero() {
		who = c.ID.String()
	}
	return status.Errorf(codes.PermissionDenied, "%s is not authorized for this call (needs %s)", who, rule)
}

// identify reads the transport's credentials and verifies the caller's
// X509-SVID against the current own bundle (cached per leaf and bundle), and
// its validity at this call's time: connections outlive certificates, and a
// resumed TLS session must not skip either check.
func (s *Service) identify(ctx context.Context) (Caller, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Caller{}, nil
	}
	switch info := p.AuthInfo.(type) {
	case localAuthInfo:
		return Caller{Local: true}, nil
	case credentials.TLSInfo:
		certs := info.State.PeerCertificates
		if len(certs) == 0 {
			return Caller{}, nil
		}
		leaf := certs[0]
		now := s.now()
		bundle := s.bundles.X509Bundle()
		id, verified := s.verified.lookup(leaf, bundle)
		if !verified {
			var err error
			if id, err = x509svid.IDFromCert(leaf); err != nil {
				return Caller{}, status.Errorf(codes.Unauthenticated, "caller's certificate is not an X509-SVID: %v", err)
			}
		}
		if now.After(leaf.NotAfter) {
			if isAgentPath(id) {
				// spire-agent re-attests when told so with this detail.
				return Caller{}, agentDenied(types.PermissionDeniedDetails_AGENT_EXPIRED, "agent %s SVID is expired", id)
			}
			return Caller{}, status.Errorf(codes.Unauthenticated, "caller %s presented an expired X509-SVID", id)
		}
		if id.TrustDomain() != s.td {
			return Caller{}, status.Errorf(codes.PermissionDenied, "caller %s is not in trust domain %q", id, s.td)
		}
		if verified {
			return Caller{ID: id, Cert: leaf}, nil
		}
		if err := s.verified.verify(certs, bundle, id, now); err != nil {
			return Caller{}, status.Errorf(codes.Unauthenticated, "caller's X509-SVID does not verify against the trust bundle: %v", err)
		}
		return Caller{ID: id, Cert: leaf}, nil
	}
	return Caller{}, nil
}

func (s *Service) isAdmin(c Caller) bool {
	if c.Local {
		return true
	}
	if c.ID.IsZero() {
		return false
	}
	for _, e := range s.entries.EntriesBySPIFFEID(c.ID) {
		if e.Admin {
			return true
		}
	}
	return false
}

func (s *Service) isDownstream(c Caller) bool {
	if c.ID.IsZero() {
		return false
	}
	for _, e := range s.entries.EntriesBySPIFFEID(c.ID) {
		if e.Downstream {
			return true
		}
	}
	return false
}

// promoteTimeout bounds the write that promotes a renewed agent SVID at its
// first use; past it the call is served as during an outage.
const promoteTimeout = 2 * time.Second

// checkAgent requires an attested, unbanned agent presenting a current SVID
// serial; it promotes a renewed serial on its first use (so the old SVID stops
// working once the new one has been seen).
func (s *Service) checkAgent(ctx context.Context, c *Caller) error {
	if c.Cert == nil {
		if c.Local {
			return status.Error(codes.PermissionDenied, "this call needs an agent X509-SVID, not the admin socket")
		}
		return status.Error(codes.Unauthenticated, "caller presented no agent X509-SVID")
	}
	if !isAgentPath(c.ID) {
		return status.Errorf(codes.PermissionDenied, "caller %s is not an agent", c.ID)
	}
	serial := c.Cert.SerialNumber.String()
	node, ok := s.nodes.get(c.ID)
	if ok && node.Banned() {
		// A ban this server knows of is refused without asking anyone.
		return agentDenied(types.PermissionDeniedDetails_AGENT_BANNED, "agent %s is banned", c.ID)
	}
	if !ok || (serial != node.CertSerial && serial != node.NewCertSerial) {
		// Unknown here, or a serial this index has not seen: another
		// server of the tier may have attested or renewed the agent since
		// the event poller last ran (an agent behind a load balancer moves
		// between replicas from one call to the next). Read the node as the
		// datastore holds it before refusing: it is the committed state,
		// so this can only add what another server wrote, never undo a ban
		// or an eviction. A datastore that cannot answer gets Unavailable,
		// which agents retry: a PermissionDenied would make spire-agent
		// drop its SVID and re-attest.
		if err := s.reloadNode(ctx, c.ID); err != nil {
			if errors.Is(err, datastore.ErrUnavailable) {
				return status.Error(codes.Unavailable, "cannot check the agent: datastore unavailable; retry")
			}
			s.log.ErrorContext(ctx, "reading an agent unknown to this server", "spiffe_id", c.ID.String(), "err", err)
			return status.Error(codes.Internal, "failed to read the agent's attested node")
		}
		if node, ok = s.nodes.get(c.ID); !ok {
			return agentDenied(types.PermissionDeniedDetails_AGENT_NOT_ATTESTED, "agent %s is not attested", c.ID)
		}
	}
	if node.Banned() {
		return agentDenied(types.PermissionDeniedDetails_AGENT_BANNED, "agent %s is banned", c.ID)
	}
	switch serial {
	case node.CertSerial:
	case node.NewCertSerial:
		// First use of a renewed SVID: it becomes the current one, if it
		// still is the node's new serial (a ban since then wins). During a
		// known datastore outage the promotion is not even tried (see the
		// ErrUnavailable case below), and it is bounded by promoteTimeout,
		// so a database that stops answering delays this call by that
		// much at most, not by the caller's whole deadline.
		if !s.DatastoreHealth().Up {
			break
		}
		pctx, cancel := context.WithTimeout(ctx, promoteTimeout)
		promoted, err := s.writeNode(pctx, c.ID, func() (*datastore.Node, error) {
			return s.store.ActivateNodeSerial(pctx, c.ID, serial)
		})
		cancel()
		switch {
		case err == nil:
			node = promoted
		case errors.Is(err, datastore.ErrConflict), errors.Is(err, datastore.ErrNotFound):
			// Banned, evicted or re-attested since, or activated by a
			// concurrent call of the same agent: decide on what is stored.
			if denial := s.nodeDenial(c.ID, serial); denial != nil {
				return denial
			}
			node, _ = s.nodes.get(c.ID)
			if node.CertSerial != serial {
				return agentDenied(types.PermissionDeniedDetails_AGENT_NOT_ACTIVE, "agent %s presented SVID serial %s, which is not its current one", c.ID, serial)
			}
		case errors.Is(err, datastore.ErrUnavailable):
			// The datastore is down: serve the call from memory without
			// promoting. This is safe: the new serial is in the index only
			// because a committed RenewNode put it there (this server's
			// write or one the poller read), the index says the node is
			// not banned, and no ban can commit while the database is
			// down, on any server, so none is being undone; until the
			// promotion both serials are accepted, exactly as between a
			// renewal and its first use. The first call after recovery
			// promotes (or finds the ban or eviction and is refused).
			s.storeDown(err)
			s.log.DebugContext(ctx, "renewed agent SVID used while the datastore is unavailable; promotion deferred", "spiffe_id", c.ID.String(), "err", err)
		default:
			s.log.ErrorContext(ctx, "promoting renewed agent SVID", "spiffe_id", c.ID.String(), "err", err)
			return status.Error(codes.Internal, "failed to record the agent's renewed SVID")
		}
	default:
		return agentDenied(types.PermissionDeniedDetails_AGENT_NOT_ACTIVE, "agent %s presented SVID serial %s, which is not its current one", c.ID, serial)
	}
	c.Node = node
	return nil
}

// agentDenied is PermissionDenied with the reason detail that spire-agent
// acts on (re-attest, or shut down when it cannot).
func agentDenied(reason types.PermissionDeniedDetails_Reason, format string, args ...any) error {
	st := status.Newf(codes.PermissionDenied, format, args...)
	if withDetails, err := st.WithDetails(&types.PermissionDeniedDetails{Reason: reason}); err == nil {
		st = withDetails
	}
	return st.Err()
}

func isAgentPath(id spiffeid.ID) bool { return idpolicy.IsAgentPath(id.Path()) }

// UnaryInterceptor authorizes every unary call.
func (s *Service) UnaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, err := s.authorize(ctx, info.FullMethod)
	if err != nil {
		s.metrics.observe(info.FullMethod, err)
		return nil, err
	}
	resp, err := handler(ctx, req)
	s.metrics.observe(info.FullMethod, err)
	return resp, err
}

// StreamInterceptor authorizes every streaming call.
func (s *Service) StreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := s.authorize(ss.Context(), info.FullMethod)
	if err != nil {
		s.metrics.observe(info.FullMethod, err)
		return err
	}
	err = handler(srv, &callerStream{ServerStream: ss, ctx: ctx})
	s.metrics.observe(info.FullMethod, err)
	return err
}

type callerStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (c *callerStream) Context() context.Context { return c.ctx }
