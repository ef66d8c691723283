package topology

import (
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"

	"github.com/arborid/arbor/internal/idpolicy"
	"github.com/arborid/arbor/internal/selector"
)

// This file decodes the blocks beyond a server's own settings: variables,
// upstream authorities, the co-located agent, entries and federation.

// variables decodes the variable blocks and makes their values available
// to every other expression as var.NAME. A value comes from Options.Vars,
// else from the ARBOR_VAR_NAME environment variable, else from the default.
func (p *parser) variables(blocks hcl.Blocks) []Variable {
	var out []Variable
	vals := map[string]cty.Value{}
	first := map[string]hcl.Range{}
	// Defaults are constants: functions are allowed, references are not.
	constCtx := &hcl.EvalContext{Functions: p.ctx.Functions}
	for _, b := range blocks {
		name := b.Labels[0]
		if !hclsyntax.ValidIdentifier(name) {
			p.errorf(b.LabelRanges[0], "Invalid variable name",
				"%q cannot name a variable. Use letters, digits, '_' and '-', starting with a letter, for example \"region\".", name)
			continue
		}
		if r, dup := first[name]; dup {
			p.errorf(b.LabelRanges[0], "Duplicate variable",
				"Variable %q is already declared at line %d. Remove one of the blocks.", name, r.Start.Line)
			continue
		}
		first[name] = b.DefRange
		content := p.content(b.Body, variableSchema)
		v := Variable{Name: name, Range: b.DefRange, Value: cty.NilVal}
		if attr, ok := content.Attributes["description"]; ok {
			v.Description, _ = p.str(attr)
		}
		def := cty.NilVal
		if attr, ok := content.Attributes["default"]; ok {
			val, diags := attr.Expr.Value(constCtx)
			p.diags = append(p.diags, diags...)
			if diags.HasErrors() {
				vals[name] = cty.DynamicVal
				continue
			}
			if !val.IsNull() {
				def = val
			}
		}
		source := "--var"
		given, ok := p.vars[name]
		if !ok {
			given, ok = p.lookupEnv(DefaultVarEnvPrefix + name)
			source = DefaultVarEnvPrefix + name
		}
		switch {
		case ok && def != cty.NilVal && def.Type() != cty.String:
			cv, err := convert.Convert(cty.StringVal(given), def.Type())
			if err != nil {
				p.errorf(b.LabelRanges[0], "Invalid variable value",
					"%s gives variable %q the value %q, but its default is %s. Give a value of that type.", source, name, given, def.Type().FriendlyName())
				cv = cty.DynamicVal
			}
			v.Value = cv
		case ok:
			v.Value = cty.StringVal(given)
		case def != cty.NilVal:
			v.Value = def
		default:
			p.errorf(b.LabelRanges[0], "Variable not set",
				"Variable %q has no default and no value. Give it one with --var %s=VALUE, with the environment variable %s%s, or add default = ... to the block.", name, name, DefaultVarEnvPrefix, name)
			v.Value = cty.DynamicVal
		}
		vals[name] = v.Value
		out = append(out, v)
	}
	given := map[string]string{} // name -> where its value comes from
	if p.environ != nil {
		for _, kv := range p.environ() {
			key, _, _ := strings.Cut(kv, "=")
			if name, ok := strings.CutPrefix(key, DefaultVarEnvPrefix); ok && name != "" {
				given[name] = "the environment variable " + key
			}
		}
	}
	for name := range p.vars {
		given[name] = "--var " + name + "="
	}
	for _, name := range sortedKeys(given) {
		if _, ok := first[name]; !ok {
			p.undeclaredVariable(name, given[name], blocks, first)
		}
	}
	p.varNames = sortedKeys(vals)
	if len(vals) > 0 {
		p.ctx.Variables["var"] = cty.ObjectVal(vals)
	}
	return out
}

// undeclaredVariable reports a value given, by source, for a variable the
// file does not declare. It points at the first variable block, where
// variables are declared, or at the file's start when there is none, and
// names the variables there are.
func (p *parser) undeclaredVariable(name, source string, blocks hcl.Blocks, first map[string]hcl.Range) {
	rng := hcl.Range{Filename: p.filename, Start: hcl.InitialPos, End: hcl.InitialPos}
	if len(blocks) > 0 {
		rng = blocks[0].DefRange
	}
	declared := "It declares no variables."
	if len(first) > 0 {
		var names []string
		for _, n := range sortedKeys(first) {
			names = append(names, fmt.Sprintf("%s (line %d)", n, first[n].Start.Line))
		}
		declared = "It declares " + strings.Join(names, ", ") + "."
		if sug := suggest(name, sortedKeys(first)); sug != "" {
			declared += fmt.Sprintf(" Did you mean %q?", sug)
		}
	}
	p.errorf(rng, "Undeclared variable",
		"%s gives a value for variable %q, but %s declares no variable %q. %s Declare it with variable %q { }, or drop the value.",
		source, name, filepath.Base(p.filename), name, declared, name)
}

var awsRegionRE = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)

// pcaSigningAlgorithms are ACM PCA's SigningAlgorithm values.
var pcaSigningAlgorithms = []string{"SHA256WITHECDSA", "SHA384WITHECDSA", "SHA512WITHECDSA", "SHA256WITHRSA", "SHA384WITHRSA", "SHA512WITHRSA"}

func (p *parser) upstream(b *hcl.Block, s *Server) *Upstream {
	kind := b.Labels[0]
	schema, ok := upstreamSchemas[kind]
	if !ok {
		hint := ""
		if sug := suggest(kind, sortedKeys(upstreamSchemas)); sug != "" {
			hint = fmt.Sprintf(" Did you mean %q?", sug)
		}
		p.errorf(b.LabelRanges[0], "Unknown upstream kind",
			"%q is not an upstream authority.%s Use %s.", kind, hint, quotedList(sortedKeys(upstreamSchemas)))
		return nil
	}
	content := p.content(b.Body, schema)
	a := content.Attributes
	u := &Upstream{Kind: kind, Range: b.DefRange}
	switch kind {
	case UpstreamDisk:
		u.Disk = &DiskUpstream{
			CertFilePath:   p.optPath(a["cert_file_path"]),
			KeyFilePath:    p.optPath(a["key_file_path"]),
			BundleFilePath: p.optPath(a["bundle_file_path"]),
		}
	case UpstreamVault:
		v := &VaultUpstream{PKIMount: "pki"}
		if attr, ok := a["address"]; ok {
			v.Address, _ = p.url(attr, false)
		}
		if attr, ok := a["pki_mount"]; ok {
			v.PKIMount, _ = p.mountPath(attr)
		}
		if attr, ok := a["namespace"]; ok {
			v.Namespace, _ = p.nonEmptyStr(attr)
		}
		v.CACertPath = p.optPath(a["ca_cert_path"])
		if attr, ok := a["insecure_skip_verify"]; ok {
			v.InsecureSkipVerify, _ = p.boolean(attr)
		}
		auths := content.Blocks.OfType("auth")
		switch {
		case len(auths) == 0:
			p.errorf(b.DefRange, "Missing Vault auth",
				"A vault upstream needs exactly one auth block saying how arbor logs in to Vault: auth \"token\", \"approle\", \"cert\" or \"kubernetes\", for example:\n  auth \"approle\" {\n    role_id   = env(\"VAULT_ROLE_ID\")\n    secret_id = env(\"VAULT_SECRET_ID\")\n  }")
		case len(auths) > 1:
			p.errorf(auths[1].DefRange, "Duplicate Vault auth",
				"The vault upstream already has an auth block at line %d; arbor logs in one way. Remove one of them.", auths[0].DefRange.Start.Line)
		}
		if len(auths) > 0 {
			v.Auth = p.vaultAuth(auths[0])
		}
		u.Vault = v
	case UpstreamAWSPCA:
		c := &AWSPCAUpstream{CASigningTemplateARN: DefaultPCATemplateARN}
		if attr, ok := a["region"]; ok {
			if v, ok := p.nonEmptyStr(attr); ok {
				if !awsRegionRE.MatchString(v) {
					p.errorf(attr.Expr.Range(), "Invalid AWS region",
						"%q is not an AWS region name. Write it like \"us-east-1\" or \"eu-west-3\".", v)
				}
				c.Region = v
			}
		}
		if attr, ok := a["certificate_authority_arn"]; ok {
			c.CertificateAuthorityARN, _ = p.arn(attr, "acm-pca")
		}
		if attr, ok := a["ca_signing_template_arn"]; ok {
			c.CASigningTemplateARN, _ = p.arn(attr, "acm-pca")
		}
		if st := p.enumSetting(a["signing_algorithm"], pcaSigningAlgorithms); st.rng != nil {
			c.SigningAlgorithm = st.val
		}
		if attr, ok := a["assume_role_arn"]; ok {
			c.AssumeRoleARN, _ = p.arn(attr, "iam")
		}
		if attr, ok := a["endpoint"]; ok {
			c.Endpoint, _ = p.url(attr, false)
		}
		c.SupplementalBundlePath = p.optPath(a["supplemental_bundle_path"])
		u.AWSPCA = c
	case UpstreamSPIRE:
		c := &SPIREUpstream{}
		if attr, ok := a["server_address"]; ok {
			c.ServerAddress, _ = p.hostPort(attr)
		}
		if attr, ok := a["workload_api_socket"]; ok {
			c.WorkloadAPISocket, _ = p.socketPath(attr)
		}
		u.SPIRE = c
	}
	return u
}

func (p *parser) vaultAuth(b *hcl.Block) VaultAuth {
	method := b.Labels[0]
	schema, ok := vaultAuthSchemas[method]
	if !ok {
		p.errorf(b.LabelRanges[0], "Unknown Vault auth method",
			"%q is not a Vault auth method arbor supports. Use %s.", method, quotedList(sortedKeys(vaultAuthSchemas)))
		return VaultAuth{}
	}
	content := p.content(b.Body, schema)
	a := content.Attributes
	va := VaultAuth{Method: method, Mount: method}
	if attr, ok := a["mount"]; ok {
		va.Mount, _ = p.mountPath(attr)
	}
	str := func(name string) string {
		if attr, ok := a[name]; ok {
			v, _ := p.nonEmptyStr(attr)
			return v
		}
		return ""
	}
	switch method {
	case VaultAuthToken:
		va.Token = str("token")
	case VaultAuthAppRole:
		va.RoleID, va.SecretID = str("role_id"), str("secret_id")
	case VaultAuthCert:
		va.RoleName = str("role_name")
		va.ClientCertPath, va.ClientKeyPath = p.optPath(a["client_cert_path"]), p.optPath(a["client_key_path"])
	case VaultAuthKubernetes:
		va.Role = str("role")
		va.TokenPath = DefaultKubernetesTokenPath
		if v := p.optPath(a["token_path"]); v != "" {
			va.TokenPath = v
		}
	}
	return va
}

// defaultAgent is the agent of a server that needs one but declares no
// agent block.
func (p *parser) defaultAgent(s *Server, d *defaultsBlock) *Agent {
	ag := &Agent{
		NodeAttestor: AgentAttestor{Kind: NodeAttestorJoinToken, Range: s.Range},
		SocketPath:   filepath.Join(s.StateDir, "agent.sock"),
		DataDir:      filepath.Join(s.StateDir, "agent"),
		SyncInterval: from(setting[time.Duration]{}, d.syncInterval, DefaultSyncInterval).val,
		Range:        s.Range,
	}
	if !p.td.IsZero() {
		ag.SPIFFEID, _ = spiffeid.FromSegments(p.td, "arbor", "agent", s.Name)
	}
	return ag
}

func (p *parser) agent(b *hcl.Block, s *Server, d *defaultsBlock) *Agent {
	ag := p.defaultAgent(s, d)
	ag.Range = b.DefRange
	ag.NodeAttestor.Range = b.DefRange
	content := p.content(b.Body, agentSchema)
	a := content.Attributes
	if attr, ok := a["data_dir"]; ok {
		if v, ok := p.nonEmptyStr(attr); ok {
			ag.DataDir = resolvePath(p.dir, v)
		}
	}
	if attr, ok := a["socket_path"]; ok {
		if v, ok := p.socketPath(attr); ok {
			ag.SocketPath = v
		}
	}
	if attr, ok := a["spiffe_id"]; ok {
		if id, ok := p.spiffeID(attr, roleEntryID, "/arbor/agent/"+s.Name); ok {
			ag.SPIFFEID = id
		}
	}
	if attr, ok := a["server_selectors"]; ok {
		ag.ServerSelectors, _ = p.selectors(attr, false)
	}
	if st := p.durationSetting(a["sync_interval"]); st.rng != nil {
		ag.SyncInterval = st.val
	}
	attestors := content.Blocks.OfType("node_attestor")
	for i, nb := range attestors {
		if i > 0 {
			p.errorf(nb.DefRange, "Duplicate agent attestor",
				"The agent of server %q already attests with %q (line %d); an agent attests with one attestor. Remove one of the blocks.", s.Name, attestors[0].Labels[0], attestors[0].DefRange.Start.Line)
			continue
		}
		if na, ok := p.agentAttestor(nb); ok {
			ag.NodeAttestor = na
		}
	}
	first := map[string]hcl.Range{}
	for _, wb := range content.Blocks.OfType("workload_attestor") {
		kind := wb.Labels[0]
		if r, dup := first[kind]; dup {
			p.errorf(wb.LabelRanges[0], "Duplicate workload attestor",
				"The agent of server %q already has a workload_attestor %q block (line %d). Merge the two.", s.Name, kind, r.Start.Line)
			continue
		}
		first[kind] = wb.DefRange
		if wa, ok := p.workloadAttestor(wb); ok {
			ag.WorkloadAttestors = append(ag.WorkloadAttestors, wa)
		}
	}
	ag.SDS = p.sdsBlocks(content.Blocks.OfType("sds"), s)
	return ag
}

// dnsNameRE is a DNS name, optionally with a leading wildcard label.
var dnsNameRE = regexp.MustCompile(`^(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)

func (p *parser) entry(b *hcl.Block, s *Server) (Entry, bool) {
	name := b.Labels[0]
	e := Entry{Name: name, Range: b.DefRange}
	if !serverNameRE.MatchString(name) {
		p.errorf(b.LabelRanges[0], "Invalid entry name",
			"%q cannot name an entry. Start with a letter or digit and use only letters, digits, '.', '-' and '_'.", name)
	}
	content := p.content(b.Body, entrySchema)
	a := content.Attributes
	ok := true
	if attr, found := a["spiffe_id"]; found {
		e.SPIFFEID, ok = p.spiffeID(attr, roleEntryID, "/"+name)
	}
	if attr, found := a["parent_id"]; found {
		var okp bool
		e.ParentID, okp = p.spiffeID(attr, roleParentID, "")
		ok = ok && okp
	}
	if attr, found := a["selectors"]; found {
		e.Selectors, _ = p.selectors(attr, true)
	}
	for _, ttl := range []struct {
		name string
		dst  *time.Duration
	}{{"x509_svid_ttl", &e.X509SVIDTTL}, {"jwt_svid_ttl", &e.JWTSVIDTTL}} {
		st := p.durationSetting(a[ttl.name])
		if st.rng == nil {
			continue
		}
		*ttl.dst = st.val
		if s.CATTL > 0 && st.val > s.CATTL/2 {
			p.errorf(*st.rng, "SVID TTL too long for the CA",
				"Entry %q of server %q: %s is %s but the server's ca_ttl is %s; an SVID may live at most half the CA TTL. Lower %s to at most %s, or raise the server's ca_ttl to at least %s.",
				name, s.Name, ttl.name, formatDuration(st.val), formatDuration(s.CATTL), ttl.name, formatDuration(s.CATTL/2), formatDuration(2*st.val))
		}
	}
	if attr, found := a["dns_names"]; found {
		names, _ := p.strList(attr)
		for _, n := range names {
			if len(n) > 253 || !dnsNameRE.MatchString(n) {
				p.errorf(attr.Expr.Range(), "Invalid DNS name",
					"%q is not a DNS name. Write names like \"web.example.org\" or \"*.web.example.org\".", n)
				continue
			}
			e.DNSNames = append(e.DNSNames, n)
		}
	}
	if attr, found := a["admin"]; found {
		e.Admin, _ = p.boolean(attr)
	}
	if attr, found := a["downstream"]; found {
		e.Downstream, _ = p.boolean(attr)
	}
	if attr, found := a["federates_with"]; found {
		tds, _ := p.strList(attr)
		for _, td := range tds {
			if _, err := spiffeid.TrustDomainFromString(td); err != nil {
				p.errorf(attr.Expr.Range(), "Invalid trust domain",
					"federates_with holds %q, which is not a trust domain name (%v). Write names like \"partner.example\".", td, err)
				continue
			}
			e.FederatesWith = append(e.FederatesWith, td)
		}
		e.federatesRange = attr.Expr.Range()
	}
	if attr, found := a["hint"]; found {
		e.Hint, _ = p.str(attr)
	}
	return e, ok
}

func (p *parser) federation(b *hcl.Block) (Federation, bool) {
	label := b.Labels[0]
	fed := Federation{Profile: ProfileHTTPSWeb, Range: b.DefRange}
	content := p.content(b.Body, federationSchema)
	td, err := spiffeid.TrustDomainFromString(label)
	switch {
	case err != nil:
		p.errorf(b.LabelRanges[0], "Invalid trust domain",
			"federation %q: %v. The label is the foreign trust domain's name, such as \"partner.example\".", label, err)
		return fed, false
	case td == p.td:
		p.errorf(b.LabelRanges[0], "Federation with itself",
			"%q is this topology's own trust domain; every server already trusts it. Remove the block, or name the foreign trust domain.", label)
		return fed, false
	}
	fed.TrustDomain = td
	a := content.Attributes
	if attr, ok := a["bundle_endpoint"]; ok {
		if v, ok := p.url(attr, true); ok {
			// The relationships API refuses credentials in the URL (they
			// would be stored and listed in the clear).
			if u, err := url.Parse(v); err == nil && u.User != nil {
				u.User = nil
				p.errorf(attr.Expr.Range(), "Credentials in the bundle endpoint URL",
					"bundle_endpoint = %q carries a user name or password; a SPIFFE bundle endpoint is public and a server refuses such a URL. Write it without the user part: %q.", v, u.String())
			} else {
				fed.BundleEndpoint = v
			}
		}
	}
	if st := p.enumSetting(a["profile"], []string{ProfileHTTPSWeb, ProfileHTTPSSPIFFE}); st.rng != nil {
		fed.Profile = st.val
	}
	attr, ok := a["endpoint_spiffe_id"]
	switch {
	case ok && fed.Profile == ProfileHTTPSWeb:
		p.errorf(attr.Expr.Range(), "Endpoint SPIFFE ID with https_web",
			"endpoint_spiffe_id is only used with profile = \"https_spiffe\"; with https_web the endpoint is authenticated by its Web PKI certificate. Remove it, or set profile = \"https_spiffe\".")
	case ok:
		v, okv := p.str(attr)
		if !okv {
			break
		}
		id, err := spiffeid.FromString(v)
		if err != nil {
			p.errorf(attr.Expr.Range(), "Invalid SPIFFE ID",
				"endpoint_spiffe_id = %q: %v. Write the bundle endpoint server's ID, such as \"spiffe://%s/spire/server\".", v, err, td.Name())
			break
		}
		if id.TrustDomain() != td {
			p.errorf(attr.Expr.Range(), "Endpoint SPIFFE ID in the wrong trust domain",
				"endpoint_spiffe_id %q is not in %q; the https_spiffe endpoint of a trust domain is one of its own servers. Use \"spiffe://%s/spire/server\" or that server's ID.", v, td.Name(), td.Name())
			break
		}
		fed.EndpointSPIFFEID = id
	case fed.Profile == ProfileHTTPSSPIFFE:
		p.errorf(b.DefRange, "Missing endpoint SPIFFE ID",
			"The https_spiffe profile authenticates the bundle endpoint by its SPIFFE ID. Add endpoint_spiffe_id, for example endpoint_spiffe_id = \"spiffe://%s/spire/server\".", td.Name())
	}
	if attr, ok := a["bootstrap_bundle"]; ok {
		if v, ok := p.nonEmptyStr(attr); ok {
			fed.BootstrapBundle = p.inputPath(attr.Expr.Range(), v)
		}
	}
	fed.fetchedByRange = b.DefRange
	if attr, ok := a["fetched_by"]; ok {
		fed.fetchedByRange = attr.Expr.Range()
		fed.FetchedBy, _ = p.nonEmptyStr(attr)
	}
	return fed, true
}

// idRole is what a SPIFFE ID attribute becomes on a server, which decides
// the rule of idpolicy it must follow.
type idRole int

const (
	// roleEntryID is the SPIFFE ID of an entry block, of a server (its
	// downstream entry at the parent) or of an agent (its join token alias).
	roleEntryID idRole = iota
	// roleParentID is the parent ID of an entry block.
	roleParentID
)

// spiffeID evaluates a SPIFFE ID that must belong to the topology's trust
// domain and follow the rule of its role, as SPIRE's server API would
// enforce it when the entry is created. example is a path to suggest in
// place of a refused entry ID.
func (p *parser) spiffeID(attr *hcl.Attribute, role idRole, example string) (spiffeid.ID, bool) {
	v, ok := p.str(attr)
	if !ok {
		return spiffeid.ID{}, false
	}
	id, err := spiffeid.FromString(v)
	if err != nil {
		p.errorf(attr.Expr.Range(), "Invalid SPIFFE ID",
			"%s = %q: %v. Write spiffe://TRUST_DOMAIN/PATH, for example \"spiffe://%s/web\".", attr.Name, v, err, p.tdName())
		return spiffeid.ID{}, false
	}
	if !p.td.IsZero() && id.TrustDomain() != p.td {
		p.errorf(attr.Expr.Range(), "SPIFFE ID outside the trust domain",
			"%s = %q is in trust domain %q, but this topology serves %q. Use an ID under spiffe://%s/.", attr.Name, v, id.TrustDomain().Name(), p.td.Name(), p.td.Name())
		return spiffeid.ID{}, false
	}
	// Without a trust domain (already reported) the ID's own stands in, so
	// the path rules are still checked.
	td := id.TrustDomain()
	check := idpolicy.WorkloadID
	if role == roleParentID {
		check = idpolicy.ParentID
	}
	switch err := check(td, id); {
	case err == nil:
		return id, true
	case errors.Is(err, idpolicy.ErrEmptyPath) && role == roleParentID:
		p.errorf(attr.Expr.Range(), "SPIFFE ID without a path",
			"%s = %q names the trust domain itself, which is no agent or node; SPIRE refuses it as a parent. Use the ID of the agent the workload runs under, or \"spiffe://%s/spire/server\" for a node entry.", attr.Name, v, td.Name())
	case errors.Is(err, idpolicy.ErrEmptyPath):
		p.errorf(attr.Expr.Range(), "SPIFFE ID without a path",
			"%s = %q names the trust domain itself; SPIRE refuses it as the ID of an entry or join token, and go-spiffe cannot parse an X509-SVID that carries it. Add a path, for example \"spiffe://%s%s\".", attr.Name, v, td.Name(), example)
	case errors.Is(err, idpolicy.ErrReservedPath):
		p.errorf(attr.Expr.Range(), "SPIFFE ID in the reserved /spire namespace",
			"%s = %q is under /spire, where SPIRE names its servers and agents; SPIRE refuses it as the ID of an entry or join token. Choose a path outside /spire, for example \"spiffe://%s%s\".", attr.Name, v, td.Name(), example)
	default:
		p.errorf(attr.Expr.Range(), "Invalid SPIFFE ID", "%s: %v. Use an ID under spiffe://%s/.", attr.Name, err, td.Name())
	}
	return spiffeid.ID{}, false
}

func (p *parser) tdName() string {
	if p.td.IsZero() {
		return "example.org"
	}
	return p.td.Name()
}

// selectors evaluates a list of "type:value" selectors.
func (p *parser) selectors(attr *hcl.Attribute, required bool) ([]string, bool) {
	list, ok := p.strList(attr)
	if !ok {
		return nil, false
	}
	if required && len(list) == 0 {
		p.errorf(attr.Expr.Range(), "No selectors",
			"An entry needs at least one selector saying which workloads get it, for example selectors = [\"unix:uid:1000\"].")
		return nil, false
	}
	var out []string
	for _, v := range list {
		if _, err := selector.Parse(v); err != nil {
			p.errorf(attr.Expr.Range(), "Invalid selector",
				"%q: %v. Write selectors as type:value, for example \"unix:uid:1000\" or \"k8s:ns:payments\".", v, strings.TrimPrefix(err.Error(), "invalid selector "))
			ok = false
			continue
		}
		out = append(out, v)
	}
	return out, ok
}

// optPath evaluates an optional path attribute, relative to the topology
// file's directory; "" when attr is nil or invalid.
func (p *parser) optPath(attr *hcl.Attribute) string {
	if attr == nil {
		return ""
	}
	v, ok := p.nonEmptyStr(attr)
	if !ok {
		return ""
	}
	return p.inputPath(attr.Expr.Range(), v)
}

// inputPath resolves the path v of a file that a process of the tree reads
// at start (a CA, a key, a bundle, a token). A relative path that names no
// file next to the topology file gets a warning: the node would stop at
// start. Absolute paths are not looked for: they usually name files on the
// machine that runs the node, not on the one that validates the file.
func (p *parser) inputPath(rng hcl.Range, v string) string {
	full := resolvePath(p.dir, v)
	if !p.checkFiles || filepath.IsAbs(v) {
		return full
	}
	if _, err := os.Stat(full); errors.Is(err, fs.ErrNotExist) {
		p.warnf(rng, "File not found",
			"%s does not exist (a relative path is read from the topology file's directory). The node that reads it stops at start without it: create the file first, or give an absolute path if it exists only on the machine that runs the node.", full)
	}
	return full
}

// socketPath evaluates a Unix socket path and checks its length.
func (p *parser) socketPath(attr *hcl.Attribute) (string, bool) {
	v, ok := p.nonEmptyStr(attr)
	if !ok {
		return "", false
	}
	v = resolvePath(p.dir, v)
	if len(v) > maxSocketPath {
		p.errorf(attr.Expr.Range(), "Socket path too long",
			"The socket path %s is %d bytes; Unix sockets allow at most %d. Use a shorter path, for example under /run or /tmp.", v, len(v), maxSocketPath)
		return "", false
	}
	return v, true
}

// mountPath evaluates a Vault mount path ("pki", "pki/int").
func (p *parser) mountPath(attr *hcl.Attribute) (string, bool) {
	v, ok := p.nonEmptyStr(attr)
	if !ok {
		return "", false
	}
	v = strings.Trim(v, "/")
	if v == "" || strings.ContainsAny(v, " ?#") {
		p.errorf(attr.Expr.Range(), "Invalid mount path",
			"%s is not a Vault mount path. Write it like \"pki\" or \"pki_int\".", attr.Name)
		return "", false
	}
	return v, true
}

// url evaluates an absolute http(s) URL; httpsOnly rejects http.
func (p *parser) url(attr *hcl.Attribute, httpsOnly bool) (string, bool) {
	v, ok := p.nonEmptyStr(attr)
	if !ok {
		return "", false
	}
	u, err := url.Parse(v)
	if err == nil && (u.Host == "" || (u.Scheme != "https" && (httpsOnly || u.Scheme != "http"))) {
		err = fmt.Errorf("want an absolute https URL")
		if !httpsOnly {
			err = fmt.Errorf("want an absolute http or https URL")
		}
	}
	if err != nil {
		p.errorf(attr.Expr.Range(), "Invalid URL",
			"%s = %q: %v. Write it like \"https://host.example:8200\".", attr.Name, v, err)
		return "", false
	}
	return v, true
}

// arn evaluates an Amazon Resource Name of the given service.
func (p *parser) arn(attr *hcl.Attribute, service string) (string, bool) {
	v, ok := p.nonEmptyStr(attr)
	if !ok {
		return "", false
	}
	parts := strings.SplitN(v, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || parts[1] == "" || parts[2] != service || parts[5] == "" {
		p.errorf(attr.Expr.Range(), "Invalid ARN",
			"%s = %q is not an ARN of %s. Write it like \"arn:aws:%s:REGION:ACCOUNT:RESOURCE\".", attr.Name, v, service, service)
		return "", false
	}
	return v, true
}

func (p *parser) boolean(attr *hcl.Attribute) (bool, bool) {
	v, ok := p.value(attr, cty.Bool, "true or false")
	if !ok {
		return false, false
	}
	return v.True(), true
}

func (p *parser) integer(attr *hcl.Attribute) (int, bool) {
	v, ok := p.value(attr, cty.Number, "a whole number")
	if !ok {
		return 0, false
	}
	bf := v.AsBigFloat()
	n, acc := bf.Int64()
	if acc != big.Exact || n < -1<<31 || n > 1<<31-1 {
		p.errorf(attr.Expr.Range(), "Wrong value type", "%s must be a whole number; got %s.", attr.Name, bf.Text('g', 10))
		return 0, false
	}
	return int(n), true
}

// defaultHost is the Host of a server that does not set one: the host of
// its address when that names another machine, else LocalHost.
func defaultHost(address string) string {
	host, _, err := net.SplitHostPort(address)
	if err != nil || host == "" || host == "localhost" {
		return LocalHost
	}
	if ip := net.ParseIP(host); ip != nil && (ip.IsLoopback() || ip.IsUnspecified()) {
		return LocalHost
	}
	return host
}

// blockRange is the whole of a block, header to closing brace.
func blockRange(b *hcl.Block) hcl.Range {
	if sb, ok := b.Body.(*hclsyntax.Body); ok {
		return hcl.RangeBetween(b.DefRange, sb.SrcRange)
	}
	return b.DefRange
}
