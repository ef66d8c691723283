package admin_test

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/arborid/arbor/internal/cli/admin"
)

func TestTokenAndAgents(t *testing.T) {
	_, socket := startServer(t)
	c := dial(t, socket)
	ctx := testContext(t)
	var o outputs

	// No agents yet.
	if err := c.PrintAgents(ctx, o.printer(admin.FormatPretty), admin.AgentFilter{}); err != nil || o.out.String() != "Found 0 attested agents\n\n" {
		t.Fatalf("PrintAgents(empty) = %v, printed %q", err, o.out.String())
	}
	if err := c.PrintAgents(ctx, o.printer(admin.FormatJSON), admin.AgentFilter{}); err != nil {
		t.Fatal(err)
	}
	var list agentv1.ListAgentsResponse
	if err := protojson.Unmarshal(o.out.Bytes(), &list); err != nil || len(list.Agents) != 0 {
		t.Errorf("PrintAgents(empty, json) = %q (%v), want no agents", o.out.String(), err)
	}

	// A random token, as SPIRE prints it, and as JSON.
	if err := c.GenerateToken(ctx, o.printer(admin.FormatPretty), 600, "", ""); err != nil {
		t.Fatalf("GenerateToken: %v", err)
	}
	if !regexp.MustCompile(`^Token: [0-9a-f-]{36}\n$`).MatchString(o.out.String()) {
		t.Errorf("GenerateToken printed %q, want Token: <uuid>", o.out.String())
	}
	before := time.Now()
	if err := c.GenerateToken(ctx, o.printer(admin.FormatJSON), 600, "", ""); err != nil {
		t.Fatal(err)
	}
	var jt types.JoinToken
	if err := protojson.Unmarshal(o.out.Bytes(), &jt); err != nil || jt.Value == "" {
		t.Fatalf("GenerateToken JSON %q = %v, want a token", o.out.String(), err)
	}
	if exp := time.Unix(jt.ExpiresAt, 0); exp.Before(before.Add(590*time.Second)) || exp.After(before.Add(610*time.Second)) {
		t.Errorf("token expires at %v, want about 600s after %v", exp, before)
	}

	// A chosen token with an alias: the alias entry exists, the same value
	// again is refused, and an agent can attest with it (so it is stored).
	if err := c.GenerateToken(ctx, o.printer(admin.FormatPretty), 60, "spiffe://example.org/host/a", "tok-1"); err != nil || o.out.String() != "Token: tok-1\n" {
		t.Fatalf("GenerateToken(tok-1) = %v, printed %q", err, o.out.String())
	}
	err := c.GenerateToken(ctx, o.printer(admin.FormatPretty), 60, "", "tok-1")
	var re *admin.RPCError
	checkOneLine(t, err)
	if !errors.As(err, &re) || re.Code != codes.AlreadyExists {
		t.Errorf("GenerateToken(tok-1 again) = %v, want AlreadyExists", err)
	}
	if err := c.GenerateToken(ctx, o.printer(admin.FormatPretty), 0, "", ""); err == nil {
		t.Error("GenerateToken(ttl 0) = nil error, want one")
	}
	aliases, err := c.ListEntries(ctx, admin.EntryFilter{SPIFFEID: "spiffe://example.org/host/a"})
	if err != nil || len(aliases) != 1 || idString(aliases[0].ParentId) != "spiffe://example.org/spire/agent/join_token/tok-1" {
		t.Errorf("alias entries = %v, %v; want one parented to the token's agent ID", aliases, err)
	}
	agentID := "spiffe://example.org/spire/agent/join_token/tok-1"
	if got := idString(attest(t, socket, "tok-1")); got != agentID {
		t.Fatalf("attested as %q, want %q", got, agentID)
	}

	// The agent is listed, shown, counted, banned, then evicted.
	if err := c.PrintAgents(ctx, o.printer(admin.FormatPretty), admin.AgentFilter{AttestationType: "join_token"}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Found 1 attested agent\n", "SPIFFE ID         : " + agentID, "Attestation type  : join_token", "Serial number     : "} {
		if !strings.Contains(o.out.String(), want) {
			t.Errorf("PrintAgents printed\n%s\nwant %q", o.out.String(), want)
		}
	}
	if err := c.ShowAgent(ctx, o.printer(admin.FormatJSON), agentID); err != nil {
		t.Fatal(err)
	}
	var agent types.Agent
	if err := protojson.Unmarshal(o.out.Bytes(), &agent); err != nil || agent.AttestationType != "join_token" || agent.Banned {
		t.Errorf("ShowAgent JSON = %q (%v), want a join_token agent not banned", o.out.String(), err)
	}
	banned := true
	if err := c.BanAgent(ctx, o.printer(admin.FormatPretty), agentID); err != nil || !strings.Contains(o.out.String(), "banned") {
		t.Fatalf("BanAgent = %v, printed %q", err, o.out.String())
	}
	if err := c.CountAgents(ctx, o.printer(admin.FormatPretty), admin.AgentFilter{Banned: &banned}); err != nil || o.out.String() != "1 attested agent\n" {
		t.Errorf("CountAgents(banned) = %v, printed %q; want 1 attested agent", err, o.out.String())
	}
	notBanned := false
	if err := c.PrintAgents(ctx, o.printer(admin.FormatPretty), admin.AgentFilter{Banned: &notBanned}); err != nil || !strings.HasPrefix(o.out.String(), "Found 0 attested agents") {
		t.Errorf("PrintAgents(not banned) = %v, printed %q; want none", err, o.out.String())
	}
	if err := c.EvictAgent(ctx, o.printer(admin.FormatPretty), agentID); err != nil || !strings.Contains(o.out.String(), "evicted") {
		t.Fatalf("EvictAgent = %v, printed %q", err, o.out.String())
	}
	if err := c.CountAgents(ctx, o.printer(admin.FormatPretty), admin.AgentFilter{}); err != nil || o.out.String() != "0 attested agents\n" {
		t.Errorf("CountAgents after evict = %v, printed %q", err, o.out.String())
	}
	err = c.ShowAgent(ctx, o.printer(admin.FormatPretty), agentID)
	checkOneLine(t, err)
	if !errors.As(err, &re) || re.Code != codes.NotFound {
		t.Errorf("ShowAgent(evicted) = %v, want NotFound", err)
	}
	for _, bad := range []string{"", "not-an-id"} {
		if err := c.EvictAgent(ctx, o.printer(admin.FormatPretty), bad); err == nil {
			t.Errorf("EvictAgent(%q) = nil error, want one", bad)
		}
	}
}

func idString(p *types.SPIFFEID) string {
	if p == nil {
		return ""
	}
	return "spiffe://" + p.TrustDomain + p.Path
}
