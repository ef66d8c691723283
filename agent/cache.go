package agent

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/proto"

	"github.com/arborid/arbor/internal/selector"
)

// entryInfo is the part of a registration entry the agent needs. It is
// immutable once built.
type entryInfo struct {
	id            string
	spiffeID      spiffeid.ID
	selectors     []selector.Selector // sorted, deduplicated
	federatesWith []spiffeid.TrustDomain
	dnsNames      []string
	hint          string
	x509TTL       int32
	jwtTTL        int32
	revision      int64
	createdAt     int64
}

func entryFromProto(p *types.Entry) (*entryInfo, error) {
	if p.Id == "" || p.SpiffeId == nil {
		return nil, fmt.Errorf("entry %q: missing id or SPIFFE ID", p.Id)
	}
	td, err := spiffeid.TrustDomainFromString(p.SpiffeId.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("entry %q: %w", p.Id, err)
	}
	id, err := spiffeid.FromPath(td, p.SpiffeId.Path)
	if err != nil {
		return nil, fmt.Errorf("entry %q: %w", p.Id, err)
	}
	e := &entryInfo{
		id: p.Id, spiffeID: id, dnsNames: p.DnsNames, hint: p.Hint,
		x509TTL: p.X509SvidTtl, jwtTTL: p.JwtSvidTtl, revision: p.RevisionNumber, createdAt: p.CreatedAt,
	}
	sels := make([]selector.Selector, 0, len(p.Selectors))
	for _, s := range p.Selectors {
		sels = append(sels, selector.Selector{Type: s.Type, Value: s.Value})
	}
	e.selectors = selector.Sorted(sels)
	for _, f := range p.FederatesWith {
		ftd, err := spiffeid.TrustDomainFromString(f)
		if err != nil {
			return nil, fmt.Errorf("entry %q: federates_with %q: %w", p.Id, f, err)
		}
		e.federatesWith = append(e.federatesWith, ftd)
	}
	return e, nil
}

// sameSVIDShape reports whether an SVID minted for a stays right for b.
func sameSVIDShape(a, b *entryInfo) bool {
	return a.spiffeID == b.spiffeID && a.x509TTL == b.x509TTL && slices.Equal(a.dnsNames, b.dnsNames)
}

// x509SVID is a cached X509-SVID kept in the exact form the Workload API
// sends: the chain as concatenated DER and the key as PKCS#8 DER. Nothing
// parsed is retained, which keeps a cached SVID around 1 KiB.
type x509SVID struct {
	chainDER  []byte
	keyDER    []byte
	notBefore int64 // unix nanoseconds
	notAfter  int64
}

// renewAt is half the SVID's lifetime.
func (s *x509SVID) renewAt() time.Time {
	return time.Unix(0, s.notBefore+(s.notAfter-s.notBefore)/2)
}

// cachedEntry is an authorized entry and its current SVID.
type cachedEntry struct {
	info *entryInfo
	svid atomic.Pointer[x509SVID]
	// stale marks an SVID minted for an older shape of the entry, served
	// until its replacement arrives.
	stale atomic.Bool
}

// bundleView is one trust domain's bundle in the forms the Workload API and
// the JWT validator need, computed once per bundle change.
type bundleView struct {
	td      spiffeid.TrustDomain
	src     *types.Bundle
	roots   []*x509.Certificate
	x509DER []byte // concatenated DER of the X.509 authorities
	jwt     *jwtbundle.Bundle
	jwks    []byte // the JWT bundle as a JWKS document
	// tainted and taintedJWT are the authorities the server marks tainted
	// (taint.go): what they signed is re-minted early.
	tainted    []*x509.Certificate
	taintedJWT map[string]bool
}

// x509Bundle returns the X.509 roots as a go-spiffe bundle.
func (b *bundleView) x509Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(b.td, b.roots)
}

func newBundleView(want spiffeid.TrustDomain, b *types.Bundle) (*bundleView, error) {
	td, err := spiffeid.TrustDomainFromString(b.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("agent: bundle trust domain %q: %w", b.TrustDomain, err)
	}
	if td != want {
		return nil, fmt.Errorf("agent: got the bundle of %q, want %q", td, want)
	}
	v := &bundleView{td: td, src: b, jwt: jwtbundle.New(td)}
	var der bytes.Buffer
	for _, a := range b.X509Authorities {
		c, err := x509.ParseCertificate(a.Asn1)
		if err != nil {
			return nil, fmt.Errorf("agent: bundle of %q: X.509 authority: %w", td, err)
		}
		v.roots = append(v.roots, c)
		der.Write(a.Asn1)
	}
	v.x509DER = der.Bytes()
	for _, k := range b.JwtAuthorities {
		pub, err := x509.ParsePKIXPublicKey(k.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("agent: bundle of %q: JWT authority %q: %w", td, k.KeyId, err)
		}
		if err := v.jwt.AddJWTAuthority(k.KeyId, pub); err != nil {
			return nil, fmt.Errorf("agent: bundle of %q: JWT authority %q: %w", td, k.KeyId, err)
		}
	}
	v.tainted, v.taintedJWT = taintedOf(b, v.roots)
	if v.jwks, err = v.jwt.Marshal(); err != nil {
		return nil, fmt.Errorf("agent: encoding JWT bundle of %q: %w", td, err)
	}
	return v, nil
}

// view is an immutable snapshot of the cache. SVIDs inside cachedEntry
// change in place (atomically); everything else changes by replacing the
// view.
type view struct {
	ready      bool
	entries    map[string]*cachedEntry
	bySelector map[selector.Selector][]*cachedEntry
	bundle     *bundleView
	federated  map[spiffeid.TrustDomain]*bundleView
}

// cache holds the agent's view and wakes subscribers on every change.
type cache struct {
	writeMu sync.Mutex // serializes writers
	v       atomic.Pointer[view]

	notifyMu sync.Mutex
	changed  chan struct{}
}

func newCache() *cache {
	c := &cache{changed: make(chan struct{})}
	c.v.Store(&view{entries: map[string]*cachedEntry{}, federated: map[spiffeid.TrustDomain]*bundleView{}})
	return c
}

// load returns the current view and a channel closed at the next change.
// The channel is taken first, so a change between the two is never missed.
func (c *cache) load() (*view, <-chan struct{}) {
	c.notifyMu.Lock()
	ch := c.changed
	c.notifyMu.Unlock()
	return c.v.Load(), ch
}

func (c *cache) notify() {
	c.notifyMu.Lock()
	close(c.changed)
	c.changed = make(chan struct{})
	c.notifyMu.Unlock()
}

// update replaces the entries (when entries is non-nil) and the bundles
// (when non-nil), marks the view ready, and returns the entries whose SVID
// was dropped or must be re-minted.
func (c *cache) update(entries []*entryInfo, bundle *bundleView, federated map[spiffeid.TrustDomain]*bundleView) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	old := c.v.Load()
	nv := &view{ready: true, entries: old.entries, bySelector: old.bySelector, bundle: old.bundle, federated: old.federated}
	changed := !old.ready
	if bundle != nil && (old.bundle == nil || !proto.Equal(old.bundle.src, bundle.src)) {
		nv.bundle, changed = bundle, true
	}
	if federated != nil && !sameFederated(old.federated, federated) {
		nv.federated, changed = federated, true
	}
	if entries != nil {
		m := make(map[string]*cachedEntry, len(entries))
		entriesChanged := len(entries) != len(old.entries)
		for _, e := range entries {
			prev, ok := old.entries[e.id]
			switch {
			case ok && prev.info == e:
				m[e.id] = prev
			case ok:
				ce := &cachedEntry{info: e}
				if s := prev.svid.Load(); s != nil && sameSVIDShape(prev.info, e) {
					ce.svid.Store(s)
					ce.stale.Store(prev.stale.Load())
				} else if s != nil && prev.info.spiffeID == e.spiffeID {
					ce.svid.Store(s)
					ce.stale.Store(true)
				}
				m[e.id] = ce
				entriesChanged = true
			default:
				m[e.id] = &cachedEntry{info: e}
				entriesChanged = true
			}
		}
		if entriesChanged {
			idx := make(map[selector.Selector][]*cachedEntry)
			for _, ce := range m {
				for _, s := range ce.info.selectors {
					idx[s] = append(idx[s], ce)
				}
			}
			nv.entries, nv.bySelector, changed = m, idx, true
		}
	}
	if changed {
		c.v.Store(nv)
		c.notify()
	}
}

func sameFederated(a, b map[spiffeid.TrustDomain]*bundleView) bool {
	if len(a) != len(b) {
		return false
	}
	for td, v := range a {
		w, ok := b[td]
		if !ok || !proto.Equal(v.src, w.src) {
			return false
		}
	}
	return true
}

// identity is one SVID a workload receives.
type identity struct {
	entry *entryInfo
	svid  *x509SVID
}

// match returns the entries whose selectors are all among sels, oldest entry
// first (SPIRE's order), keeping only the oldest entry per non-empty hint.
func (v *view) match(sels []selector.Selector) []*cachedEntry {
	if len(sels) == 0 || len(v.bySelector) == 0 {
		return nil
	}
	have := make(map[selector.Selector]struct{}, len(sels))
	for _, s := range sels {
		have[s] = struct{}{}
	}
	var out []*cachedEntry
	seen := make(map[*cachedEntry]struct{})
	for s := range have {
	candidates:
		for _, ce := range v.bySelector[s] {
			if _, dup := seen[ce]; dup {
				continue
			}
			seen[ce] = struct{}{}
			for _, want := range ce.info.selectors {
				if _, ok := have[want]; !ok {
					continue candidates
				}
			}
			out = append(out, ce)
		}
	}
	slices.SortFunc(out, func(a, b *cachedEntry) int {
		if a.info.createdAt != b.info.createdAt {
			if a.info.createdAt < b.info.createdAt {
				return -1
			}
			return 1
		}
		return strings.Compare(a.info.id, b.info.id)
	})
	hints := map[string]struct{}{}
	kept := out[:0]
	for _, ce := range out {
		if h := ce.info.hint; h != "" {
			if _, dup := hints[h]; dup {
				continue
			}
			hints[h] = struct{}{}
		}
		kept = append(kept, ce)
	}
	return kept
}

// identities returns the SVIDs of matched entries that have one.
func identities(matched []*cachedEntry) []identity {
	out := make([]identity, 0, len(matched))
	for _, ce := range matched {
		if s := ce.svid.Load(); s != nil {
			out = append(out, identity{entry: ce.info, svid: s})
		}
	}
	return out
}

// federatedFor returns the federated bundles the matched entries federate with.
func (v *view) federatedFor(matched []*cachedEntry) []*bundleView {
	var out []*bundleView
	seen := map[spiffeid.TrustDomain]bool{}
	for _, ce := range matched {
		for _, td := range ce.info.federatesWith {
			if seen[td] {
				continue
			}
			seen[td] = true
			if b, ok := v.federated[td]; ok {
				out = append(out, b)
			}
		}
	}
	slices.SortFunc(out, func(a, b *bundleView) int { return strings.Compare(a.td.Name(), b.td.Name()) })
	return out
}

// svidCount returns how many entries have an SVID.
func (v *view) svidCount() int {
	n := 0
	for _, ce := range v.entries {
		if ce.svid.Load() != nil {
			n++
		}
	}
	return n
}
