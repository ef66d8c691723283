package tfprovider

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	apitypes "github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/arborid/arbor/internal/cli/reconcile"
)

var (
	_ resource.Resource                = (*entryResource)(nil)
	_ resource.ResourceWithConfigure   = (*entryResource)(nil)
	_ resource.ResourceWithImportState = (*entryResource)(nil)
)

// entryResource is arbor_entry: one registration entry.
type entryResource struct{ srv *Server }

func newEntryResource() resource.Resource { return &entryResource{} }

type entryModel struct {
	ID            types.String `tfsdk:"id"`
	SPIFFEID      types.String `tfsdk:"spiffe_id"`
	ParentID      types.String `tfsdk:"parent_id"`
	Selectors     types.Set    `tfsdk:"selectors"`
	X509SVIDTTL   types.String `tfsdk:"x509_svid_ttl"`
	JWTSVIDTTL    types.String `tfsdk:"jwt_svid_ttl"`
	DNSNames      types.List   `tfsdk:"dns_names"`
	FederatesWith types.Set    `tfsdk:"federates_with"`
	Hint          types.String `tfsdk:"hint"`
	Admin         types.Bool   `tfsdk:"admin"`
	Downstream    types.Bool   `tfsdk:"downstream"`
	StoreSVID     types.Bool   `tfsdk:"store_svid"`
	ExpiresAt     types.String `tfsdk:"expires_at"`
	CreatedAt     types.String `tfsdk:"created_at"`
}

func (r *entryResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_entry"
}

func (r *entryResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "A registration entry (SPIRE's types.Entry) on the server. Changes update the entry in place, " +
			"writing only the fields that changed; changing spiffe_id or parent_id replaces it (a new entry ID), " +
			"which keeps the server's rule that (spiffe_id, parent_id, selectors) is unique simple to follow. " +
			"Creating an entry identical in spiffe_id, parent_id and selectors to one the server holds adopts that " +
			"entry. Import with `tofu import arbor_entry.NAME <entry id>`.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				Computed:      true,
				Description:   "The entry ID the server gave.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"spiffe_id": schema.StringAttribute{
				Required:      true,
				Description:   "SPIFFE ID of the workload (or child server) the entry names, spiffe://<trust domain>/<path>, outside /spire. Changing it replaces the entry.",
				Validators:    []validator.String{spiffeIDValidator{rule: idWorkload}},
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
			"parent_id": schema.StringAttribute{
				Required:      true,
				Description:   "SPIFFE ID of the agent (or another entry's SPIFFE ID) the entry is issued under. Changing it replaces the entry.",
				Validators:    []validator.String{spiffeIDValidator{rule: idMember}},
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
			"selectors": schema.SetAttribute{
				Required:    true,
				ElementType: types.StringType,
				Description: "Selectors \"type:value\" a workload must match, at least one (\"unix:uid:1000\", \"k8s:ns:prod\").",
				Validators:  []validator.Set{selectorsValidator{}, setMinSize(1)},
			},
			"x509_svid_ttl": schema.StringAttribute{
				Optional:    true,
				Description: "Lifetime of the entry's X509-SVIDs (\"1h\", \"90s\", \"1d\"); unset means the server's default.",
				Validators:  []validator.String{durationValidator{min: time.Second}},
			},
			"jwt_svid_ttl": schema.StringAttribute{
				Optional:    true,
				Description: "Lifetime of the entry's JWT-SVIDs (\"5m\"); unset means the server's default.",
				Validators:  []validator.String{durationValidator{min: time.Second}},
			},
			"dns_names": schema.ListAttribute{
				Optional:    true,
				ElementType: types.StringType,
				Description: "DNS names put in the entry's X509-SVIDs, the first one also as the subject's common name.",
			},
			"federates_with": schema.SetAttribute{
				Optional:    true,
				ElementType: types.StringType,
				Description: "Names of the federated trust domains whose bundles the entry's workloads receive.",
				Validators:  []validator.Set{trustDomainsValidator{}},
			},
			"hint": schema.StringAttribute{
				Optional:    true,
				Description: "A hint for workloads that get several SVIDs, telling them apart.",
			},
			"admin": schema.BoolAttribute{
				Optional: true, Computed: true, Default: booldefault.StaticBool(false),
				Description: "Whether the entry's workloads may call the server's admin API over TCP; default false.",
			},
			"downstream": schema.BoolAttribute{
				Optional: true, Computed: true, Default: booldefault.StaticBool(false),
				Description: "Whether the entry's workload is a downstream server that may obtain an intermediate CA; default false.",
			},
			"store_svid": schema.BoolAttribute{
				Optional: true, Computed: true, Default: booldefault.StaticBool(false),
				Description: "Whether the agent hands the entry's SVID to an SVIDStore plugin instead of a workload; default false.",
			},
			"expires_at": schema.StringAttribute{
				Optional:    true,
				Description: "RFC 3339 time after which the entry no longer issues SVIDs; unset means never.",
				Validators:  []validator.String{rfc3339Validator{}},
			},
			"created_at": schema.StringAttribute{
				Computed:      true,
				Description:   "RFC 3339 time the server created the entry.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
		},
	}
}

func (r *entryResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.srv = serverFrom(req.ProviderData, &resp.Diagnostics)
}

// toEntry is the entry the model describes (without its ID).
func (m *entryModel) toEntry(ctx context.Context, diags *diag.Diagnostics) *apitypes.Entry {
	id, err := spiffeid.FromString(m.SPIFFEID.ValueString())
	if err != nil {
		diags.AddAttributeError(path.Root("spiffe_id"), "invalid SPIFFE ID", err.Error())
		return nil
	}
	parent, err := spiffeid.FromString(m.ParentID.ValueString())
	if err != nil {
		diags.AddAttributeError(path.Root("parent_id"), "invalid SPIFFE ID", err.Error())
		return nil
	}
	sels := stringsOf(ctx, m.Selectors, diags)
	e, err := reconcile.NewEntry(id.TrustDomain(), id, parent, sels)
	if err != nil {
		addError(diags, err)
		return nil
	}
	if e.X509SvidTtl, err = optionalSeconds(m.X509SVIDTTL); err != nil {
		diags.AddAttributeError(path.Root("x509_svid_ttl"), "invalid duration", err.Error())
	}
	if e.JwtSvidTtl, err = optionalSeconds(m.JWTSVIDTTL); err != nil {
		diags.AddAttributeError(path.Root("jwt_svid_ttl"), "invalid duration", err.Error())
	}
	if known(m.ExpiresAt) {
		t, err := time.Parse(time.RFC3339, m.ExpiresAt.ValueString())
		if err != nil {
			diags.AddAttributeError(path.Root("expires_at"), "invalid timestamp", err.Error())
		}
		e.ExpiresAt = t.Unix()
	}
	e.DnsNames = listStrings(ctx, m.DNSNames, diags)
	e.FederatesWith = stringsOf(ctx, m.FederatesWith, diags)
	e.Hint = m.Hint.ValueString()
	e.Admin = m.Admin.ValueBool()
	e.Downstream = m.Downstream.ValueBool()
	e.StoreSvid = m.StoreSVID.ValueBool()
	if diags.HasError() {
		return nil
	}
	return e
}

// fromEntry sets the model from the entry as the server holds it, keeping
// the prior spelling of values that mean the same (durations, times, the
// null of an unset optional list).
func (m *entryModel) fromEntry(e *apitypes.Entry) {
	m.ID = types.StringValue(e.Id)
	m.SPIFFEID = types.StringValue(idString(e.SpiffeId))
	m.ParentID = types.StringValue(idString(e.ParentId))
	m.Selectors = stringSet(selectorStrings(e.Selectors), false)
	m.X509SVIDTTL = durationState(m.X509SVIDTTL, e.X509SvidTtl)
	m.JWTSVIDTTL = durationState(m.JWTSVIDTTL, e.JwtSvidTtl)
	if len(e.DnsNames) > 0 || m.DNSNames.IsUnknown() || len(m.DNSNames.Elements()) > 0 {
		m.DNSNames = stringList(e.DnsNames)
	}
	if len(e.FederatesWith) > 0 || m.FederatesWith.IsUnknown() || len(m.FederatesWith.Elements()) > 0 {
		m.FederatesWith = stringSet(e.FederatesWith, true)
	}
	if e.Hint != "" || !known(m.Hint) || m.Hint.ValueString() != "" {
		m.Hint = optionalString(e.Hint)
	}
	m.Admin = types.BoolValue(e.Admin)
	m.Downstream = types.BoolValue(e.Downstream)
	m.StoreSVID = types.BoolValue(e.StoreSvid)
	m.ExpiresAt = timeState(m.ExpiresAt, e.ExpiresAt)
	m.CreatedAt = timeState(m.CreatedAt, e.CreatedAt)
}

func (r *entryResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var m entryModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &m)...)
	e := m.toEntry(ctx, &resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	got, err := r.srv.createEntry(ctx, e)
	if err != nil {
		addError(&resp.Diagnostics, err)
		return
	}
	m.fromEntry(got)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

func (r *entryResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var m entryModel
	resp.Diagnostics.Append(req.State.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	e, err := r.srv.getEntry(ctx, m.ID.ValueString())
	if err != nil {
		addError(&resp.Diagnostics, err)
		return
	}
	if e == nil {
		// Deleted behind Terraform's back: the next plan creates it.
		resp.State.RemoveResource(ctx)
		return
	}
	m.fromEntry(e)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

func (r *entryResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state entryModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	want := plan.toEntry(ctx, &resp.Diagnostics)
	had := state.toEntry(ctx, &resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	want.Id = state.ID.ValueString()
	got := (*apitypes.Entry)(nil)
	if mask := entryDiff(had, want); mask != nil {
		var err error
		if got, err = r.srv.updateEntry(ctx, want, mask); err != nil {
			addError(&resp.Diagnostics, err)
			return
		}
	} else {
		var err error
		if got, err = r.srv.getEntry(ctx, want.Id); err != nil || got == nil {
			if err == nil {
				err = errEntryGone(want.Id)
			}
			addError(&resp.Diagnostics, err)
			return
		}
	}
	plan.CreatedAt = state.CreatedAt
	plan.fromEntry(got)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *entryResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var m entryModel
	resp.Diagnostics.Append(req.State.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if err := r.srv.deleteEntry(ctx, m.ID.ValueString()); err != nil {
		addError(&resp.Diagnostics, err)
	}
}

func (r *entryResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	resource.ImportStatePassthroughID(ctx, path.Root("id"), req, resp)
}

// Helpers between framework values and Go values.

func stringsOf(ctx context.Context, s types.Set, diags *diag.Diagnostics) []string {
	if s.IsNull() || s.IsUnknown() {
		return nil
	}
	var out []string
	diags.Append(s.ElementsAs(ctx, &out, false)...)
	return out
}

func listStrings(ctx context.Context, l types.List, diags *diag.Diagnostics) []string {
	if l.IsNull() || l.IsUnknown() {
		return nil
	}
	var out []string
	diags.Append(l.ElementsAs(ctx, &out, false)...)
	return out
}

// stringSet is a set of ss; empty is null when emptyIsNull.
func stringSet(ss []string, emptyIsNull bool) types.Set {
	if len(ss) == 0 && emptyIsNull {
		return types.SetNull(types.StringType)
	}
	vals := make([]attr.Value, len(ss))
	for i, s := range ss {
		vals[i] = types.StringValue(s)
	}
	return types.SetValueMust(types.StringType, vals)
}

// stringList is a list of ss, null when empty (the server does not tell
// an empty list from none; a prior empty list is kept by the caller).
func stringList(ss []string) types.List {
	if len(ss) == 0 {
		return types.ListNull(types.StringType)
	}
	vals := make([]attr.Value, len(ss))
	for i, s := range ss {
		vals[i] = types.StringValue(s)
	}
	return types.ListValueMust(types.StringType, vals)
}

func optionalString(s string) types.String {
	if s == "" {
		return types.StringNull()
	}
	return types.StringValue(s)
}

func optionalSeconds(v types.String) (int32, error) {
	if !known(v) {
		return 0, nil
	}
	return parseSeconds(v.ValueString(), time.Second)
}

func errEntryGone(id string) error {
	return fmt.Errorf("entry %s is no longer on the server", id)
}

// setMinSize refuses a set with fewer than n elements.
type setMinSize int

func (v setMinSize) Description(context.Context) string {
	return fmt.Sprintf("at least %d element(s)", int(v))
}

func (v setMinSize) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (v setMinSize) ValidateSet(_ context.Context, req validator.SetRequest, resp *validator.SetResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if len(req.ConfigValue.Elements()) < int(v) {
		resp.Diagnostics.AddAttributeError(req.Path, "too few elements", fmt.Sprintf("give at least %d", int(v)))
	}
}
