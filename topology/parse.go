package topology

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// ParseFile reads and parses a topology file. Files whose name ends in
// ".json" are read as HCL's JSON syntax, all others as native HCL.
//
// Parsing includes every check of the language and of the tree (what
// `arbor topology validate` reports): when the diagnostics hold an error
// the returned File is nil. Warnings come back with a File.
func ParseFile(path string) (*File, hcl.Diagnostics) {
	return ParseFileWith(path, Options{})
}

// Parse parses a topology file held in memory. filename appears in
// diagnostics, and its directory is the base of relative paths: file()
// arguments, state_dir, admin_socket, datastore and CA bundle paths.
func Parse(src []byte, filename string) (*File, hcl.Diagnostics) {
	return ParseWith(src, filename, Options{})
}

// Options tune parsing. The zero value reads the process environment.
type Options struct {
	// Vars set variables by name (as `--var NAME=VALUE` does); they win
	// over ARBOR_VAR_NAME environment variables and over defaults.
	Vars map[string]string
	// LookupEnv reads environment variables for env() and ARBOR_VAR_*;
	// nil means os.LookupEnv.
	LookupEnv func(string) (string, bool)
	// Environ lists the environment as KEY=VALUE, to find ARBOR_VAR_NAME
	// variables for names the file does not declare (an error, as --var
	// for such a name is). Nil means os.Environ when LookupEnv is nil too,
	// and no such check when LookupEnv is set.
	Environ func() []string
	// CheckFiles looks for the files the topology names by relative paths
	// (CA bundles, keys, bootstrap bundles: what a node reads at start)
	// next to filename, and warns about each one that does not exist
	// (the arbor topology commands check; the commands that start
	// nodes fail on the missing file itself).
	CheckFiles bool
}

// ParseFileWith is ParseFile with options.
func ParseFileWith(path string, opts Options) (*File, hcl.Diagnostics) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Cannot read topology file",
			Detail:   fmt.Sprintf("%v. Check the topology file's path.", err),
		}}
	}
	return ParseWith(src, path, opts)
}

// ParseWith is Parse with options.
func ParseWith(src []byte, filename string, opts Options) (*File, hcl.Diagnostics) {
	lookup := opts.LookupEnv
	if lookup == nil {
		lookup = os.LookupEnv
	}
	p := newParser(filename, lookup)
	p.checkFiles = opts.CheckFiles
	p.vars = opts.Vars
	p.environ = opts.Environ
	if p.environ == nil && opts.LookupEnv == nil {
		p.environ = os.Environ
	}
	f := p.parse(src)
	if f != nil {
		p.validate(f)
	}
	diags := sortDiagnostics(explain(p.diags, p.varNames))
	if diags.HasErrors() {
		return nil, diags
	}
	return f, diags
}

// parser holds the state of one Parse call.
type parser struct {
	filename  string
	dir       string
	lookupEnv func(string) (string, bool)
	environ   func() []string
	vars      map[string]string
	ctx       *hcl.EvalContext
	td        spiffeid.TrustDomain
	diags     hcl.Diagnostics
	reported  map[reportKey]bool
	defs      *defaultsBlock
	varNames  []string
	// parsed is how many diagnostics parsing left, before validate's own:
	// broken looks only at those.
	parsed int
	// checkFiles is Options.CheckFiles.
	checkFiles bool
}

type reportKey struct {
	rng  hcl.Range
	what string
}

func newParser(filename string, lookupEnv func(string) (string, bool)) *parser {
	dir := filepath.Dir(filename)
	return &parser{
		filename:  filename,
		dir:       dir,
		lookupEnv: lookupEnv,
		ctx: &hcl.EvalContext{
			Functions: functions(dir, lookupEnv),
			Variables: map[string]cty.Value{"var": cty.EmptyObjectVal},
		},
		reported: map[reportKey]bool{},
	}
}

func (p *parser) parse(src []byte) *File {
	hp := hclparse.NewParser()
	var hf *hcl.File
	var diags hcl.Diagnostics
	if strings.HasSuffix(p.filename, ".json") {
		hf, diags = hp.ParseJSON(src, p.filename)
	} else {
		hf, diags = hp.ParseHCL(src, p.filename)
	}
	p.diags = append(p.diags, diags...)
	if diags.HasErrors() {
		return nil
	}

	content := p.content(hf.Body, fileSchema)
	f := &File{Path: p.filename}
	f.Variables = p.variables(content.Blocks.OfType("variable"))

	if attr, ok := content.Attributes["trust_domain"]; ok {
		if s, ok := p.str(attr); ok {
			td, err := spiffeid.TrustDomainFromString(s)
			if err != nil {
				p.errorf(attr.Expr.Range(), "Invalid trust domain",
					"%q is not a valid trust domain: %v. Use a lowercase DNS-like name such as \"example.org\".", s, err)
			} else {
				f.TrustDomain = td
				p.td = td
			}
		}
	}

	var defaults *defaultsBlock
	for _, b := range content.Blocks.OfType("defaults") {
		if defaults != nil {
			p.errorf(b.DefRange, "Duplicate defaults block",
				"A defaults block is already declared at line %d. Merge the two blocks into one.", defaults.Range.Start.Line)
			continue
		}
		defaults = p.defaults(b)
	}
	if defaults == nil {
		defaults = &defaultsBlock{}
	}
	f.Defaults = defaults.Defaults
	p.defs = defaults

	seen := map[string]*Server{}
	for _, b := range content.Blocks.OfType("server") {
		s := p.server(b, defaults)
		if first, dup := seen[s.Name]; dup {
			p.errorf(b.LabelRanges[0], "Duplicate server name",
				"A server named %q is already declared at line %d. Rename one of them: server names must be unique within a topology.", s.Name, first.Range.Start.Line)
			continue
		}
		seen[s.Name] = s
		f.Servers = append(f.Servers, s)
	}
	if len(content.Blocks.OfType("server")) == 0 && !p.diags.HasErrors() {
		p.errorf(hf.Body.MissingItemRange(), "No servers",
			"The topology declares no server blocks. Add at least one, for example:\n  server \"root\" {\n    listen = \"127.0.0.1:8081\"\n  }")
	}
	p.checkParents(f)

	seenFed := map[string]*Federation{}
	for _, b := range content.Blocks.OfType("federation") {
		fed, ok := p.federation(b)
		if !ok {
			continue
		}
		if first, dup := seenFed[fed.TrustDomain.Name()]; dup {
			p.errorf(b.LabelRanges[0], "Duplicate federation",
				"Trust domain %q is already federated at line %d. Merge the two blocks into one.", fed.TrustDomain.Name(), first.Range.Start.Line)
			continue
		}
		seenFed[fed.TrustDomain.Name()] = &fed
		f.Federations = append(f.Federations, fed)
	}
	p.checkFetchedBy(f)
	return f
}

// content decodes body against schema, adding to hcl's diagnostics what is
// allowed instead.
func (p *parser) content(body hcl.Body, schema *hcl.BodySchema) *hcl.BodyContent {
	content, diags := body.Content(schema)
	for _, d := range diags {
		switch {
		case strings.Contains(d.Detail, "Did you mean"):
		case d.Summary == "Unsupported argument" || d.Summary == "Extraneous JSON object property":
			d.Detail += " Remove it, or use what is allowed here: " + schemaNames(schema) + "."
		case d.Summary == "Unsupported block type":
			d.Detail += " Remove it, or use what is allowed here: " + schemaNames(schema) + "."
		case d.Summary == "Missing required argument":
			d.Detail += " Add it to this block."
		}
	}
	p.diags = append(p.diags, diags...)
	return content
}

// setting is an effective value and where it was written; rng is nil for a
// built-in default.
type setting[T any] struct {
	val T
	rng *hcl.Range
}

// from returns the setting written in the server block if any, else the one
// from the defaults block if any, else the built-in default.
func from[T any](server, defaults setting[T], builtin T) setting[T] {
	switch {
	case server.rng != nil:
		return server
	case defaults.rng != nil:
		return defaults
	}
	return setting[T]{val: builtin}
}

// defaultsBlock is the decoded defaults block with where each value came from.
type defaultsBlock struct {
	Defaults
	caTTL, x509TTL, jwtTTL setting[time.Duration]
	agentTTL, syncInterval setting[time.Duration]
	keyType, jwtKeyType    setting[KeyType]
	logLevel, logFormat    setting[string]
	spans                  map[string][]hcl.Range
}

// spansOf returns the whole range of each attribute and nested block of
// content, by name (block type for blocks).
func spansOf(content *hcl.BodyContent) map[string][]hcl.Range {
	spans := map[string][]hcl.Range{}
	for n, attr := range content.Attributes {
		spans[n] = append(spans[n], attr.Range)
	}
	for _, b := range content.Blocks {
		spans[b.Type] = append(spans[b.Type], blockRange(b))
	}
	return spans
}

func (p *parser) defaults(b *hcl.Block) *defaultsBlock {
	content := p.content(b.Body, defaultsSchema)
	d := &defaultsBlock{spans: spansOf(content)}
	d.Range = b.DefRange
	a := content.Attributes
	d.caTTL = p.durationSetting(a["ca_ttl"])
	d.x509TTL = p.durationSetting(a["x509_svid_ttl"])
	d.jwtTTL = p.durationSetting(a["jwt_svid_ttl"])
	d.agentTTL = p.durationSetting(a["agent_svid_ttl"])
	d.syncInterval = p.durationSetting(a["sync_interval"])
	d.MinOutageBudget = p.durationSetting(a["min_outage_budget"]).val
	d.AgentSVIDTTL, d.SyncInterval = d.agentTTL.val, d.syncInterval.val
	d.keyType = p.keyTypeSetting(a["key_type"])
	d.jwtKeyType = p.keyTypeSetting(a["jwt_key_type"])
	d.logLevel = p.enumSetting(a["log_level"], logLevels)
	d.logFormat = p.enumSetting(a["log_format"], logFormats)
	d.CATTL, d.X509SVIDTTL, d.JWTSVIDTTL = d.caTTL.val, d.x509TTL.val, d.jwtTTL.val
	d.KeyType, d.JWTKeyType = d.keyType.val, d.jwtKeyType.val
	d.LogLevel, d.LogFormat = d.logLevel.val, d.logFormat.val
	return d
}

var (
	logLevels     = []string{"debug", "info", "warn", "error"}
	logFormats    = []string{"text", "json"}
	caKeyStorages = []string{CAKeyStorageDisk, CAKeyStorageMemory}
	serverNameRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
)

// maxSocketPath is the longest Unix socket path every supported OS accepts
// (sun_path is 104 bytes on the BSDs and macOS, 108 on Linux, NUL included).
const maxSocketPath = 103

func (p *parser) server(b *hcl.Block, d *defaultsBlock) *Server {
	name := b.Labels[0]
	s := &Server{Name: name, Range: b.DefRange, attrs: map[string]hcl.Range{}, bodyRange: blockRange(b)}
	if !serverNameRE.MatchString(name) {
		p.errorf(b.LabelRanges[0], "Invalid server name",
			"%q cannot name a server: names are used in paths and SPIFFE IDs. Start with a letter or digit and use only letters, digits, '.', '-' and '_'.", name)
	}

	content := p.content(b.Body, serverSchema)
	a := content.Attributes
	s.spans = spansOf(content)
	for n, attr := range a {
		s.attrs[n] = attr.Expr.Range()
	}

	if attr, ok := a["parent"]; ok {
		s.Parent, _ = p.str(attr)
	}

	s.Listen = DefaultListen
	if attr, ok := a["listen"]; ok {
		if v, ok := p.hostPort(attr); ok {
			s.Listen = v
		}
	}
	if attr, ok := a["address"]; ok {
		s.Addresses, _ = p.addresses(attr)
	}
	s.HealthListen = DefaultHealthListen
	if attr, ok := a["health_listen"]; ok {
		if v, ok := p.str(attr); ok {
			if v == "" || v == "off" {
				s.HealthListen = ""
			} else if v, ok := p.hostPort(attr); ok {
				s.HealthListen = v
			}
		}
	}

	s.StateDir = filepath.Join(StateRoot(p.filename), name)
	if attr, ok := a["state_dir"]; ok {
		if v, ok := p.nonEmptyStr(attr); ok {
			s.StateDir = resolvePath(p.dir, v)
		}
	}
	s.AdminSocket = filepath.Join(s.StateDir, "admin.sock")
	adminRange := s.Range
	if attr, ok := a["admin_socket"]; ok {
		if v, ok := p.nonEmptyStr(attr); ok {
			s.AdminSocket = resolvePath(p.dir, v)
		}
		adminRange = attr.Expr.Range()
	}
	if len(s.AdminSocket) > maxSocketPath {
		p.errorf(adminRange, "Admin socket path too long",
			"The admin socket path %s is %d bytes; Unix sockets allow at most %d. Set admin_socket (or state_dir) to a shorter path, for example admin_socket = \"/tmp/arbor-%s.sock\".",
			s.AdminSocket, len(s.AdminSocket), maxSocketPath, name)
	}

	caTTL := from(p.durationSetting(a["ca_ttl"]), d.caTTL, DefaultCATTL)
	x509TTL := from(p.durationSetting(a["x509_svid_ttl"]), d.x509TTL, DefaultX509SVIDTTL)
	jwtTTL := from(p.durationSetting(a["jwt_svid_ttl"]), d.jwtTTL, DefaultJWTSVIDTTL)
	s.CATTL, s.X509SVIDTTL, s.JWTSVIDTTL = caTTL.val, x509TTL.val, jwtTTL.val
	s.caTTLRange = caTTL.rng
	s.x509TTLRange = x509TTL.rng
	s.AgentSVIDTTL = from(p.durationSetting(a["agent_svid_ttl"]), d.agentTTL, x509TTL.val).val
	p.checkSVIDTTL(s, "x509_svid_ttl", x509TTL, caTTL)
	p.checkSVIDTTL(s, "jwt_svid_ttl", jwtTTL, caTTL)

	keyType := from(p.keyTypeSetting(a["key_type"]), d.keyType, DefaultKeyType)
	s.KeyType = keyType.val
	s.JWTKeyType = from(p.keyTypeSetting(a["jwt_key_type"]), d.jwtKeyType, keyType.val).val
	s.CAKeyStorage = from(p.enumSetting(a["ca_key_storage"], caKeyStorages), setting[string]{}, DefaultCAKeyStorage).val
	s.LogLevel = from(p.enumSetting(a["log_level"], logLevels), d.logLevel, DefaultLogLevel).val
	s.LogFormat = from(p.enumSetting(a["log_format"], logFormats), d.logFormat, DefaultLogFormat).val
	if attr, ok := a["jwt_issuer"]; ok {
		s.JWTIssuer, _ = p.str(attr)
	}
	s.Replicas = DefaultReplicas
	if attr, ok := a["replicas"]; ok {
		if n, ok := p.integer(attr); ok {
			if n < 1 || n > 100 {
				p.errorf(attr.Expr.Range(), "Invalid replicas",
					"replicas = %d is out of range. Run 1 to 100 processes of a server block; remove the attribute for 1.", n)
			} else {
				s.Replicas = n
			}
		}
	}
	if len(s.Addresses) == 0 {
		// No address (or one with an error): agents and children reach
		// the tier at its replicas' listen addresses.
		for k := 1; k <= s.Replicas; k++ {
			s.Addresses = append(s.Addresses, shiftPort(s.Listen, k-1))
		}
	}
	s.Address = s.Addresses[0]
	s.Host = defaultHost(s.Address)
	if attr, ok := a["host"]; ok {
		if v, ok := p.nonEmptyStr(attr); ok {
			s.Host = v
		}
	}
	if !p.td.IsZero() {
		s.SPIFFEID, _ = spiffeid.FromSegments(p.td, "arbor", "server", name)
	}
	if attr, ok := a["spiffe_id"]; ok {
		if id, ok := p.spiffeID(attr, roleEntryID, "/arbor/server/"+name); ok {
			s.SPIFFEID = id
		}
	}

	for i, ub := range content.Blocks.OfType("upstream") {
		if i > 0 {
			p.errorf(ub.DefRange, "Duplicate upstream block",
				"Server %q already has an upstream block at line %d; a root has at most one upstream authority. Remove one of them.", name, content.Blocks.OfType("upstream")[0].DefRange.Start.Line)
			continue
		}
		s.Upstream = p.upstream(ub, s)
	}

	s.Datastore = Datastore{Kind: DatastoreSQLite, Path: filepath.Join(s.StateDir, "datastore.sqlite3")}
	var datastoreBlock *hcl.Block
	for _, db := range content.Blocks.OfType("datastore") {
		if datastoreBlock != nil {
			p.errorf(db.DefRange, "Duplicate datastore block",
				"Server %q already has a datastore block at line %d; a server has exactly one datastore. Remove one of them.", name, datastoreBlock.DefRange.Start.Line)
			continue
		}
		datastoreBlock = db
		if ds, ok := p.datastore(db, s.StateDir); ok {
			s.Datastore = ds
		}
	}

	seen := map[string]*hcl.Block{}
	for _, nb := range content.Blocks.OfType("node_attestor") {
		kind := nb.Labels[0]
		if first, dup := seen[kind]; dup {
			p.errorf(nb.LabelRanges[0], "Duplicate node attestor",
				"Server %q already configures node_attestor %q at line %d. Merge the two blocks into one.", name, kind, first.DefRange.Start.Line)
			continue
		}
		seen[kind] = nb
		if na, ok := p.nodeAttestor(nb); ok {
			s.NodeAttestors = append(s.NodeAttestors, na)
		}
	}
	if len(seen) == 0 {
		s.NodeAttestors = []NodeAttestor{{Kind: NodeAttestorJoinToken, JoinToken: JoinToken{DefaultTTL: DefaultJoinTokenTTL}}}
	}

	agents := content.Blocks.OfType("agent")
	for i, ab := range agents {
		if i > 0 {
			p.errorf(ab.DefRange, "Duplicate agent block",
				"Server %q already has an agent block at line %d; a server has one co-located agent. Merge the two blocks into one.", name, agents[0].DefRange.Start.Line)
			continue
		}
		s.Agent = p.agent(ab, s, d)
	}
	if s.Agent == nil && (s.Parent != "" || (s.Upstream != nil && s.Upstream.Kind == UpstreamSPIRE)) {
		s.Agent = p.defaultAgent(s, d)
		s.agentDefaulted = true
	}
	if s.Upstream != nil && s.Upstream.SPIRE != nil && s.Upstream.SPIRE.WorkloadAPISocket == "" && s.Agent != nil {
		s.Upstream.SPIRE.WorkloadAPISocket = s.Agent.SocketPath
	}

	endpoints := content.Blocks.OfType("bundle_endpoint")
	for i, bb := range endpoints {
		if i > 0 {
			p.errorf(bb.DefRange, "Duplicate bundle_endpoint block",
				"Server %q already has a bundle_endpoint block at line %d; a server serves one bundle endpoint. Remove one of them.", name, endpoints[0].DefRange.Start.Line)
			continue
		}
		s.BundleEndpoint = p.bundleEndpoint(bb)
	}

	oidcs := content.Blocks.OfType("oidc_discovery")
	for i, ob := range oidcs {
		if i > 0 {
			p.errorf(ob.DefRange, "Duplicate oidc_discovery block",
				"Server %q already has an oidc_discovery block at line %d; a server serves one OIDC discovery provider. Remove one of them.", name, oidcs[0].DefRange.Start.Line)
			continue
		}
		s.OIDCDiscovery = p.oidcDiscovery(ob)
	}

	// Names are compared whatever else is wrong with an entry: an error in
	// its IDs does not hide that the next block reuses its name.
	seenEntries := map[string]hcl.Range{}
	for _, eb := range content.Blocks.OfType("entry") {
		e, ok := p.entry(eb, s)
		if first, dup := seenEntries[e.Name]; dup {
			p.errorf(eb.LabelRanges[0], "Duplicate entry name",
				"Server %q already declares entry %q at line %d. Rename one of them: entry names identify entries when the topology is applied.", name, e.Name, first.Start.Line)
			continue
		}
		seenEntries[e.Name] = e.Range
		if !ok {
			s.invalidEntries = append(s.invalidEntries, e)
			continue
		}
		s.Entries = append(s.Entries, e)
	}
	return s
}

// oidcDiscovery decodes an oidc_discovery block.
func (p *parser) oidcDiscovery(b *hcl.Block) *OIDCDiscovery {
	content := p.content(b.Body, oidcDiscoverySchema)
	a := content.Attributes
	o := &OIDCDiscovery{Range: b.DefRange}
	if attr, ok := a["listen"]; ok {
		o.Listen, _ = p.hostPort(attr)
	}
	if attr, ok := a["issuer"]; ok {
		o.Issuer, _ = p.url(attr, true)
	}
	for name, dst := range map[string]*string{"cert_file": &o.CertFile, "key_file": &o.KeyFile} {
		if attr, ok := a[name]; ok {
			if v, ok := p.nonEmptyStr(attr); ok {
				*dst = p.inputPath(attr.Expr.Range(), v)
			}
		}
	}
	return o
}

// bundleEndpoint decodes a bundle_endpoint block. https_spiffe (the default)
// presents the server's SVID and takes no files; https_web needs both.
func (p *parser) bundleEndpoint(b *hcl.Block) *BundleEndpoint {
	content := p.content(b.Body, bundleEndpointSchema)
	a := content.Attributes
	be := &BundleEndpoint{Profile: ProfileHTTPSSPIFFE, RefreshHint: DefaultBundleRefreshHint, Range: b.DefRange}
	if attr, ok := a["listen"]; ok {
		be.Listen, _ = p.hostPort(attr)
	}
	be.Profile = from(p.enumSetting(a["profile"], []string{ProfileHTTPSSPIFFE, ProfileHTTPSWeb}), setting[string]{}, ProfileHTTPSSPIFFE).val
	be.RefreshHint = from(p.durationSetting(a["refresh_hint"]), setting[time.Duration]{}, DefaultBundleRefreshHint).val
	if attr, ok := a["refresh_hint"]; ok {
		be.refreshHintRange = attr.Expr.Range().Ptr()
	}
	for _, f := range []struct {
		name string
		dst  *string
	}{{"cert_file", &be.CertFile}, {"key_file", &be.KeyFile}} {
		attr, ok := a[f.name]
		if !ok {
			continue
		}
		if be.Profile != ProfileHTTPSWeb {
			p.errorf(attr.NameRange, "File of the wrong profile",
				"%s is for profile = %q: the %q profile presents the server's own SVID. Remove %s, or set profile = %q.", f.name, ProfileHTTPSWeb, be.Profile, f.name, ProfileHTTPSWeb)
			continue
		}
		if v, ok := p.nonEmptyStr(attr); ok {
			*f.dst = p.inputPath(attr.Expr.Range(), v)
		}
	}
	if be.Profile == ProfileHTTPSWeb && (be.CertFile == "" || be.KeyFile == "") {
		if _, certOK := a["cert_file"]; !certOK || a["key_file"] == nil {
			p.errorf(b.DefRange, "Missing Web PKI certificate",
				"profile = %q presents a Web PKI certificate: set cert_file and key_file (PEM), or use profile = %q to present the server's SVID.", ProfileHTTPSWeb, ProfileHTTPSSPIFFE)
		}
	}
	return be
}

func (p *parser) datastore(b *hcl.Block, stateDir string) (Datastore, bool) {
	kind := b.Labels[0]
	schema, ok := datastoreSchemas[kind]
	if !ok {
		p.errorf(b.LabelRanges[0], "Unknown datastore kind",
			"%q is not a datastore kind. Use %s.", kind, quotedList(sortedKeys(datastoreSchemas)))
		return Datastore{}, false
	}
	content := p.content(b.Body, schema)
	ds := Datastore{Kind: kind}
	switch kind {
	case DatastoreSQLite:
		ds.Path = filepath.Join(stateDir, "datastore.sqlite3")
		if attr, ok := content.Attributes["path"]; ok {
			if v, ok := p.nonEmptyStr(attr); ok {
				ds.Path = resolvePath(p.dir, v)
			}
		}
	case DatastorePostgres:
		attr, ok := content.Attributes["dsn"]
		if !ok {
			p.errorf(b.DefRange, "Missing PostgreSQL DSN",
				"A postgres datastore needs a connection string. Add dsn inside the block, for example dsn = env(\"ARBOR_DSN\") or dsn = \"postgres://arbor@db.internal/arbor\".")
			return ds, false
		}
		v, ok := p.nonEmptyStr(attr)
		if !ok {
			return ds, false
		}
		ds.DSN = v
	}
	return ds, true
}

// checkParents rejects parent names that no server block declares. The
// deeper checks of the tree (cycles, CA TTL nesting) belong to the full
// validation.
func (p *parser) checkParents(f *File) {
	var names []string
	for _, s := range f.Servers {
		names = append(names, s.Name)
	}
	for _, s := range f.Servers {
		if s.Parent == "" {
			continue
		}
		rng := s.AttrRange("parent")
		switch {
		case s.Parent == s.Name:
			p.errorf(rng, "Server is its own parent",
				"Server %q names itself as parent. Remove parent for a root server, or name the server it obtains its CA from.", s.Name)
		case !slices.Contains(names, s.Parent):
			hint := ""
			if sug := suggest(s.Parent, names); sug != "" {
				hint = fmt.Sprintf(" Did you mean %q?", sug)
			}
			p.errorf(rng, "Unknown parent server",
				"Server %q names parent %q, but no server block has that name.%s Servers in this file: %s.", s.Name, s.Parent, hint, strings.Join(names, ", "))
		}
	}
}

// checkFetchedBy refuses a fetched_by that names no server and resolves an
// absent one to the root.
func (p *parser) checkFetchedBy(f *File) {
	var names []string
	for _, s := range f.Servers {
		names = append(names, s.Name)
	}
	for i := range f.Federations {
		fed := &f.Federations[i]
		switch {
		case fed.FetchedBy == "":
			if root := f.Root(); root != nil {
				fed.FetchedBy = root.Name
			}
		case !slices.Contains(names, fed.FetchedBy):
			hint := ""
			if sug := suggest(fed.FetchedBy, names); sug != "" {
				hint = fmt.Sprintf(" Did you mean %q?", sug)
			}
			p.errorf(fed.fetchedByRange, "Unknown server in fetched_by",
				"Federation %q is fetched_by %q, but no server block has that name.%s Name one of this file's servers (%s), or remove fetched_by to have the root fetch it.",
				fed.TrustDomain.Name(), fed.FetchedBy, hint, strings.Join(names, ", "))
		}
	}
}

// checkSVIDTTL enforces that an SVID lives at most half as long as the CA
// that signs it, so the CA can be rotated at half-life and still cover
// every SVID it issued for its full lifetime.
func (p *parser) checkSVIDTTL(s *Server, attr string, svid, ca setting[time.Duration]) {
	if svid.val == 0 || ca.val == 0 || svid.val <= ca.val/2 {
		return
	}
	rng := s.Range
	switch {
	case svid.rng != nil:
		rng = *svid.rng
	case ca.rng != nil:
		rng = *ca.rng
	}
	// A bad value in the defaults block is reported once, not per server.
	key := reportKey{rng, attr}
	if p.reported[key] {
		return
	}
	p.reported[key] = true
	p.errorf(rng, "SVID TTL too long for the CA",
		"Server %q: %s is %s (%s) but ca_ttl is %s (%s); an SVID may live at most half the CA TTL. Lower %s to at most %s, or raise ca_ttl to at least %s.",
		s.Name, attr, formatDuration(svid.val), origin(svid.rng), formatDuration(ca.val), origin(ca.rng),
		attr, formatDuration(ca.val/2), formatDuration(2*svid.val))
}

func origin(r *hcl.Range) string {
	if r == nil {
		return "the built-in default"
	}
	return fmt.Sprintf("set at line %d", r.Start.Line)
}

// value evaluates attr and converts it to ty, reporting failures. A null
// value is an error: every attribute of the language has a meaning only
// when set.
func (p *parser) value(attr *hcl.Attribute, ty cty.Type, want string) (cty.Value, bool) {
	v, diags := attr.Expr.Value(p.ctx)
	p.diags = append(p.diags, diags...)
	if diags.HasErrors() {
		return cty.NilVal, false
	}
	if !v.IsWhollyKnown() {
		return cty.NilVal, false // refers to a variable whose error is reported
	}
	if v.IsNull() {
		p.errorf(attr.Expr.Range(), "Missing value", "%s must be %s, not null. Set a value or remove the attribute.", attr.Name, want)
		return cty.NilVal, false
	}
	cv, err := convert.Convert(v, ty)
	if err != nil || !cv.IsWhollyKnown() {
		p.errorf(attr.Expr.Range(), "Wrong value type", "%s must be %s; got %s.", attr.Name, want, v.Type().FriendlyName())
		return cty.NilVal, false
	}
	return cv, true
}

func (p *parser) str(attr *hcl.Attribute) (string, bool) {
	v, ok := p.value(attr, cty.String, "a string")
	if !ok {
		return "", false
	}
	return v.AsString(), true
}

func (p *parser) nonEmptyStr(attr *hcl.Attribute) (string, bool) {
	s, ok := p.str(attr)
	if ok && s == "" {
		p.errorf(attr.Expr.Range(), "Empty value", "%s must not be empty. Set a value or remove the attribute to use the default.", attr.Name)
		return "", false
	}
	return s, ok
}

func (p *parser) strList(attr *hcl.Attribute) ([]string, bool) {
	v, ok := p.value(attr, cty.List(cty.String), "a list of strings")
	if !ok {
		return nil, false
	}
	out := []string{}
	for _, e := range v.AsValueSlice() {
		if e.IsNull() {
			p.errorf(attr.Expr.Range(), "Missing value", "%s must not contain null.", attr.Name)
			return nil, false
		}
		out = append(out, e.AsString())
	}
	return out, true
}

// addresses evaluates a server's address: one host:port (a load balancer,
// or a DNS name with several records) or a list of them (several servers
// of the tier). An element's error is reported at the element when the
// list is written out, at the attribute when it comes from an expression.
func (p *parser) addresses(attr *hcl.Attribute) ([]string, bool) {
	type elem struct {
		v   cty.Value
		rng hcl.Range
	}
	var elems []elem
	if exprs, diags := hcl.ExprList(attr.Expr); !diags.HasErrors() {
		for _, e := range exprs {
			v, diags := e.Value(p.ctx)
			p.diags = append(p.diags, diags...)
			if diags.HasErrors() || !v.IsWhollyKnown() {
				return nil, false
			}
			elems = append(elems, elem{v, e.Range()})
		}
	} else {
		v, diags := attr.Expr.Value(p.ctx)
		p.diags = append(p.diags, diags...)
		if diags.HasErrors() || !v.IsWhollyKnown() {
			return nil, false
		}
		switch {
		case v.IsNull():
			p.errorf(attr.Expr.Range(), "Missing value", "address must be a host:port string or a list of them, not null. Set a value or remove the attribute.")
			return nil, false
		case v.Type() == cty.String:
			s, ok := p.hostPort(attr)
			if !ok {
				return nil, false
			}
			return []string{s}, true
		case v.Type().IsListType() || v.Type().IsTupleType() || v.Type().IsSetType():
			for _, e := range v.AsValueSlice() {
				elems = append(elems, elem{e, attr.Expr.Range()})
			}
		default:
			p.errorf(attr.Expr.Range(), "Wrong value type",
				"address must be a host:port string or a list of them; got %s. Write address = \"host:port\" or address = [\"host1:port\", \"host2:port\"].", v.Type().FriendlyName())
			return nil, false
		}
	}
	if len(elems) == 0 {
		p.errorf(attr.Expr.Range(), "Empty address list",
			"address lists no server. Write one host:port, or a list of them: address = [\"10.0.0.1:8081\", \"10.0.0.2:8081\"]; remove the attribute to use the listen address.")
		return nil, false
	}
	var out []string
	ok := true
	for i, e := range elems {
		if e.v.IsNull() || e.v.Type() != cty.String {
			what := "null"
			if !e.v.IsNull() {
				what = e.v.Type().FriendlyName()
			}
			p.errorf(e.rng, "Wrong value type",
				"address[%d] must be a host:port string; got %s. Write each server of the tier as \"host:port\".", i, what)
			ok = false
			continue
		}
		a := e.v.AsString()
		if err := checkHostPort(a); err != nil {
			p.errorf(e.rng, "Invalid address",
				"address[%d] = %q is not a host:port address: %v. Write it as host:port, for example \"127.0.0.1:8081\" or \"[::1]:8081\".", i, a, err)
			ok = false
			continue
		}
		if j := slices.Index(out, a); j >= 0 {
			p.errorf(e.rng, "Duplicate address",
				"address[%d] = %q is also address[%d]; list each server of the tier once.", i, a, j)
			ok = false
			continue
		}
		out = append(out, a)
	}
	if !ok {
		return nil, false
	}
	return out, true
}

// hostPort evaluates a "host:port" listen or dial address.
func (p *parser) hostPort(attr *hcl.Attribute) (string, bool) {
	s, ok := p.str(attr)
	if !ok {
		return "", false
	}
	if err := checkHostPort(s); err != nil {
		p.errorf(attr.Expr.Range(), "Invalid address",
			"%s = %q is not a host:port address: %v. Write it as host:port, for example \"127.0.0.1:8081\" or \"[::1]:8081\".", attr.Name, s, err)
		return "", false
	}
	return s, true
}

func (p *parser) durationSetting(attr *hcl.Attribute) setting[time.Duration] {
	if attr == nil {
		return setting[time.Duration]{}
	}
	s, ok := p.str(attr)
	if !ok {
		return setting[time.Duration]{}
	}
	d, err := ParseDuration(s)
	if err == nil && d <= 0 {
		err = fmt.Errorf("it must be longer than zero")
	}
	if err != nil {
		p.errorf(attr.Expr.Range(), "Invalid duration",
			"%s = %q is not a valid duration (%v). Write a number with a unit: \"90s\", \"30m\", \"1h\", \"1h30m\" or \"7d\".",
			attr.Name, s, strings.TrimPrefix(err.Error(), "topology: "))
		return setting[time.Duration]{}
	}
	r := attr.Expr.Range()
	return setting[time.Duration]{val: d, rng: &r}
}

func (p *parser) enumSetting(attr *hcl.Attribute, allowed []string) setting[string] {
	if attr == nil {
		return setting[string]{}
	}
	s, ok := p.str(attr)
	if !ok {
		return setting[string]{}
	}
	if !slices.Contains(allowed, s) {
		hint := ""
		if sug := suggest(s, allowed); sug != "" {
			hint = fmt.Sprintf(" Did you mean %q?", sug)
		}
		p.errorf(attr.Expr.Range(), fmt.Sprintf("Invalid %s", attr.Name),
			"%q is not a valid %s.%s Use %s.", s, attr.Name, hint, quotedList(allowed))
		return setting[string]{}
	}
	r := attr.Expr.Range()
	return setting[string]{val: s, rng: &r}
}

func (p *parser) keyTypeSetting(attr *hcl.Attribute) setting[KeyType] {
	st := p.enumSetting(attr, keyTypes)
	return setting[KeyType]{val: KeyType(st.val), rng: st.rng}
}

func (p *parser) errorf(rng hcl.Range, summary, detail string, args ...any) {
	r := rng
	p.diags = append(p.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   fmt.Sprintf(detail, args...),
		Subject:  &r,
	})
}

// schemaNames lists what a schema accepts, for "not expected here" details.
func schemaNames(schema *hcl.BodySchema) string {
	var names []string
	for _, a := range schema.Attributes {
		names = append(names, a.Name)
	}
	for _, b := range schema.Blocks {
		names = append(names, b.Type+" { }")
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}
