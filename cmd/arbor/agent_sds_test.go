package main

import (
	"testing"

	"github.com/spf13/pflag"

	"github.com/arborid/arbor/agent"
)

// TestAgentSDSFlags: only the --sds-* flags given change what the topology
// set; none given leaves it as it was.
func TestAgentSDSFlags(t *testing.T) {
	fromFile := agent.SDSConfig{DefaultSVIDName: "svid", DefaultBundleName: "bundle", DisableSPIFFECertValidation: true}
	for _, tc := range []struct {
		args []string
		want agent.SDSConfig
	}{
		{nil, fromFile},
		{[]string{"--sds-default-svid-name", "mine"}, agent.SDSConfig{DefaultSVIDName: "mine", DefaultBundleName: "bundle", DisableSPIFFECertValidation: true}},
		{[]string{"--sds-default-all-bundles-name", "every", "--sds-disable-spiffe-cert-validation=false"},
			agent.SDSConfig{DefaultSVIDName: "svid", DefaultBundleName: "bundle", DefaultAllBundlesName: "every"}},
		{[]string{"--no-sds"}, agent.SDSConfig{DefaultSVIDName: "svid", DefaultBundleName: "bundle", DisableSPIFFECertValidation: true, Disabled: true}},
	} {
		var f agentSDSFlags
		fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
		f.register(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatalf("parse %v: %v", tc.args, err)
		}
		cfg := agent.Config{SDS: fromFile}
		f.apply(fs, &cfg)
		if cfg.SDS != tc.want {
			t.Errorf("%v: SDS = %+v, want %+v", tc.args, cfg.SDS, tc.want)
		}
	}
}
