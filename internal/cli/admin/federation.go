package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	trustdomainv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/trustdomain/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/proto"
)

// Relationship is what `arbor federation create|update` says of a
// federation relationship.
type Relationship struct {
	TrustDomain       string
	BundleEndpointURL string
	// Profile is "https_web" or "https_spiffe".
	Profile string
	// EndpointSPIFFEID is the endpoint server's ID (https_spiffe).
	EndpointSPIFFEID string
	// BundlePath, when set, is a file with the trust domain's bundle
	// (BundleFormat), stored as its bundle.
	BundlePath   string
	BundleFormat BundleFormat
}

func (r Relationship) proto(op string) (*types.FederationRelationship, error) {
	if r.TrustDomain == "" {
		return nil, fmt.Errorf("%s: --trust-domain is required", op)
	}
	p := &types.FederationRelationship{TrustDomain: r.TrustDomain, BundleEndpointUrl: r.BundleEndpointURL}
	switch r.Profile {
	case "https_web":
		if r.EndpointSPIFFEID != "" {
			return nil, fmt.Errorf("%s: --endpoint-spiffe-id is for the https_spiffe profile", op)
		}
		p.BundleEndpointProfile = &types.FederationRelationship_HttpsWeb{HttpsWeb: &types.HTTPSWebProfile{}}
	case "https_spiffe":
		if r.EndpointSPIFFEID == "" {
			return nil, fmt.Errorf("%s: the https_spiffe profile needs --endpoint-spiffe-id", op)
		}
		p.BundleEndpointProfile = &types.FederationRelationship_HttpsSpiffe{HttpsSpiffe: &types.HTTPSSPIFFEProfile{EndpointSpiffeId: r.EndpointSPIFFEID}}
	default:
		return nil, fmt.Errorf("%s: --profile must be https_web or https_spiffe, not %q", op, r.Profile)
	}
	if r.BundlePath != "" {
		data, err := os.ReadFile(r.BundlePath)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", op, err)
		}
		b, err := ParseBundle(r.TrustDomain, data, r.BundleFormat)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %v", op, r.BundlePath, err)
		}
		p.TrustDomainBundle = b
	}
	return p, nil
}

// CreateFederation creates a federation relationship.
func (c *Client) CreateFederation(ctx context.Context, p Printer, r Relationship) error {
	const op = "federation create"
	rel, err := r.proto(op)
	if err != nil {
		return err
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	resp, err := c.td.BatchCreateFederationRelationship(ctx, &trustdomainv1.BatchCreateFederationRelationshipRequest{
		FederationRelationships: []*types.FederationRelationship{rel}})
	if err != nil {
		return c.rpcError(op, err)
	}
	return printRelationshipResult(p, op, resp, resp.Results[0].Status, resp.Results[0].FederationRelationship)
}

// UpdateFederation replaces a relationship's endpoint, profile and (when
// given) bundle.
func (c *Client) UpdateFederation(ctx context.Context, p Printer, r Relationship) error {
	const op = "federation update"
	rel, err := r.proto(op)
	if err != nil {
		return err
	}
	mask := &types.FederationRelationshipMask{BundleEndpointUrl: true, BundleEndpointProfile: true, TrustDomainBundle: rel.TrustDomainBundle != nil}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	resp, err := c.td.BatchUpdateFederationRelationship(ctx, &trustdomainv1.BatchUpdateFederationRelationshipRequest{
		FederationRelationships: []*types.FederationRelationship{rel}, InputMask: mask})
	if err != nil {
		return c.rpcError(op, err)
	}
	return printRelationshipResult(p, op, resp, resp.Results[0].Status, resp.Results[0].FederationRelationship)
}

func printRelationshipResult(p Printer, op string, resp proto.Message, st *types.Status, r *types.FederationRelationship) error {
	if p.JSON() {
		if err := p.printJSON(resp); err != nil {
			return err
		}
	}
	if st.GetCode() != 0 {
		return fmt.Errorf("%s: %s", op, st.GetMessage())
	}
	if !p.JSON() {
		printRelationship(p.Out, r)
	}
	return nil
}

// PrintFederations lists every federation relationship.
func (c *Client) PrintFederations(ctx context.Context, p Printer) error {
	const op = "federation list"
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	all := &trustdomainv1.ListFederationRelationshipsResponse{}
	token := ""
	for {
		resp, err := c.td.ListFederationRelationships(ctx, &trustdomainv1.ListFederationRelationshipsRequest{PageSize: 200, PageToken: token})
		if err != nil {
			return c.rpcError(op, err)
		}
		all.FederationRelationships = append(all.FederationRelationships, resp.FederationRelationships...)
		if token = resp.NextPageToken; token == "" {
			break
		}
	}
	if p.JSON() {
		return p.printJSON(all)
	}
	fmt.Fprintf(p.Out, "Found %s\n\n", plural(len(all.FederationRelationships), "federation relationship", "federation relationships"))
	for _, r := range all.FederationRelationships {
		printRelationship(p.Out, r)
	}
	return nil
}

// ShowFederation prints one relationship.
func (c *Client) ShowFederation(ctx context.Context, p Printer, trustDomain string) error {
	const op = "federation show"
	if trustDomain == "" {
		return errors.New(op + ": --trust-domain is required")
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	r, err := c.td.GetFederationRelationship(ctx, &trustdomainv1.GetFederationRelationshipRequest{TrustDomain: trustDomain})
	if err != nil {
		return c.rpcError(op, err)
	}
	if p.JSON() {
		return p.printJSON(r)
	}
	printRelationship(p.Out, r)
	return nil
}

// DeleteFederation deletes a relationship (the trust domain's bundle stays).
func (c *Client) DeleteFederation(ctx context.Context, p Printer, trustDomain string) error {
	const op = "federation delete"
	if trustDomain == "" {
		return errors.New(op + ": --trust-domain is required")
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	resp, err := c.td.BatchDeleteFederationRelationship(ctx, &trustdomainv1.BatchDeleteFederationRelationshipRequest{TrustDomains: []string{trustDomain}})
	if err != nil {
		return c.rpcError(op, err)
	}
	if p.JSON() {
		if err := p.printJSON(resp); err != nil {
			return err
		}
	}
	if st := resp.Results[0].Status; st.GetCode() != 0 {
		return fmt.Errorf("%s: %s", op, st.GetMessage())
	}
	if !p.JSON() {
		fmt.Fprintf(p.Out, "Federation relationship with %s deleted\n", trustDomain)
	}
	return nil
}

// RefreshFederation fetches a relationship's bundle from its endpoint now.
func (c *Client) RefreshFederation(ctx context.Context, p Printer, trustDomain string) error {
	const op = "federation refresh"
	if trustDomain == "" {
		return errors.New(op + ": --trust-domain is required")
	}
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		return fmt.Errorf("%s: %q is not a trust domain name: %v", op, trustDomain, err)
	}
	// RefreshBundle tells a failing foreign endpoint (the server's
	// Unavailable) from an admin socket nobody answers on.
	if err := c.RefreshBundle(ctx, td); err != nil {
		return err
	}
	if !p.JSON() {
		fmt.Fprintf(p.Out, "Bundle of %s refreshed\n", trustDomain)
	} else {
		fmt.Fprintln(p.Out, "{}")
	}
	return nil
}

func printRelationship(w io.Writer, r *types.FederationRelationship) {
	fmt.Fprintf(w, "Trust domain              : %s\n", r.TrustDomain)
	fmt.Fprintf(w, "Bundle endpoint URL       : %s\n", r.BundleEndpointUrl)
	switch prof := r.BundleEndpointProfile.(type) {
	case *types.FederationRelationship_HttpsSpiffe:
		fmt.Fprintf(w, "Bundle endpoint profile   : https_spiffe\n")
		fmt.Fprintf(w, "Endpoint SPIFFE ID        : %s\n", prof.HttpsSpiffe.GetEndpointSpiffeId())
	case *types.FederationRelationship_HttpsWeb:
		fmt.Fprintf(w, "Bundle endpoint profile   : https_web\n")
	}
	if b := r.TrustDomainBundle; b != nil {
		fmt.Fprintf(w, "Bundle                    : %d X.509 and %d JWT authorities, sequence %d\n", len(b.X509Authorities), len(b.JwtAuthorities), b.SequenceNumber)
	}
	fmt.Fprintln(w)
}
