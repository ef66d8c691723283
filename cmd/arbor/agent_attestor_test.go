package main

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/arborid/arbor/agent"
)

// TestAgentAttestorFlags: the flags of one node attestor set the agent's
// attestation (implied by its flags or named by --node-attestor) and
// replace what the topology's agent block set; flags of two kinds, an
// unknown kind, or a kind without its required flag are refused with a
// line that names the flags.
func TestAgentAttestorFlags(t *testing.T) {
	fromTopology := func() agent.Config {
		return agent.Config{JoinToken: "from-the-file"}
	}
	for _, c := range []struct {
		args     []string
		wantType string // attestation type the config then uses
		wantErr  string
	}{
		{args: nil, wantType: "join_token"}, // the topology's
		{args: []string{"--join-token-file", "t"}, wantType: "join_token"},
		{args: []string{"--x509pop-cert", "c.pem", "--x509pop-key", "k.pem"}, wantType: "x509pop"},
		{args: []string{"--node-attestor", "aws_iid"}, wantType: "aws_iid"},
		{args: []string{"--ec2-metadata-endpoint", "http://127.0.0.1:1"}, wantType: "aws_iid"},
		{args: []string{"--k8s-cluster", "prod"}, wantType: "k8s_psat"},
		{args: []string{"--node-attestor", "k8s_psat", "--k8s-cluster", "prod", "--k8s-token-path", "/t"}, wantType: "k8s_psat"},
		{args: []string{"--node-attestor", "gcp_iit"}, wantType: "gcp_iit"},
		{args: []string{"--azure-resource-id", "api://arbor"}, wantType: "azure_msi"},
		{args: []string{"--node-attestor", "aws"}, wantErr: `--node-attestor "aws": want one of join_token, x509pop, aws_iid, k8s_psat, gcp_iit, azure_msi`},
		{args: []string{"--k8s-cluster", "prod", "--ec2-metadata-endpoint", "http://x"}, wantErr: "give the flags of one node attestor"},
		{args: []string{"--node-attestor", "aws_iid", "--k8s-cluster", "prod"}, wantErr: "--k8s-cluster is a flag of k8s_psat, but --node-attestor is aws_iid"},
		{args: []string{"--node-attestor", "k8s_psat"}, wantErr: "k8s_psat needs --k8s-cluster NAME"},
		{args: []string{"--node-attestor", "join_token"}, wantErr: "needs --join-token-file FILE"},
		{args: []string{"--x509pop-cert", "c.pem"}, wantErr: "x509pop needs --x509pop-cert and --x509pop-key"},
		{args: []string{"--join-token", "a", "--join-token-file", "b"}, wantErr: "not both"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
			var f agentAttestorFlags
			f.register(fs)
			if err := fs.Parse(c.args); err != nil {
				t.Fatal(err)
			}
			cfg := fromTopology()
			err := f.apply(fs, &cfg)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("apply(%v) = %v, want an error containing %q", c.args, err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("apply(%v) = %v", c.args, err)
			}
			var got []string
			if cfg.JoinToken != "" || cfg.JoinTokenFile != "" {
				got = append(got, "join_token")
			}
			if cfg.X509PoP != nil {
				got = append(got, "x509pop")
			}
			if cfg.NodeAttestor != nil {
				got = append(got, cfg.NodeAttestor.Type())
			}
			if len(got) != 1 || got[0] != c.wantType {
				t.Errorf("apply(%v): the agent attests with %v, want only %s", c.args, got, c.wantType)
			}
		})
	}
}
