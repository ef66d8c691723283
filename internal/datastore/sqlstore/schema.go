package sqlstore

// SchemaVersion is the schema version this code migrates databases to: the
// number of migrations.
const SchemaVersion = 3

// migrations[i] takes the schema from version i to i+1. The SQL is the common
// subset of SQLite and PostgreSQL; {{autoid}} is Dialect.AutoID. Never edit a
// released migration: append a new one and raise SchemaVersion.
var migrations = [][]string{
	// 1: the initial schema.
	{
		// dedupe_key is a hash of parent ID, SPIFFE ID and the sorted selector
		// set (see dedupeKey): its UNIQUE constraint is what rejects a
		// duplicate entry, also between servers sharing the database.
		// dns_names and federates_with are JSON arrays ('' when empty); the
		// selectors get a child table because lookups by selector need it.
		`CREATE TABLE entries (
			id TEXT PRIMARY KEY,
			spiffe_id TEXT NOT NULL,
			parent_id TEXT NOT NULL,
			dedupe_key TEXT NOT NULL UNIQUE,
			x509_svid_ttl INTEGER NOT NULL DEFAULT 0,
			jwt_svid_ttl INTEGER NOT NULL DEFAULT 0,
			admin BOOLEAN NOT NULL DEFAULT FALSE,
			downstream BOOLEAN NOT NULL DEFAULT FALSE,
			store_svid BOOLEAN NOT NULL DEFAULT FALSE,
			hint TEXT NOT NULL DEFAULT '',
			dns_names TEXT NOT NULL DEFAULT '',
			federates_with TEXT NOT NULL DEFAULT '',
			revision_number BIGINT NOT NULL DEFAULT 0,
			created_at BIGINT NOT NULL,
			expires_at BIGINT NOT NULL DEFAULT 0,
			jwt_svid_include_jti BOOLEAN NOT NULL DEFAULT FALSE,
			disable_x509_svid_prefetch BOOLEAN NOT NULL DEFAULT FALSE
		)`,
		`CREATE INDEX entries_parent_id ON entries (parent_id)`,
		`CREATE INDEX entries_spiffe_id ON entries (spiffe_id)`,
		`CREATE TABLE entry_selectors (
			entry_id TEXT NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
			type TEXT NOT NULL,
			value TEXT NOT NULL,
			PRIMARY KEY (entry_id, type, value)
		)`,
		`CREATE INDEX entry_selectors_type_value ON entry_selectors (type, value)`,
		`CREATE TABLE entry_events (
			id {{autoid}},
			entry_id TEXT NOT NULL,
			created_at BIGINT NOT NULL
		)`,
		`CREATE INDEX entry_events_created_at ON entry_events (created_at)`,

		`CREATE TABLE nodes (
			spiffe_id TEXT PRIMARY KEY,
			attestation_type TEXT NOT NULL DEFAULT '',
			cert_serial TEXT NOT NULL DEFAULT '',
			cert_not_after BIGINT NOT NULL DEFAULT 0,
			new_cert_serial TEXT NOT NULL DEFAULT '',
			new_cert_not_after BIGINT NOT NULL DEFAULT 0,
			can_reattest BOOLEAN NOT NULL DEFAULT FALSE,
			agent_version TEXT NOT NULL DEFAULT ''
		)`,
		`CREATE TABLE node_selectors (
			spiffe_id TEXT NOT NULL REFERENCES nodes (spiffe_id) ON DELETE CASCADE,
			type TEXT NOT NULL,
			value TEXT NOT NULL,
			PRIMARY KEY (spiffe_id, type, value)
		)`,
		`CREATE INDEX node_selectors_type_value ON node_selectors (type, value)`,
		`CREATE TABLE node_events (
			id {{autoid}},
			spiffe_id TEXT NOT NULL,
			created_at BIGINT NOT NULL
		)`,
		`CREATE INDEX node_events_created_at ON node_events (created_at)`,

		`CREATE TABLE join_tokens (
			token TEXT PRIMARY KEY,
			expires_at BIGINT NOT NULL
		)`,
		`CREATE INDEX join_tokens_expires_at ON join_tokens (expires_at)`,

		// data is the bundle as JSON (bundleRecord).
		`CREATE TABLE bundles (
			trust_domain TEXT PRIMARY KEY,
			data TEXT NOT NULL
		)`,
	},
	// 2: federation relationships (trustdomain.v1). endpoint_spiffe_id is
	// '' for the https_web profile.
	{
		`CREATE TABLE federation_relationships (
			trust_domain TEXT PRIMARY KEY,
			bundle_endpoint_url TEXT NOT NULL,
			profile TEXT NOT NULL,
			endpoint_spiffe_id TEXT NOT NULL DEFAULT ''
		)`,
	},
	// 3: drop the indexes no query uses. The server answers every lookup
	// by parent, SPIFFE ID or selector from its in-memory index; in the
	// database these indexes only cost a random B-tree write per entry
	// (per selector) on every create, which is what bounded loading a
	// million entries.
	{
		`DROP INDEX entries_parent_id`,
		`DROP INDEX entries_spiffe_id`,
		`DROP INDEX entry_selectors_type_value`,
	},
}
