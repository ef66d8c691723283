// Package api implements SPIRE's server API (spire-api-sdk agent.v1, entry.v1,
// svid.v1 and bundle.v1) for the server every arbor tier runs. It is the only
// place that speaks gRPC status codes: the datastore, CA and attestors return
// plain errors that the handlers here map.
package api

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	localauthorityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/localauthority/v1"
	loggerv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/logger/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	trustdomainv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/trustdomain/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/arborid/arbor/internal/ca"
	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/defaults"
	"github.com/arborid/arbor/internal/entrycache"
	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/trustbundle"
)

// Signer is what the handlers need from the CA manager.
type Signer interface {
	SignX509SVID(ctx context.Context, p ca.X509SVIDParams) ([]*x509.Certificate, error)
	SignJWTSVID(ctx context.Context, id spiffeid.ID, audience []string, ttl time.Duration) (token string, issuedAt, expiresAt time.Time, err error)
	SignDownstreamX509CA(ctx context.Context, pub crypto.PublicKey, ttl time.Duration) ([]*x509.Certificate, error)
}

// Config configures a Service. It must not be modified after New.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	Store       datastore.Store
	// Entries is the in-memory entry index; New loads it (with the nodes)
	// from Store.
	Entries *entrycache.Cache
	// Bundles is the own bundle cache in front of Store (writes to bundles go
	// through it).
	Bundles   *trustbundle.Cache
	CA        Signer
	Attestors []nodeattest.Attestor
	// AgentSVIDTTL is the lifetime of agent SVIDs; zero means 1h.
	AgentSVIDTTL time.Duration
	// DefaultJoinTokenTTL is used when CreateJoinToken asks for none; zero means defaults.JoinTokenTTL (10m).
	DefaultJoinTokenTTL time.Duration
	// DownstreamPolicy decides a child tier's NewDownstreamX509CA request
	// from its CSR and the TTL it prefers (zero: none): it returns the TTL
	// to sign for, or an error that refuses the request with
	// InvalidArgument (downstream.ChildCAPolicy). nil answers the call with
	// Unimplemented: this tier signs no child CAs.
	DownstreamPolicy func(csr *x509.CertificateRequest, preferred time.Duration) (time.Duration, error)
	// Events is Store's event log, read before loading so that polling
	// (RunEventPoller) starts at its last IDs; nil for a store without one.
	Events EventLog
	// PruneBundle removes expired authorities from the own bundle (the CA
	// manager's); nil answers the prune call with Unimplemented.
	PruneBundle func(ctx context.Context, grace time.Duration) (ca.PruneResult, error)
	// K8sPSATClusters is the server's k8s_psat attestor, whose clusters the
	// admin calls read and replace; nil answers them with
	// FailedPrecondition (the server has no k8s_psat attestor).
	K8sPSATClusters K8sPSATClusters
	// Authorities, when set, serves localauthority.v1 (the CA manager);
	// nil answers it with Unimplemented.
	Authorities LocalAuthorities
	// LogLevel, when set, is the level of the server's log handler, which
	// logger.v1 reads and changes; its value at New is the launch level.
	// nil answers logger.v1 with Unimplemented.
	LogLevel *slog.LevelVar
	// PublishUpstream, when set (a downstream tier), publishes a JWT key
	// that a child published here on to this tier's parent first, and
	// returns the parent's set, so keys reach every tier of the tree.
	PublishUpstream func(ctx context.Context, k datastore.JWTAuthority) ([]datastore.JWTAuthority, error)
	// FederationRefreshed, when set, is told the outcome of every attempt
	// to fetch a federated bundle (RefreshFederatedBundle, whether the
	// server's refresher or RefreshBundle asked), so that the server's
	// refresh metrics count both.
	FederationRefreshed func(td spiffeid.TrustDomain, err error)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Rand is used for join tokens and entry IDs; nil means crypto/rand.
	Rand io.Reader
	// Logger; nil discards.
	Logger *slog.Logger
	// Registerer for metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// Service implements the SPIRE server API services.
type Service struct {
	agentv1.UnimplementedAgentServer
	entryv1.UnimplementedEntryServer
	svidv1.UnimplementedSVIDServer
	bundlev1.UnimplementedBundleServer
	trustdomainv1.UnimplementedTrustDomainServer

	td        spiffeid.TrustDomain
	store     datastore.Store
	entries   *entrycache.Cache
	bundles   *trustbundle.Cache
	ca        Signer
	attestors map[string]nodeattest.Attestor
	nodes     *nodeIndex
	cfg       Config
	log       *slog.Logger
	metrics   *metrics

	verified verifyCache
	pollMu   sync.Mutex // guards cursor, lastPollStart and lastPollOK
	cursor   eventCursor
	// lastPollStart is when the latest poll began, lastPollOK whether the
	// latest poll of a catch-up succeeded (see catchUp).
	lastPollStart time.Time
	lastPollOK    bool
	own           *ownWrites
	raw           datastore.Store // the store as given (s.store records own writes)

	writeMu sync.Mutex // serializes entry writes so duplicate checks and the index agree
	health  storeHealth
	fed     lastKnownBundles

	launchLevel slog.Level // Config.LogLevel's value at New (logger.v1)
}

// New loads entries and nodes from the store and returns the service.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.TrustDomain.IsZero() || cfg.Store == nil || cfg.Entries == nil || cfg.Bundles == nil || cfg.CA == nil {
		return nil, errors.New("api: trust domain, store, entry cache, bundle cache and CA are required")
	}
	if cfg.AgentSVIDTTL == 0 {
		cfg.AgentSVIDTTL = defaults.AgentSVIDTTL
	}
	if cfg.DefaultJoinTokenTTL == 0 {
		cfg.DefaultJoinTokenTTL = defaults.JoinTokenTTL
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	own := &ownWrites{}
	s := &Service{
		td:        cfg.TrustDomain,
		store:     recordingStore{Store: cfg.Store, own: own},
		own:       own,
		raw:       cfg.Store,
		entries:   cfg.Entries,
		bundles:   cfg.Bundles,
		ca:        cfg.CA,
		attestors: make(map[string]nodeattest.Attestor),
		nodes:     newNodeIndex(),
		cfg:       cfg,
		log:       log,
		metrics:   newMetrics(cfg.Registerer),
	}
	for _, a := range cfg.Attestors {
		s.attestors[a.Type()] = a
	}
	if cfg.LogLevel != nil {
		s.launchLevel = cfg.LogLevel.Level()
	}
	if err := s.Reload(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload replaces the in-memory entries and nodes with the store's.
func (s *Service) Reload(ctx context.Context) error {
	s.pollMu.Lock()
	defer s.pollMu.Unlock()
	// Read the event cursors first: a change racing with the load is then
	// applied (again) by the next poll rather than lost.
	if ev := s.cfg.Events; ev != nil {
		var err error
		if s.cursor.entry, err = ev.LastEntryEventID(ctx); err != nil {
			return fmt.Errorf("api: reading entry event cursor: %w", err)
		}
		if s.cursor.node, err = ev.LastNodeEventID(ctx); err != nil {
			return fmt.Errorf("api: reading node event cursor: %w", err)
		}
	}
	entries, err := s.store.ListEntries(ctx)
	if err != nil {
		return fmt.Errorf("api: loading entries: %w", err)
	}
	nodes, err := s.store.ListNodes(ctx)
	if err != nil {
		return fmt.Errorf("api: loading nodes: %w", err)
	}
	s.entries.Reset(entries, nodes)
	s.nodes.reset(nodes)
	s.metrics.entries.Set(float64(len(entries)))
	s.metrics.agents.Set(float64(len(nodes)))
	return nil
}

// Register registers every service on g.
func (s *Service) Register(g *grpc.Server) {
	agentv1.RegisterAgentServer(g, s)
	entryv1.RegisterEntryServer(g, s)
	svidv1.RegisterSVIDServer(g, s)
	bundlev1.RegisterBundleServer(g, s)
	trustdomainv1.RegisterTrustDomainServer(g, s)
	localauthorityv1.RegisterLocalAuthorityServer(g, &localAuthority{s: s, la: s.cfg.Authorities})
	loggerv1.RegisterLoggerServer(g, &logger{s: s, level: s.cfg.LogLevel, launch: s.launchLevel})
	g.RegisterService(&pruneServiceDesc, s)
	g.RegisterService(&nodeAttestationServiceDesc, s)
}

func (s *Service) now() time.Time {
	if s.cfg.Now != nil {
		return s.cfg.Now()
	}
	return time.Now()
}

// internalError logs err with the request's method and returns a status that
// does not leak it. A datastore outage is not an internal error: it is
// answered Unavailable (see unavailable).
func (s *Service) internalError(ctx context.Context, what string, err error) error {
	if errors.Is(err, datastore.ErrUnavailable) {
		return s.unavailable(ctx, what, err)
	}
	s.log.ErrorContext(ctx, what, "err", err)
	return status.Errorf(codes.Internal, "%s", what)
}

// localCreds are the admin socket's transport credentials: no handshake, and
// every peer is marked local.
type localCreds struct{}

func (localCreds) ClientHandshake(_ context.Context, _ string, c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c, localAuthInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}, nil
}

func (localCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if _, ok := c.LocalAddr().(*net.UnixAddr); !ok {
		return nil, nil, errors.New("api: local credentials accept only Unix socket connections")
	}
	return c, localAuthInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}, nil
}

func (localCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "arbor-local"}
}

func (c localCreds) Clone() credentials.TransportCredentials { return c }

func (localCreds) OverrideServerName(string) error { return nil }

// metrics are the API's Prometheus collectors.
type metrics struct {
	calls   *prometheus.CounterVec
	entries prometheus.Gauge
	agents  prometheus.Gauge
	svids   *prometheus.CounterVec
	// attestations counts AttestAgent by type and outcome.
	attestations *prometheus.CounterVec
	// datastoreUp is 1 while the datastore answers, 0 during an outage.
	datastoreUp prometheus.Gauge
}

func newMetrics(r prometheus.Registerer) *metrics {
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arbor_api_calls_total", Help: "Server API calls by method and gRPC status code.",
		}, []string{"method", "code"}),
		entries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "arbor_api_entries", Help: "Registration entries held by this server.",
		}),
		agents: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "arbor_api_agents", Help: "Attested agents known to this server.",
		}),
		svids: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arbor_api_svids_issued_total", Help: "SVIDs and CAs signed, by kind (x509, jwt, agent, downstream_ca).",
		}, []string{"kind"}),
		attestations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arbor_node_attestations_total",
			Help: "Node attestations by attestation type (other: a type this server does not accept) and outcome (attested, reattested, invalid, denied, error).",
		}, []string{"type", "outcome"}),
		datastoreUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "arbor_server_datastore_up",
			Help: "1 while the datastore answers, 0 while it cannot be reached (agents are then served from memory and writes refused).",
		}),
	}
	m.datastoreUp.Set(1)
	if r != nil {
		r.MustRegister(m.calls, m.entries, m.agents, m.svids, m.attestations, m.datastoreUp)
	}
	return m
}

func (m *metrics) observe(method string, err error) {
	m.calls.WithLabelValues(method, status.Code(err).String()).Inc()
}
