package tftopology

import (
	"bytes"
	"context"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/arborid/arbor/topology"
)

var (
	_ datasource.DataSource                   = (*tierConfigDataSource)(nil)
	_ datasource.DataSourceWithValidateConfig = (*tierConfigDataSource)(nil)
)

// The formats of arbor_tier_config, as `arbor topology render --format`.
const (
	formatHCL   = "hcl"
	formatJSON  = "json"
	formatSPIRE = "spire"
)

// tierConfigDataSource is data "arbor_tier_config": one node's rendered
// configuration.
type tierConfigDataSource struct{}

type tierConfigModel struct {
	Path   types.String `tfsdk:"path"`
	Vars   types.Map    `tfsdk:"vars"`
	Node   types.String `tfsdk:"node"`
	Format types.String `tfsdk:"format"`
	tierConfig
}

// tierConfig is what arbor_tier_config computes for one node.
type tierConfig struct {
	ServerConfig    string `tfsdk:"server_config"`
	AgentConfig     string `tfsdk:"agent_config"`
	AdminSocket     string `tfsdk:"admin_socket"`
	StateDir        string `tfsdk:"state_dir"`
	Listen          string `tfsdk:"listen"`
	Address         string `tfsdk:"address"`
	SPIFFEID        string `tfsdk:"spiffe_id"`
	Parent          string `tfsdk:"parent"`
	AgentSPIFFEID   string `tfsdk:"agent_spiffe_id"`
	AgentSocketPath string `tfsdk:"agent_socket_path"`
}

func (d *tierConfigDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_tier_config"
}

func (d *tierConfigDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	str := func(desc string) schema.StringAttribute {
		return schema.StringAttribute{Computed: true, Description: desc}
	}
	resp.Schema = schema.Schema{
		Description: "Renders the configuration of one node of a topology file at plan time, with no server: what " +
			"`arbor topology render FILE --node NODE --format FORMAT` prints, for a module to write to that node's " +
			"machine. The file is checked as by arbor_topology: an invalid file fails the plan with validate's " +
			"file:line:col diagnostics, and its warnings are reported as warnings.",
		Attributes: map[string]schema.Attribute{
			"path": schema.StringAttribute{Required: true, Description: pathDescription},
			"vars": schema.MapAttribute{Optional: true, ElementType: types.StringType, Description: varsDescription},
			"node": schema.StringAttribute{Required: true, Description: "The node to render: a server block's name, " +
				"or NAME/K for replica K of a block with replicas (its own ports and paths)."},
			"format": schema.StringAttribute{Optional: true, Description: "\"hcl\" (the default), \"json\" (HCL's JSON " +
				"form, for jsondecode) or \"spire\" (the server.conf and agent.conf of real SPIRE " + topology.SPIREVersion +
				" taking the node's place in the tree)."},
			"server_config": str("For hcl and json, the node's whole rendered configuration, exactly as `arbor " +
				"topology render` prints it: trust_domain, the server block, the co-located agent block, the entries " +
				"the server holds (declared ones and its children's downstream entries) and the federations. For " +
				"spire, the spire-server server.conf."),
			"agent_config": str("The co-located agent's part of the configuration; \"\" when the node has no agent " +
				"(a root without upstream \"spire\"). For hcl and json, trust_domain and the agent block, in the " +
				"same format and with the same content as in server_config. For spire, the spire-agent agent.conf."),
			"admin_socket":      str("The Unix socket of the node's admin API."),
			"state_dir":         str("The node's state directory."),
			"listen":            str("The TCP address the node's agent/server API listens on."),
			"address":           str("How agents and child servers reach the node's tier (the first of its addresses)."),
			"spiffe_id":         str("The node's server SPIFFE ID (its downstream entry's at the parent)."),
			"parent":            str("The name of the node's parent server; \"\" for the root."),
			"agent_spiffe_id":   str("The SPIFFE ID of the node's co-located agent at the parent; \"\" when it has none."),
			"agent_socket_path": str("The Workload API socket of the node's co-located agent; \"\" when it has none."),
		},
	}
}

func (d *tierConfigDataSource) ValidateConfig(ctx context.Context, req datasource.ValidateConfigRequest, resp *datasource.ValidateConfigResponse) {
	var format types.String
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("format"), &format)...)
	if format.IsNull() || format.IsUnknown() {
		return
	}
	if err := checkFormat(format.ValueString()); err != nil {
		resp.Diagnostics.AddAttributeError(path.Root("format"), "invalid format", err.Error())
	}
}

func checkFormat(format string) error {
	switch format {
	case formatHCL, formatJSON, formatSPIRE:
		return nil
	}
	return fmt.Errorf("format %q: want \"hcl\", \"json\" or \"spire\"", format)
}

func (d *tierConfigDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m tierConfigModel
	for name, v := range map[string]any{"path": &m.Path, "vars": &m.Vars, "node": &m.Node, "format": &m.Format} {
		resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root(name), v)...)
	}
	if resp.Diagnostics.HasError() {
		return
	}
	vars := varsOf(ctx, m.Vars, &resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	l := load(m.Path.ValueString(), vars, &resp.Diagnostics)
	if l == nil {
		return
	}
	format := formatHCL
	if !m.Format.IsNull() {
		format = m.Format.ValueString()
	}
	cfg, err := renderTier(l.file, m.Node.ValueString(), format)
	if err != nil {
		resp.Diagnostics.AddAttributeError(path.Root("node"), "cannot render node "+m.Node.ValueString(), err.Error())
		return
	}
	m.tierConfig = cfg
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

// renderTier renders node of f in format (hcl, json or spire).
func renderTier(f *topology.File, node, format string) (tierConfig, error) {
	if err := checkFormat(format); err != nil {
		return tierConfig{}, err
	}
	s, err := f.Replica(node)
	if err != nil {
		return tierConfig{}, err
	}
	c := tierConfig{
		AdminSocket: s.AdminSocket,
		StateDir:    s.StateDir,
		Listen:      s.Listen,
		Address:     s.Address,
		SPIFFEID:    s.SPIFFEID.String(),
		Parent:      s.Parent,
	}
	if s.Agent != nil {
		c.AgentSPIFFEID = s.Agent.SPIFFEID.String()
		c.AgentSocketPath = s.Agent.SocketPath
	}
	if format == formatSPIRE {
		cfg, err := topology.RenderSPIRE(f, node)
		if err != nil {
			return tierConfig{}, err
		}
		var b bytes.Buffer
		if err := cfg.WriteServerConf(&b); err != nil {
			return tierConfig{}, err
		}
		c.ServerConfig = b.String()
		if cfg.Agent != nil {
			b.Reset()
			if err := cfg.WriteAgentConf(&b); err != nil {
				return tierConfig{}, err
			}
			c.AgentConfig = b.String()
		}
		return c, nil
	}
	cfg, err := topology.Render(f, node)
	if err != nil {
		return tierConfig{}, err
	}
	write := (*topology.NodeConfig).WriteHCL
	if format == formatJSON {
		write = (*topology.NodeConfig).WriteJSON
	}
	var b bytes.Buffer
	if err := write(cfg, &b); err != nil {
		return tierConfig{}, err
	}
	c.ServerConfig = b.String()
	if agent := agentPart(cfg); agent != nil {
		b.Reset()
		if err := write(agent, &b); err != nil {
			return tierConfig{}, err
		}
		c.AgentConfig = b.String()
	}
	return c, nil
}

// agentPart is the co-located agent's part of a rendered node: the
// top-level attributes (trust_domain) and the agent block; nil when the
// node has no agent.
func agentPart(cfg *topology.NodeConfig) *topology.NodeConfig {
	for _, blk := range cfg.Body.Blocks {
		if blk.Type == "agent" {
			return &topology.NodeConfig{
				Node:   cfg.Node,
				Source: cfg.Source,
				Body:   &topology.Block{Attrs: cfg.Body.Attrs, Blocks: []*topology.Block{blk}},
			}
		}
	}
	return nil
}
