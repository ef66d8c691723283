package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/pflag"

	"github.com/arborid/arbor/agent"
	"github.com/arborid/arbor/internal/nodeattest/awsiid"
	"github.com/arborid/arbor/internal/nodeattest/azuremsi"
	"github.com/arborid/arbor/internal/nodeattest/gcpiit"
	"github.com/arborid/arbor/internal/nodeattest/k8spsat"
)

// agentAttestorFlags are the flags of `arbor agent run` that choose how the
// agent attests: --node-attestor KIND, and each kind's own flags, which
// imply their kind.
type agentAttestorFlags struct {
	kind                          string
	joinToken, joinTokenFile      string
	popCert, popKey, popInter     string
	ec2MetadataEndpoint           string
	k8sCluster, k8sTokenPath      string
	gcpServiceAccount, gcpIDHost  string
	azureResourceID, azureIMDSURL string
}

// agentAttestorKinds are the kinds --node-attestor accepts, and the flags
// of each.
var agentAttestorKinds = []struct {
	kind  string
	flags []string
}{
	{"join_token", []string{"join-token", "join-token-file"}},
	{"x509pop", []string{"x509pop-cert", "x509pop-key", "x509pop-intermediates"}},
	{"aws_iid", []string{"ec2-metadata-endpoint"}},
	{"k8s_psat", []string{"k8s-cluster", "k8s-token-path"}},
	{"gcp_iit", []string{"gcp-service-account", "gcp-identity-token-host"}},
	{"azure_msi", []string{"azure-resource-id", "azure-metadata-endpoint"}},
}

func attestorKindNames() []string {
	var kinds []string
	for _, k := range agentAttestorKinds {
		kinds = append(kinds, k.kind)
	}
	return kinds
}

func (f *agentAttestorFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.kind, "node-attestor", "", "how the agent attests: "+strings.Join(attestorKindNames(), ", ")+" (default: implied by the attestor's flags below, or the topology's agent block)")
	fs.StringVar(&f.joinTokenFile, "join-token-file", "", "join_token: file holding the join token for the first attestation (mode 0600; removed once the token is spent)")
	fs.StringVar(&f.joinToken, "join-token", "", "join_token: the token itself (visible to local users in ps: prefer --join-token-file)")
	fs.StringVar(&f.popCert, "x509pop-cert", "", "x509pop: node certificate (PEM, optionally followed by intermediates)")
	fs.StringVar(&f.popKey, "x509pop-key", "", "x509pop: node private key (PEM)")
	fs.StringVar(&f.popInter, "x509pop-intermediates", "", "x509pop: intermediates (PEM), optional")
	fs.StringVar(&f.ec2MetadataEndpoint, "ec2-metadata-endpoint", "", "aws_iid: base URL of the instance metadata service (default: the SDK's, http://169.254.169.254)")
	fs.StringVar(&f.k8sCluster, "k8s-cluster", "", "k8s_psat: the agent's cluster, as the server's k8s_psat names it")
	fs.StringVar(&f.k8sTokenPath, "k8s-token-path", "", "k8s_psat: file of the pod's projected service account token (default "+k8spsat.DefaultTokenPath+")")
	fs.StringVar(&f.gcpServiceAccount, "gcp-service-account", "", "gcp_iit: the instance service account whose identity token is sent (default: \"default\")")
	fs.StringVar(&f.gcpIDHost, "gcp-identity-token-host", "", "gcp_iit: the metadata server's host (default metadata.google.internal)")
	fs.StringVar(&f.azureResourceID, "azure-resource-id", "", "azure_msi: the resource the managed identity token is for (default "+azuremsi.DefaultResourceID+")")
	fs.StringVar(&f.azureIMDSURL, "azure-metadata-endpoint", "", "azure_msi: base URL of the instance metadata service (default http://169.254.169.254)")
}

// apply sets cfg's attestation from the flags that were given; with none it
// leaves what the topology's agent block set. The flags of one kind
// replace the topology's attestor whatever its kind.
func (f *agentAttestorFlags) apply(fs *pflag.FlagSet, cfg *agent.Config) error {
	kind := f.kind
	if fs.Changed("node-attestor") && !slices.Contains(attestorKindNames(), kind) {
		return fmt.Errorf("--node-attestor %q: want one of %s", kind, strings.Join(attestorKindNames(), ", "))
	}
	for _, k := range agentAttestorKinds {
		for _, name := range k.flags {
			if !fs.Changed(name) {
				continue
			}
			switch {
			case kind == "":
				kind = k.kind
			case kind != k.kind && fs.Changed("node-attestor"):
				return fmt.Errorf("--%s is a flag of %s, but --node-attestor is %s", name, k.kind, kind)
			case kind != k.kind:
				return fmt.Errorf("--%s (%s) and the flags of %s: give the flags of one node attestor", name, k.kind, kind)
			}
		}
	}
	if kind == "" {
		return nil
	}
	cfg.JoinToken, cfg.JoinTokenFile, cfg.X509PoP, cfg.NodeAttestor = "", "", nil, nil
	switch kind {
	case "join_token":
		switch {
		case fs.Changed("join-token") && fs.Changed("join-token-file"):
			return fmt.Errorf("give --join-token or --join-token-file, not both")
		case fs.Changed("join-token"):
			cfg.JoinToken = f.joinToken
		case fs.Changed("join-token-file"):
			cfg.JoinTokenFile = f.joinTokenFile
		default:
			return fmt.Errorf("--node-attestor join_token needs --join-token-file FILE (or --join-token)")
		}
	case "x509pop":
		if f.popCert == "" || f.popKey == "" {
			return fmt.Errorf("x509pop needs --x509pop-cert and --x509pop-key")
		}
		cfg.X509PoP = &agent.X509PoPConfig{CertPath: f.popCert, KeyPath: f.popKey, IntermediatesPath: f.popInter}
	case "aws_iid":
		cfg.NodeAttestor = awsiid.NewAgentAttestor(awsiid.AgentConfig{EC2MetadataEndpoint: f.ec2MetadataEndpoint})
	case "k8s_psat":
		if f.k8sCluster == "" {
			return fmt.Errorf("k8s_psat needs --k8s-cluster NAME, the cluster as the server's k8s_psat names it")
		}
		cfg.NodeAttestor = k8spsat.NewAgentAttestor(k8spsat.AgentConfig{Cluster: f.k8sCluster, TokenPath: f.k8sTokenPath})
	case "gcp_iit":
		cfg.NodeAttestor = gcpiit.NewAgentAttestor(gcpiit.AgentConfig{ServiceAccount: f.gcpServiceAccount, IdentityTokenHost: f.gcpIDHost})
	case "azure_msi":
		cfg.NodeAttestor = azuremsi.NewAgentAttestor(azuremsi.AgentConfig{ResourceID: f.azureResourceID, MetadataEndpoint: f.azureIMDSURL})
	}
	return nil
}
