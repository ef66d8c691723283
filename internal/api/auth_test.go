package api

import (
	"sort"
	"testing"

	"google.golang.org/grpc"
)

// TestEveryRPCHasOneRule checks that every method the server registers has
// exactly one authorization rule and that the rule table names no method the
// server does not serve.
func TestEveryRPCHasOneRule(t *testing.T) {
	g := grpc.NewServer()
	svc := &Service{}
	svc.Register(g)
	served := map[string]bool{}
	for name, info := range g.GetServiceInfo() {
		for _, m := range info.Methods {
			served["/"+name+"/"+m.Name] = true
		}
	}
	var missing []string
	for m := range served {
		if _, ok := rules[m]; !ok {
			missing = append(missing, m)
		}
	}
	sort.Strings(missing)
	// Methods SPIRE defines that arbor does not implement have no rule and
	// answer Unimplemented (notServed); list them so that adding one is
	// deliberate.
	wantMissing := []string{
		"/spire.api.server.bundle.v1.Bundle/PublishWITAuthority",
		"/spire.api.server.localauthority.v1.LocalAuthority/ActivateWITAuthority",
		"/spire.api.server.localauthority.v1.LocalAuthority/GetWITAuthorityState",
		"/spire.api.server.localauthority.v1.LocalAuthority/PrepareWITAuthority",
		"/spire.api.server.localauthority.v1.LocalAuthority/RevokeWITAuthority",
		"/spire.api.server.localauthority.v1.LocalAuthority/TaintWITAuthority",
		"/spire.api.server.svid.v1.SVID/BatchNewWITSVID",
		"/spire.api.server.svid.v1.SVID/MintWITSVID",
	}
	if len(notServed) != len(wantMissing) {
		t.Errorf("notServed has %d methods, want the %d without a rule", len(notServed), len(wantMissing))
	}
	for _, m := range wantMissing {
		if !notServed[m] {
			t.Errorf("%s has no rule and is not in notServed", m)
		}
		if _, ok := rules[m]; ok {
			t.Errorf("%s is in notServed and has a rule", m)
		}
	}
	if len(missing) != len(wantMissing) {
		t.Fatalf("methods without a rule = %v, want %v", missing, wantMissing)
	}
	for i := range missing {
		if missing[i] != wantMissing[i] {
			t.Fatalf("methods without a rule = %v, want %v", missing, wantMissing)
		}
	}
	for m := range rules {
		if !served[m] && m[:len("/grpc.health")] != "/grpc.health" {
			t.Errorf("rule for %s, which the server does not serve", m)
		}
	}
}
