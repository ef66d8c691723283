package tfprovider

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/setdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/setplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/cli/admin"
	"github.com/arborid/arbor/internal/cli/reconcile"
	"github.com/arborid/arbor/internal/nodeattest/x509pop"
	"github.com/arborid/arbor/upstream"
)

var (
	_ resource.ResourceWithConfigure      = (*downstreamResource)(nil)
	_ resource.ResourceWithValidateConfig = (*downstreamResource)(nil)
	_ resource.ResourceWithModifyPlan     = (*downstreamResource)(nil)
)

// The ways a child tier's co-located agent attests to its parent.
const (
	bootstrapJoinToken = "join_token"
	bootstrapX509PoP   = "x509pop"
)

// downstreamResource is arbor_downstream: the downstream entry through
// which a child tier's server obtains its intermediate CA from this
// server, and the means for its agent to attest here.
type downstreamResource struct{ srv *Server }

func newDownstreamResource() resource.Resource { return &downstreamResource{} }

type downstreamModel struct {
	ID                       types.String `tfsdk:"id"`
	EntryID                  types.String `tfsdk:"entry_id"`
	SPIFFEID                 types.String `tfsdk:"spiffe_id"`
	Bootstrap                types.String `tfsdk:"bootstrap"`
	AgentID                  types.String `tfsdk:"agent_id"`
	X509PoPCertificate       types.String `tfsdk:"x509pop_certificate"`
	X509PoPAgentPathTemplate types.String `tfsdk:"x509pop_agent_path_template"`
	Selectors                types.Set    `tfsdk:"selectors"`
	JoinTokenTTL             types.String `tfsdk:"join_token_ttl"`
	JoinToken                types.String `tfsdk:"join_token"`
	BootstrapBundle          types.String `tfsdk:"bootstrap_bundle"`
}

func (r *downstreamResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_downstream"
}

// defaultSelectors is what `arbor topology apply` gives a child server
// whose agent block names no server_selectors: the uid it runs as, here
// the provider process's.
func defaultSelectors() types.Set {
	return types.SetValueMust(types.StringType, []attr.Value{types.StringValue("unix:uid:" + strconv.Itoa(os.Getuid()))})
}

func (r *downstreamResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	resp.Schema = schema.Schema{
		Description: "Registers a child tier under this server, as `arbor topology apply` does: a downstream entry " +
			"for the child server's SPIFFE ID under its co-located agent, and (bootstrap = \"join_token\") a join " +
			"token for that agent. Deleting it deletes the downstream entry, so the child can no longer renew its " +
			"intermediate CA, and, for a join_token agent, deletes its alias entry and evicts the agent that attested " +
			"with the token (its token is spent: it cannot come back). A used or expired join token is not a change: the agent has " +
			"attested, and attesting again is its own business.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				Computed:      true,
				Description:   "The downstream entry's ID.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"entry_id": schema.StringAttribute{
				Computed:      true,
				Description:   "The downstream entry's ID (the same as id).",
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"spiffe_id": schema.StringAttribute{
				Required:      true,
				Description:   "SPIFFE ID of the child tier's server (the spiffe_id arbor_topology gives the server). Changing it replaces the registration.",
				Validators:    []validator.String{spiffeIDValidator{rule: idWorkload}},
				PlanModifiers: replace,
			},
			"bootstrap": schema.StringAttribute{
				Optional: true, Computed: true, Default: stringdefault.StaticString(bootstrapJoinToken),
				Description:   "How the child's agent attests here: \"join_token\" (default) or \"x509pop\". Changing it replaces the registration.",
				Validators:    []validator.String{oneOfValidator{bootstrapJoinToken, bootstrapX509PoP}},
				PlanModifiers: replace,
			},
			"agent_id": schema.StringAttribute{
				Optional: true, Computed: true,
				Description: "SPIFFE ID of the child's co-located agent here, the downstream entry's parent: for join_token " +
					"the token's alias (required), for x509pop computed from x509pop_certificate with " +
					"x509pop_agent_path_template. Changing it replaces the registration.",
				Validators: []validator.String{spiffeIDValidator{rule: idMember}},
				PlanModifiers: []planmodifier.String{
					stringplanmodifier.UseStateForUnknown(), stringplanmodifier.RequiresReplace(),
				},
			},
			"x509pop_certificate": schema.StringAttribute{
				Optional:      true,
				Description:   "PEM of the agent's x509pop certificate (leaf first), for bootstrap = \"x509pop\". Changing it replaces the registration.",
				PlanModifiers: replace,
			},
			"x509pop_agent_path_template": schema.StringAttribute{
				Optional: true, Computed: true, Default: stringdefault.StaticString(x509pop.DefaultAgentPathTemplate),
				Description: "The agent_path_template of this server's x509pop attestor, which names the agent from its " +
					"certificate; default SPIRE's \"" + x509pop.DefaultAgentPathTemplate + "\".",
				PlanModifiers: replace,
			},
			"selectors": schema.SetAttribute{
				Optional: true, Computed: true, ElementType: types.StringType, Default: setdefault.StaticValue(defaultSelectors()),
				Description: "Selectors of the child server's process at its agent; default [\"unix:uid:<uid>\"] with the uid " +
					"of the provider's process, as topology apply uses its own (modules pass them explicitly). " +
					"Changing them replaces the registration.",
				Validators:    []validator.Set{selectorsValidator{}, setMinSize(1)},
				PlanModifiers: []planmodifier.Set{setplanmodifier.RequiresReplace()},
			},
			"join_token_ttl": schema.StringAttribute{
				Optional: true, Computed: true, Default: stringdefault.StaticString("1h"),
				Description: "How long the join token made at creation can be used (default 1h); changing it later " +
					"makes no new token.",
				Validators: []validator.String{durationValidator{min: time.Second}},
			},
			"join_token": schema.StringAttribute{
				Computed: true, Sensitive: true,
				Description:   "The join token made at creation for the child's agent (\"\" for x509pop).",
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"bootstrap_bundle": schema.StringAttribute{
				Computed: true,
				Description: "PEM of this server's X.509 roots at creation, for the child's trust_bundle; kept as it was " +
					"(a CA rotation here is not a change: the child follows the bundle itself).",
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
		},
	}
}

func (r *downstreamResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.srv = serverFrom(req.ProviderData, &resp.Diagnostics)
}

func (r *downstreamResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var m downstreamModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() || m.Bootstrap.IsUnknown() {
		return
	}
	switch m.Bootstrap.ValueString() {
	case "", bootstrapJoinToken:
		if m.AgentID.IsNull() {
			resp.Diagnostics.AddAttributeError(path.Root("agent_id"), "missing agent_id",
				"bootstrap \"join_token\" needs agent_id: the SPIFFE ID the join token's agent is known by (the agent block's spiffe_id)")
		}
		if !m.X509PoPCertificate.IsNull() {
			resp.Diagnostics.AddAttributeError(path.Root("x509pop_certificate"), "x509pop_certificate without x509pop",
				"x509pop_certificate is for bootstrap = \"x509pop\"")
		}
	case bootstrapX509PoP:
		if m.X509PoPCertificate.IsNull() {
			resp.Diagnostics.AddAttributeError(path.Root("x509pop_certificate"), "missing x509pop_certificate",
				"bootstrap \"x509pop\" needs x509pop_certificate: the PEM of the agent's x509pop certificate")
		}
	}
}

// x509popAgentID is the agent ID this server gives the agent presenting
// the certificate of m, in the trust domain of m's SPIFFE ID.
func (m *downstreamModel) x509popAgentID() (spiffeid.ID, error) {
	id, err := spiffeid.FromString(m.SPIFFEID.ValueString())
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("spiffe_id %q: %v", m.SPIFFEID.ValueString(), err)
	}
	certs, err := upstream.ParseCertificatesPEM([]byte(m.X509PoPCertificate.ValueString()))
	if err != nil || len(certs) == 0 {
		return spiffeid.ID{}, fmt.Errorf("x509pop_certificate holds no certificate: %v", err)
	}
	agent, err := reconcile.X509PoPAgentID(id.TrustDomain(), m.X509PoPAgentPathTemplate.ValueString(), certs[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("x509pop agent ID from x509pop_certificate: %v", err)
	}
	return agent, nil
}

// ModifyPlan computes an x509pop agent's ID at plan time, so that the plan
// shows the entry's parent and a new certificate shows as a replacement.
func (r *downstreamResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.Plan.Raw.IsNull() {
		return
	}
	var plan downstreamModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() || plan.Bootstrap.ValueString() != bootstrapX509PoP ||
		!known(plan.X509PoPCertificate) || !known(plan.SPIFFEID) || !known(plan.X509PoPAgentPathTemplate) {
		return
	}
	agent, err := plan.x509popAgentID()
	if err != nil {
		resp.Diagnostics.AddAttributeError(path.Root("x509pop_certificate"), "invalid x509pop certificate", err.Error())
		return
	}
	var config downstreamModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &config)...)
	if known(config.AgentID) && config.AgentID.ValueString() != agent.String() {
		resp.Diagnostics.AddAttributeError(path.Root("agent_id"), "agent_id does not match the certificate",
			fmt.Sprintf("the x509pop certificate names the agent %s, not %s; leave agent_id unset", agent, config.AgentID.ValueString()))
		return
	}
	resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("agent_id"), agent.String())...)
	if !req.State.Raw.IsNull() {
		var state downstreamModel
		resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
		if state.AgentID.ValueString() != agent.String() {
			resp.RequiresReplace = append(resp.RequiresReplace, path.Root("agent_id"))
		}
	}
}

func (r *downstreamResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var m downstreamModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	id, err := spiffeid.FromString(m.SPIFFEID.ValueString())
	if err != nil {
		addError(&resp.Diagnostics, fmt.Errorf("spiffe_id %q: %v", m.SPIFFEID.ValueString(), err))
		return
	}
	if m.Bootstrap.ValueString() == bootstrapX509PoP {
		agent, err := m.x509popAgentID()
		if err != nil {
			addError(&resp.Diagnostics, err)
			return
		}
		m.AgentID = types.StringValue(agent.String())
	}
	agent, err := spiffeid.FromString(m.AgentID.ValueString())
	if err != nil {
		addError(&resp.Diagnostics, fmt.Errorf("agent_id %q: %v", m.AgentID.ValueString(), err))
		return
	}
	want, err := reconcile.NewEntry(id.TrustDomain(), id, agent, stringsOf(ctx, m.Selectors, &resp.Diagnostics))
	if err != nil {
		addError(&resp.Diagnostics, fmt.Errorf("downstream entry for %s: %w", id, err))
		return
	}
	want.Downstream = true
	e, err := r.srv.createEntry(ctx, want)
	if err != nil {
		addError(&resp.Diagnostics, err)
		return
	}
	b, err := r.srv.bundle(ctx)
	if err != nil {
		addError(&resp.Diagnostics, err)
		return
	}
	roots, err := admin.MarshalBundle(b, admin.BundlePEM)
	if err != nil {
		addError(&resp.Diagnostics, err)
		return
	}
	m.ID, m.EntryID = types.StringValue(e.Id), types.StringValue(e.Id)
	m.BootstrapBundle = types.StringValue(string(roots))
	m.JoinToken = types.StringValue("")
	if m.Bootstrap.ValueString() == bootstrapJoinToken {
		ttl, err := parseSeconds(m.JoinTokenTTL.ValueString(), time.Second)
		if err != nil {
			addError(&resp.Diagnostics, err)
			return
		}
		jt, err := r.srv.createJoinToken(ctx, agent.String(), ttl)
		if err != nil {
			addError(&resp.Diagnostics, err)
			return
		}
		m.JoinToken = types.StringValue(jt.Value)
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

func (r *downstreamResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var m downstreamModel
	resp.Diagnostics.Append(req.State.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	e, err := r.srv.getEntry(ctx, m.ID.ValueString())
	if err != nil {
		addError(&resp.Diagnostics, err)
		return
	}
	if e == nil || !e.Downstream {
		resp.State.RemoveResource(ctx)
		return
	}
	m.SPIFFEID = types.StringValue(idString(e.SpiffeId))
	m.AgentID = types.StringValue(idString(e.ParentId))
	m.Selectors = stringSet(selectorStrings(e.Selectors), false)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

// Update only records a new join_token_ttl: every other change replaces
// the registration, and the token was made once, at creation.
func (r *downstreamResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state downstreamModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	state.JoinTokenTTL = plan.JoinTokenTTL
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *downstreamResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var m downstreamModel
	resp.Diagnostics.Append(req.State.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if err := r.srv.deleteEntry(ctx, m.ID.ValueString()); err != nil {
		addError(&resp.Diagnostics, err)
		return
	}
	// A join-token agent keeps no identity here: its alias entry goes and
	// the agent is evicted (it cannot re-attest, its token is spent). An
	// x509pop agent can always re-attest with its certificate; what it held
	// was the downstream entry, gone above.
	if m.Bootstrap.ValueString() != bootstrapX509PoP && m.JoinToken.ValueString() != "" {
		if err := r.srv.retireJoinTokenAgent(ctx, m.AgentID.ValueString(), m.JoinToken.ValueString()); err != nil {
			addError(&resp.Diagnostics, err)
		}
	}
}
