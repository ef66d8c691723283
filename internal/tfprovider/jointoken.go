package tfprovider

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	apitypes "github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var _ resource.ResourceWithConfigure = (*joinTokenResource)(nil)

// joinTokenResource is arbor_join_token: a single-use join token.
type joinTokenResource struct{ srv *Server }

func newJoinTokenResource() resource.Resource { return &joinTokenResource{} }

type joinTokenModel struct {
	ID        types.String `tfsdk:"id"`
	Token     types.String `tfsdk:"token"`
	SPIFFEID  types.String `tfsdk:"spiffe_id"`
	TTL       types.String `tfsdk:"ttl"`
	ExpiresAt types.String `tfsdk:"expires_at"`
}

func (r *joinTokenResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_join_token"
}

func (r *joinTokenResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "A single-use join token an agent attests with. Once an agent has used it, or it has expired, " +
			"the next refresh drops it from state and the next apply makes a new one. SPIRE's API cannot delete an " +
			"unused token: destroying the resource leaves it on the server until its ttl runs out.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				Computed:      true,
				Description:   "\"sha256:\" and the first 16 hex digits of the token's SHA-256: names the token without revealing it.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"token": schema.StringAttribute{
				Computed:      true,
				Sensitive:     true,
				Description:   "The token, for the agent's join_token setting.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"spiffe_id": schema.StringAttribute{
				Optional: true,
				Description: "An alias SPIFFE ID for the agent that attests with the token (an entry naming it under " +
					"spiffe://<trust domain>/spire/agent/join_token/<token>). Changing it makes a new token.",
				Validators:    []validator.String{spiffeIDValidator{rule: idWorkload}},
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
			"ttl": schema.StringAttribute{
				Optional: true, Computed: true, Default: stringdefault.StaticString("1h"),
				Description:   "How long the token can be used (\"1h\", \"10m\"); default 1h. Changing it makes a new token.",
				Validators:    []validator.String{durationValidator{min: time.Second}},
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
			"expires_at": schema.StringAttribute{
				Computed:      true,
				Description:   "RFC 3339 time the token expires.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
		},
	}
}

func (r *joinTokenResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.srv = serverFrom(req.ProviderData, &resp.Diagnostics)
}

// tokenID names a token in state and plans without revealing it.
func tokenID(token string) string {
	sum := sha256.Sum256([]byte(token))
	return "sha256:" + hex.EncodeToString(sum[:])[:16]
}

// createJoinToken makes a token valid for ttl seconds, with alias as its
// agent's alias when alias is not empty.
func (s *Server) createJoinToken(ctx context.Context, alias string, ttl int32) (*apitypes.JoinToken, error) {
	req := &agentv1.CreateJoinTokenRequest{Ttl: ttl}
	if alias != "" {
		id, err := spiffeid.FromString(alias)
		if err != nil {
			return nil, fmt.Errorf("join token alias %q: %v", alias, err)
		}
		req.AgentId = &apitypes.SPIFFEID{TrustDomain: id.TrustDomain().Name(), Path: id.Path()}
	}
	c, err := s.Client()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.Timeout())
	defer cancel()
	jt, err := agentv1.NewAgentClient(c.Conn()).CreateJoinToken(ctx, req)
	if err != nil {
		return nil, c.Error("token generate", err)
	}
	return jt, nil
}

// tokenUsed reports whether an agent has attested with token: the agent
// spiffe://<td>/spire/agent/join_token/<token> exists.
func (s *Server) tokenUsed(ctx context.Context, td, token string) (bool, error) {
	c, err := s.Client()
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.Timeout())
	defer cancel()
	_, err = agentv1.NewAgentClient(c.Conn()).GetAgent(ctx, &agentv1.GetAgentRequest{
		Id: &apitypes.SPIFFEID{TrustDomain: td, Path: "/spire/agent/join_token/" + token}})
	switch status.Code(err) {
	case codes.OK:
		return true, nil
	case codes.NotFound:
		return false, nil
	}
	return false, c.Error("agent show", err)
}

func (r *joinTokenResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var m joinTokenModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ttl, err := parseSeconds(m.TTL.ValueString(), time.Second)
	if err != nil {
		addError(&resp.Diagnostics, err)
		return
	}
	jt, err := r.srv.createJoinToken(ctx, m.SPIFFEID.ValueString(), ttl)
	if err != nil {
		addError(&resp.Diagnostics, err)
		return
	}
	m.ID = types.StringValue(tokenID(jt.Value))
	m.Token = types.StringValue(jt.Value)
	m.ExpiresAt = types.StringValue(time.Unix(jt.ExpiresAt, 0).UTC().Format(time.RFC3339))
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

func (r *joinTokenResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var m joinTokenModel
	resp.Diagnostics.Append(req.State.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if exp, err := time.Parse(time.RFC3339, m.ExpiresAt.ValueString()); err == nil && !time.Now().Before(exp) {
		resp.State.RemoveResource(ctx)
		return
	}
	b, err := r.srv.bundle(ctx)
	if err != nil {
		addError(&resp.Diagnostics, err)
		return
	}
	used, err := r.srv.tokenUsed(ctx, b.TrustDomain, m.Token.ValueString())
	if err != nil {
		addError(&resp.Diagnostics, err)
		return
	}
	if used {
		resp.State.RemoveResource(ctx)
	}
}

// Update is never called with a change (every settable attribute replaces
// the token); it keeps the state as planned.
func (r *joinTokenResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var m joinTokenModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &m)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

// Delete removes the token from state only: a used token is gone already,
// and SPIRE's API has no call to delete an unused one (it expires by ttl).
func (r *joinTokenResource) Delete(context.Context, resource.DeleteRequest, *resource.DeleteResponse) {
}

// retireJoinTokenAgent undoes what a join token with an alias gave a
// child tier's agent here: the alias entry (alias under the token's agent
// ID) is deleted and the agent that attested with the token is evicted, so
// a destroyed tier keeps no identity at its parent. Neither being there
// already is not an error.
func (s *Server) retireJoinTokenAgent(ctx context.Context, alias, token string) error {
	id, err := spiffeid.FromString(alias)
	if err != nil {
		return fmt.Errorf("join token alias %q: %v", alias, err)
	}
	agentID := &apitypes.SPIFFEID{TrustDomain: id.TrustDomain().Name(), Path: "/spire/agent/join_token/" + token}
	c, err := s.Client()
	if err != nil {
		return err
	}
	lctx, cancel := context.WithTimeout(ctx, s.Timeout())
	defer cancel()
	list, err := entryv1.NewEntryClient(c.Conn()).ListEntries(lctx, &entryv1.ListEntriesRequest{Filter: &entryv1.ListEntriesRequest_Filter{
		BySpiffeId: &apitypes.SPIFFEID{TrustDomain: id.TrustDomain().Name(), Path: id.Path()},
		ByParentId: agentID,
	}})
	if err != nil {
		return c.Error("entry show", err)
	}
	for _, e := range list.Entries {
		if err := s.deleteEntry(ctx, e.Id); err != nil {
			return err
		}
	}
	_, err = agentv1.NewAgentClient(c.Conn()).DeleteAgent(lctx, &agentv1.DeleteAgentRequest{Id: agentID})
	if err != nil && status.Code(err) != codes.NotFound {
		return c.Error("agent evict", err)
	}
	return nil
}
