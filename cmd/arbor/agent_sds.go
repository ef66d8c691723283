package main

import (
	"github.com/spf13/pflag"

	"github.com/arborid/arbor/agent"
)

// agentSDSFlags are the flags of `arbor agent run` for Envoy's SDS on the
// agent's socket: spire-agent's sds block, and --no-sds. Each given flag
// overrides the topology's agent block.
type agentSDSFlags struct {
	svidName, bundleName, allName string
	noSPIFFEValidation, off       bool
}

func (f *agentSDSFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.svidName, "sds-default-svid-name", agent.DefaultSDSSVIDName, "Envoy SDS: the name of the workload's first X509-SVID (spire-agent's default_svid_name)")
	fs.StringVar(&f.bundleName, "sds-default-bundle-name", agent.DefaultSDSBundleName, "Envoy SDS: the name of the trust domain's validation context (default_bundle_name)")
	fs.StringVar(&f.allName, "sds-default-all-bundles-name", agent.DefaultSDSAllBundlesName, "Envoy SDS: the name of the validation context of all the workload's bundles (default_all_bundles_name)")
	fs.BoolVar(&f.noSPIFFEValidation, "sds-disable-spiffe-cert-validation", false, "Envoy SDS: send validation contexts as trusted_ca, not Envoy's SPIFFE validator (disable_spiffe_cert_validation)")
	fs.BoolVar(&f.off, "no-sds", false, "do not serve Envoy SDS on the Workload API socket")
}

// apply sets the flags given explicitly on cfg.SDS.
func (f *agentSDSFlags) apply(fs *pflag.FlagSet, cfg *agent.Config) {
	for name, set := range map[string]func(){
		"sds-default-svid-name":              func() { cfg.SDS.DefaultSVIDName = f.svidName },
		"sds-default-bundle-name":            func() { cfg.SDS.DefaultBundleName = f.bundleName },
		"sds-default-all-bundles-name":       func() { cfg.SDS.DefaultAllBundlesName = f.allName },
		"sds-disable-spiffe-cert-validation": func() { cfg.SDS.DisableSPIFFECertValidation = f.noSPIFFEValidation },
		"no-sds":                             func() { cfg.SDS.Disabled = f.off },
	} {
		if fs.Changed(name) {
			set()
		}
	}
}
