package idpolicy_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/idpolicy"
)

// FuzzSPIFFEIDPolicy reads its input both as a whole ID (as the CLI sends
// -spiffeID) and as a path in example.org (as the API receives a SPIFFEID
// message), and checks that the three rules agree with each other and with
// their definitions, and never panic.
func FuzzSPIFFEIDPolicy(f *testing.F) {
	for _, s := range []string{
		"spiffe://example.org", "spiffe://example.org/web", "spiffe://example.org/spire",
		"spiffe://example.org/spire/server", "spiffe://example.org/spire/agent/x",
		"spiffe://example.org/spire/agent/", "spiffe://example.org/spirex", "spiffe://other.org/web",
		"spiffe://example.org/a/../b", "spiffe://example.org//a", "spiffe://example.org/a%2Fb",
		"spiffe://EXAMPLE.org/a", "/web", "/spire", "/spire/agent/join_token/t", "", "web",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if id, err := spiffeid.FromString(s); err == nil {
			checkRules(t, id)
		}
		if id, err := spiffeid.FromPath(td, s); err == nil {
			checkRules(t, id)
		}
	})
}

func checkRules(t *testing.T, id spiffeid.ID) {
	t.Helper()
	parentErr := idpolicy.ParentID(td, id)
	workloadErr := idpolicy.WorkloadID(td, id)
	agentErr := idpolicy.AgentID(td, id)

	member := id.MemberOf(td) && id.Path() != ""
	if (parentErr == nil) != member {
		t.Fatalf("ParentID(%q) = %v, want accepted=%v", id, parentErr, member)
	}
	reserved := id.Path() == "/spire" || strings.HasPrefix(id.Path(), "/spire/")
	if want := member && !reserved; (workloadErr == nil) != want {
		t.Fatalf("WorkloadID(%q) = %v, want accepted=%v", id, workloadErr, want)
	}
	if want := member && strings.HasPrefix(id.Path(), "/spire/agent/"); (agentErr == nil) != want {
		t.Fatalf("AgentID(%q) = %v, want accepted=%v", id, agentErr, want)
	}
	if workloadErr == nil && agentErr == nil {
		t.Fatalf("%q is accepted both as a workload and as an agent", id)
	}
	for _, err := range []error{parentErr, workloadErr, agentErr} {
		if err == nil {
			continue
		}
		n := 0
		for _, reason := range []error{idpolicy.ErrMissing, idpolicy.ErrForeignTrustDomain, idpolicy.ErrEmptyPath, idpolicy.ErrReservedPath, idpolicy.ErrNotAgentPath} {
			if errors.Is(err, reason) {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("error %q for %q wraps %d reasons, want 1", err, id, n)
		}
	}
	if workloadErr == nil {
		// An ID accepted for an entry must survive the trip through an
		// X509-SVID URI SAN and back.
		back, err := spiffeid.FromURI(id.URL())
		if err != nil || back != id {
			t.Fatalf("WorkloadID accepted %q, but its URI %q parses back as %q, %v", id, id.URL(), back, err)
		}
	}
}
