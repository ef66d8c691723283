package tftopology

import (
	"context"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/arborid/arbor/topology"
)

var _ datasource.DataSource = (*topologyDataSource)(nil)

// topologyDataSource is data "arbor_topology": the tree of a topology file.
type topologyDataSource struct{}

type topologyModel struct {
	Path        types.String           `tfsdk:"path"`
	Vars        types.Map              `tfsdk:"vars"`
	TrustDomain string                 `tfsdk:"trust_domain"`
	Content     string                 `tfsdk:"content"`
	Warnings    []string               `tfsdk:"warnings"`
	Root        string                 `tfsdk:"root"`
	Servers     map[string]serverModel `tfsdk:"servers"`
}

// serverModel is one server block of the tree.
type serverModel struct {
	Name         string       `tfsdk:"name"`
	Parent       string       `tfsdk:"parent"`
	Depth        int64        `tfsdk:"depth"`
	SPIFFEID     string       `tfsdk:"spiffe_id"`
	Address      string       `tfsdk:"address"`
	Listen       string       `tfsdk:"listen"`
	AdminSocket  string       `tfsdk:"admin_socket"`
	StateDir     string       `tfsdk:"state_dir"`
	HealthListen string       `tfsdk:"health_listen"`
	CATTL        string       `tfsdk:"ca_ttl"`
	X509SVIDTTL  string       `tfsdk:"x509_svid_ttl"`
	JWTSVIDTTL   string       `tfsdk:"jwt_svid_ttl"`
	OutageBudget string       `tfsdk:"outage_budget"`
	Replicas     int64        `tfsdk:"replicas"`
	Children     []string     `tfsdk:"children"`
	Agent        *agentModel  `tfsdk:"agent"`
	Entries      []entryModel `tfsdk:"entries"`
}

// agentModel is a server's co-located agent.
type agentModel struct {
	SPIFFEID               string   `tfsdk:"spiffe_id"`
	NodeAttestor           string   `tfsdk:"node_attestor"`
	X509PoPCertificatePath string   `tfsdk:"x509pop_certificate_path"`
	ServerSelectors        []string `tfsdk:"server_selectors"`
	SocketPath             string   `tfsdk:"socket_path"`
	DataDir                string   `tfsdk:"data_dir"`
}

// entryModel is one entry block of a server.
type entryModel struct {
	Name          string   `tfsdk:"name"`
	SPIFFEID      string   `tfsdk:"spiffe_id"`
	ParentID      string   `tfsdk:"parent_id"`
	Selectors     []string `tfsdk:"selectors"`
	X509SVIDTTL   string   `tfsdk:"x509_svid_ttl"`
	JWTSVIDTTL    string   `tfsdk:"jwt_svid_ttl"`
	DNSNames      []string `tfsdk:"dns_names"`
	Admin         bool     `tfsdk:"admin"`
	Downstream    bool     `tfsdk:"downstream"`
	FederatesWith []string `tfsdk:"federates_with"`
	Hint          string   `tfsdk:"hint"`
}

func (d *topologyDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_topology"
}

func (d *topologyDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	str := func(desc string) schema.StringAttribute {
		return schema.StringAttribute{Computed: true, Description: desc}
	}
	strs := func(desc string) schema.ListAttribute {
		return schema.ListAttribute{Computed: true, ElementType: types.StringType, Description: desc}
	}
	resp.Schema = schema.Schema{
		Description: "Reads a topology file at plan time, with no server: its trust domain and every server of the " +
			"tree with the values `arbor topology render` resolves (defaults applied, variables substituted). The file " +
			"is checked as `arbor topology validate` checks it: an invalid file fails the plan with one error per " +
			"problem, whose summary and detail start with file:line:col as validate prints them; the file's warnings " +
			"are reported as warnings and listed in warnings. Durations are written as the topology language writes " +
			"them (\"2d\", \"12h\", \"5m\").",
		Attributes: map[string]schema.Attribute{
			"path":         schema.StringAttribute{Required: true, Description: pathDescription},
			"vars":         schema.MapAttribute{Optional: true, ElementType: types.StringType, Description: varsDescription},
			"trust_domain": str("The trust domain every server of the file serves (trust_domain)."),
			"content":      str("The file's text, as read."),
			"warnings": strs("The file's warnings, one element each, as `arbor topology validate` prints them: " +
				"\"FILE:LINE:COL: warning: SUMMARY\" followed by the indented detail lines. Empty when there are none."),
			"root": str("The name of the root server (the one with no parent)."),
			"servers": schema.MapNestedAttribute{
				Computed:    true,
				Description: "Every server block of the file, keyed by its name. A block with replicas is one element (replicas says how many processes run it).",
				NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
					"name":   str("The server block's name (its label)."),
					"parent": str("The name of the server it gets its intermediate CA from; \"\" for the root."),
					"depth": schema.Int64Attribute{Computed: true,
						Description: "How many tiers are above it: 0 for the root, 1 for its children, and so on."},
					"spiffe_id": str("The SPIFFE ID the server holds as a workload of its co-located agent: the ID of " +
						"the downstream entry its parent registers (default spiffe://TRUST_DOMAIN/arbor/server/NAME)."),
					"address": str("How agents and child servers reach the tier: the first of its addresses (default its listen address)."),
					"listen":  str("The TCP address the server's agent/server API listens on."),
					"admin_socket": str("The Unix socket of the server's admin API (default STATE_DIR/admin.sock): what " +
						"the arbor provider's admin_socket takes."),
					"state_dir":     str("The directory holding the server's keys, database and sockets."),
					"health_listen": str("The address of the HTTP health endpoints; \"\" when disabled."),
					"ca_ttl":        str("The lifetime of each CA the server holds."),
					"x509_svid_ttl": str("The server's default X509-SVID lifetime."),
					"jwt_svid_ttl":  str("The server's default JWT-SVID lifetime."),
					"outage_budget": str("How long the tier keeps issuing when its parent (or, for a root, its " +
						"upstream authority) is down, at worst: half of ca_ttl, the column ISSUES IF PARENT DOWN of " +
						"`arbor topology plan`. \"\" for a self-signed root, which depends on nobody."),
					"replicas": schema.Int64Attribute{Computed: true, Description: "The number of server processes running this block."},
					"children": strs("The names of the servers whose parent it is, in file order."),
					"agent": schema.SingleNestedAttribute{
						Computed: true,
						Description: "The co-located agent through which the server gets its SVID from its parent " +
							"(or from the root's upstream SPIRE server); null for a root without one.",
						Attributes: map[string]schema.Attribute{
							"spiffe_id": str("The agent's SPIFFE ID at the parent: the parent_id of the server's downstream entry."),
							"node_attestor": str("How the agent attests to the parent: \"join_token\", \"x509pop\", or a " +
								"cloud attestor (\"aws_iid\", \"gcp_iit\", \"azure_msi\", \"k8s_psat\")."),
							"x509pop_certificate_path": str("For x509pop, the agent's certificate file; \"\" otherwise."),
							"server_selectors": strs("The selectors the server process matches at its agent: the " +
								"selectors of its downstream entry."),
							"socket_path": str("The agent's Workload API socket, which the server dials."),
							"data_dir":    str("The agent's data directory."),
						},
					},
					"entries": schema.ListNestedAttribute{
						Computed: true,
						Description: "The server's entry blocks, in file order. The downstream entries of its children " +
							"are not listed: those are what arbor_downstream registers.",
						NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
							"name":      str("The entry block's label."),
							"spiffe_id": str("The entry's SPIFFE ID."),
							"parent_id": str("The entry's parent ID."),
							"selectors": strs("The entry's selectors, \"type:value\"."),
							"x509_svid_ttl": str("The entry's X509-SVID lifetime: its own, else the server's " +
								"(resolved, as `arbor topology render` writes it)."),
							"jwt_svid_ttl":   str("The entry's JWT-SVID lifetime: its own, else the server's."),
							"dns_names":      strs("DNS names of the entry's X509-SVIDs."),
							"admin":          schema.BoolAttribute{Computed: true, Description: "Whether the entry grants the admin API."},
							"downstream":     schema.BoolAttribute{Computed: true, Description: "Whether the entry is for a downstream server."},
							"federates_with": strs("Trust domains whose bundles the entry's workloads receive."),
							"hint":           str("The entry's hint; \"\" when none."),
						}},
					},
				}},
			},
		},
	}
}

func (d *topologyDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m topologyModel
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("path"), &m.Path)...)
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("vars"), &m.Vars)...)
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
	m.TrustDomain = l.file.TrustDomain.Name()
	m.Content = string(l.src)
	m.Warnings = l.warnings
	if root := l.file.Root(); root != nil {
		m.Root = root.Name
	}
	m.Servers = servers(l.file)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

// servers converts the tree of a parsed file into the servers attribute.
func servers(f *topology.File) map[string]serverModel {
	budgets := map[string]time.Duration{}
	for _, t := range topology.NewPlan(f).Tiers {
		budgets[t.Server] = t.IssuingBudget
	}
	out := make(map[string]serverModel, len(f.Servers))
	for _, s := range f.Servers {
		m := serverModel{
			Name:         s.Name,
			Parent:       s.Parent,
			Depth:        int64(f.Depth(s.Name)),
			SPIFFEID:     s.SPIFFEID.String(),
			Address:      s.Address,
			Listen:       s.Listen,
			AdminSocket:  s.AdminSocket,
			StateDir:     s.StateDir,
			HealthListen: s.HealthListen,
			CATTL:        topology.FormatDuration(s.CATTL),
			X509SVIDTTL:  topology.FormatDuration(s.X509SVIDTTL),
			JWTSVIDTTL:   topology.FormatDuration(s.JWTSVIDTTL),
			Replicas:     int64(s.Replicas),
			Children:     []string{},
			Entries:      []entryModel{},
		}
		if b := budgets[s.Name]; b > 0 {
			m.OutageBudget = topology.FormatDuration(b)
		}
		for _, c := range f.Children(s.Name) {
			m.Children = append(m.Children, c.Name)
		}
		if ag := s.Agent; ag != nil {
			a := &agentModel{
				SPIFFEID:        ag.SPIFFEID.String(),
				NodeAttestor:    ag.NodeAttestor.Kind,
				ServerSelectors: list(ag.ServerSelectors),
				SocketPath:      ag.SocketPath,
				DataDir:         ag.DataDir,
			}
			if ag.NodeAttestor.Kind == topology.NodeAttestorX509PoP {
				a.X509PoPCertificatePath = ag.NodeAttestor.CertificatePath
			}
			m.Agent = a
		}
		for _, e := range s.Entries {
			x509, jwt := e.X509SVIDTTL, e.JWTSVIDTTL
			if x509 == 0 {
				x509 = s.X509SVIDTTL
			}
			if jwt == 0 {
				jwt = s.JWTSVIDTTL
			}
			m.Entries = append(m.Entries, entryModel{
				Name:          e.Name,
				SPIFFEID:      e.SPIFFEID.String(),
				ParentID:      e.ParentID.String(),
				Selectors:     list(e.Selectors),
				X509SVIDTTL:   topology.FormatDuration(x509),
				JWTSVIDTTL:    topology.FormatDuration(jwt),
				DNSNames:      list(e.DNSNames),
				Admin:         e.Admin,
				Downstream:    e.Downstream,
				FederatesWith: list(e.FederatesWith),
				Hint:          e.Hint,
			})
		}
		out[s.Name] = m
	}
	return out
}

// list copies s, giving an empty list rather than null for none.
func list(s []string) []string {
	return append([]string{}, s...)
}
