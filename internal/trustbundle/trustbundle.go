// Package trustbundle keeps a server tier's own trust bundle in memory in front
// of the datastore, so that every TLS handshake and every GetBundle call reads
// it without a query, and every writer (CA manager, bundle API, downstream
// publishing) goes through one place that keeps the copy current.
package trustbundle

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/datastore"
)

// Cache wraps a datastore.BundleStore, caching the bundle of one trust domain.
// It implements datastore.BundleStore itself so writers need not know about it,
// and x509bundle.Source so TLS verification can use it directly.
type Cache struct {
	store datastore.BundleStore
	td    spiffeid.TrustDomain

	mu      sync.RWMutex
	own     *datastore.Bundle // never mutated once stored
	x509    *x509bundle.Bundle
	changed chan struct{}
}

var (
	_ datastore.BundleStore = (*Cache)(nil)
	_ x509bundle.Source     = (*Cache)(nil)
)

// New returns a cache for td's bundle in store. Call Refresh before use.
func New(store datastore.BundleStore, td spiffeid.TrustDomain) *Cache {
	return &Cache{store: store, td: td, changed: make(chan struct{}), x509: x509bundle.New(td)}
}

// Refresh reloads the own bundle from the store (at start, and periodically
// when several servers share the store).
func (c *Cache) Refresh(ctx context.Context) error {
	b, err := c.store.FetchBundle(ctx, c.td)
	switch {
	case err == nil:
	case errors.Is(err, datastore.ErrNotFound):
		b = nil
	default:
		return fmt.Errorf("trustbundle: refresh: %w", err)
	}
	c.set(b)
	return nil
}

// set caches b as the own bundle unless the cache already holds a newer one
// (by sequence number): a read or a write that finished late never replaces
// what a later one stored. nil (no bundle) always replaces.
func (c *Cache) set(b *datastore.Bundle) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if b != nil && c.own != nil && b.SequenceNumber < c.own.SequenceNumber {
		return
	}
	unchanged := b != nil && c.own != nil && b.SequenceNumber == c.own.SequenceNumber &&
		sameX509(b, c.own) && len(b.JWTAuthorities) == len(c.own.JWTAuthorities)
	c.own = b
	if unchanged {
		return
	}
	xb := x509bundle.New(c.td)
	if b != nil {
		for _, a := range b.X509Authorities {
			cert, err := x509.ParseCertificate(a.Cert)
			if err != nil {
				continue // validated on the way in; never fail verification wholesale
			}
			xb.AddX509Authority(cert)
		}
	}
	c.x509 = xb
	close(c.changed)
	c.changed = make(chan struct{})
}

func sameX509(a, b *datastore.Bundle) bool {
	if len(a.X509Authorities) != len(b.X509Authorities) {
		return false
	}
	for i := range a.X509Authorities {
		if string(a.X509Authorities[i].Cert) != string(b.X509Authorities[i].Cert) {
			return false
		}
	}
	return true
}

// Own returns the cached own bundle, or nil before the first one exists. The
// result must not be modified.
func (c *Cache) Own() *datastore.Bundle {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.own
}

// X509Bundle returns the own trust domain's X.509 authorities.
func (c *Cache) X509Bundle() *x509bundle.Bundle {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.x509
}

// Changed returns a channel that is closed at the next change of the own bundle.
func (c *Cache) Changed() <-chan struct{} {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.changed
}

// GetX509BundleForTrustDomain implements x509bundle.Source for the own trust domain.
func (c *Cache) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != c.td {
		return nil, fmt.Errorf("trustbundle: no bundle for trust domain %q", td)
	}
	return c.X509Bundle(), nil
}

// FetchBundle implements datastore.BundleStore, answering the own bundle from memory.
func (c *Cache) FetchBundle(ctx context.Context, td spiffeid.TrustDomain) (*datastore.Bundle, error) {
	if td == c.td {
		if b := c.Own(); b != nil {
			return b, nil
		}
	}
	return c.store.FetchBundle(ctx, td)
}

// ListBundles implements datastore.BundleStore.
func (c *Cache) ListBundles(ctx context.Context) ([]*datastore.Bundle, error) {
	return c.store.ListBundles(ctx)
}

// UpdateBundle implements datastore.BundleStore and refreshes the cache when
// the own bundle is written.
func (c *Cache) UpdateBundle(ctx context.Context, td spiffeid.TrustDomain, fn func(*datastore.Bundle) (*datastore.Bundle, error)) (*datastore.Bundle, error) {
	b, err := c.store.UpdateBundle(ctx, td, fn)
	if err != nil {
		return nil, err
	}
	if td == c.td {
		c.set(b)
	}
	return b, nil
}

// DeleteBundle implements datastore.BundleStore.
func (c *Cache) DeleteBundle(ctx context.Context, td spiffeid.TrustDomain) error {
	if err := c.store.DeleteBundle(ctx, td); err != nil {
		return err
	}
	if td == c.td {
		c.set(nil)
	}
	return nil
}
