package server

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/federation"
	"github.com/arborid/arbor/upstream"
)

// Federated bundles are fetched by the tier that holds the relationship
// (the root unless the topology's fetched_by names another; every replica
// of it): each relationship's bundle is refreshed at the refresh hint its
// endpoint serves, clamped and jittered, with capped exponential backoff
// after a failure, and the last good bundle is kept. The tiers below receive
// it from their parent (storeFederatedFromParent).

const (
	federationTick       = time.Second
	minFederationRefresh = 30 * time.Second
	maxFederationRefresh = time.Hour
	// defaultFederationRefresh applies when an endpoint serves no hint
	// (SPIRE's default bundle refresh hint).
	defaultFederationRefresh = 5 * time.Minute
	firstFederationRetry     = 5 * time.Second
	maxFederationRetry       = 5 * time.Minute
)

// FederationConfig is a federation relationship from the topology.
type FederationConfig struct {
	TrustDomain spiffeid.TrustDomain
	// BundleEndpointURL is the https:// URL of its bundle endpoint.
	BundleEndpointURL string
	// Profile is "https_web" or "https_spiffe".
	Profile string
	// EndpointID is the endpoint server's SPIFFE ID (https_spiffe).
	EndpointID spiffeid.ID
	// BootstrapBundle is a file with the trust domain's bundle (PEM or
	// SPIFFE), stored when none is held yet; "" for none.
	BootstrapBundle string
}

// applyFederations writes the configured relationships into the datastore
// (create, or update to the configured settings) and stores each bootstrap
// bundle of a trust domain whose bundle is not held yet.
func (s *Server) applyFederations(ctx context.Context) error {
	for _, f := range s.cfg.Federations {
		if f.TrustDomain.IsZero() || f.TrustDomain == s.cfg.TrustDomain {
			return fmt.Errorf("server: federation with %q: not a foreign trust domain", f.TrustDomain)
		}
		r := &datastore.FederationRelationship{TrustDomain: f.TrustDomain, BundleEndpointURL: f.BundleEndpointURL, Profile: f.Profile, EndpointSPIFFEID: f.EndpointID}
		err := s.store.CreateFederationRelationship(ctx, r)
		if errors.Is(err, datastore.ErrAlreadyExists) {
			_, err = s.store.UpdateFederationRelationship(ctx, f.TrustDomain, func(*datastore.FederationRelationship) (*datastore.FederationRelationship, error) { return r, nil })
		}
		if err != nil {
			return fmt.Errorf("server: applying federation with %q: %w", f.TrustDomain, err)
		}
		if f.BootstrapBundle == "" {
			continue
		}
		sb, err := federation.LoadBundleFile(f.TrustDomain, f.BootstrapBundle)
		if err != nil {
			return fmt.Errorf("server: federation with %q: bootstrap_bundle: %w", f.TrustDomain, err)
		}
		boot := federation.DatastoreBundle(f.TrustDomain, sb)
		if _, err := s.bundles.UpdateBundle(ctx, f.TrustDomain, func(cur *datastore.Bundle) (*datastore.Bundle, error) {
			if cur != nil {
				return cur, nil // a fetched (or set) bundle is newer than the bootstrap file
			}
			return boot, nil
		}); err != nil {
			return fmt.Errorf("server: federation with %q: storing the bootstrap bundle: %w", f.TrustDomain, err)
		}
	}
	return nil
}

// storeFederatedFromParent stores the federated bundles a downstream tier's
// parent holds, as the parent holds them (the tier that fetches a foreign
// endpoint is the one holding the relationship, and the bundles flow down
// from it). A trust domain this tier holds a relationship with is left
// alone: the tier fetches that bundle itself, and its own fetch wins over
// whatever the parent has. A bundle the parent no longer lists is kept:
// entries may still federate with it, and an administrator deletes it.
func (s *Server) storeFederatedFromParent(ctx context.Context, fed []upstream.FederatedBundle) error {
	if len(fed) == 0 {
		return nil
	}
	rels, err := s.store.ListFederationRelationships(ctx)
	if err != nil {
		return fmt.Errorf("server: listing federation relationships: %w", err)
	}
	own := map[spiffeid.TrustDomain]bool{}
	for _, r := range rels {
		own[r.TrustDomain] = true
	}
	for _, fb := range fed {
		td, err := spiffeid.TrustDomainFromString(fb.TrustDomain)
		if err != nil || td == s.cfg.TrustDomain || own[td] {
			continue
		}
		next := &datastore.Bundle{TrustDomain: td, RefreshHint: fb.RefreshHint, SequenceNumber: fb.SequenceNumber}
		for _, a := range fb.X509Authorities {
			next.X509Authorities = append(next.X509Authorities, datastore.X509Authority{Cert: a.Cert, Tainted: a.Tainted})
		}
		for _, k := range fb.JWTKeys {
			next.JWTAuthorities = append(next.JWTAuthorities, datastore.JWTAuthority{KeyID: k.KeyID, PublicKey: k.PublicKey, ExpiresAt: k.ExpiresAt, Tainted: k.Tainted})
		}
		if len(next.X509Authorities) == 0 && len(next.JWTAuthorities) == 0 {
			continue
		}
		_, err = s.bundles.UpdateBundle(ctx, td, func(cur *datastore.Bundle) (*datastore.Bundle, error) {
			if cur != nil && reflect.DeepEqual(cur, next) {
				return cur, nil // unchanged: write nothing
			}
			return next, nil
		})
		if err != nil {
			return fmt.Errorf("server: storing the federated bundle of %q from the parent: %w", td, err)
		}
	}
	return nil
}

// federationMetrics are the refresher's collectors. Every fetch attempt
// counts, the refresher's and RefreshBundle's alike (refreshed, which the
// API calls after each), and a fetch on demand resets the age too.
type federationMetrics struct {
	refreshes *prometheus.CounterVec
	age       *prometheus.GaugeVec

	mu      sync.Mutex
	fetched map[spiffeid.TrustDomain]time.Time // last good fetch
}

func newFederationMetrics(r prometheus.Registerer) *federationMetrics {
	m := &federationMetrics{
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arbor_federation_refreshes_total", Help: "Federated bundle refreshes by trust domain and result (ok, error).",
		}, []string{"trust_domain", "result"}),
		age: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "arbor_federation_bundle_age_seconds", Help: "Time since the federated bundle was last fetched successfully, by trust domain.",
		}, []string{"trust_domain"}),
		fetched: map[spiffeid.TrustDomain]time.Time{},
	}
	r.MustRegister(m.refreshes, m.age)
	return m
}

// refreshed records one attempt to fetch the bundle of td.
func (m *federationMetrics) refreshed(td spiffeid.TrustDomain, err error) {
	if err != nil {
		m.refreshes.WithLabelValues(td.Name(), "error").Inc()
		return
	}
	m.refreshes.WithLabelValues(td.Name(), "ok").Inc()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fetched[td] = time.Now()
	m.age.WithLabelValues(td.Name()).Set(0)
}

// setAge updates the age of the bundle of td as of now, if one was fetched.
func (m *federationMetrics) setAge(td spiffeid.TrustDomain, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if fetched, ok := m.fetched[td]; ok {
		m.age.WithLabelValues(td.Name()).Set(max(now.Sub(fetched), 0).Seconds())
	}
}

// forget drops td, whose relationship is gone.
func (m *federationMetrics) forget(td spiffeid.TrustDomain) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.fetched, td)
	m.age.DeleteLabelValues(td.Name())
}

// refreshState is one relationship's schedule.
type refreshState struct {
	due   time.Time
	retry time.Duration
}

// runFederationRefresh refreshes every federation relationship's bundle
// when it is due until ctx ends. Relationships are re-read each tick, so
// ones created, changed or deleted through the API (on any server sharing
// the datastore) are picked up within a second.
func (s *Server) runFederationRefresh(ctx context.Context) {
	states := map[spiffeid.TrustDomain]*refreshState{}
	t := time.NewTicker(federationTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rels, err := s.store.ListFederationRelationships(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("listing federation relationships", "err", err)
			}
			continue
		}
		now := time.Now()
		seen := map[spiffeid.TrustDomain]bool{}
		for _, r := range rels {
			seen[r.TrustDomain] = true
			st := states[r.TrustDomain]
			if st == nil {
				st = &refreshState{due: now}
				states[r.TrustDomain] = st
			}
			s.fedMetrics.setAge(r.TrustDomain, now)
			if now.Before(st.due) {
				continue
			}
			s.refreshOne(ctx, r, st)
		}
		for td := range states {
			if !seen[td] {
				delete(states, td)
				s.fedMetrics.forget(td)
			}
		}
	}
}

// refreshOne fetches r's bundle and schedules the next fetch (the API
// counts the attempt in the metrics).
func (s *Server) refreshOne(ctx context.Context, r *datastore.FederationRelationship, st *refreshState) {
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	hint, err := s.api.RefreshFederatedBundle(rctx, r)
	cancel()
	now := time.Now()
	if err != nil {
		st.retry = min(max(2*st.retry, firstFederationRetry), maxFederationRetry)
		st.due = now.Add(jitter(st.retry))
		return
	}
	st.retry = 0
	if hint == 0 {
		hint = defaultFederationRefresh
	}
	floor := s.cfg.FederationRefreshFloor
	if floor == 0 {
		floor = minFederationRefresh
	}
	st.due = now.Add(jitter(min(max(hint, floor), maxFederationRefresh)))
}

// jitter spreads d by ±10% so that servers sharing a database, or trust
// domains with the same hint, do not fetch in lockstep.
func jitter(d time.Duration) time.Duration {
	return d - d/10 + time.Duration(rand.Int64N(int64(d/5)+1))
}
