# x509pop.hcl — agents attest with an X.509 certificate they already have
# (x509pop: "proof of possession" of its private key), for machines that
# were provisioned with a certificate by your own PKI.
#
#   arbor server --topology examples/x509pop.hcl --node root
#
# The server needs the CA it trusts, examples/agent-ca.pem (without it, it
# stops at start: "open agent-ca.pem: no such file or directory", and
# `arbor topology validate` warns "File not found"). To try it
# without a PKI of your own, make a CA and a certificate for one machine
# (from the repository root; examples/.gitignore keeps them out of git):
#
#   openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
#       -subj /CN=agent-ca -addext basicConstraints=critical,CA:true \
#       -addext keyUsage=critical,keyCertSign -keyout examples/agent-ca.key -out examples/agent-ca.pem
#   openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=node-1 \
#       -keyout examples/node-1.key -out examples/node-1.csr
#   printf 'keyUsage=critical,digitalSignature\n' > examples/node-1.ext
#   openssl x509 -req -in examples/node-1.csr -CA examples/agent-ca.pem -CAkey examples/agent-ca.key \
#       -days 30 -extfile examples/node-1.ext -out examples/node-1.pem
#
# Each agent then starts with its certificate and key; the server accepts it
# when the certificate chains to one of ca_bundle_paths, and names the agent
# spiffe://example.org/spire/agent/x509pop/<certificate fingerprint>:
#
#   arbor bundle show --socket-path examples/.arbor/x509pop/root/admin.sock > examples/bundle.pem
#   arbor agent run --server-address 127.0.0.1:8081 --trust-domain example.org \
#       --trust-bundle examples/bundle.pem --data-dir examples/.arbor/x509pop/agent-node-1 \
#       --x509pop-cert examples/node-1.pem --x509pop-key examples/node-1.key

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
