package reconcile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/proto"

	"github.com/arborid/arbor/internal/cli/admin"
	"github.com/arborid/arbor/topology"
)

// Federation relationships: each federation block goes to the server that
// fetches it (fetched_by, the root by default), which picks a created or
// changed relationship up without a restart (its refresher re-reads them).

// DesiredFederation is a federation relationship the topology wants on a
// server.
type DesiredFederation struct {
	// Why names the federation block, for the plan output.
	Why         string
	TrustDomain spiffeid.TrustDomain
	// Relationship holds the trust domain, endpoint URL and profile; never
	// a bundle.
	Relationship *types.FederationRelationship
	// BootstrapBundle is the block's bootstrap_bundle file, "" for none:
	// sent with the relationship only while the server holds no bundle of
	// that trust domain.
	BootstrapBundle string
}

// DesiredFederations returns the relationships server s must hold: the
// federation blocks s fetches. It refuses what the relationships API would
// refuse for want of a field (a topology parsed by topology.Parse never has
// such a block, but a File built in code may), so that nothing is applied
// to s.
func DesiredFederations(f *topology.File, s *topology.Server) ([]DesiredFederation, error) {
	var out []DesiredFederation
	for _, fed := range f.FederationsFetchedBy(s.Name) {
		td := fed.TrustDomain.Name()
		r := &types.FederationRelationship{TrustDomain: td, BundleEndpointUrl: fed.BundleEndpoint}
		switch fed.Profile {
		case topology.ProfileHTTPSWeb:
			if !fed.EndpointSPIFFEID.IsZero() {
				return nil, fmt.Errorf("reconcile: federation %q: endpoint_spiffe_id %s is for the https_spiffe profile, not https_web", td, fed.EndpointSPIFFEID)
			}
			r.BundleEndpointProfile = &types.FederationRelationship_HttpsWeb{HttpsWeb: &types.HTTPSWebProfile{}}
		case topology.ProfileHTTPSSPIFFE:
			if fed.EndpointSPIFFEID.IsZero() {
				return nil, fmt.Errorf("reconcile: federation %q: the https_spiffe profile needs endpoint_spiffe_id (the endpoint server's SPIFFE ID, such as spiffe://%s/spire/server)", td, td)
			}
			if fed.EndpointSPIFFEID.TrustDomain() != fed.TrustDomain {
				return nil, fmt.Errorf("reconcile: federation %q: endpoint_spiffe_id %s is not in %q", td, fed.EndpointSPIFFEID, td)
			}
			r.BundleEndpointProfile = &types.FederationRelationship_HttpsSpiffe{HttpsSpiffe: &types.HTTPSSPIFFEProfile{EndpointSpiffeId: fed.EndpointSPIFFEID.String()}}
		default:
			return nil, fmt.Errorf("reconcile: federation %q: profile %q is neither https_web nor https_spiffe", td, fed.Profile)
		}
		out = append(out, DesiredFederation{Why: fmt.Sprintf("federation %q", td), TrustDomain: fed.TrustDomain, Relationship: r, BootstrapBundle: fed.BootstrapBundle})
	}
	return out, nil
}

// Federation plan kinds, besides the entries' "create", "update" and
// "unchanged".
const (
	// KindNotInFile is a relationship the server holds that the file does
	// not give it. Apply never deletes: it is reported and left alone.
	KindNotInFile = "not in file"
)

// FederationAction is one change of a federation plan.
type FederationAction struct {
	Server string
	// Kind is "create", "update", "unchanged" or KindNotInFile.
	Kind string
	Why  string
	// Relationship is what the server is to hold (what it holds, for
	// KindNotInFile); its TrustDomainBundle is the bootstrap bundle to
	// store, set only when the server holds no bundle of the trust domain.
	Relationship *types.FederationRelationship
	// Changes says what an update changes.
	Changes []string
	// FetchedBy, for KindNotInFile, is the server the file has fetch the
	// trust domain instead ("" when no block names it).
	FetchedBy string
	// Socket is the server's admin socket, for the delete command shown
	// with KindNotInFile.
	Socket string
}

func (a FederationAction) String() string {
	r := a.Relationship
	switch a.Kind {
	case KindNotInFile:
		where := "no federation block names it"
		if a.FetchedBy != "" {
			where = "the file has " + a.FetchedBy + " fetch it"
		}
		return fmt.Sprintf("? %s: %s: federation %s (%s); left as is: apply never deletes (arbor federation delete --trust-domain %s --socket-path %s)",
			a.Server, a.Kind, r.TrustDomain, where, r.TrustDomain, a.Socket)
	case "update":
		return fmt.Sprintf("~ %s: update federation %s: %s (%s)", a.Server, r.TrustDomain, strings.Join(a.Changes, ", "), a.Why)
	}
	sign := map[string]string{"create": "+", "unchanged": "="}[a.Kind]
	return fmt.Sprintf("%s %s: %s federation %s -> %s %s (%s)", sign, a.Server, a.Kind, r.TrustDomain, r.BundleEndpointUrl, profileString(r), a.Why)
}

// profileString is "https_web" or "https_spiffe <endpoint SPIFFE ID>".
func profileString(r *types.FederationRelationship) string {
	if p, ok := r.BundleEndpointProfile.(*types.FederationRelationship_HttpsSpiffe); ok {
		return "https_spiffe " + p.HttpsSpiffe.GetEndpointSpiffeId()
	}
	return "https_web"
}

// PlanFederations compares the desired relationships of server s with what
// it holds, matched by trust domain: a missing one is created, one whose
// endpoint URL or profile differs is updated, and one the server holds that
// the file does not give it is reported (KindNotInFile). A bootstrap bundle
// is read, and planned, only for a trust domain the server holds no bundle
// of. Nothing is changed.
func PlanFederations(ctx context.Context, c *admin.Client, f *topology.File, s *topology.Server, want []DesiredFederation) ([]FederationAction, error) {
	have, err := c.Relationships(ctx)
	if err != nil {
		return nil, fmt.Errorf("reconcile: listing federation relationships of %q: %w", s.Name, err)
	}
	var out []FederationAction
	for _, d := range want {
		a := FederationAction{Server: s.Name, Why: d.Why, Relationship: proto.Clone(d.Relationship).(*types.FederationRelationship), Kind: "create"}
		if i := slices.IndexFunc(have, func(h *types.FederationRelationship) bool { return h.TrustDomain == d.Relationship.TrustDomain }); i >= 0 {
			a.Changes = relationshipChanges(have[i], d.Relationship)
			a.Kind = "update"
		}
		if d.BootstrapBundle != "" {
			b, err := bootstrapIfNone(ctx, c, d)
			if err != nil {
				return nil, fmt.Errorf("reconcile: %s on %q: %w", d.Why, s.Name, err)
			}
			if b != nil {
				a.Relationship.TrustDomainBundle = b
				if a.Kind == "update" {
					a.Changes = append(a.Changes, "bootstrap bundle "+d.BootstrapBundle+" (no bundle held)")
				}
			}
		}
		if a.Kind == "update" && len(a.Changes) == 0 {
			a.Kind = "unchanged"
		}
		out = append(out, a)
	}
	for _, h := range have {
		if slices.ContainsFunc(want, func(d DesiredFederation) bool { return d.Relationship.TrustDomain == h.TrustDomain }) {
			continue
		}
		a := FederationAction{Server: s.Name, Kind: KindNotInFile, Relationship: h, Socket: s.AdminSocket}
		if i := slices.IndexFunc(f.Federations, func(fed topology.Federation) bool { return fed.TrustDomain.Name() == h.TrustDomain }); i >= 0 {
			if fetcher := f.Fetcher(f.Federations[i]); fetcher != nil {
				a.FetchedBy = fetcher.Name
			}
		}
		out = append(out, a)
	}
	return out, nil
}

// relationshipChanges lists how want differs from have.
func relationshipChanges(have, want *types.FederationRelationship) []string {
	var out []string
	if have.BundleEndpointUrl != want.BundleEndpointUrl {
		out = append(out, fmt.Sprintf("bundle_endpoint %s -> %s", have.BundleEndpointUrl, want.BundleEndpointUrl))
	}
	if hp, wp := profileString(have), profileString(want); hp != wp {
		out = append(out, fmt.Sprintf("profile %s -> %s", hp, wp))
	}
	return out
}

// bootstrapIfNone reads d's bootstrap bundle when the server holds no
// bundle of its trust domain; nil when it holds one.
func bootstrapIfNone(ctx context.Context, c *admin.Client, d DesiredFederation) (*types.Bundle, error) {
	held, err := c.FederatedBundle(ctx, d.TrustDomain)
	if err != nil || held != nil {
		return nil, err
	}
	data, err := os.ReadFile(d.BootstrapBundle)
	if err != nil {
		return nil, fmt.Errorf("bootstrap_bundle: %v", err)
	}
	format := admin.BundlePEM
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && trimmed[0] == '{' {
		format = admin.BundleSPIFFE
	}
	b, err := admin.ParseBundle(d.TrustDomain.Name(), data, format)
	if err != nil {
		return nil, fmt.Errorf("bootstrap_bundle %s: %v", d.BootstrapBundle, err)
	}
	return b, nil
}

// ApplyFederations carries out the create and update actions of a plan;
// KindNotInFile is only reported.
func ApplyFederations(ctx context.Context, c *admin.Client, actions []FederationAction) error {
	var errs []error
	for _, a := range actions {
		var err error
		switch a.Kind {
		case "create":
			err = c.CreateRelationship(ctx, a.Relationship)
		case "update":
			err = c.UpdateRelationship(ctx, a.Relationship)
		default:
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s federation %s: %w", a.Server, verbing(a.Kind), a.Relationship.TrustDomain, err))
		}
	}
	return errors.Join(errs...)
}

func verbing(kind string) string {
	if kind == "create" {
		return "creating"
	}
	return "updating"
}
