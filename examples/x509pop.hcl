# x509pop.hcl — agents attest with an X.509 certificate they already have
# (x509pop: "proof of possession" of its private key), for machines that
# were provisioned with a certificate by your own PKI.
#
#   arbor server --topology examples/x509pop.hcl --node root
#
# Each agent then starts with its certificate and key; the server accepts it
# when the certificate chains to one of ca_bundle_paths, and names the agent
# spiffe://example.org/spire/agent/x509pop/<certificate fingerprint>.

trust_domain = "example.org"

server "root" {
  listen = "127.0.0.1:8081"
  ca_ttl = "24h"

  # Accept agents holding a certificate issued by the CA in agent-ca.pem
  # (a PEM file, relative to this file's directory; list several files to
  # trust several CAs).
  node_attestor "x509pop" {
    ca_bundle_paths = ["agent-ca.pem"]

    # Optional: the path of the agent's SPIFFE ID, as a Go text/template.
    # Without it the path is x509pop/<fingerprint>.
    # agent_path_template = "x509pop/{{ .Subject.CommonName }}"
  }

  # Keep join tokens too, for machines without a certificate. With no
  # node_attestor block at all a server accepts join tokens only.
  node_attestor "join_token" {}

  datastore "sqlite" {}
}
