package admin

import (
	"context"
	"fmt"
	"io"
	"time"

	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// GenerateToken creates a join token valid for ttl seconds and prints
// "Token: <value>". A non-empty spiffeID also creates a node-alias entry
// mapping the agent that uses the token to that ID; a non-empty token picks
// the token value instead of a random one.
func (c *Client) GenerateToken(ctx context.Context, p Printer, ttl int32, spiffeID, token string) error {
	const op = "token generate"
	if ttl < 1 {
		return fmt.Errorf("%s: --ttl must be at least 1 second", op)
	}
	req := &agentv1.CreateJoinTokenRequest{Ttl: ttl, Token: token}
	if spiffeID != "" {
		id, err := parseSPIFFEID("--spiffe-id", spiffeID)
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		req.AgentId = id
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	jt, err := c.agent.CreateJoinToken(ctx, req)
	if err != nil {
		return c.rpcError(op, err)
	}
	if p.JSON() {
		return p.printJSON(jt)
	}
	fmt.Fprintf(p.Out, "Token: %s\n", jt.Value)
	return nil
}

// AgentFilter selects agents for list and count. Zero fields do not filter.
type AgentFilter struct {
	// Selectors match according to Match: exact, subset, superset (default) or any.
	Selectors       []string
	Match           string
	AttestationType string
	Banned          *bool
	CanReattest     *bool
	// ExpiresBefore selects agents whose SVID expires before it (RFC 3339).
	ExpiresBefore string
}

func (f AgentFilter) apiFilter() (sm *types.SelectorMatch, banned, canReattest *wrapperspb.BoolValue, err error) {
	if len(f.Selectors) > 0 {
		sels, err := parseSelectors(f.Selectors)
		if err != nil {
			return nil, nil, nil, err
		}
		m, err := parseMatch("--match", f.Match)
		if err != nil {
			return nil, nil, nil, err
		}
		sm = &types.SelectorMatch{Selectors: sels, Match: types.SelectorMatch_MatchBehavior(m)}
	}
	if f.Banned != nil {
		banned = wrapperspb.Bool(*f.Banned)
	}
	if f.CanReattest != nil {
		canReattest = wrapperspb.Bool(*f.CanReattest)
	}
	if f.ExpiresBefore != "" {
		if _, err := time.Parse(time.RFC3339, f.ExpiresBefore); err != nil {
			return nil, nil, nil, fmt.Errorf("--expires-before %q: want an RFC 3339 time", f.ExpiresBefore)
		}
	}
	return sm, banned, canReattest, nil
}

// ListAgents returns every attested agent matching f, paging through ListAgents.
func (c *Client) ListAgents(ctx context.Context, f AgentFilter) ([]*types.Agent, error) {
	const op = "agent list"
	sm, banned, canReattest, err := f.apiFilter()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	filter := &agentv1.ListAgentsRequest_Filter{
		ByAttestationType: f.AttestationType, BySelectorMatch: sm, ByBanned: banned,
		ByCanReattest: canReattest, ByExpiresBefore: f.ExpiresBefore,
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	var all []*types.Agent
	token := ""
	for {
		resp, err := c.agent.ListAgents(ctx, &agentv1.ListAgentsRequest{Filter: filter, PageSize: pageSize, PageToken: token})
		if err != nil {
			return nil, c.rpcError(op, err)
		}
		all = append(all, resp.Agents...)
		if resp.NextPageToken == "" {
			return all, nil
		}
		if resp.NextPageToken == token {
			return nil, fmt.Errorf("%s: the server returned the same page token %q twice", op, token)
		}
		token = resp.NextPageToken
	}
}

// PrintAgents lists the agents matching f: "Found N attested agents" and a
// block per agent, or with JSON a ListAgentsResponse holding all of them.
func (c *Client) PrintAgents(ctx context.Context, p Printer, f AgentFilter) error {
	agents, err := c.ListAgents(ctx, f)
	if err != nil {
		return err
	}
	if p.JSON() {
		return p.printJSON(&agentv1.ListAgentsResponse{Agents: agents})
	}
	fmt.Fprintf(p.Out, "Found %s\n\n", plural(len(agents), "attested agent", "attested agents"))
	for _, a := range agents {
		printAgent(p.Out, a)
	}
	return nil
}

// ShowAgent prints one attested agent.
func (c *Client) ShowAgent(ctx context.Context, p Printer, spiffeID string) error {
	const op = "agent show"
	id, err := agentID(op, spiffeID)
	if err != nil {
		return err
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	a, err := c.agent.GetAgent(ctx, &agentv1.GetAgentRequest{Id: id})
	if err != nil {
		return c.rpcError(op, err)
	}
	if p.JSON() {
		return p.printJSON(a)
	}
	printAgent(p.Out, a)
	return nil
}

// EvictAgent deletes an agent's attestation record: it must attest again.
func (c *Client) EvictAgent(ctx context.Context, p Printer, spiffeID string) error {
	const op = "agent evict"
	id, err := agentID(op, spiffeID)
	if err != nil {
		return err
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	resp, err := c.agent.DeleteAgent(ctx, &agentv1.DeleteAgentRequest{Id: id})
	if err != nil {
		return c.rpcError(op, err)
	}
	if p.JSON() {
		return p.printJSON(resp)
	}
	fmt.Fprintf(p.Out, "Agent %s evicted\n", spiffeID)
	return nil
}

// BanAgent bans an agent: its SVID stops working and it cannot attest again
// until evicted.
func (c *Client) BanAgent(ctx context.Context, p Printer, spiffeID string) error {
	const op = "agent ban"
	id, err := agentID(op, spiffeID)
	if err != nil {
		return err
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	resp, err := c.agent.BanAgent(ctx, &agentv1.BanAgentRequest{Id: id})
	if err != nil {
		return c.rpcError(op, err)
	}
	if p.JSON() {
		return p.printJSON(resp)
	}
	fmt.Fprintf(p.Out, "Agent %s banned\n", spiffeID)
	return nil
}

// CountAgents prints how many attested agents match f.
func (c *Client) CountAgents(ctx context.Context, p Printer, f AgentFilter) error {
	const op = "agent count"
	sm, banned, canReattest, err := f.apiFilter()
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	resp, err := c.agent.CountAgents(ctx, &agentv1.CountAgentsRequest{Filter: &agentv1.CountAgentsRequest_Filter{
		ByAttestationType: f.AttestationType, BySelectorMatch: sm, ByBanned: banned,
		ByCanReattest: canReattest, ByExpiresBefore: f.ExpiresBefore,
	}})
	if err != nil {
		return c.rpcError(op, err)
	}
	if p.JSON() {
		return p.printJSON(resp)
	}
	fmt.Fprintln(p.Out, plural(int(resp.Count), "attested agent", "attested agents"))
	return nil
}

func agentID(op, s string) (*types.SPIFFEID, error) {
	if s == "" {
		return nil, fmt.Errorf("%s: --spiffe-id is required", op)
	}
	id, err := parseSPIFFEID("--spiffe-id", s)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return id, nil
}

func printAgent(w io.Writer, a *types.Agent) {
	line := func(label, value string) { fmt.Fprintf(w, "%-17s : %s\n", label, value) }
	line("SPIFFE ID", idString(a.Id))
	line("Attestation type", a.AttestationType)
	if a.X509SvidExpiresAt != 0 {
		line("Expiration time", formatUnix(a.X509SvidExpiresAt))
	}
	line("Serial number", a.X509SvidSerialNumber)
	line("Can re-attest", fmt.Sprintf("%t", a.CanReattest))
	if a.Banned {
		line("Banned", "true")
	}
	if a.AgentVersion != "" {
		line("Agent version", a.AgentVersion)
	}
	for _, s := range a.Selectors {
		line("Selector", s.Type+":"+s.Value)
	}
	fmt.Fprintln(w)
}
