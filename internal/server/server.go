// Package server runs one arbor server — the process every tier runs — by
// wiring the datastore, the trust bundle cache, the CA manager, the entry index
// and the SPIRE server API onto a TLS listener for agents and downstream
// servers, a Unix admin socket and an HTTP health/metrics listener.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/arborid/arbor/downstream"
	"github.com/arborid/arbor/internal/api"
	"github.com/arborid/arbor/internal/ca"
	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/datastore/postgres"
	"github.com/arborid/arbor/internal/datastore/sqlite"
	"github.com/arborid/arbor/internal/entrycache"
	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/nodeattest/jointoken"
	"github.com/arborid/arbor/internal/nodeattest/x509pop"
	"github.com/arborid/arbor/internal/statelock"
	"github.com/arborid/arbor/internal/trustbundle"
	"github.com/arborid/arbor/internal/unixsock"
	"github.com/arborid/arbor/root"
	"github.com/arborid/arbor/upstream"
)

// Config configures a Server. Zero values are documented per field. It must
// not be modified after New.
type Config struct {
	// Name is the topology node name, used in logs as the tier key.
	Name        string
	TrustDomain spiffeid.TrustDomain
	// ListenAddr is the TCP address of the agent/downstream API (TLS).
	ListenAddr string
	// AdminSocket is the admin API's Unix socket path; "" means <StateDir>/admin.sock.
	AdminSocket string
	// AdminSocketMode is the socket's file mode; zero means 0600.
	AdminSocketMode os.FileMode
	// HealthAddr serves /live, /ready and /metrics; "" disables it.
	HealthAddr string
	// BundleEndpoint, when set, serves the trust domain's SPIFFE bundle
	// endpoint (bundle_endpoint.go).
	BundleEndpoint *BundleEndpointConfig
	// OIDCDiscovery, when set, serves an OIDC discovery document and the
	// JWT signing keys (oidc.go); JWTIssuer defaults to its issuer.
	OIDCDiscovery *OIDCDiscoveryConfig
	// Federations are relationships this tier applies at start: each is
	// created, or updated to these settings, in the datastore (others made
	// through the API stay). The tier fetches the bundle of every
	// relationship its datastore holds, whatever its place in the tree.
	Federations []FederationConfig
	// FederationRefreshFloor is the shortest interval at which the tier
	// refreshes a federated bundle, whatever refresh hint its endpoint
	// serves; zero means 30s (federation_refresh.go).
	FederationRefreshFloor time.Duration
	// StateDir holds the CA keys and state and the SQLite file. Required.
	StateDir string

	// Datastore is "sqlite" (default: this server's own file) or "postgres"
	// (shared by the tier's servers). Both keep an event log, which the
	// server prunes; a shared one is also polled for the other servers'
	// entry, node and bundle changes every PollInterval.
	Datastore string
	// SQLitePath defaults to <StateDir>/datastore.sqlite3.
	SQLitePath string
	// PostgresDSN is required for "postgres".
	PostgresDSN string

	CAKeyType   ca.KeyType
	JWTKeyType  ca.KeyType
	CATTL       time.Duration // zero: 24h
	X509SVIDTTL time.Duration // zero: 1h
	JWTSVIDTTL  time.Duration // zero: 5m
	// AgentSVIDTTL is the agent SVID lifetime; zero means X509SVIDTTL.
	AgentSVIDTTL time.Duration
	// CAKeysInMemory keeps CA keys only in memory (a restart makes a new CA).
	CAKeysInMemory bool
	JWTIssuer      string

	// JoinToken enables the join_token node attestor.
	JoinToken bool
	// DefaultJoinTokenTTL applies to tokens created without a TTL; zero means 10m.
	DefaultJoinTokenTTL time.Duration
	// X509PoP enables the x509pop node attestor when non-nil.
	X509PoP *X509PoPConfig
	// NodeAttestors are further node attestors (aws_iid, k8s_psat, ...),
	// built by the caller from their configuration; each Type at most once,
	// and not join_token or x509pop, which the fields above configure.
	NodeAttestors []nodeattest.Attestor

	// Bounds on the agent port (ListenAddr), which anyone can reach. A
	// stream opened before authenticating (AttestAgent) must send its first
	// message within UnauthenticatedFirstMessageTimeout (zero: 10s) and
	// finish, challenges included, within UnauthenticatedStreamTimeout
	// (zero: 60s), or it ends with DeadlineExceeded; at most
	// MaxUnauthenticatedStreams (zero: 1024) are in flight on the server,
	// further ones get ResourceExhausted. The api.DefaultUnauthenticated*
	// constants say why.
	UnauthenticatedFirstMessageTimeout time.Duration
	UnauthenticatedStreamTimeout       time.Duration
	MaxUnauthenticatedStreams          int
	// HandshakeTimeout bounds a new agent-port connection's TLS and HTTP/2
	// handshake; zero means 10s.
	HandshakeTimeout time.Duration
	// MaxStreamsPerConnection caps the concurrent streams of one agent-port
	// connection; zero means 250.
	MaxStreamsPerConnection uint32

	// PollInterval is how often a server sharing its datastore (postgres)
	// picks up other servers' entry, node and bundle changes; zero means 1s.
	PollInterval time.Duration

	// Upstream is a root tier's CA source: an external PKI's adapter
	// (upstream/disk, vault, awspca) or, when nil, root.SelfSigned. It must
	// be nil when Parent is set.
	Upstream upstream.Authority
	// Parent makes this a downstream tier: the link to its parent tier
	// (downstream.Upstream) mints the CA, takes every JWT key this tier and
	// its children publish, hands the parent's bundle down every
	// ParentBundleSyncInterval (zero means 10s) and says whether the parent
	// answers (the arbor_upstream_reachable gauge). nil for a root tier.
	Parent                   upstream.Parent
	ParentBundleSyncInterval time.Duration

	Logger *slog.Logger // nil: discard
	// LogLevel, when set, is the level of Logger's handler: the admin
	// socket's logger.v1 reads and changes it, and resets it to its value
	// at New. nil leaves logger.v1 Unimplemented.
	LogLevel *slog.LevelVar
	Now      func() time.Time
}

// X509PoPConfig configures the x509pop node attestor.
type X509PoPConfig struct {
	CABundlePaths     []string
	AgentPathTemplate string
}

// Server is a running arbor server.
type Server struct {
	cfg        Config
	log        *slog.Logger
	store      datastore.Store
	events     eventLog // store's event log
	shared     bool     // store is shared with the tier's other servers
	bundles    *trustbundle.Cache
	ca         *ca.Manager
	api        *api.Service
	unauth     *api.UnauthenticatedStreams
	registry   *prometheus.Registry
	fedMetrics *federationMetrics
	health     *health.Server

	lock               *statelock.Lock // StateDir's, from New until Run returns
	agentLis, adminLis net.Listener
	healthLis          net.Listener
	bundleLis          net.Listener
	oidcLis            net.Listener
	ready              chan struct{}
}

// New takes the state directory for this process, opens the datastore,
// initializes the CA and loads the API's indexes. Nothing listens until Run.
//
// The state directory is held (a lock file in it, arbor.lock, with this
// process's PID) from New until Run returns: a second server on it is
// refused with a *statelock.HeldError naming the holder, before it opens
// anything. A Server that New returned must be Run to release it.
func New(ctx context.Context, cfg Config) (_ *Server, err error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("server: trust domain is required")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("server: state directory is required")
	}
	if cfg.ListenAddr == "" {
		return nil, errors.New("server: listen address is required")
	}
	if cfg.Upstream != nil && cfg.Parent != nil {
		return nil, errors.New("server: a tier has an upstream (root) or a parent (downstream), not both")
	}
	if _, isParent := cfg.Upstream.(upstream.Parent); isParent {
		// Only a refusal, never a dispatch: a parent link given as a plain
		// CA source would silently lose JWT publishing and bundle sync.
		return nil, errors.New("server: Upstream is a parent link (a downstream tier's); set it as Parent")
	}
	if oc := cfg.OIDCDiscovery; oc != nil {
		if err := oc.validate(); err != nil {
			return nil, err
		}
	}
	if be := cfg.BundleEndpoint; be != nil {
		if err := be.validate(); err != nil {
			return nil, err
		}
		if be.Profile == ProfileHTTPSWeb {
			if _, err := loadKeyPair(be.CertFile, be.KeyFile); err != nil {
				return nil, fmt.Errorf("server: bundle endpoint: %w", err)
			}
		}
	}
	if cfg.HandshakeTimeout < 0 {
		return nil, fmt.Errorf("server: handshake timeout %v is negative", cfg.HandshakeTimeout)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("server: creating state directory: %w", err)
	}
	lock, err := statelock.Acquire(lockPath(cfg.StateDir), stateWhat(cfg.StateDir), "server "+cfg.Name)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			lock.Release()
		}
	}()
	if cfg.AdminSocket == "" {
		cfg.AdminSocket = filepath.Join(cfg.StateDir, "admin.sock")
	}
	if cfg.AdminSocketMode == 0 {
		cfg.AdminSocketMode = 0o600
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("tier", cfg.Name)
	s := &Server{cfg: cfg, log: log, lock: lock, registry: prometheus.NewRegistry(), ready: make(chan struct{})}
	s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.fedMetrics = newFederationMetrics(s.registry)
	s.unauth, err = api.NewUnauthenticatedStreams(api.UnauthenticatedConfig{
		FirstMessageTimeout: cfg.UnauthenticatedFirstMessageTimeout,
		Timeout:             cfg.UnauthenticatedStreamTimeout,
		MaxStreams:          cfg.MaxUnauthenticatedStreams,
		Logger:              log,
		Registerer:          s.registry,
	})
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}

	s.store, s.events, s.shared, err = openStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			s.store.Close()
		}
	}()
	s.bundles = trustbundle.New(s.store, cfg.TrustDomain)
	if err := s.bundles.Refresh(ctx); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}

	source := cfg.Upstream
	var jwtPublisher upstream.JWTPublisher
	switch {
	case cfg.Parent != nil:
		source, jwtPublisher = cfg.Parent, cfg.Parent
	case source == nil:
		source = &root.SelfSigned{TrustDomain: cfg.TrustDomain, Now: cfg.Now}
	}
	caDir := filepath.Join(cfg.StateDir, "ca")
	if cfg.CAKeysInMemory {
		caDir = ""
	}
	s.ca, err = ca.New(ca.Config{
		TrustDomain:        cfg.TrustDomain,
		Upstream:           source,
		SignedUpstream:     cfg.Upstream != nil || cfg.Parent != nil,
		JWTPublisher:       jwtPublisher,
		ChooseDownstreamCA: downstream.ChooseSigningCA,
		Bundles:            s.bundles,
		KeyType:            cfg.CAKeyType,
		JWTKeyType:         cfg.JWTKeyType,
		CATTL:              cfg.CATTL,
		X509SVIDTTL:        cfg.X509SVIDTTL,
		JWTSVIDTTL:         cfg.JWTSVIDTTL,
		Dir:                caDir,
		JWTIssuer:          jwtIssuer(cfg),
		Now:                cfg.Now,
		Logger:             log,
	})
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	if err := s.ca.Init(ctx); err != nil {
		return nil, fmt.Errorf("server: initializing CA: %w", err)
	}

	attestors, err := buildAttestors(cfg, s.store)
	if err != nil {
		return nil, err
	}
	agentTTL := cfg.AgentSVIDTTL
	if agentTTL == 0 {
		agentTTL = s.ca.X509SVIDTTL()
	}
	var publish func(context.Context, datastore.JWTAuthority) ([]datastore.JWTAuthority, error)
	if cfg.Parent != nil {
		publish = ca.PublishJWTKeyThrough(cfg.Parent)
	}
	s.api, err = api.New(ctx, api.Config{
		TrustDomain:         cfg.TrustDomain,
		Store:               s.store,
		Entries:             entrycache.New(cfg.TrustDomain),
		Bundles:             s.bundles,
		CA:                  s.ca,
		Attestors:           attestors,
		AgentSVIDTTL:        agentTTL,
		DefaultJoinTokenTTL: cfg.DefaultJoinTokenTTL,
		PublishUpstream:     publish,
		FederationRefreshed: s.fedMetrics.refreshed,
		DownstreamPolicy:    downstream.ChildCAPolicy(cfg.TrustDomain, ca.DefaultCATTL, s.ca.CATTL()),
		Events:              s.events,
		PruneBundle:         s.ca.PruneBundle,
		Authorities:         s.ca,
		LogLevel:            cfg.LogLevel,
		K8sPSATClusters:     k8sPSATOf(attestors),
		Now:                 cfg.Now,
		Logger:              log,
		Registerer:          s.registry,
	})
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	if err := s.applyFederations(ctx); err != nil {
		return nil, err
	}
	s.health = health.NewServer()
	s.registerCAMetrics()
	return s, nil
}

// registerCAMetrics exposes how long the tier can keep issuing: the active
// CA's and JWT key's remaining lifetime, and whether the next ones are ready.
func (s *Server) registerCAMetrics() {
	remaining := func(t func(ca.Status) time.Time) func() float64 {
		return func() float64 {
			st := s.ca.Status()
			at := t(st)
			if at.IsZero() {
				return 0
			}
			return at.Sub(s.now()).Seconds()
		}
	}
	if r := s.cfg.Parent; r != nil {
		s.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "arbor_upstream_reachable",
			Help: "1 when the last call to the parent (or upstream server) succeeded, else 0.",
		}, func() float64 {
			if r.Reachable() {
				return 1
			}
			return 0
		}))
	}
	s.registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "arbor_ca_x509_remaining_seconds",
			Help: "Remaining lifetime of the active X.509 CA's chain (its earliest NotAfter): how long this tier keeps issuing if its upstream stays unreachable; no X509-SVID outlives it.",
		}, remaining(func(st ca.Status) time.Time { return st.X509NotAfter })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "arbor_ca_x509_capped",
			Help: "1 when the upstream limits the active X.509 CA (returned it shorter than ca_ttl, capped at its own expiry, or cannot yet sign a successor that outlives it) and the tier keeps asking for a longer one, else 0.",
		}, func() float64 {
			if s.ca.Status().X509Capped {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "arbor_ca_jwt_remaining_seconds",
			Help: "Remaining lifetime of the active JWT signing key.",
		}, remaining(func(st ca.Status) time.Time {
			if st.JWTKey == nil {
				return time.Time{}
			}
			return st.JWTKey.NotAfter
		})),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "arbor_ca_next_x509_prepared",
			Help: "1 when the next X.509 CA is prepared and published, else 0.",
		}, func() float64 {
			if s.ca.Status().NextX509CA != nil {
				return 1
			}
			return 0
		}),
	)
}

// eventLog is what the server and the API use of a datastore's event log.
type eventLog interface {
	api.EventLog
	PruneEvents(ctx context.Context, before time.Time) (int, error)
}

// openStore opens the datastore cfg names and says what it is: its event
// log and whether the tier's other servers share it. This is the one place
// that looks at the datastore kind.
func openStore(ctx context.Context, cfg Config) (_ datastore.Store, _ eventLog, shared bool, _ error) {
	switch cfg.Datastore {
	case "", "sqlite":
		path := cfg.SQLitePath
		if path == "" {
			path = filepath.Join(cfg.StateDir, "datastore.sqlite3")
		}
		st, err := sqlite.Open(ctx, path, sqlite.WithNow(nowFunc(cfg.Now)))
		if err != nil {
			return nil, nil, false, fmt.Errorf("server: opening SQLite datastore %s: %w", path, err)
		}
		return st, st, false, nil
	case "postgres":
		if cfg.PostgresDSN == "" {
			return nil, nil, false, errors.New("server: postgres datastore needs a DSN")
		}
		st, err := postgres.Open(ctx, cfg.PostgresDSN, postgres.WithNow(nowFunc(cfg.Now)))
		if err != nil {
			return nil, nil, false, fmt.Errorf("server: opening PostgreSQL datastore: %w", err)
		}
		return st, st, true, nil
	}
	return nil, nil, false, fmt.Errorf("server: unknown datastore %q (want sqlite or postgres)", cfg.Datastore)
}

func nowFunc(now func() time.Time) func() time.Time {
	if now == nil {
		return time.Now
	}
	return now
}

func buildAttestors(cfg Config, store datastore.Store) ([]nodeattest.Attestor, error) {
	var out []nodeattest.Attestor
	if cfg.JoinToken {
		a, err := jointoken.New(jointoken.Config{TrustDomain: cfg.TrustDomain, Tokens: store, Now: cfg.Now})
		if err != nil {
			return nil, fmt.Errorf("server: join_token attestor: %w", err)
		}
		out = append(out, a)
	}
	if p := cfg.X509PoP; p != nil {
		roots, err := x509pop.LoadCertificates(p.CABundlePaths...)
		if err != nil {
			return nil, fmt.Errorf("server: x509pop attestor: %w", err)
		}
		a, err := x509pop.New(x509pop.Config{TrustDomain: cfg.TrustDomain, TrustRoots: roots, AgentPathTemplate: p.AgentPathTemplate, Now: cfg.Now})
		if err != nil {
			return nil, fmt.Errorf("server: x509pop attestor: %w", err)
		}
		out = append(out, a)
	}
	seen := map[string]bool{}
	for _, a := range out {
		seen[a.Type()] = true
	}
	for _, a := range cfg.NodeAttestors {
		if a == nil || a.Type() == "" {
			return nil, errors.New("server: a node attestor without a type")
		}
		if seen[a.Type()] {
			return nil, fmt.Errorf("server: node attestor %q configured twice", a.Type())
		}
		seen[a.Type()] = true
		out = append(out, a)
	}
	return out, nil
}

// k8sPSATOf is the k8s_psat attestor among attestors whose clusters can be
// replaced at runtime, or nil.
func k8sPSATOf(attestors []nodeattest.Attestor) api.K8sPSATClusters {
	for _, a := range attestors {
		if k, ok := a.(api.K8sPSATClusters); ok && a.Type() == "k8s_psat" {
			return k
		}
	}
	return nil
}

// CA returns the server's CA manager.
func (s *Server) CA() *ca.Manager { return s.ca }

// Bundles returns the server's own-bundle cache.
func (s *Server) Bundles() *trustbundle.Cache { return s.bundles }

// AgentAddr returns the agent API's bound address (after Listen).
func (s *Server) AgentAddr() net.Addr { return s.agentLis.Addr() }

// HealthAddr returns the health listener's bound address, or nil.
func (s *Server) HealthAddr() net.Addr {
	if s.healthLis == nil {
		return nil
	}
	return s.healthLis.Addr()
}

// AdminSocket returns the admin socket path.
func (s *Server) AdminSocket() string { return s.cfg.AdminSocket }

// Ready is closed once every listener serves.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Listen binds every listener. Run calls it when it has not been called.
func (s *Server) Listen() error {
	if s.agentLis != nil {
		return nil
	}
	var err error
	s.agentLis, err = net.Listen("tcp", s.cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("server: listening on %s: %w", s.cfg.ListenAddr, err)
	}
	// A socket another process answers on is refused; a stale one replaced;
	// closing it removes the file only while it is still this one.
	s.adminLis, err = unixsock.Listen(s.cfg.AdminSocket)
	if err != nil {
		s.agentLis.Close()
		return fmt.Errorf("server: admin API: %w", err)
	}
	if err := os.Chmod(s.cfg.AdminSocket, s.cfg.AdminSocketMode); err != nil {
		s.agentLis.Close()
		s.adminLis.Close()
		return fmt.Errorf("server: setting admin socket mode: %w", err)
	}
	if s.cfg.HealthAddr != "" {
		s.healthLis, err = net.Listen("tcp", s.cfg.HealthAddr)
		if err != nil {
			s.agentLis.Close()
			s.adminLis.Close()
			return fmt.Errorf("server: listening on health address %s: %w", s.cfg.HealthAddr, err)
		}
	}
	if oc := s.cfg.OIDCDiscovery; oc != nil {
		s.oidcLis, err = net.Listen("tcp", oc.ListenAddr)
		if err != nil {
			s.agentLis.Close()
			s.adminLis.Close()
			if s.healthLis != nil {
				s.healthLis.Close()
			}
			return fmt.Errorf("server: listening on OIDC discovery address %s: %w", oc.ListenAddr, err)
		}
	}
	if be := s.cfg.BundleEndpoint; be != nil {
		s.bundleLis, err = net.Listen("tcp", be.ListenAddr)
		if err != nil {
			s.agentLis.Close()
			s.adminLis.Close()
			if s.healthLis != nil {
				s.healthLis.Close()
			}
			return fmt.Errorf("server: listening on bundle endpoint address %s: %w", be.ListenAddr, err)
		}
	}
	return nil
}

// lockPath is the lock file of a state directory.
func lockPath(stateDir string) string { return filepath.Join(stateDir, statelock.FileName) }

// stateWhat is how refusals name a state directory.
func stateWhat(stateDir string) string { return "state directory " + stateDir }

// CheckStateDir reports, without taking it, whether another process holds
// the state directory (a *statelock.HeldError), so that a command can
// refuse before the slow part of its start (a downstream tier waits for its
// agent's SVID before New).
func CheckStateDir(stateDir string) error {
	return statelock.Check(lockPath(stateDir), stateWhat(stateDir))
}

// tlsConfig serves the server SVID. Client certificates are optional
// (attestation and GetBundle need none) and are verified against the own
// bundle by the API's interceptor, which answers a bad one with a precise
// gRPC status instead of a failed handshake.
func (s *Server) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: s.ca.ServerCertificate,
		ClientAuth:     tls.RequestClientCert,
	}
}

// Transport limits of the agent port.
const (
	// defaultHandshakeTimeout replaces grpc's 120s, which let a peer that
	// never completes its handshake hold a connection for two minutes; a
	// TLS handshake takes one or two round trips.
	defaultHandshakeTimeout = 10 * time.Second
	// defaultMaxStreamsPerConnection is Go's own HTTP/2 server default
	// (grpc's is unlimited): an agent or a downstream server has a handful
	// of calls in flight, and one connection cannot take every
	// unauthenticated slot.
	defaultMaxStreamsPerConnection = 250
	// maxRecvMsgSize is grpc's default, stated because it is what one
	// stream can make the server buffer. Authenticated batches need it
	// (BatchCreateEntry, the entry IDs of SyncAuthorizedEntries); an
	// unauthenticated sender must also push it within the first-message
	// bound.
	maxRecvMsgSize = 4 << 20
	// connReadBuffer is each agent connection's read buffer, in place of
	// grpc's 32 KiB: agent calls are small, TLS already buffers a record,
	// and with 10k agents connected the default alone held 320 MiB. The
	// write buffer is shared (taken from a pool for a write and returned
	// after the flush) instead of 32 KiB kept per connection.
	connReadBuffer = 4 << 10
	// agentWindow is the agent port's receive window, per stream and per
	// connection, fixed. With grpc's default dynamic window the server
	// answers nearly every request's DATA frame with a window update and a
	// bandwidth-probing PING, and then wakes again to read the client's
	// ACK: an extra exchange of frames per agent call, for a probe that
	// only pays off for large uploads on long links. Agents send small
	// requests (a batch of CSRs is the largest): 1 MiB lets any of them
	// arrive without waiting for a window update on most links, and a
	// larger one is flow-controlled in steps rather than refused (up to
	// maxRecvMsgSize in one message).
	agentWindow = 1 << 20
	// maxConnectionIdle sends GOAWAY to a connection without a stream for
	// this long (clients reconnect when they next call); agents and
	// downstream servers call every few seconds.
	maxConnectionIdle = 5 * time.Minute
)

// Run serves until ctx ends, then stops gracefully.
func (s *Server) Run(ctx context.Context) error {
	defer s.lock.Release() // last: after the datastore is closed
	if err := s.Listen(); err != nil {
		s.store.Close()
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	keep := keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}
	handshake := s.cfg.HandshakeTimeout
	if handshake == 0 {
		handshake = defaultHandshakeTimeout
	}
	perConn := s.cfg.MaxStreamsPerConnection
	if perConn == 0 {
		perConn = defaultMaxStreamsPerConnection
	}
	agentSrv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(s.tlsConfig())),
		grpc.UnaryInterceptor(s.api.UnaryInterceptor),
		// Unauthenticated streams are admitted (or refused) before the
		// transport starts a goroutine for them, and bounded before
		// anything else, authorization included, runs for them.
		grpc.InTapHandle(s.unauth.TapHandle),
		grpc.ChainStreamInterceptor(s.unauth.StreamInterceptor, s.api.StreamInterceptor),
		grpc.ConnectionTimeout(handshake),
		grpc.MaxConcurrentStreams(perConn),
		grpc.MaxRecvMsgSize(maxRecvMsgSize),
		grpc.ReadBufferSize(connReadBuffer),
		grpc.SharedWriteBuffer(true),
		// A pool of stream goroutines, one per CPU, whose stacks have
		// already grown to the handlers' depth, instead of a new goroutine
		// per call (grpc starts one when every worker is busy).
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
		grpc.StaticStreamWindowSize(agentWindow),
		grpc.StaticConnWindowSize(agentWindow),
		grpc.KeepaliveEnforcementPolicy(keep),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 2 * time.Minute, MaxConnectionIdle: maxConnectionIdle}),
	)
	s.api.Register(agentSrv)
	healthpb.RegisterHealthServer(agentSrv, s.health)

	adminSrv := grpc.NewServer(
		grpc.Creds(api.LocalCredentials()),
		grpc.UnaryInterceptor(s.api.UnaryInterceptor),
		grpc.StreamInterceptor(s.api.StreamInterceptor),
	)
	s.api.Register(adminSrv)
	healthpb.RegisterHealthServer(adminSrv, s.health)

	var httpSrv *http.Server
	if s.healthLis != nil {
		mux := http.NewServeMux()
		mux.HandleFunc("/live", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusOK)
			fmt.Fprintln(w, "live")
		})
		mux.HandleFunc("/ready", func(w http.ResponseWriter, r *http.Request) {
			if err := s.checkReady(); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, "ready")
			// A datastore outage leaves the server ready: it serves agents
			// from memory (syncs, SVIDs, bundles), which is what a load
			// balancer routes to it for; taking every replica out of
			// rotation would stop issuance too. Writes are answered
			// Unavailable; this line and arbor_server_datastore_up say so.
			if h := s.api.DatastoreHealth(); !h.Up {
				fmt.Fprintf(w, "datastore: unavailable since %s; serving agents from memory, refusing writes\n", h.Since.UTC().Format(time.RFC3339))
			}
		})
		mux.Handle("/metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
		httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	}

	var bundleSrv *http.Server
	if s.bundleLis != nil {
		var err error
		if bundleSrv, err = s.newBundleEndpoint(*s.cfg.BundleEndpoint); err != nil {
			s.agentLis.Close()
			s.adminLis.Close()
			s.bundleLis.Close()
			if s.healthLis != nil {
				s.healthLis.Close()
			}
			s.store.Close()
			return err
		}
	}

	var wg sync.WaitGroup
	errc := make(chan error, 6)
	wg.Go(func() {
		if err := agentSrv.Serve(s.agentLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			errc <- fmt.Errorf("server: agent API: %w", err)
		}
	})
	wg.Go(func() {
		if err := adminSrv.Serve(s.adminLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			errc <- fmt.Errorf("server: admin API: %w", err)
		}
	})
	if httpSrv != nil {
		wg.Go(func() {
			if err := httpSrv.Serve(s.healthLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("server: health listener: %w", err)
			}
		})
	}
	if bundleSrv != nil {
		wg.Go(func() {
			if err := bundleSrv.ServeTLS(s.bundleLis, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("server: bundle endpoint: %w", err)
			}
		})
	}
	var oidcSrv *http.Server
	if s.oidcLis != nil {
		oidcSrv = s.newOIDCDiscovery(*s.cfg.OIDCDiscovery)
		wg.Go(func() {
			if err := oidcSrv.ServeTLS(s.oidcLis, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("server: OIDC discovery: %w", err)
			}
		})
	}
	wg.Go(func() {
		if err := s.ca.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			errc <- fmt.Errorf("server: CA: %w", err)
		}
	})
	wg.Go(func() { s.pruneTokens(ctx) })
	// Every tier refreshes the relationships it holds (the root's by
	// default; a tier named by fetched_by, or given one through the API,
	// its own); with none it only re-reads the empty list.
	wg.Go(func() { s.runFederationRefresh(ctx) })
	if s.cfg.Parent != nil {
		every := s.cfg.ParentBundleSyncInterval
		if every == 0 {
			every = 10 * time.Second
		}
		wg.Go(func() { s.runParentBundleSync(ctx, every) })
	}
	if s.shared {
		every := s.cfg.PollInterval
		if every == 0 {
			every = time.Second
		}
		wg.Go(func() { s.api.RunEventPoller(ctx, every) })
		wg.Go(func() { s.refreshBundle(ctx, every) })
	}

	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	close(s.ready)
	s.log.Info("server ready", "trust_domain", s.cfg.TrustDomain.Name(), "listen", s.agentLis.Addr().String(),
		"admin_socket", s.cfg.AdminSocket, "datastore", datastoreName(s.cfg))

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		s.log.Error("server failed", "err", runErr)
	}
	cancel()
	s.health.Shutdown()
	s.log.Info("server stopping")
	stopped := make(chan struct{})
	go func() {
		agentSrv.GracefulStop()
		adminSrv.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		agentSrv.Stop()
		adminSrv.Stop()
		<-stopped
	}
	for _, hs := range []*http.Server{httpSrv, bundleSrv, oidcSrv} {
		if hs != nil {
			sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
			hs.Shutdown(sctx)
			scancel()
		}
	}
	wg.Wait()
	s.adminLis.Close() // if the gRPC server has not: removes the socket if it is still ours
	if err := s.store.Close(); err != nil && runErr == nil {
		runErr = fmt.Errorf("server: closing datastore: %w", err)
	}
	return runErr
}

// jwtIssuer is the iss of JWT-SVIDs: the configured one, else the OIDC
// discovery provider's issuer (so its relying parties verify them).
func jwtIssuer(cfg Config) string {
	if cfg.JWTIssuer == "" && cfg.OIDCDiscovery != nil {
		return cfg.OIDCDiscovery.Issuer
	}
	return cfg.JWTIssuer
}

func datastoreName(cfg Config) string {
	if cfg.Datastore == "" {
		return "sqlite"
	}
	return cfg.Datastore
}

func (s *Server) checkReady() error {
	cert, _ := s.ca.X509CA()
	if cert == nil {
		return errors.New("no active X.509 CA")
	}
	if s.now().After(cert.NotAfter) {
		return errors.New("X.509 CA expired")
	}
	return nil
}

func (s *Server) now() time.Time {
	if s.cfg.Now != nil {
		return s.cfg.Now()
	}
	return time.Now()
}

// SyncParentBundle fetches the parent's bundle and merges what it adds into
// the own one, returning how many authorities it added; a root tier has
// nothing to sync.
func (s *Server) SyncParentBundle(ctx context.Context) (int, error) {
	if s.cfg.Parent == nil {
		return 0, nil
	}
	b, err := s.cfg.Parent.FetchBundle(ctx)
	if err != nil {
		return 0, err
	}
	n, err := s.ca.MergeParentBundle(ctx, b)
	if err != nil {
		return n, err
	}
	if b.Federated != nil {
		if err := s.storeFederatedFromParent(ctx, b.Federated); err != nil {
			return n, err
		}
	}
	return n, nil
}

// runParentBundleSync calls SyncParentBundle every interval until ctx ends,
// logging failures once per change of state: the tier keeps serving from
// its current CA while the parent is away.
func (s *Server) runParentBundleSync(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	failing := false
	for {
		if _, err := s.SyncParentBundle(ctx); err != nil {
			if !failing && ctx.Err() == nil {
				s.log.Warn("parent unreachable; serving from the current CA", "err", err)
			}
			failing = true
		} else if failing {
			s.log.Info("parent reachable again")
			failing = false
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// refreshBundle re-reads the own bundle so that authorities added by other
// servers sharing the datastore are trusted here too.
func (s *Server) refreshBundle(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// Logged once per failing stretch: during a datastore outage the
			// event poller reports the outage, and this keeps the bundle it
			// holds.
			err := s.bundles.Refresh(ctx)
			switch {
			case err != nil && !failing && ctx.Err() == nil:
				s.log.Warn("refreshing bundle from datastore failing; keeping the one held", "err", err)
				failing = true
			case err == nil && failing:
				s.log.Info("refreshing bundle from datastore recovered")
				failing = false
			}
		}
	}
}

// eventRetention is how long entry and node events are kept for servers
// sharing the datastore to catch up on.
const eventRetention = time.Hour

// pruneTokens deletes expired join tokens and old events every minute.
func (s *Server) pruneTokens(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n, err := s.store.PruneJoinTokens(ctx, s.now())
			if err != nil && ctx.Err() == nil {
				s.log.Warn("pruning join tokens", "err", err)
			} else if n > 0 {
				s.log.Info("pruned expired join tokens", "count", n)
			}
			if s.events != nil {
				if _, err := s.events.PruneEvents(ctx, s.now().Add(-eventRetention)); err != nil && ctx.Err() == nil {
					s.log.Warn("pruning datastore events", "err", err)
				}
			}
		}
	}
}
