package tier

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/arborid/arbor/internal/cli/reconcile"
	"github.com/arborid/arbor/topology"
)

// consumedElsewhere lists the server-block attributes that configure no
// process of the tree, with where they are used instead. Every other
// attribute must change what some process gets.
var consumedElsewhere = map[string]string{
	// Placement: validation refuses two servers of one host sharing a port
	// or a path, and render/terraform place the block on a machine.
	"host": "validation and placement",
	// Accepted for SPIRE configurations, true only: arbor has no other
	// container locator.
	"agent.workload_attestor.k8s.use_new_container_locator":    "validation (only true is accepted)",
	"agent.workload_attestor.docker.use_new_container_locator": "validation (only true is accepted)",
}

// deliveryCase changes one attribute: the topology with base and with
// changed as the body of server "t" must give some process of the tree
// different settings. root makes "t" the file's only server; otherwise it is
// a child of "root", beside a "mid" child.
type deliveryCase struct {
	attr          string
	root          bool
	base, changed string
}

const vaultToken = `upstream "vault" {
  address = "https://vault.example:8200"
  auth "token" { token = "s.x" }
`

// webEndpoint is an https_web bundle_endpoint block with the given files.
func webEndpoint(cert, key string) string {
	return "bundle_endpoint {\nlisten = \"127.0.0.1:8443\"\nprofile = \"https_web\"\ncert_file = \"" + cert + "\"\nkey_file = \"" + key + "\"\n}"
}

// oidcBlock is an oidc_discovery block.
func oidcBlock(listen, issuer, cert, key string) string {
	return "oidc_discovery {\nlisten = \"" + listen + "\"\nissuer = \"" + issuer + "\"\ncert_file = \"" + cert + "\"\nkey_file = \"" + key + "\"\n}"
}

func deliveryCases() []deliveryCase {
	child := func(attr, base, changed string) deliveryCase {
		return deliveryCase{attr: attr, base: `parent = "root"` + "\n" + base, changed: `parent = "root"` + "\n" + changed}
	}
	root := func(attr, base, changed string) deliveryCase {
		return deliveryCase{attr: attr, root: true, base: base, changed: changed}
	}
	vault := func(attr, base, changed string) deliveryCase {
		return root(attr, vaultToken+base+"}", vaultToken+changed+"}")
	}
	vaultAuth := func(attr, method, base, changed string) deliveryCase {
		head := `upstream "vault" {` + "\n" + `address = "https://vault.example:8200"` + "\n" + `auth "` + method + `" {` + "\n"
		return root(attr, head+base+"}\n}", head+changed+"}\n}")
	}
	pca := func(attr, base, changed string) deliveryCase {
		head := `upstream "aws_pca" {` + "\n" + `region = "us-east-1"` + "\n"
		if attr != "upstream.aws_pca.certificate_authority_arn" {
			head += `certificate_authority_arn = "arn:aws:acm-pca:us-east-1:111122223333:certificate-authority/a"` + "\n"
		}
		return root(attr, head+base+"}", head+changed+"}")
	}
	aws := func(attr, base, changed string) deliveryCase {
		return root(attr, `node_attestor "aws_iid" {`+"\n"+base+"}", `node_attestor "aws_iid" {`+"\n"+changed+"}")
	}
	const awsKey = `access_key_id = "AKIAIOSFODNN7EXAMPLE"` + "\n"
	psat := func(attr, base, changed string) deliveryCase {
		head := `node_attestor "k8s_psat" {` + "\n" + `cluster "c" {` + "\n"
		if attr != "node_attestor.k8s_psat.cluster.service_account_allow_list" {
			head += `service_account_allow_list = ["spire:agent"]` + "\n"
		}
		return root(attr, head+base+"}\n}", head+changed+"}\n}")
	}
	gcp := func(attr, base, changed string) deliveryCase {
		head := `node_attestor "gcp_iit" {` + "\n"
		if attr != "node_attestor.gcp_iit.projectid_allow_list" {
			head += `projectid_allow_list = ["arbor-prod"]` + "\n"
		}
		return root(attr, head+base+"}", head+changed+"}")
	}
	const gcpMeta = `use_instance_metadata = true` + "\n"
	azure := func(attr, base, changed string) deliveryCase {
		return root(attr, `node_attestor "azure_msi" {`+"\n"+base+"}", `node_attestor "azure_msi" {`+"\n"+changed+"}")
	}
	const azureSub = `subscription_id = "11111111-1111-1111-1111-111111111111"` + "\n"
	azureTenant := func(body string) string {
		return `tenant "72f988bf-86f1-41af-91ab-2d7cd011db47" {` + "\n" + body + "}\n"
	}
	wl := func(attr, kind, base, changed string) deliveryCase {
		block := func(body string) string {
			return "agent {\nworkload_attestor \"" + kind + "\" {\n" + body + "\n}\n}"
		}
		return child(attr, block(base), block(changed))
	}
	const spire = `upstream "spire" {` + "\n"
	const agentPoP = `agent {` + "\n" + `node_attestor "x509pop" {` + "\n"
	return []deliveryCase{
		{attr: "parent", base: `parent = "root"`, changed: `parent = "mid"`},
		root("listen", ``, `listen = "127.0.0.1:9001"`),
		root("bundle_endpoint.listen", `bundle_endpoint { listen = "127.0.0.1:8443" }`, `bundle_endpoint { listen = "127.0.0.1:8444" }`),
		root("bundle_endpoint.profile", `bundle_endpoint { listen = "127.0.0.1:8443" }`,
			`bundle_endpoint {`+"\n"+`listen = "127.0.0.1:8443"`+"\n"+`profile = "https_web"`+"\n"+`cert_file = "w.pem"`+"\n"+`key_file = "w-key.pem"`+"\n}"),
		root("bundle_endpoint.refresh_hint", `bundle_endpoint { listen = "127.0.0.1:8443" }`,
			`bundle_endpoint {`+"\n"+`listen = "127.0.0.1:8443"`+"\n"+`refresh_hint = "1m"`+"\n}"),
		root("oidc_discovery.listen", oidcBlock("127.0.0.1:9443", "https://oidc.example", "o.pem", "o-key.pem"), oidcBlock("127.0.0.1:9444", "https://oidc.example", "o.pem", "o-key.pem")),
		root("oidc_discovery.issuer", oidcBlock("127.0.0.1:9443", "https://oidc.example", "o.pem", "o-key.pem"), oidcBlock("127.0.0.1:9443", "https://oidc2.example", "o.pem", "o-key.pem")),
		root("oidc_discovery.cert_file", oidcBlock("127.0.0.1:9443", "https://oidc.example", "o.pem", "o-key.pem"), oidcBlock("127.0.0.1:9443", "https://oidc.example", "p.pem", "o-key.pem")),
		root("oidc_discovery.key_file", oidcBlock("127.0.0.1:9443", "https://oidc.example", "o.pem", "o-key.pem"), oidcBlock("127.0.0.1:9443", "https://oidc.example", "o.pem", "p-key.pem")),
		root("bundle_endpoint.cert_file", webEndpoint("w.pem", "w-key.pem"), webEndpoint("x.pem", "w-key.pem")),
		root("bundle_endpoint.key_file", webEndpoint("w.pem", "w-key.pem"), webEndpoint("w.pem", "x-key.pem")),
		root("address", ``, `address = "t.example:8081"`),
		// The list's every element reaches the dialers, not only the first.
		root("address (list)", `address = ["t.example:8081"]`, `address = ["t.example:8081", "t2.example:8081"]`),
		// How many processes run the block (arbor up starts one per replica,
		// NAME/K, with the ports and paths topology.Server.Replica derives):
		// without an address, the tier's agents dial every replica.
		root("replicas", `health_listen = "off"`+"\n"+`datastore "postgres" { dsn = "postgres://db.example/arbor" }`,
			`health_listen = "off"`+"\n"+`replicas = 2`+"\n"+`datastore "postgres" { dsn = "postgres://db.example/arbor" }`),
		root("admin_socket", ``, `admin_socket = "/tmp/t-admin.sock"`),
		root("health_listen", ``, `health_listen = "127.0.0.1:9002"`),
		root("state_dir", ``, `state_dir = "elsewhere"`),
		child("spiffe_id", ``, `spiffe_id = "spiffe://example.org/srv/t"`),
		root("ca_ttl", ``, `ca_ttl = "72h"`),
		root("x509_svid_ttl", ``, `x509_svid_ttl = "2h"`),
		root("jwt_svid_ttl", ``, `jwt_svid_ttl = "7m"`),
		root("agent_svid_ttl", ``, `agent_svid_ttl = "3h"`),
		root("key_type", ``, `key_type = "ec-p384"`),
		root("jwt_key_type", ``, `jwt_key_type = "rsa-2048"`),
		root("ca_key_storage", ``, `ca_key_storage = "memory"`),
		root("log_level", ``, `log_level = "debug"`),
		root("log_format", ``, `log_format = "json"`),
		root("jwt_issuer", ``, `jwt_issuer = "https://oidc.example"`),
		root("datastore.postgres.dsn", `datastore "postgres" { dsn = "postgres://a/b" }`, `datastore "postgres" { dsn = "postgres://c/d" }`),
		root("datastore.sqlite.path", `datastore "sqlite" {}`, `datastore "sqlite" { path = "other.sqlite3" }`),
		root("node_attestor.join_token.default_ttl", `node_attestor "join_token" {}`, `node_attestor "join_token" { default_ttl = "1h" }`),
		root("node_attestor.x509pop.ca_bundle_paths", `node_attestor "x509pop" { ca_bundle_paths = ["a.pem"] }`, `node_attestor "x509pop" { ca_bundle_paths = ["b.pem"] }`),
		root("node_attestor.x509pop.agent_path_template", `node_attestor "x509pop" { ca_bundle_paths = ["a.pem"] }`,
			`node_attestor "x509pop" {`+"\n"+`ca_bundle_paths = ["a.pem"]`+"\n"+`agent_path_template = "x/{{ .Fingerprint }}"`+"\n}"),
		aws("node_attestor.aws_iid.access_key_id", awsKey+`secret_access_key = "s"`+"\n", `access_key_id = "AKIAI44QH8DHBEXAMPLE"`+"\n"+`secret_access_key = "s"`+"\n"),
		aws("node_attestor.aws_iid.secret_access_key", awsKey+`secret_access_key = "s"`+"\n", awsKey+`secret_access_key = "t"`+"\n"),
		aws("node_attestor.aws_iid.assume_role", ``, `assume_role = "delegate"`+"\n"),
		aws("node_attestor.aws_iid.partition", ``, `partition = "aws-cn"`+"\n"),
		aws("node_attestor.aws_iid.skip_block_device", ``, `skip_block_device = true`+"\n"),
		aws("node_attestor.aws_iid.disable_instance_profile_selectors", ``, `disable_instance_profile_selectors = true`+"\n"),
		aws("node_attestor.aws_iid.account_ids_for_local_validation", ``, `account_ids_for_local_validation = ["123456789012"]`+"\n"),
		aws("node_attestor.aws_iid.account_ids", ``, `account_ids = ["123456789012"]`+"\n"),
		aws("node_attestor.aws_iid.agent_path_template", ``, `agent_path_template = "aws/{{ .InstanceID }}"`+"\n"),
		aws("node_attestor.aws_iid.identity_certificate_paths", ``, `identity_certificate_paths = ["iid.pem"]`+"\n"),
		aws("node_attestor.aws_iid.ec2_endpoint", ``, `ec2_endpoint = "https://ec2.example"`+"\n"),
		aws("node_attestor.aws_iid.iam_endpoint", ``, `iam_endpoint = "https://iam.example"`+"\n"),
		aws("node_attestor.aws_iid.sts_endpoint", ``, `sts_endpoint = "https://sts.example"`+"\n"),
		psat("node_attestor.k8s_psat.cluster.service_account_allow_list", `service_account_allow_list = ["spire:agent"]`+"\n", `service_account_allow_list = ["spire:other"]`+"\n"),
		psat("node_attestor.k8s_psat.cluster.audience", ``, `audience = ["arbor"]`+"\n"),
		psat("node_attestor.k8s_psat.cluster.kube_config_file", ``, `kube_config_file = "kubeconfig"`+"\n"),
		psat("node_attestor.k8s_psat.cluster.allowed_node_label_keys", ``, `allowed_node_label_keys = ["zone"]`+"\n"),
		psat("node_attestor.k8s_psat.cluster.allowed_pod_label_keys", ``, `allowed_pod_label_keys = ["app"]`+"\n"),
		gcp("node_attestor.gcp_iit.projectid_allow_list", `projectid_allow_list = ["arbor-prod"]`+"\n", `projectid_allow_list = ["arbor-staging"]`+"\n"),
		gcp("node_attestor.gcp_iit.agent_path_template", ``, `agent_path_template = "gcp/{{ .InstanceID }}"`+"\n"),
		gcp("node_attestor.gcp_iit.use_instance_metadata", ``, gcpMeta),
		gcp("node_attestor.gcp_iit.allowed_label_keys", gcpMeta, gcpMeta+`allowed_label_keys = ["env"]`+"\n"),
		gcp("node_attestor.gcp_iit.allowed_metadata_keys", gcpMeta, gcpMeta+`allowed_metadata_keys = ["role"]`+"\n"),
		gcp("node_attestor.gcp_iit.max_metadata_value_size", ``, `max_metadata_value_size = 512`+"\n"),
		gcp("node_attestor.gcp_iit.service_account_file", ``, `service_account_file = "sa.json"`+"\n"),
		gcp("node_attestor.gcp_iit.keys_url", ``, `keys_url = "https://keys.example"`+"\n"),
		gcp("node_attestor.gcp_iit.compute_endpoint", ``, `compute_endpoint = "https://compute.example/compute/v1/"`+"\n"),
		azure("node_attestor.azure_msi.agent_path_template", azureTenant(azureSub), azureTenant(azureSub)+`agent_path_template = "az/{{ .PrincipalID }}"`+"\n"),
		azure("node_attestor.azure_msi.login_endpoint", azureTenant(azureSub), azureTenant(azureSub)+`login_endpoint = "https://login.example/"`+"\n"),
		azure("node_attestor.azure_msi.sts_endpoint", azureTenant(azureSub), azureTenant(azureSub)+`sts_endpoint = "https://sts.example/"`+"\n"),
		azure("node_attestor.azure_msi.arm_endpoint", azureTenant(azureSub), azureTenant(azureSub)+`arm_endpoint = "https://arm.example/"`+"\n"),
		azure("node_attestor.azure_msi.tenant.resource_id", azureTenant(azureSub), azureTenant(azureSub+`resource_id = "api://arbor"`+"\n")),
		azure("node_attestor.azure_msi.tenant.subscription_id", azureTenant(azureSub), azureTenant(`subscription_id = "22222222-2222-2222-2222-222222222222"`+"\n")),
		azure("node_attestor.azure_msi.tenant.subscription_ids", azureTenant(azureSub), azureTenant(azureSub+`subscription_ids = ["33333333-3333-3333-3333-333333333333"]`+"\n")),
		azure("node_attestor.azure_msi.tenant.app_id", azureTenant(azureSub+`app_id = "a"`+"\n"+`app_secret = "s"`+"\n"), azureTenant(azureSub+`app_id = "b"`+"\n"+`app_secret = "s"`+"\n")),
		azure("node_attestor.azure_msi.tenant.app_secret", azureTenant(azureSub+`app_id = "a"`+"\n"+`app_secret = "s"`+"\n"), azureTenant(azureSub+`app_id = "a"`+"\n"+`app_secret = "t"`+"\n")),
		pca("upstream.aws_pca.region", ``, ``), // region is in head; changed below
		pca("upstream.aws_pca.certificate_authority_arn",
			`certificate_authority_arn = "arn:aws:acm-pca:us-east-1:111122223333:certificate-authority/a"`+"\n",
			`certificate_authority_arn = "arn:aws:acm-pca:us-east-1:111122223333:certificate-authority/b"`+"\n"),
		pca("upstream.aws_pca.ca_signing_template_arn", ``, `ca_signing_template_arn = "arn:aws:acm-pca:::template/SubordinateCACertificate_PathLen2/V1"`+"\n"),
		pca("upstream.aws_pca.signing_algorithm", ``, `signing_algorithm = "SHA384WITHECDSA"`+"\n"),
		pca("upstream.aws_pca.assume_role_arn", ``, `assume_role_arn = "arn:aws:iam::111122223333:role/r"`+"\n"),
		pca("upstream.aws_pca.endpoint", ``, `endpoint = "https://pca.example"`+"\n"),
		pca("upstream.aws_pca.supplemental_bundle_path", ``, `supplemental_bundle_path = "extra.pem"`+"\n"),
		root("upstream.disk.cert_file_path",
			`upstream "disk" {`+"\n"+`cert_file_path = "a.pem"`+"\n"+`key_file_path = "k.pem"`+"\n}",
			`upstream "disk" {`+"\n"+`cert_file_path = "b.pem"`+"\n"+`key_file_path = "k.pem"`+"\n}"),
		root("upstream.disk.key_file_path",
			`upstream "disk" {`+"\n"+`cert_file_path = "a.pem"`+"\n"+`key_file_path = "k.pem"`+"\n}",
			`upstream "disk" {`+"\n"+`cert_file_path = "a.pem"`+"\n"+`key_file_path = "l.pem"`+"\n}"),
		root("upstream.disk.bundle_file_path",
			`upstream "disk" {`+"\n"+`cert_file_path = "a.pem"`+"\n"+`key_file_path = "k.pem"`+"\n}",
			`upstream "disk" {`+"\n"+`cert_file_path = "a.pem"`+"\n"+`key_file_path = "k.pem"`+"\n"+`bundle_file_path = "b.pem"`+"\n}"),
		root("upstream.spire.server_address", spire+`server_address = "spire.example:8081"`+"\n}", spire+`server_address = "spire.example:9081"`+"\n}"),
		root("upstream.spire.workload_api_socket", spire+`server_address = "spire.example:8081"`+"\n}",
			spire+`server_address = "spire.example:8081"`+"\n"+`workload_api_socket = "/tmp/other.sock"`+"\n}"),
		root("upstream.vault.address", vaultToken+"}", strings.Replace(vaultToken, "vault.example", "vault2.example", 1)+"}"),
		vault("upstream.vault.pki_mount", ``, `pki_mount = "pki2"`+"\n"),
		vault("upstream.vault.namespace", ``, `namespace = "team"`+"\n"),
		vault("upstream.vault.ca_cert_path", ``, `ca_cert_path = "vault-ca.pem"`+"\n"),
		vault("upstream.vault.insecure_skip_verify", ``, `insecure_skip_verify = true`+"\n"),
		vaultAuth("upstream.vault.auth.approle.mount", "approle", `role_id = "r"`+"\n"+`secret_id = "s"`+"\n", `role_id = "r"`+"\n"+`secret_id = "s"`+"\n"+`mount = "ar2"`+"\n"),
		vaultAuth("upstream.vault.auth.approle.role_id", "approle", `role_id = "r"`+"\n"+`secret_id = "s"`+"\n", `role_id = "q"`+"\n"+`secret_id = "s"`+"\n"),
		vaultAuth("upstream.vault.auth.approle.secret_id", "approle", `role_id = "r"`+"\n"+`secret_id = "s"`+"\n", `role_id = "r"`+"\n"+`secret_id = "z"`+"\n"),
		vaultAuth("upstream.vault.auth.cert.mount", "cert", `client_cert_path = "c.pem"`+"\n"+`client_key_path = "k.pem"`+"\n",
			`client_cert_path = "c.pem"`+"\n"+`client_key_path = "k.pem"`+"\n"+`mount = "cert2"`+"\n"),
		vaultAuth("upstream.vault.auth.cert.role_name", "cert", `client_cert_path = "c.pem"`+"\n"+`client_key_path = "k.pem"`+"\n",
			`client_cert_path = "c.pem"`+"\n"+`client_key_path = "k.pem"`+"\n"+`role_name = "web"`+"\n"),
		vaultAuth("upstream.vault.auth.cert.client_cert_path", "cert", `client_cert_path = "c.pem"`+"\n"+`client_key_path = "k.pem"`+"\n",
			`client_cert_path = "d.pem"`+"\n"+`client_key_path = "k.pem"`+"\n"),
		vaultAuth("upstream.vault.auth.cert.client_key_path", "cert", `client_cert_path = "c.pem"`+"\n"+`client_key_path = "k.pem"`+"\n",
			`client_cert_path = "c.pem"`+"\n"+`client_key_path = "l.pem"`+"\n"),
		vaultAuth("upstream.vault.auth.kubernetes.mount", "kubernetes", `role = "r"`+"\n", `role = "r"`+"\n"+`mount = "k8s2"`+"\n"),
		vaultAuth("upstream.vault.auth.kubernetes.role", "kubernetes", `role = "r"`+"\n", `role = "q"`+"\n"),
		vaultAuth("upstream.vault.auth.kubernetes.token_path", "kubernetes", `role = "r"`+"\n", `role = "r"`+"\n"+`token_path = "/tmp/tok"`+"\n"),
		vaultAuth("upstream.vault.auth.token.token", "token", `token = "s.x"`+"\n", `token = "s.y"`+"\n"),
		child("agent.socket_path", `agent {}`, `agent { socket_path = "/tmp/t-agent.sock" }`),
		child("agent.data_dir", `agent {}`, `agent { data_dir = "t-agent" }`),
		child("agent.spiffe_id", `agent {}`, `agent { spiffe_id = "spiffe://example.org/arbor/agent/other" }`),
		child("agent.server_selectors", `agent {}`, `agent { server_selectors = ["unix:uid:4242"] }`),
		child("agent.sync_interval", `agent {}`, `agent { sync_interval = "3s" }`),
		child("agent.sds.default_svid_name", `agent {}`, "agent {\nsds { default_svid_name = \"svid\" }\n}"),
		child("agent.sds.default_bundle_name", `agent {}`, "agent {\nsds { default_bundle_name = \"bundle\" }\n}"),
		child("agent.sds.default_all_bundles_name", `agent {}`, "agent {\nsds { default_all_bundles_name = \"every\" }\n}"),
		child("agent.sds.disable_spiffe_cert_validation", `agent {}`, "agent {\nsds { disable_spiffe_cert_validation = true }\n}"),
		child("agent.sds.disabled", `agent {}`, "agent {\nsds { disabled = true }\n}"),
		child("agent.node_attestor.join_token.token", `agent {}`, `agent {`+"\n"+`node_attestor "join_token" { token = "tok" }`+"\n}"),
		child("agent.node_attestor.x509pop.private_key_path",
			agentPoP+`private_key_path = "k.pem"`+"\n"+`certificate_path = "c.pem"`+"\n}\n}",
			agentPoP+`private_key_path = "l.pem"`+"\n"+`certificate_path = "c.pem"`+"\n}\n}"),
		child("agent.node_attestor.x509pop.certificate_path",
			agentPoP+`private_key_path = "k.pem"`+"\n"+`certificate_path = "c.pem"`+"\n}\n}",
			agentPoP+`private_key_path = "k.pem"`+"\n"+`certificate_path = "d.pem"`+"\n}\n}"),
		child("agent.node_attestor.x509pop.intermediates_path",
			agentPoP+`private_key_path = "k.pem"`+"\n"+`certificate_path = "c.pem"`+"\n}\n}",
			agentPoP+`private_key_path = "k.pem"`+"\n"+`certificate_path = "c.pem"`+"\n"+`intermediates_path = "i.pem"`+"\n}\n}"),
		child("agent.node_attestor.aws_iid.ec2_metadata_endpoint", `agent {`+"\n"+`node_attestor "aws_iid" {}`+"\n}",
			`agent {`+"\n"+`node_attestor "aws_iid" { ec2_metadata_endpoint = "http://127.0.0.1:8999" }`+"\n}"),
		wl("agent.workload_attestor.unix.discover_workload_path", "unix", ``, `discover_workload_path = true`),
		wl("agent.workload_attestor.k8s.kubelet_secure_port", "k8s", ``, `kubelet_secure_port = 10251`),
		wl("agent.workload_attestor.k8s.kubelet_read_only_port", "k8s", ``, `kubelet_read_only_port = 10255`),
		wl("agent.workload_attestor.k8s.kubelet_ca_path", "k8s", ``, `kubelet_ca_path = "kubelet-ca.pem"`),
		wl("agent.workload_attestor.k8s.skip_kubelet_verification", "k8s", ``, `skip_kubelet_verification = true`),
		wl("agent.workload_attestor.k8s.token_path", "k8s", ``, `token_path = "/tmp/token"`),
		wl("agent.workload_attestor.k8s.certificate_path", "k8s", `certificate_path = "c.pem"`+"\n"+`private_key_path = "k.pem"`, `certificate_path = "d.pem"`+"\n"+`private_key_path = "k.pem"`),
		wl("agent.workload_attestor.k8s.private_key_path", "k8s", `certificate_path = "c.pem"`+"\n"+`private_key_path = "k.pem"`, `certificate_path = "c.pem"`+"\n"+`private_key_path = "l.pem"`),
		wl("agent.workload_attestor.k8s.use_anonymous_authentication", "k8s", ``, `use_anonymous_authentication = true`),
		wl("agent.workload_attestor.k8s.node_name", "k8s", ``, `node_name = "node-1"`),
		wl("agent.workload_attestor.k8s.node_name_env", "k8s", ``, `node_name_env = "NODE"`),
		wl("agent.workload_attestor.k8s.max_poll_attempts", "k8s", ``, `max_poll_attempts = 5`),
		wl("agent.workload_attestor.k8s.poll_retry_interval", "k8s", ``, `poll_retry_interval = "2s"`),
		wl("agent.workload_attestor.k8s.disable_container_selectors", "k8s", ``, `disable_container_selectors = true`),
		wl("agent.workload_attestor.docker.docker_socket_path", "docker", ``, `docker_socket_path = "unix:///run/docker.sock"`),
		wl("agent.workload_attestor.docker.docker_version", "docker", ``, `docker_version = "1.41"`),
		wl("agent.workload_attestor.docker.env_keys", "docker", ``, `env_keys = ["ENVIRONMENT"]`),
		child("agent.node_attestor.gcp_iit.service_account", `agent {`+"\n"+`node_attestor "gcp_iit" {}`+"\n}",
			`agent {`+"\n"+`node_attestor "gcp_iit" { service_account = "agent@p.iam.gserviceaccount.com" }`+"\n}"),
		child("agent.node_attestor.gcp_iit.identity_token_host", `agent {`+"\n"+`node_attestor "gcp_iit" {}`+"\n}",
			`agent {`+"\n"+`node_attestor "gcp_iit" { identity_token_host = "127.0.0.1:8998" }`+"\n}"),
		child("agent.node_attestor.azure_msi.resource_id", `agent {`+"\n"+`node_attestor "azure_msi" {}`+"\n}",
			`agent {`+"\n"+`node_attestor "azure_msi" { resource_id = "api://arbor" }`+"\n}"),
		child("agent.node_attestor.azure_msi.metadata_endpoint", `agent {`+"\n"+`node_attestor "azure_msi" {}`+"\n}",
			`agent {`+"\n"+`node_attestor "azure_msi" { metadata_endpoint = "http://127.0.0.1:8997" }`+"\n}"),
		child("agent.node_attestor.k8s_psat.cluster", `agent {`+"\n"+`node_attestor "k8s_psat" { cluster = "c1" }`+"\n}",
			`agent {`+"\n"+`node_attestor "k8s_psat" { cluster = "c2" }`+"\n}"),
		child("agent.node_attestor.k8s_psat.token_path", `agent {`+"\n"+`node_attestor "k8s_psat" { cluster = "c1" }`+"\n}",
			`agent {`+"\n"+`node_attestor "k8s_psat" {`+"\n"+`cluster = "c1"`+"\n"+`token_path = "/tmp/token"`+"\n}\n}"),
		entryCase("entry.spiffe_id", `spiffe_id = "spiffe://example.org/w2"`),
		entryCase("entry.parent_id", `parent_id = "spiffe://example.org/n2"`),
		entryCase("entry.selectors", `selectors = ["unix:uid:2"]`),
		entryCase("entry.x509_svid_ttl", `x509_svid_ttl = "10m"`),
		entryCase("entry.jwt_svid_ttl", `jwt_svid_ttl = "2m"`),
		entryCase("entry.dns_names", `dns_names = ["w.example"]`),
		entryCase("entry.admin", `admin = true`),
		entryCase("entry.downstream", `downstream = true`),
		entryCase("entry.federates_with", `federates_with = ["other.org"]`),
		entryCase("entry.hint", `hint = "web"`),
	}
}

// entryCase sets one attribute of an entry block, replacing the base's
// value when the base has one.
func entryCase(attr, line string) deliveryCase {
	base := map[string]string{
		"spiffe_id": `spiffe_id = "spiffe://example.org/w"`,
		"parent_id": `parent_id = "spiffe://example.org/n"`,
		"selectors": `selectors = ["unix:uid:1"]`,
	}
	body := func(with bool) string {
		var b strings.Builder
		b.WriteString("entry \"e\" {\n")
		name := strings.TrimPrefix(attr, "entry.")
		for _, k := range []string{"spiffe_id", "parent_id", "selectors"} {
			if with && k == name {
				continue
			}
			b.WriteString(base[k] + "\n")
		}
		if with {
			b.WriteString(line + "\n")
		}
		b.WriteString("}")
		return b.String()
	}
	return deliveryCase{attr: attr, root: true, base: body(false), changed: body(true)}
}

// tree is everything the processes of a topology get: each server's and
// co-located agent's settings, a workload agent's per server, and the
// entries topology apply (and arbor up) register at each server. Errors
// stand in for settings that cannot be made, so they compare too.
type tree map[string]any

func runtimeOf(t *testing.T, f *topology.File) tree {
	t.Helper()
	out := tree{}
	errText := func(err error) string {
		if err != nil {
			return err.Error()
		}
		return ""
	}
	for _, s := range f.Servers {
		srv, err := ServerConfig(f, s.Name)
		out["server "+s.Name] = []any{srv, errText(err)}
		ag, err := AgentConfig(f, s.Name)
		out["agent "+s.Name] = []any{ag, errText(err)}
		wa, err := WorkloadAgentConfig(f, s.Name)
		out["workload agent "+s.Name] = []any{wa, errText(err)}
		wl, err := WorkloadAttestorsOf(f, s.Name)
		out["workload attestors of "+s.Name] = []any{wl, errText(err)}
		want, err := reconcile.DesiredEntries(f, s, 1000)
		out["entries at "+s.Name] = []any{want, errText(err)}
	}
	return out
}

func parseCase(t *testing.T, dir string, root bool, body string) *topology.File {
	t.Helper()
	var b strings.Builder
	b.WriteString("trust_domain = \"example.org\"\n")
	b.WriteString("federation \"other.org\" {\n  bundle_endpoint = \"https://other.example/bundle\"\n}\n")
	if !root {
		b.WriteString("server \"root\" {\n  listen = \"127.0.0.1:7001\"\n  health_listen = \"off\"\n  ca_ttl = \"96h\"\n" +
			"  node_attestor \"join_token\" {}\n  node_attestor \"x509pop\" { ca_bundle_paths = [\"ca.pem\"] }\n" +
			"  node_attestor \"aws_iid\" {}\n" +
			"  node_attestor \"gcp_iit\" { projectid_allow_list = [\"arbor-prod\"] }\n" +
			"  node_attestor \"azure_msi\" {\n    tenant \"72f988bf-86f1-41af-91ab-2d7cd011db47\" { subscription_id = \"11111111-1111-1111-1111-111111111111\" }\n  }\n" +
			"  node_attestor \"k8s_psat\" {\n    cluster \"c1\" { service_account_allow_list = [\"spire:agent\"] }\n" +
			"    cluster \"c2\" { service_account_allow_list = [\"spire:agent\"] }\n  }\n}\n")
		b.WriteString("server \"mid\" {\n  parent = \"root\"\n  listen = \"127.0.0.1:7002\"\n  health_listen = \"off\"\n  ca_ttl = \"48h\"\n}\n")
	}
	fmt.Fprintf(&b, "server \"t\" {\n%s\n}\n", body)
	path := filepath.Join(dir, "t.hcl")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	f, diags := topology.ParseFile(path)
	if diags.HasErrors() {
		t.Fatalf("topology:\n%s\n%s", b.String(), topology.FormatDiagnostics(diags, nil))
	}
	return f
}

// TestEveryAttributeReachesAProcess changes each attribute the topology
// accepts in a server block, one at a time, and requires that some process
// of the tree (the server, its co-located agent, a workload agent attached
// to it, or the entries registered for it) gets different settings. A new
// attribute fails here until it has a case, which fails until the value is
// delivered, or until it is listed in consumedElsewhere with a reason.
func TestEveryAttributeReachesAProcess(t *testing.T) {
	cases := map[string]deliveryCase{}
	for _, c := range deliveryCases() {
		cases[c.attr] = c
	}
	// aws_pca's region is in every aws_pca case's head: change it here.
	c := cases["upstream.aws_pca.region"]
	c.changed = strings.Replace(c.base, "us-east-1\"\n", "eu-west-1\"\n", 1)
	cases["upstream.aws_pca.region"] = c

	dir := t.TempDir()
	for _, attr := range topology.ServerAttributes() {
		if why, ok := consumedElsewhere[attr]; ok {
			t.Logf("%s: consumed by %s", attr, why)
			continue
		}
		c, ok := cases[attr]
		if !ok {
			t.Errorf("attribute %q has no delivery case: add one to deliveryCases (or, if no process uses it, to consumedElsewhere with where it is used)", attr)
			continue
		}
		t.Run(attr, func(t *testing.T) {
			base := runtimeOf(t, parseCase(t, dir, c.root, c.base))
			changed := runtimeOf(t, parseCase(t, dir, c.root, c.changed))
			if reflect.DeepEqual(base, changed) {
				t.Errorf("changing %s changes no process's settings: it is parsed but not delivered", attr)
			}
		})
	}
	// Forms of an attribute beyond the one its name covers.
	for _, attr := range []string{"address (list)"} {
		c := cases[attr]
		t.Run(attr, func(t *testing.T) {
			if reflect.DeepEqual(runtimeOf(t, parseCase(t, dir, c.root, c.base)), runtimeOf(t, parseCase(t, dir, c.root, c.changed))) {
				t.Errorf("changing %s changes no process's settings", attr)
			}
		})
	}
	for attr := range cases {
		if _, ok := consumedElsewhere[attr]; ok {
			t.Errorf("attribute %q is both in consumedElsewhere and has a delivery case", attr)
		}
	}
}
