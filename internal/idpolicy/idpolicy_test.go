package idpolicy_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/idpolicy"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// check is one of the package's rules.
type check struct {
	name string
	f    func(spiffeid.TrustDomain, spiffeid.ID) error
}

var (
	workload = check{"WorkloadID", idpolicy.WorkloadID}
	parent   = check{"ParentID", idpolicy.ParentID}
	agent    = check{"AgentID", idpolicy.AgentID}
)

// The tables follow SPIRE v1.13.3's server API: ProtoToRegistrationEntry
// checks an entry's parent with VerifyTrustDomainMemberID and its SPIFFE ID
// with VerifyTrustDomainWorkloadID, CreateJoinToken checks agent_id with
// VerifyTrustDomainWorkloadID, and the agent API checks agent IDs with
// VerifyTrustDomainAgentID (pkg/server/api/id.go, pkg/common/idutil). The
// entry and join token cases were tried on a real spire-server v1.13.3
// through its CLI, which refused and accepted them as listed;
// test/e2e/spiffeid_interop_test.go keeps checking arbor against it.

// TestRefused lists the IDs SPIRE 1.13 refuses in a role and the reason.
func TestRefused(t *testing.T) {
	cases := []struct {
		id    string
		check check
		want  error
	}{
		{"spiffe://example.org", workload, idpolicy.ErrEmptyPath},
		{"spiffe://example.org", parent, idpolicy.ErrEmptyPath},
		{"spiffe://example.org", agent, idpolicy.ErrEmptyPath},
		{"spiffe://example.org/spire", workload, idpolicy.ErrReservedPath},
		{"spiffe://example.org/spire/foo", workload, idpolicy.ErrReservedPath},
		{"spiffe://example.org/spire/server", workload, idpolicy.ErrReservedPath},
		{"spiffe://example.org/spire/agent", workload, idpolicy.ErrReservedPath},
		{"spiffe://example.org/spire/agent/x", workload, idpolicy.ErrReservedPath},
		{"spiffe://example.org/spire/agent/join_token/abc", workload, idpolicy.ErrReservedPath},
		{"spiffe://other.org/web", workload, idpolicy.ErrForeignTrustDomain},
		{"spiffe://other.org/web", parent, idpolicy.ErrForeignTrustDomain},
		{"spiffe://other.org/spire/agent/x", parent, idpolicy.ErrForeignTrustDomain},
		{"spiffe://other.org/spire/agent/x", agent, idpolicy.ErrForeignTrustDomain},
		{"spiffe://example.org.evil/web", workload, idpolicy.ErrForeignTrustDomain},
		{"spiffe://sub.example.org/web", parent, idpolicy.ErrForeignTrustDomain},
		{"spiffe://example.org/web", agent, idpolicy.ErrNotAgentPath},
		{"spiffe://example.org/spire", agent, idpolicy.ErrNotAgentPath},
		{"spiffe://example.org/spire/agent", agent, idpolicy.ErrNotAgentPath},
		{"spiffe://example.org/spire/server", agent, idpolicy.ErrNotAgentPath},
		{"spiffe://example.org/spire/agentx/y", agent, idpolicy.ErrNotAgentPath},
	}
	for _, c := range cases {
		t.Run(c.check.name+"/"+c.id, func(t *testing.T) {
			id := spiffeid.RequireFromString(c.id)
			err := c.check.f(td, id)
			if !errors.Is(err, c.want) {
				t.Fatalf("%s(%q, %q) = %v, want %v", c.check.name, td, c.id, err, c.want)
			}
			msg := err.Error()
			if !strings.Contains(msg, c.id) {
				t.Errorf("%s(%q) error %q does not name the ID", c.check.name, c.id, msg)
			}
			if msg != strings.ToLower(msg[:1])+msg[1:] || strings.HasSuffix(msg, ".") {
				t.Errorf("%s(%q) error %q is not lowercase without trailing punctuation", c.check.name, c.id, msg)
			}
		})
	}
}

// TestMissing: a zero ID is refused in every role.
func TestMissing(t *testing.T) {
	for _, c := range []check{workload, parent, agent} {
		if err := c.f(td, spiffeid.ID{}); !errors.Is(err, idpolicy.ErrMissing) {
			t.Errorf("%s(%q, zero ID) = %v, want ErrMissing", c.name, td, err)
		}
		if err := c.f(spiffeid.TrustDomain{}, spiffeid.RequireFromString("spiffe://example.org/spire/agent/x")); !errors.Is(err, idpolicy.ErrForeignTrustDomain) {
			t.Errorf("%s(zero trust domain, ...) = %v, want ErrForeignTrustDomain", c.name, err)
		}
	}
}

// TestUnparsable lists ID strings SPIRE 1.13 refuses before any rule of this
// package: its CLI parses -spiffeID and -parentID with go-spiffe's
// spiffeid.FromString, and its API builds IDs with
// spiffeid.TrustDomainFromString and spiffeid.FromPath, as arbor does. The
// test pins that go-spiffe keeps refusing them.
func TestUnparsable(t *testing.T) {
	for _, s := range []string{
		"",
		"example.org/web",
		"spiffe://",
		"spiffe:///web",
		"spiffe://example.org/",
		"spiffe://example.org/web/",
		"spiffe://example.org//web",
		"spiffe://example.org/./web",
		"spiffe://example.org/web/..",
		"spiffe://example.org/a/../spire/server",
		"spiffe://example.org/web%2F",
		"spiffe://example.org/%73pire/server",
		"spiffe://Example.org/web",
		"spiffe://EXAMPLE.ORG/web",
		"SPIFFE://example.org/web",
		"https://example.org/web",
		"spiffe://example.org:8443/web",
		"spiffe://user@example.org/web",
		"spiffe://example.org/web?x=1",
		"spiffe://example.org/web#frag",
		"spiffe://example.org/we b",
		"spiffe://example.org/web~1",
		"spiffe://exa mple.org/web",
	} {
		if id, err := spiffeid.FromString(s); err == nil {
			t.Errorf("spiffeid.FromString(%q) = %q, want an error", s, id)
		}
	}
	for _, path := range []string{"web", "/", "/web/", "//web", "/./web", "/web/..", "/a%20b", "/a b"} {
		if id, err := spiffeid.FromPath(td, path); err == nil {
			t.Errorf("spiffeid.FromPath(%q, %q) = %q, want an error", td, path, id)
		}
	}
}

// TestAccepted lists the IDs SPIRE 1.13 accepts in a role.
func TestAccepted(t *testing.T) {
	cases := []struct {
		id     string
		checks []check
	}{
		{"spiffe://example.org/web", []check{workload, parent}},
		{"spiffe://example.org/a/b/c", []check{workload, parent}},
		{"spiffe://example.org/Web/UPPER", []check{workload, parent}},
		{"spiffe://example.org/a-b_c.d", []check{workload, parent}},
		{"spiffe://example.org/...", []check{workload, parent}},
		{"spiffe://example.org/spiffe", []check{workload, parent}},
		{"spiffe://example.org/spire-agent", []check{workload, parent}},
		{"spiffe://example.org/spirex/y", []check{workload, parent}},
		{"spiffe://example.org/SPIRE/agent/x", []check{workload, parent}},
		{"spiffe://example.org/x/spire/server", []check{workload, parent}},
		{"spiffe://example.org/spire", []check{parent}},
		{"spiffe://example.org/spire/foo", []check{parent}},
		{"spiffe://example.org/spire/server", []check{parent}},
		{"spiffe://example.org/spire/agent", []check{parent}},
		{"spiffe://example.org/spire/agent/x", []check{parent, agent}},
		{"spiffe://example.org/spire/agent/join_token/abc", []check{parent, agent}},
		{"spiffe://example.org/spire/agent/x509pop/0123abcd", []check{parent, agent}},
	}
	for _, c := range cases {
		id := spiffeid.RequireFromString(c.id)
		for _, ch := range c.checks {
			if err := ch.f(td, id); err != nil {
				t.Errorf("%s(%q, %q) = %v, want nil", ch.name, td, c.id, err)
			}
		}
	}
}

func TestIsReservedPath(t *testing.T) {
	for path, want := range map[string]bool{
		"/spire": true, "/spire/": true, "/spire/server": true, "/spire/agent/x": true,
		"": false, "/": false, "/spirex": false, "/spire-x/y": false, "/Spire": false, "/x/spire": false,
	} {
		if got := idpolicy.IsReservedPath(path); got != want {
			t.Errorf("IsReservedPath(%q) = %v, want %v", path, got, want)
		}
	}
}
