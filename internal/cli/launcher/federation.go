package launcher

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/arborid/arbor/topology"
)

// Trust domains run side by side federate the way separate deployments
// would: the fetching server of each federation block (the root, or the
// one fetched_by names) fetches the other trust domain's bundle endpoint by
// itself. What arbor up adds is the one step an operator would do out of
// band, which an https_spiffe endpoint needs before the first fetch: the
// fetching server holds the other trust domain's bundle, read from that
// trust domain's root's admin socket, to authenticate the endpoint's SVID.

// localFederation is a federation block of one file that names the trust
// domain of another file being run.
type localFederation struct {
	from *topology.File // whose fetching server holds the relationship
	to   *topology.File // the trust domain the block names
	fed  topology.Federation
}

// localFederations lists, in file order, the federation blocks naming a
// trust domain among files. Blocks naming any other trust domain are left
// to their bootstrap_bundle and the root's refresher.
func localFederations(files []*topology.File) []localFederation {
	var out []localFederation
	for _, f := range files {
		for _, fed := range f.Federations {
			for _, g := range files {
				if g != f && g.TrustDomain == fed.TrustDomain {
					out = append(out, localFederation{from: f, to: g, fed: fed})
				}
			}
		}
	}
	return out
}

// fileOf is the file being run of trust domain td, or nil.
func (l *launcher) fileOf(td spiffeid.TrustDomain) *topology.File {
	for _, f := range l.files {
		if f.TrustDomain == td {
			return f
		}
	}
	return nil
}

// runFederatedWith names the trust domains run here that t's workloads
// can federate with: those of t's file's federation blocks whose fetching
// server is t or above it (the bundle flows down to t).
func (l *launcher) runFederatedWith(t *liveTier) []string {
	var out []string
	for _, fed := range t.f.Federations {
		fetcher := t.f.Fetcher(fed)
		if l.fileOf(fed.TrustDomain) != nil && fetcher != nil && t.f.InSubtree(t.srv.Name, fetcher.Name) {
			out = append(out, fed.TrustDomain.Name())
		}
	}
	return out
}

func (l *launcher) rootTier(f *topology.File) *liveTier {
	r := f.Root()
	if r == nil {
		return nil
	}
	return l.tierOf(f, r.Name)
}

// holderTier is the running tier that fetches lf's bundle, or nil.
func (l *launcher) holderTier(lf localFederation) *liveTier {
	s := lf.from.Fetcher(lf.fed)
	if s == nil {
		return nil
	}
	return l.tierOf(lf.from, s.Name)
}

// endpointServer is the server of f whose bundle endpoint rawURL reaches,
// or nil.
func endpointServer(f *topology.File, rawURL string) *topology.Server {
	for _, s := range f.Walk() {
		if s.BundleEndpoint != nil && sameEndpoint(rawURL, s.BundleEndpoint.Listen) {
			return s
		}
	}
	return nil
}

// bootstrapFederations gives each fetching server that runs and federates
// over https_spiffe with a trust domain run here that trust domain's
// current bundle, unless it holds it already (a resumed run). A held bundle
// without the current authorities (the other trust domain's state was
// reset) could never authenticate the endpoint again, so it is replaced
// too. It returns the federations whose fetching server is not running yet.
func (l *launcher) bootstrapFederations(ctx context.Context, feds []localFederation) (pending []localFederation, err error) {
	for _, lf := range feds {
		holder, source := l.holderTier(lf), l.rootTier(lf.to)
		if holder == nil || source == nil {
			pending = append(pending, lf)
			continue
		}
		td := lf.fed.TrustDomain
		if endpointServer(lf.to, lf.fed.BundleEndpoint) == nil {
			fmt.Fprintf(l.opts.Out, "  note: no server of %s serves a bundle_endpoint at %s, so %s cannot fetch the bundle of %s\n",
				lf.to.Path, lf.fed.BundleEndpoint, holder.label, td)
		}
		if lf.fed.Profile != topology.ProfileHTTPSSPIFFE {
			continue // https_web authenticates the endpoint with Web PKI roots
		}
		want, err := source.admin.Bundle(ctx)
		if err != nil {
			return nil, fmt.Errorf("launcher: reading the bundle of %s from %s: %w", td, source.label, err)
		}
		held, err := holder.admin.FederatedBundle(ctx, td)
		if err != nil {
			return nil, fmt.Errorf("launcher: the bundle of %s held by %s: %w", td, holder.label, err)
		}
		if held != nil && holdsX509(held, want) {
			continue
		}
		if err := holder.admin.SetFederatedBundle(ctx, want); err != nil {
			return nil, fmt.Errorf("launcher: giving %s the bundle of %s: %w", holder.label, td, err)
		}
		if held == nil {
			l.progress("%s: holds the bundle of %s (read from %s's admin socket) to authenticate its https_spiffe bundle endpoint", holder.label, td, source.label)
		} else {
			l.progress("%s: replaced its bundle of %s, which lacked %s's current authorities, with the one read from %s's admin socket", holder.label, td, td, source.label)
		}
	}
	return pending, nil
}

// refreshFederations asks each fetching server to fetch the bundles of the
// trust domains run here now, over their bundle endpoints; a failure is
// reported and left to the server's refresher, which keeps trying.
func (l *launcher) refreshFederations(ctx context.Context, feds []localFederation) {
	for _, lf := range feds {
		holder := l.holderTier(lf)
		if holder == nil {
			continue
		}
		td := lf.fed.TrustDomain
		if err := holder.admin.RefreshBundle(ctx, td); err != nil {
			l.progress("%s: fetching the bundle of %s from %s failed (%v); its refresher keeps trying", holder.label, td, lf.fed.BundleEndpoint, err)
			continue
		}
		counts := ""
		if b, err := holder.admin.FederatedBundle(ctx, td); err == nil && b != nil {
			counts = fmt.Sprintf(" (%d X.509, %d JWT authorities)", len(b.X509Authorities), len(b.JwtAuthorities))
		}
		below := ""
		if len(lf.from.Children(holder.srv.Name)) > 0 {
			below = "; the tiers below receive it with their bundle sync"
		}
		l.progress("%s: fetched the bundle of %s%s from %s%s", holder.label, td, counts, lf.fed.BundleEndpoint, below)
	}
}

// holdsX509 reports whether held has every X.509 authority of want.
func holdsX509(held, want *types.Bundle) bool {
	for _, w := range want.X509Authorities {
		found := false
		for _, h := range held.X509Authorities {
			if bytes.Equal(h.Asn1, w.Asn1) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// sameEndpoint reports whether the https URL of a federation block reaches
// a bundle endpoint listening on listen: the same port (the host may be
// any name of this machine). It is true when either does not parse.
func sameEndpoint(rawURL, listen string) bool {
	u, err := url.Parse(rawURL)
	if err != nil {
		return true
	}
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		return true
	}
	want := u.Port()
	if want == "" {
		want = "443"
	}
	return want == port
}

// federationStatus is the status of a fetching server's federation with
// td: the bundle it holds and, from its /metrics, the bundle's age (the
// time since its refresher last fetched it) and the refreshes so far.
func federationStatus(td spiffeid.TrustDomain, held *types.Bundle, heldErr error, healthOff bool, m *metrics, merr error) string {
	name := td.Name()
	var parts []string
	switch {
	case heldErr != nil:
		parts = append(parts, fmt.Sprintf("bundle unreadable (%v)", heldErr))
	case held == nil:
		parts = append(parts, "no bundle held yet")
	default:
		parts = append(parts, fmt.Sprintf("%d X.509, %d JWT", len(held.X509Authorities), len(held.JwtAuthorities)))
	}
	switch {
	case healthOff:
		parts = append(parts, "age unknown (health_listen off)")
	case merr != nil:
		parts = append(parts, fmt.Sprintf("age unknown (metrics: %v)", merr))
	default:
		if age, ok := m.value("arbor_federation_bundle_age_seconds", "trust_domain", name); ok {
			parts = append(parts, "bundle age "+time.Duration(age*float64(time.Second)).Round(time.Second).String())
		} else {
			parts = append(parts, "not fetched by the refresher yet")
		}
		ok, _ := m.value("arbor_federation_refreshes_total", "trust_domain", name, "result", "ok")
		failed, _ := m.value("arbor_federation_refreshes_total", "trust_domain", name, "result", "error")
		parts = append(parts, fmt.Sprintf("refreshes %d ok, %d failed", int(ok), int(failed)))
	}
	return "federated " + name + ": " + strings.Join(parts, ", ")
}
