package topology

import "github.com/hashicorp/hcl/v2"

// This file is the topology language: every block and attribute the parser
// accepts is declared here and nowhere else. Anything not listed is reported
// as a diagnostic at its line (there is deliberately no catch-all "remain"
// body). To grow the language, add the schema here, then its decoding in
// parse.go and its checks in validate.go.

// fileSchema is the top level of a topology file.
var fileSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "trust_domain", Required: true},
	},
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "defaults"},
		{Type: "server", LabelNames: []string{"name"}},
	},
}

// defaultsSchema is the defaults block: settings every server inherits.
var defaultsSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "ca_ttl"},
		{Name: "x509_svid_ttl"},
		{Name: "jwt_svid_ttl"},
		{Name: "key_type"},
		{Name: "jwt_key_type"},
		{Name: "log_level"},
		{Name: "log_format"},
	},
}

// serverSchema is a server "NAME" block.
var serverSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "parent"},
		{Name: "listen"},
		{Name: "address"},
		{Name: "admin_socket"},
		{Name: "health_listen"},
		{Name: "state_dir"},
		{Name: "ca_ttl"},
		{Name: "x509_svid_ttl"},
		{Name: "jwt_svid_ttl"},
		{Name: "key_type"},
		{Name: "jwt_key_type"},
		{Name: "ca_key_storage"},
		{Name: "log_level"},
		{Name: "log_format"},
		{Name: "jwt_issuer"},
	},
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "datastore", LabelNames: []string{"kind"}},
		{Type: "node_attestor", LabelNames: []string{"kind"}},
	},
}

// datastoreSchemas is the body of datastore "KIND" per kind.
var datastoreSchemas = map[string]*hcl.BodySchema{
	DatastoreSQLite: {
		Attributes: []hcl.AttributeSchema{{Name: "path"}},
	},
	DatastorePostgres: {
		Attributes: []hcl.AttributeSchema{{Name: "dsn"}},
	},
}

// nodeAttestorSchemas is the body of node_attestor "KIND" per kind.
var nodeAttestorSchemas = map[string]*hcl.BodySchema{
	NodeAttestorJoinToken: {
		Attributes: []hcl.AttributeSchema{{Name: "default_ttl"}},
	},
	NodeAttestorX509PoP: {
		Attributes: []hcl.AttributeSchema{
			{Name: "ca_bundle_paths", Required: true},
			{Name: "agent_path_template"},
		},
	},
}

// plannedBlocks are block types of the full topology language that this
// version does not implement yet, by the schema they would appear in. They
// are still errors, but the diagnostic says so instead of "not expected".
var plannedBlocks = map[*hcl.BodySchema][]string{
	fileSchema:   {"agent", "entry", "federation", "variable"},
	serverSchema: {"upstream"},
}
