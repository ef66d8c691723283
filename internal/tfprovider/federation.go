package tfprovider

import (
	"context"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	trustdomainv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/trustdomain/v1"
	apitypes "github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/arborid/arbor/internal/cli/admin"
)

var (
	_ resource.ResourceWithConfigure      = (*federationResource)(nil)
	_ resource.ResourceWithImportState    = (*federationResource)(nil)
	_ resource.ResourceWithValidateConfig = (*federationResource)(nil)
)

// The bundle endpoint profiles of SPIFFE federation.
const (
	profileHTTPSWeb    = "https_web"
	profileHTTPSSPIFFE = "https_spiffe"
)

// federationResource is arbor_federation_relationship.
type federationResource struct{ srv *Server }

func newFederationResource() resource.Resource { return &federationResource{} }

type federationModel struct {
	ID                    types.String `tfsdk:"id"`
	TrustDomain           types.String `tfsdk:"trust_domain"`
	BundleEndpointURL     types.String `tfsdk:"bundle_endpoint_url"`
	BundleEndpointProfile types.String `tfsdk:"bundle_endpoint_profile"`
	EndpointSPIFFEID      types.String `tfsdk:"endpoint_spiffe_id"`
	TrustDomainBundle     types.String `tfsdk:"trust_domain_bundle"`
}

func (r *federationResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_federation_relationship"
}

func (r *federationResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "A federation relationship (trustdomain.v1): where this server fetches another trust domain's " +
			"bundle. Changes other than trust_domain update it in place. Import with " +
			"`tofu import arbor_federation_relationship.NAME <trust domain>`.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				Computed:      true,
				Description:   "The federated trust domain's name.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"trust_domain": schema.StringAttribute{
				Required:      true,
				Description:   "Name of the federated trust domain (\"partner.org\"). Changing it replaces the relationship.",
				Validators:    []validator.String{trustDomainValidator{}},
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
			"bundle_endpoint_url": schema.StringAttribute{
				Required:    true,
				Description: "https:// URL of the trust domain's SPIFFE bundle endpoint.",
				Validators:  []validator.String{httpsURLValidator{}},
			},
			"bundle_endpoint_profile": schema.StringAttribute{
				Required: true,
				Description: "How the endpoint is authenticated: \"https_web\" (a Web PKI certificate) or \"https_spiffe\" " +
					"(an X509-SVID of endpoint_spiffe_id, verified with the trust domain's bundle).",
				Validators: []validator.String{oneOfValidator{profileHTTPSWeb, profileHTTPSSPIFFE}},
			},
			"endpoint_spiffe_id": schema.StringAttribute{
				Optional:    true,
				Description: "SPIFFE ID of the bundle endpoint's server; required for https_spiffe.",
				Validators:  []validator.String{spiffeIDValidator{rule: idAny}},
			},
			"trust_domain_bundle": schema.StringAttribute{
				Optional: true,
				Description: "PEM of the federated trust domain's X.509 roots, to bootstrap an https_spiffe endpoint. " +
					"Written when set or changed, never read back: the server refreshes the bundle from the endpoint, " +
					"and that is not a change.",
			},
		},
	}
}

func (r *federationResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.srv = serverFrom(req.ProviderData, &resp.Diagnostics)
}

func (r *federationResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var m federationModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() || !known(m.BundleEndpointProfile) {
		return
	}
	switch m.BundleEndpointProfile.ValueString() {
	case profileHTTPSSPIFFE:
		if m.EndpointSPIFFEID.IsNull() {
			resp.Diagnostics.AddAttributeError(path.Root("endpoint_spiffe_id"), "missing endpoint_spiffe_id",
				"bundle_endpoint_profile \"https_spiffe\" needs endpoint_spiffe_id, the SPIFFE ID the endpoint presents")
		}
	case profileHTTPSWeb:
		if !m.EndpointSPIFFEID.IsNull() {
			resp.Diagnostics.AddAttributeError(path.Root("endpoint_spiffe_id"), "endpoint_spiffe_id with https_web",
				"endpoint_spiffe_id is for bundle_endpoint_profile \"https_spiffe\"")
		}
	}
}

// relationship is the relationship m describes, with its bundle when set.
func (m *federationModel) relationship() (*apitypes.FederationRelationship, error) {
	fr := &apitypes.FederationRelationship{TrustDomain: m.TrustDomain.ValueString(), BundleEndpointUrl: m.BundleEndpointURL.ValueString()}
	if m.BundleEndpointProfile.ValueString() == profileHTTPSSPIFFE {
		fr.BundleEndpointProfile = &apitypes.FederationRelationship_HttpsSpiffe{
			HttpsSpiffe: &apitypes.HTTPSSPIFFEProfile{EndpointSpiffeId: m.EndpointSPIFFEID.ValueString()}}
	} else {
		fr.BundleEndpointProfile = &apitypes.FederationRelationship_HttpsWeb{HttpsWeb: &apitypes.HTTPSWebProfile{}}
	}
	if known(m.TrustDomainBundle) {
		b, err := admin.ParseBundle(fr.TrustDomain, []byte(m.TrustDomainBundle.ValueString()), admin.BundlePEM)
		if err != nil {
			return nil, fmt.Errorf("trust_domain_bundle of %s: %v", fr.TrustDomain, err)
		}
		fr.TrustDomainBundle = b
	}
	return fr, nil
}

// fromRelationship sets the settings of m from what the server holds (not
// the bundle, see trust_domain_bundle).
func (m *federationModel) fromRelationship(fr *apitypes.FederationRelationship) {
	m.ID = types.StringValue(fr.TrustDomain)
	m.TrustDomain = types.StringValue(fr.TrustDomain)
	m.BundleEndpointURL = types.StringValue(fr.BundleEndpointUrl)
	switch p := fr.BundleEndpointProfile.(type) {
	case *apitypes.FederationRelationship_HttpsSpiffe:
		m.BundleEndpointProfile = types.StringValue(profileHTTPSSPIFFE)
		m.EndpointSPIFFEID = types.StringValue(p.HttpsSpiffe.GetEndpointSpiffeId())
	default:
		m.BundleEndpointProfile = types.StringValue(profileHTTPSWeb)
		m.EndpointSPIFFEID = types.StringNull()
	}
}

// settingsOnly is the output mask of a relationship without its bundle.
var settingsOnly = &apitypes.FederationRelationshipMask{BundleEndpointUrl: true, BundleEndpointProfile: true}

func (r *federationResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var m federationModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	fr, err := m.relationship()
	if err != nil {
		addError(&resp.Diagnostics, err)
		return
	}
	c, ctx, cancel := r.srv.call(ctx, &resp.Diagnostics)
	defer cancel()
	if c == nil {
		return
	}
	out, err := trustdomainv1.NewTrustDomainClient(c.Conn()).BatchCreateFederationRelationship(ctx,
		&trustdomainv1.BatchCreateFederationRelationshipRequest{FederationRelationships: []*apitypes.FederationRelationship{fr}, OutputMask: settingsOnly})
	op := "federation create " + fr.TrustDomain
	if err != nil {
		addError(&resp.Diagnostics, c.Error(op, err))
		return
	}
	if len(out.Results) != 1 {
		addError(&resp.Diagnostics, fmt.Errorf("%s: the server answered %d results for one relationship", op, len(out.Results)))
		return
	}
	if err := resultError(op, out.Results[0].GetStatus()); err != nil {
		addError(&resp.Diagnostics, err)
		return
	}
	m.ID = types.StringValue(fr.TrustDomain)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

func (r *federationResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var m federationModel
	resp.Diagnostics.Append(req.State.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	c, cctx, cancel := r.srv.call(ctx, &resp.Diagnostics)
	defer cancel()
	if c == nil {
		return
	}
	td := m.ID.ValueString()
	fr, err := trustdomainv1.NewTrustDomainClient(c.Conn()).GetFederationRelationship(cctx,
		&trustdomainv1.GetFederationRelationshipRequest{TrustDomain: td, OutputMask: settingsOnly})
	if status.Code(err) == codes.NotFound {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		addError(&resp.Diagnostics, c.Error("federation show "+td, err))
		return
	}
	m.fromRelationship(fr)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

func (r *federationResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state federationModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	fr, err := plan.relationship()
	if err != nil {
		addError(&resp.Diagnostics, err)
		return
	}
	mask := &apitypes.FederationRelationshipMask{
		BundleEndpointUrl: !plan.BundleEndpointURL.Equal(state.BundleEndpointURL),
		BundleEndpointProfile: !plan.BundleEndpointProfile.Equal(state.BundleEndpointProfile) ||
			!plan.EndpointSPIFFEID.Equal(state.EndpointSPIFFEID),
		TrustDomainBundle: fr.TrustDomainBundle != nil && !plan.TrustDomainBundle.Equal(state.TrustDomainBundle),
	}
	if mask.BundleEndpointUrl || mask.BundleEndpointProfile || mask.TrustDomainBundle {
		c, cctx, cancel := r.srv.call(ctx, &resp.Diagnostics)
		defer cancel()
		if c == nil {
			return
		}
		op := "federation update " + fr.TrustDomain
		out, err := trustdomainv1.NewTrustDomainClient(c.Conn()).BatchUpdateFederationRelationship(cctx,
			&trustdomainv1.BatchUpdateFederationRelationshipRequest{
				FederationRelationships: []*apitypes.FederationRelationship{fr}, InputMask: mask, OutputMask: settingsOnly})
		if err != nil {
			addError(&resp.Diagnostics, c.Error(op, err))
			return
		}
		if len(out.Results) != 1 {
			addError(&resp.Diagnostics, fmt.Errorf("%s: the server answered %d results for one relationship", op, len(out.Results)))
			return
		}
		if err := resultError(op, out.Results[0].GetStatus()); err != nil {
			addError(&resp.Diagnostics, err)
			return
		}
	}
	plan.ID = state.ID
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *federationResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var m federationModel
	resp.Diagnostics.Append(req.State.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	c, cctx, cancel := r.srv.call(ctx, &resp.Diagnostics)
	defer cancel()
	if c == nil {
		return
	}
	td := m.ID.ValueString()
	op := "federation delete " + td
	out, err := trustdomainv1.NewTrustDomainClient(c.Conn()).BatchDeleteFederationRelationship(cctx,
		&trustdomainv1.BatchDeleteFederationRelationshipRequest{TrustDomains: []string{td}})
	if err != nil {
		addError(&resp.Diagnostics, c.Error(op, err))
		return
	}
	if len(out.Results) == 1 && codes.Code(out.Results[0].GetStatus().GetCode()) == codes.NotFound {
		return
	}
	if len(out.Results) != 1 {
		addError(&resp.Diagnostics, fmt.Errorf("%s: the server answered %d results for one relationship", op, len(out.Results)))
		return
	}
	if err := resultError(op, out.Results[0].GetStatus()); err != nil {
		addError(&resp.Diagnostics, err)
	}
}

func (r *federationResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	resource.ImportStatePassthroughID(ctx, path.Root("id"), req, resp)
}
