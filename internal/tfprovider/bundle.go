package tfprovider

import (
	"context"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	apitypes "github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/arborid/arbor/internal/cli/admin"
)

var _ datasource.DataSourceWithConfigure = (*bundleDataSource)(nil)

// bundleDataSource is data "arbor_bundle": the server's trust bundle, or a
// federated trust domain's bundle it holds.
type bundleDataSource struct{ srv *Server }

func newBundleDataSource() datasource.DataSource { return &bundleDataSource{} }

type bundleModel struct {
	TrustDomain     types.String `tfsdk:"trust_domain"`
	PEM             types.String `tfsdk:"pem"`
	JWKS            types.String `tfsdk:"jwks"`
	X509Authorities types.Int64  `tfsdk:"x509_authorities_count"`
	JWTAuthorities  types.Int64  `tfsdk:"jwt_authorities_count"`
}

func (d *bundleDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_bundle"
}

func (d *bundleDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "The server's trust bundle (its own trust domain's X.509 roots and JWT keys), or the bundle it holds of a federated trust domain.",
		Attributes: map[string]schema.Attribute{
			"trust_domain": schema.StringAttribute{
				Optional:    true,
				Description: "A federated trust domain whose bundle to read; unset or empty means the server's own trust domain.",
				Validators:  []validator.String{optionalTrustDomain{}},
			},
			"pem": schema.StringAttribute{
				Computed:    true,
				Description: "The bundle's X.509 authorities as PEM CERTIFICATE blocks, for a trust_bundle file.",
			},
			"jwks": schema.StringAttribute{
				Computed: true,
				Description: "The bundle as a SPIFFE bundle document: a JWKS whose keys have use \"x509-svid\" or " +
					"\"jwt-svid\", with spiffe_sequence and spiffe_refresh_hint.",
			},
			"x509_authorities_count": schema.Int64Attribute{
				Computed:    true,
				Description: "How many X.509 authorities the bundle holds.",
			},
			"jwt_authorities_count": schema.Int64Attribute{
				Computed:    true,
				Description: "How many JWT authorities the bundle holds.",
			},
		},
	}
}

func (d *bundleDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	d.srv = serverFrom(req.ProviderData, &resp.Diagnostics)
}

func (d *bundleDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m bundleModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	c, cctx, cancel := d.srv.call(ctx, &resp.Diagnostics)
	defer cancel()
	if c == nil {
		return
	}
	var b *apitypes.Bundle
	var err error
	if td := m.TrustDomain.ValueString(); td == "" {
		b, err = bundlev1.NewBundleClient(c.Conn()).GetBundle(cctx, &bundlev1.GetBundleRequest{})
		err = c.Error("bundle show", err)
	} else {
		b, err = bundlev1.NewBundleClient(c.Conn()).GetFederatedBundle(cctx, &bundlev1.GetFederatedBundleRequest{TrustDomain: td})
		err = c.Error("bundle list --id "+td, err)
	}
	if err != nil {
		addError(&resp.Diagnostics, err)
		return
	}
	roots, err := admin.MarshalBundle(b, admin.BundlePEM)
	if err != nil {
		addError(&resp.Diagnostics, err)
		return
	}
	doc, err := admin.MarshalBundle(b, admin.BundleSPIFFE)
	if err != nil {
		addError(&resp.Diagnostics, err)
		return
	}
	m.PEM = types.StringValue(string(roots))
	m.JWKS = types.StringValue(string(doc))
	m.X509Authorities = types.Int64Value(int64(len(b.X509Authorities)))
	m.JWTAuthorities = types.Int64Value(int64(len(b.JwtAuthorities)))
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

// optionalTrustDomain is trustDomainValidator that lets "" through.
type optionalTrustDomain struct{ trustDomainValidator }

func (v optionalTrustDomain) ValidateString(ctx context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if known(req.ConfigValue) && req.ConfigValue.ValueString() == "" {
		return
	}
	v.trustDomainValidator.ValidateString(ctx, req, resp)
}
