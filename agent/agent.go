package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/serverconn"
	"github.com/arborid/arbor/internal/statelock"
	"github.com/arborid/arbor/internal/unixsock"
)

// Agent is a node agent. Create it with New and start it with Run.
type Agent struct {
	cfg Config
	log *slog.Logger

	// addrs are the tier's servers; tracker says which one answered last.
	addrs    []string
	tracker  *serverconn.Tracker
	serverMu sync.Mutex // orders serverChanged's metric updates

	node      atomic.Pointer[nodeState]
	rootsView atomic.Pointer[x509bundle.Bundle]
	conns     connHolder
	cache     *cache
	jwts      *jwtCache
	noSync    atomic.Bool // the server lacks SyncAuthorizedEntries

	registry *prometheus.Registry
	metrics  *metrics

	// renewHold, when set, is the earliest next agent SVID renewal: the
	// last one did not end later than the SVID it replaced (the server's
	// CA expires first and caps it), so asking again at once would only
	// repeat it. Only the loop goroutine reads and writes it.
	renewHold time.Time
	// selfTainted is set by a sync that found the agent SVID chaining to
	// a tainted authority (taint.go): the next step renews it at once.
	selfTainted atomic.Bool
	// taints memoizes which cached SVIDs chain to a tainted authority.
	taints taintCheck

	// tokenFromFile is the join token read from Config.JoinTokenFile.
	tokenFromFile string

	connected  atomic.Bool
	banned     atomic.Bool
	warnedOnce atomic.Bool
	running    atomic.Bool
	readyOnce  sync.Once
	ready      chan struct{}
}

// New checks cfg and builds an agent; nothing is read, dialed or listened
// on until Run.
func New(cfg Config) (*Agent, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.SyncInterval == 0 {
		cfg.SyncInterval = DefaultSyncInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	addrs, err := cfg.serverAddrs()
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a := &Agent{
		cfg:      cfg,
		log:      log,
		addrs:    addrs,
		tracker:  &serverconn.Tracker{},
		cache:    newCache(),
		jwts:     newJWTCache(),
		registry: reg,
		metrics:  newMetrics(reg),
		ready:    make(chan struct{}),
	}
	a.tracker.OnChange = a.serverChanged
	return a, nil
}

// serverChanged records that calls now reach the server at to (from, ""
// for the first): a log line when the agent moved, and the metrics.
func (a *Agent) serverChanged(from, to string) {
	if from != "" {
		a.log.Warn("moved to another server of the tier", "from", from, "to", to)
		a.metrics.serverChanges.Inc()
	}
	// Concurrent calls may report in any order: show the tracker's latest.
	a.serverMu.Lock()
	defer a.serverMu.Unlock()
	a.metrics.server.Reset()
	if cur := a.tracker.Current(); cur != "" {
		a.metrics.server.WithLabelValues(cur).Set(1)
	}
}

// server names the server in use for logs: the last one that answered, or
// the configured list before any did.
func (a *Agent) server() string {
	if cur := a.tracker.Current(); cur != "" {
		return cur
	}
	return strings.Join(a.addrs, ",")
}

// Server returns the address (ip:port) of the server the agent's latest
// successful call reached, "" before any.
func (a *Agent) Server() string { return a.tracker.Current() }

func (a *Agent) now() time.Time { return a.cfg.Now() }

// Ready is closed once the agent has attested and completed its first sync.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// SPIFFEID returns the agent's SPIFFE ID, or the zero ID before attestation.
func (a *Agent) SPIFFEID() spiffeid.ID {
	if st := a.node.Load(); st != nil {
		return st.SVID.ID
	}
	return spiffeid.ID{}
}

// Run attests (unless a stored agent SVID is still good), serves the
// Workload API and the health endpoints, and syncs until ctx is done. It
// returns nil when ctx ends and an error when the agent cannot continue:
// banned, evicted without a way to re-attest, or refused attestation.
//
// Run first takes the data directory for this process (a lock file in it,
// held until Run returns) and checks that no other process serves the
// Workload API socket; either refusal (a *statelock.HeldError, a
// *unixsock.InUseError) comes before anything is read, attested or bound.
func (a *Agent) Run(ctx context.Context) error {
	lock, err := statelock.Acquire(filepath.Join(a.cfg.DataDir, statelock.FileName), "data directory "+a.cfg.DataDir, "agent")
	if err != nil {
		return err
	}
	defer lock.Release()
	// Checked again when binding; checked here so that an agent started on
	// another's socket does not spend a join token first.
	if err := unixsock.Check(a.cfg.SocketPath); err != nil {
		return fmt.Errorf("agent: workload API: %w", err)
	}
	a.running.Store(true)
	defer a.running.Store(false)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	if a.cfg.HealthAddr != "" {
		lis, err := net.Listen("tcp", a.cfg.HealthAddr)
		if err != nil {
			return fmt.Errorf("agent: health listener: %w", err)
		}
		srv := &http.Server{Handler: a.healthHandler(), ReadHeaderTimeout: 10 * time.Second}
		wg.Add(2)
		go func() { defer wg.Done(); _ = srv.Serve(lis) }()
		go func() {
			defer wg.Done()
			<-ctx.Done()
			sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
			defer c()
			_ = srv.Shutdown(sctx)
		}()
	}

	if err := a.start(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer a.conns.swap(nil)

	wl, err := a.listenWorkloadAPI()
	if err != nil {
		return err
	}
	wg.Add(2)
	go func() { defer wg.Done(); _ = wl.srv.Serve(wl.lis) }()
	go func() {
		defer wg.Done()
		<-ctx.Done()
		wl.srv.Stop() // closes the listener, which removes the socket if it is still ours
	}()
	a.log.Info("agent started", "spiffe_id", a.SPIFFEID().String(), "server", a.server(), "socket", a.cfg.SocketPath)
	return a.loop(ctx)
}

// start loads the stored node state or attests.
func (a *Agent) start(ctx context.Context) error {
	st, err := loadState(a.cfg.DataDir, a.cfg.TrustDomain)
	switch {
	case err == nil && a.now().Before(st.SVID.Certificates[0].NotAfter):
		a.node.Store(st)
		a.rootsView.Store(x509bundle.FromX509Authorities(a.cfg.TrustDomain, st.Bundle))
		a.log.Info("using stored agent SVID", "spiffe_id", st.SVID.ID.String())
		return a.connect(st)
	case err == nil:
		a.log.Warn("stored agent SVID has expired; attesting again", "spiffe_id", st.SVID.ID.String())
		return a.attestWithRetry(ctx, st.Bundle)
	case errors.Is(err, errNoState):
		roots, err := a.bootstrapBundle(ctx)
		if err != nil {
			return err
		}
		return a.attestWithRetry(ctx, roots)
	default:
		return err
	}
}

// attestWithRetry attests, retrying while the server is unreachable.
func (a *Agent) attestWithRetry(ctx context.Context, roots []*x509.Certificate) error {
	b := a.newBackoff()
	for {
		st, err := a.attest(ctx, roots)
		if err == nil {
			if err := a.install(st); err != nil {
				return err
			}
			a.spendTokenFile()
			a.log.Info("node attested", "spiffe_id", st.SVID.ID.String(), "reattestable", st.Reattestable)
			return nil
		}
		if errors.Is(err, ErrBanned) || errors.Is(err, errAttestationDenied) || !isTransient(err) {
			a.log.Error("node attestation failed", "err", err)
			return err
		}
		a.logDisconnected(err)
		if !sleepCtx(ctx, b.next()) {
			return ctx.Err()
		}
	}
}

// isTransient reports whether retrying err may succeed.
func isTransient(err error) bool {
	return errors.Is(err, errUnavailable)
}

// loop syncs until ctx ends or the agent must stop.
func (a *Agent) loop(ctx context.Context) error {
	b := a.newBackoff()
	for {
		err := a.step(ctx)
		var wait time.Duration
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil:
			if !a.connected.Swap(true) {
				a.log.Info("connected to the server", "server", a.server())
			}
			a.metrics.connected.Set(1)
			a.readyOnce.Do(func() { close(a.ready) })
			b.reset()
			wait = a.nextWait()
		case errors.Is(err, ErrBanned):
			a.banned.Store(true)
			a.log.Error("the server banned this agent; stopping (an operator must evict it before it can attest again)", "spiffe_id", a.SPIFFEID().String())
			return err
		case errors.Is(err, ErrCannotReattest), errors.Is(err, errAttestationDenied):
			a.banned.Store(true)
			a.log.Error("the server no longer accepts this agent and it cannot attest again; stopping", "spiffe_id", a.SPIFFEID().String(), "err", err)
			return err
		default:
			a.metrics.syncFailures.Inc()
			a.logDisconnected(err)
			wait = b.next()
		}
		if !sleepCtx(ctx, wait) {
			return nil
		}
	}
}

// step renews the agent SVID when due and syncs once, re-attesting when the
// server requires it and the attestor can.
func (a *Agent) step(ctx context.Context) error {
	if now := a.now(); !now.Before(a.agentRenewAt()) {
		before := a.node.Load().SVID.Certificates[0].NotAfter
		if err := a.renewAgent(ctx); err != nil {
			if err = a.handleReattest(ctx, err); err != nil {
				return err
			}
		}
		a.renewHold = time.Time{}
		a.selfTainted.Store(false)
		if after := a.node.Load().SVID.Certificates[0].NotAfter; !after.After(before) {
			// Capped by the server's CA: wait a sync interval for it to
			// rotate rather than renewing in a tight loop.
			a.renewHold = now.Add(a.cfg.SyncInterval)
		}
	}
	err := a.syncOnce(ctx)
	if err == nil {
		return nil
	}
	if err = a.handleReattest(ctx, err); err != nil {
		return err
	}
	return a.syncOnce(ctx)
}

// handleReattest re-attests after ErrMustReattest when the attestor can,
// and otherwise turns it into ErrCannotReattest (dropping the stored SVID
// of an evicted agent, so that a restart with a new join token attests).
func (a *Agent) handleReattest(ctx context.Context, err error) error {
	if !errors.Is(err, ErrMustReattest) {
		return err
	}
	if a.canReattest() {
		a.log.Warn("server requires re-attestation; attesting again", "reason", err)
		return a.reattest(ctx)
	}
	if evicted(err) {
		if rerr := removeState(a.cfg.DataDir); rerr != nil {
			a.log.Error("removing the evicted agent's SVID", "err", rerr)
		}
	}
	return fmt.Errorf("%w: %w", ErrCannotReattest, err)
}

func (a *Agent) logDisconnected(err error) {
	if a.connected.Swap(false) || !a.warnedOnce.Swap(true) {
		a.log.Warn("server unreachable; serving cached SVIDs and retrying", "server", a.server(), "err", err)
	}
	a.metrics.connected.Set(0)
}

// nextWait is the time until the next sync: the sync interval, or sooner
// when an SVID (or the agent's own) reaches half its lifetime first.
func (a *Agent) nextWait() time.Duration {
	now := a.now()
	wait := a.cfg.SyncInterval
	v, _ := a.cache.load()
	if t, ok := v.nextDue(); ok {
		wait = min(wait, t.Sub(now))
	}
	wait = min(wait, a.agentRenewAt().Sub(now))
	return max(wait, min(100*time.Millisecond, a.cfg.SyncInterval))
}

// agentRenewAt is when the agent SVID is due for renewal: at its half-life,
// but not before renewHold.
func (a *Agent) agentRenewAt() time.Time {
	if a.selfTainted.Load() {
		return time.Time{}
	}
	leaf := a.node.Load().SVID.Certificates[0]
	at := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	if a.renewHold.After(at) {
		return a.renewHold
	}
	return at
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// backoff is capped exponential backoff with full jitter in [d/2, d].
type backoff struct {
	base, cap, cur time.Duration
}

func (a *Agent) newBackoff() *backoff {
	base := min(a.cfg.SyncInterval, time.Second)
	limit := min(max(6*a.cfg.SyncInterval, base), 30*time.Second)
	return &backoff{base: base, cap: limit}
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.base
	} else {
		b.cur = min(2*b.cur, b.cap)
	}
	return b.cur/2 + rand.N(b.cur/2+1)
}

func (b *backoff) reset() { b.cur = 0 }

// healthHandler serves /live, /ready and /metrics.
func (a *Agent) healthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/live", func(w http.ResponseWriter, _ *http.Request) {
		if a.banned.Load() || !a.running.Load() {
			http.Error(w, "agent stopped", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-a.ready:
		default:
			http.Error(w, "agent not ready: not yet attested and synced", http.StatusServiceUnavailable)
			return
		}
		if a.banned.Load() || !a.running.Load() {
			http.Error(w, "agent stopped", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "ok\nserver %s\n", a.server())
	})
	mux.Handle("/metrics", promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{}))
	return mux
}

// socketDir makes sure the Workload API socket's directory exists.
func socketDir(path string) error {
	return os.MkdirAll(filepath.Dir(path), 0o755)
}
