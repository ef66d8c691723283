// Package tfprovider is arbor's Terraform/OpenTofu provider (source address
// arborid/arbor): resources for registration entries, join tokens, downstream
// tiers and federation relationships, reached through a server's admin API,
// and the data sources that read a server's bundle. The topology data sources
// (arbor_topology, arbor_tier_config) come from internal/tftopology and need
// no server.
//
// The provider dials lazily: configuring it never contacts the server, so a
// plan that only reads topology files works with no server running, and an
// unreachable server fails the first resource that needs it with one line.
package tfprovider

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/provider/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/arborid/arbor/internal/cli/admin"
	"github.com/arborid/arbor/internal/tftopology"
	"github.com/arborid/arbor/topology"
)

// Address is the provider's source address in a required_providers block.
const Address = "registry.opentofu.org/arborid/arbor"

var _ provider.Provider = (*arborProvider)(nil)

type arborProvider struct{ version string }

// New returns the provider factory providerserver.Serve takes; version is
// the arbor release it is built from.
func New(version string) func() provider.Provider {
	return func() provider.Provider { return &arborProvider{version: version} }
}

type providerModel struct {
	AdminSocket types.String `tfsdk:"admin_socket"`
	Address     types.String `tfsdk:"address"`
	CertFile    types.String `tfsdk:"cert_file"`
	KeyFile     types.String `tfsdk:"key_file"`
	BundleFile  types.String `tfsdk:"bundle_file"`
	ServerID    types.String `tfsdk:"server_id"`
	Timeout     types.String `tfsdk:"timeout"`
}

func (p *arborProvider) Metadata(_ context.Context, _ provider.MetadataRequest, resp *provider.MetadataResponse) {
	resp.TypeName = "arbor"
	resp.Version = p.version
}

func (p *arborProvider) Schema(_ context.Context, _ provider.SchemaRequest, resp *provider.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "Manages an arbor server's registration entries, join tokens, downstream tiers and federation " +
			"relationships through its admin API, and reads topology files. Give either admin_socket (the server's " +
			"Unix admin socket, on the same machine) or address with cert_file, key_file and bundle_file (its TCP " +
			"endpoint with an admin X509-SVID). The server is contacted only when a resource or the arbor_bundle " +
			"data source needs it, so arbor_topology and arbor_tier_config work with no server at all.",
		Attributes: map[string]schema.Attribute{
			"admin_socket": schema.StringAttribute{
				Optional: true,
				Description: "Path of the server's Unix admin socket (the admin_socket of its server block; by default " +
					"STATE_DIR/admin.sock). Defaults to the ARBOR_ADMIN_SOCKET environment variable. Conflicts with address.",
			},
			"address": schema.StringAttribute{
				Optional:    true,
				Description: "host:port of the server's gRPC endpoint, for a server on another machine; needs cert_file, key_file and bundle_file.",
			},
			"cert_file": schema.StringAttribute{
				Optional:    true,
				Description: "PEM file of an admin X509-SVID (leaf first): the SPIFFE ID of an entry with admin = true on that server.",
			},
			"key_file": schema.StringAttribute{
				Optional:    true,
				Description: "PEM file of the admin X509-SVID's private key (PKCS#8).",
			},
			"bundle_file": schema.StringAttribute{
				Optional:    true,
				Description: "PEM file of the trust domain's X.509 roots, to verify the server.",
			},
			"server_id": schema.StringAttribute{
				Optional:    true,
				Description: "SPIFFE ID the server must present over TCP; default spiffe://<trust domain>/spire/server.",
			},
			"timeout": schema.StringAttribute{
				Optional:    true,
				Description: "Bound on each call to the server, as a duration (\"30s\", \"2m\"); default 30s.",
			},
		},
	}
}

func (p *arborProvider) Configure(ctx context.Context, req provider.ConfigureRequest, resp *provider.ConfigureResponse) {
	var m providerModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	s := &Server{}
	s.opts, s.configErr = m.options()
	resp.ResourceData = s
	resp.DataSourceData = s
}

// options turns the provider block into how to reach the server. Values not
// known yet (taken from resources not created) are reported when a resource
// needs the server, not here.
func (m providerModel) options() (serverOptions, error) {
	var o serverOptions
	for _, v := range []types.String{m.AdminSocket, m.Address, m.CertFile, m.KeyFile, m.BundleFile, m.ServerID, m.Timeout} {
		if v.IsUnknown() {
			return o, fmt.Errorf("the provider's configuration depends on values not known until apply; give it known values")
		}
	}
	o.socket = m.AdminSocket.ValueString()
	o.tls = admin.TLSOptions{
		Address:    m.Address.ValueString(),
		CertFile:   m.CertFile.ValueString(),
		KeyFile:    m.KeyFile.ValueString(),
		BundleFile: m.BundleFile.ValueString(),
		ServerID:   m.ServerID.ValueString(),
	}
	if o.socket != "" && o.tls.Address != "" {
		return o, fmt.Errorf("the provider takes admin_socket or address, not both")
	}
	if o.tls.Address != "" && (o.tls.CertFile == "" || o.tls.KeyFile == "" || o.tls.BundleFile == "") {
		return o, fmt.Errorf("address %s needs cert_file, key_file and bundle_file (an admin X509-SVID and the trust bundle)", o.tls.Address)
	}
	if o.socket == "" && o.tls.Address == "" {
		o.socket = os.Getenv(admin.SocketEnv)
	}
	if t := m.Timeout.ValueString(); t != "" {
		d, err := topology.ParseDuration(t)
		if err != nil || d <= 0 {
			return o, fmt.Errorf("timeout %q is not a positive duration such as \"30s\"", t)
		}
		o.timeout = d
	}
	return o, nil
}

type serverOptions struct {
	socket  string
	tls     admin.TLSOptions
	timeout time.Duration
}

// Server is the configured provider's connection to one arbor (or
// spire-server) admin API, made on first use and shared by every resource.
type Server struct {
	opts      serverOptions
	configErr error

	once   sync.Once
	client *admin.Client
	err    error

	// batchers gather the entry creates and deletes of every resource of
	// this provider configuration into batch calls (batcher.go).
	batchOnce sync.Once
	batchers  *entryBatchers
}

// Client returns the admin client, dialing on first use. Its error is one
// line naming what could not be reached.
func (s *Server) Client() (*admin.Client, error) {
	if s == nil {
		return nil, fmt.Errorf("the arbor provider is not configured")
	}
	if s.configErr != nil {
		return nil, s.configErr
	}
	s.once.Do(func() {
		switch {
		case s.opts.tls.Address != "":
			s.client, s.err = admin.DialTLS(s.opts.tls)
		case s.opts.socket != "":
			s.client, s.err = admin.Dial(s.opts.socket)
		default:
			s.err = fmt.Errorf("no arbor server given: set admin_socket (or %s) or address in the provider block", admin.SocketEnv)
		}
		if s.client != nil {
			s.client.Timeout = s.opts.timeout
		}
	})
	return s.client, s.err
}

// Timeout bounds one call to the server.
func (s *Server) Timeout() time.Duration {
	if s == nil || s.opts.timeout == 0 {
		return admin.DefaultTimeout
	}
	return s.opts.timeout
}

// serverFrom takes the provider data handed to a resource or data source's
// Configure; nil (before the provider is configured) is not an error.
func serverFrom(data any, diags *diag.Diagnostics) *Server {
	if data == nil {
		return nil
	}
	s, ok := data.(*Server)
	if !ok {
		diags.AddError("unexpected provider data", fmt.Sprintf("expected *tfprovider.Server, got %T", data))
		return nil
	}
	return s
}

func (p *arborProvider) Resources(context.Context) []func() resource.Resource {
	return resources()
}

func (p *arborProvider) DataSources(context.Context) []func() datasource.DataSource {
	return append(dataSources(), tftopology.DataSources()...)
}
