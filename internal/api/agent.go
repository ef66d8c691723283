package api

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/arborid/arbor/internal/ca"
	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/idpolicy"
	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/nodeattest/jointoken"
	"github.com/arborid/arbor/internal/selector"
)

// AttestAgent runs node attestation: params, optional challenges, then the
// agent SVID. The whole request is validated before the attestor runs, and
// the attestor consumes nothing: a join token is consumed in the transaction
// that stores the node, so any failure before it leaves the token usable.
//
// Every attestation is counted in arbor_node_attestations_total by
// attestation type (one of this server's attestors, else "other") and
// outcome: attested, reattested, invalid (malformed data), denied (data
// that proves nothing, a banned agent, data already used), or error.
func (s *Service) AttestAgent(stream agentv1.Agent_AttestAgentServer) (err error) {
	typ, outcome := "other", "invalid"
	defer func() {
		if err != nil && outcome == "attested" {
			outcome = "error" // the SVID could not be sent
		}
		s.metrics.attestations.WithLabelValues(typ, outcome).Inc()
	}()
	ctx := stream.Context()
	req, err := stream.Recv()
	if err != nil {
		outcome = "error"
		return recvError(ctx, err)
	}
	params := req.GetParams()
	if params == nil || params.Data == nil {
		return status.Error(codes.InvalidArgument, "first message must carry params with attestation data")
	}
	if params.Params == nil {
		return status.Error(codes.InvalidArgument, "missing agent X509-SVID params (CSR)")
	}
	if params.Data.Type == "" {
		return status.Error(codes.InvalidArgument, "missing attestation data type")
	}
	attestor, ok := s.attestors[params.Data.Type]
	if !ok {
		return status.Errorf(codes.InvalidArgument, "node attestor %q is not enabled on this server", params.Data.Type)
	}
	typ = params.Data.Type
	csr, err := parseCSR(params.Params.Csr, csrSVID)
	if err != nil {
		return err
	}
	challenge := func(ctx context.Context, c []byte) ([]byte, error) {
		if err := stream.Send(&agentv1.AttestAgentResponse{Step: &agentv1.AttestAgentResponse_Challenge{Challenge: c}}); err != nil {
			return nil, fmt.Errorf("sending challenge: %w", err)
		}
		resp, err := stream.Recv()
		if err != nil {
			return nil, fmt.Errorf("receiving challenge response: %w", err)
		}
		r := resp.GetChallengeResponse()
		if r == nil {
			return nil, fmt.Errorf("%w: expected a challenge response", nodeattest.ErrInvalid)
		}
		return r, nil
	}
	result, err := attestor.Attest(ctx, params.Data.Payload, challenge)
	outcome = "denied"
	switch {
	case err == nil:
	case errors.Is(err, nodeattest.ErrInvalid):
		outcome = "invalid"
		return status.Errorf(codes.InvalidArgument, "attestation failed: %v", err)
	case errors.Is(err, nodeattest.ErrDenied):
		return status.Errorf(codes.PermissionDenied, "attestation failed: %v", err)
	case ctx.Err() != nil:
		outcome = "error"
		// The stream ended during a challenge (a bound expired, the agent left).
		return status.FromContextError(ctx.Err()).Err()
	default:
		outcome = "error"
		return s.statusFor(ctx, "attestation failed", err)
	}
	if result.AgentID.TrustDomain() != s.td {
		outcome = "error"
		return s.internalError(ctx, "attestor returned an agent ID outside the trust domain", errors.New(result.AgentID.String()))
	}
	if existing, ok := s.nodes.get(result.AgentID); ok && existing.Banned() {
		return status.Errorf(codes.PermissionDenied, "agent %s is banned", result.AgentID)
	}
	chain, err := s.ca.SignX509SVID(ctx, ca.X509SVIDParams{ID: result.AgentID, PublicKey: csr.PublicKey, TTL: s.cfg.AgentSVIDTTL})
	if err != nil {
		outcome = "error"
		return s.statusFor(ctx, "signing agent SVID", err)
	}
	leaf := chain[0]
	attested := &datastore.Node{
		ID:              result.AgentID,
		AttestationType: params.Data.Type,
		CertSerial:      leaf.SerialNumber.String(),
		CertNotAfter:    leaf.NotAfter.Unix(),
		CanReattest:     result.CanReattest,
		Selectors:       selector.Sorted(result.Selectors),
	}
	_, reattested := s.nodes.get(result.AgentID)
	node, err := s.writeNode(ctx, result.AgentID, func() (*datastore.Node, error) {
		return s.store.AttestNode(ctx, attested, datastore.AttestCondition{JoinToken: result.JoinToken, FirstUse: result.FirstUse})
	})
	switch {
	case err == nil:
	case errors.Is(err, datastore.ErrBanned):
		return status.Errorf(codes.PermissionDenied, "agent %s is banned", result.AgentID)
	case errors.Is(err, datastore.ErrAlreadyExists) && result.FirstUse:
		// SPIRE's words for the same refusal of a reused instance identity.
		return status.Errorf(codes.PermissionDenied, "attestation failed: %s attestation data has already been used to attest an agent (%s); evict it to attest again", params.Data.Type, result.AgentID)
	case errors.Is(err, datastore.ErrNotFound) && result.JoinToken != "":
		// A concurrent attestation consumed the token first.
		return status.Errorf(codes.PermissionDenied, "attestation failed: %v", jointoken.ErrTokenUsed)
	default:
		outcome = "error"
		return s.statusFor(ctx, "storing attested node", err)
	}
	outcome = "attested"
	if reattested {
		outcome = "reattested"
	}
	s.metrics.svids.WithLabelValues("agent").Inc()
	s.log.InfoContext(ctx, "agent attested", "spiffe_id", node.ID.String(), "attestation_type", node.AttestationType, "reattested", reattested)
	return stream.Send(&agentv1.AttestAgentResponse{Step: &agentv1.AttestAgentResponse_Result_{
		Result: &agentv1.AttestAgentResponse_Result{
			Svid:         x509SVIDToProto(node.ID, chain, ""),
			Reattestable: result.CanReattest,
		},
	}})
}

// recvError is the status of a failed read of an attestation stream: the
// stream's own (a bound on unauthenticated streams expired, the client went
// away), never InvalidArgument, so metrics and callers see what happened.
func recvError(ctx context.Context, err error) error {
	if st, ok := status.FromError(err); ok {
		return st.Err()
	}
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	return status.Errorf(codes.Canceled, "receiving attestation request: %v", err)
}

// RenewAgent issues a new agent SVID; the old one stays valid until the new
// one is first used.
func (s *Service) RenewAgent(ctx context.Context, req *agentv1.RenewAgentRequest) (*agentv1.RenewAgentResponse, error) {
	caller := CallerFrom(ctx)
	if caller.Node.CanReattest {
		// As SPIRE: an agent whose attestor allows it proves itself again
		// instead of renewing on the strength of its current SVID.
		return nil, agentDenied(types.PermissionDeniedDetails_AGENT_MUST_REATTEST, "agent %s must re-attest instead of renewing", caller.ID)
	}
	if req.Params == nil {
		return nil, status.Error(codes.InvalidArgument, "missing params")
	}
	csr, err := parseCSR(req.Params.Csr, csrSVID)
	if err != nil {
		return nil, err
	}
	chain, err := s.ca.SignX509SVID(ctx, ca.X509SVIDParams{ID: caller.ID, PublicKey: csr.PublicKey, TTL: s.cfg.AgentSVIDTTL})
	if err != nil {
		return nil, s.statusFor(ctx, "signing agent SVID", err)
	}
	// Recorded only if the SVID the agent called with is still its current
	// one: a ban or re-attestation since the call was authorized wins.
	presented := caller.Cert.SerialNumber.String()
	_, err = s.writeNode(ctx, caller.ID, func() (*datastore.Node, error) {
		return s.store.RenewNode(ctx, caller.ID, presented, chain[0].SerialNumber.String(), chain[0].NotAfter.Unix())
	})
	if err != nil {
		if errors.Is(err, datastore.ErrConflict) || errors.Is(err, datastore.ErrNotFound) {
			if denial := s.nodeDenial(caller.ID, presented); denial != nil {
				return nil, denial
			}
		}
		return nil, s.statusFor(ctx, "storing renewed agent SVID serial", err)
	}
	s.metrics.svids.WithLabelValues("agent").Inc()
	return &agentv1.RenewAgentResponse{Svid: x509SVIDToProto(caller.ID, chain, "")}, nil
}

// PostStatus records the agent's version (that field only).
func (s *Service) PostStatus(ctx context.Context, req *agentv1.PostStatusRequest) (*agentv1.PostStatusResponse, error) {
	caller := CallerFrom(ctx)
	if req.AgentVersion != "" && req.AgentVersion != caller.Node.AgentVersion {
		if len(req.AgentVersion) > 256 {
			return nil, status.Errorf(codes.InvalidArgument, "agent_version: longer than 256 bytes")
		}
		_, err := s.writeNode(ctx, caller.ID, func() (*datastore.Node, error) {
			return s.store.SetNodeAgentVersion(ctx, caller.ID, req.AgentVersion)
		})
		if errors.Is(err, datastore.ErrNotFound) {
			return nil, s.nodeDenial(caller.ID, caller.Cert.SerialNumber.String())
		}
		if err != nil {
			return nil, s.statusFor(ctx, "storing agent version", err)
		}
	}
	return &agentv1.PostStatusResponse{}, nil
}

// CreateJoinToken creates a single-use join token, and with agent_id a
// node-alias entry for the agent that will use it.
func (s *Service) CreateJoinToken(ctx context.Context, req *agentv1.CreateJoinTokenRequest) (*types.JoinToken, error) {
	if req.Ttl < 1 {
		return nil, status.Error(codes.InvalidArgument, "ttl is required and must be at least 1 second")
	}
	token := req.Token
	if token == "" {
		u, err := uuid.NewRandomFromReader(s.rand())
		if err != nil {
			return nil, s.internalError(ctx, "generating join token", err)
		}
		token = u.String()
	} else if err := validateToken(token); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "token: %v", err)
	}
	agentID, err := spiffeid.FromSegments(s.td, "spire", "agent", "join_token", token)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "token: cannot form an agent ID: %v", err)
	}
	var alias *datastore.Entry
	if req.AgentId != nil {
		id, err := idFromProto("agent_id", req.AgentId)
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		// The alias is the SPIFFE ID of a node-alias entry: a workload ID.
		if err := idpolicy.WorkloadID(s.td, id); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "agent_id: %v", err)
		}
		alias = &datastore.Entry{
			SPIFFEID:  id,
			ParentID:  agentID,
			Selectors: []selector.Selector{{Type: "spiffe_id", Value: agentID.String()}},
		}
	}
	jt := &datastore.JoinToken{Token: token, ExpiresAt: s.now().Add(time.Duration(req.Ttl) * time.Second).Truncate(time.Second)}
	if err := s.store.CreateJoinToken(ctx, jt); err != nil {
		if errors.Is(err, datastore.ErrAlreadyExists) {
			return nil, status.Error(codes.AlreadyExists, "join token already exists")
		}
		return nil, s.statusFor(ctx, "storing join token", err)
	}
	if alias != nil {
		if _, err := s.createEntries(ctx, []*datastore.Entry{alias}); err[0] != nil && !errors.Is(err[0], datastore.ErrAlreadyExists) {
			return nil, s.statusFor(ctx, "creating the join token's alias entry", err[0])
		}
	}
	s.log.InfoContext(ctx, "join token created", "expires_at", jt.ExpiresAt)
	return &types.JoinToken{Value: token, ExpiresAt: jt.ExpiresAt.Unix()}, nil
}

func validateToken(t string) error {
	if len(t) > 256 {
		return errors.New("longer than 256 characters")
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.", r)) {
			return fmt.Errorf("invalid character %q (use letters, digits, '-', '_', '.')", r)
		}
	}
	return nil
}

func (s *Service) rand() io.Reader {
	if s.cfg.Rand != nil {
		return s.cfg.Rand
	}
	return rand.Reader
}

// agentFilter is ListAgents' and CountAgents' shared filter.
type agentFilter struct {
	attestationType string
	selectors       *types.SelectorMatch
	banned          *bool
	canReattest     *bool
	expiresBefore   int64
}

// parseAgentFilter validates a ListAgents filter (CountAgents' has the same
// fields); errors are InvalidArgument statuses.
func (s *Service) parseAgentFilter(fl *agentv1.ListAgentsRequest_Filter) (agentFilter, error) {
	var f agentFilter
	if fl == nil {
		return f, nil
	}
	f.attestationType, f.selectors = fl.ByAttestationType, fl.BySelectorMatch
	if sm := fl.BySelectorMatch; sm != nil {
		if _, err := selectorsFromProto("by_selector_match", sm.Selectors); err != nil {
			return f, status.Error(codes.InvalidArgument, err.Error())
		}
	}
	if fl.ByBanned != nil {
		b := fl.ByBanned.Value
		f.banned = &b
	}
	if fl.ByCanReattest != nil {
		b := fl.ByCanReattest.Value
		f.canReattest = &b
	}
	if fl.ByExpiresBefore != "" {
		t, err := time.Parse(time.RFC3339, fl.ByExpiresBefore)
		if err != nil {
			return f, status.Errorf(codes.InvalidArgument, "by_expires_before: want RFC 3339 time, got %q", fl.ByExpiresBefore)
		}
		f.expiresBefore = t.Unix()
	}
	return f, nil
}

func (f agentFilter) match(n *datastore.Node) bool {
	if f.attestationType != "" && n.AttestationType != f.attestationType {
		return false
	}
	if f.banned != nil && n.Banned() != *f.banned {
		return false
	}
	if f.canReattest != nil && n.CanReattest != *f.canReattest {
		return false
	}
	if f.expiresBefore != 0 && n.CertNotAfter >= f.expiresBefore {
		return false
	}
	if f.selectors != nil {
		want, _ := selectorsFromProto("", f.selectors.Selectors)
		if !matchSelectors(n.Selectors, want, f.selectors.Match) {
			return false
		}
	}
	return true
}

// matchSelectors applies a SelectorMatch behaviour: have is the record's set.
func matchSelectors(have, want []selector.Selector, how types.SelectorMatch_MatchBehavior) bool {
	switch how {
	case types.SelectorMatch_MATCH_EXACT:
		return selector.Equal(have, want)
	case types.SelectorMatch_MATCH_SUBSET:
		return selector.IsSubset(have, want)
	case types.SelectorMatch_MATCH_SUPERSET:
		return selector.IsSubset(want, have)
	case types.SelectorMatch_MATCH_ANY:
		for _, w := range want {
			if slices.Contains(have, w) {
				return true
			}
		}
		return false
	}
	return false
}

// ListAgents lists attested agents, sorted by SPIFFE ID, with paging.
func (s *Service) ListAgents(ctx context.Context, req *agentv1.ListAgentsRequest) (*agentv1.ListAgentsResponse, error) {
	if req.PageSize < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "page_size: %d is negative", req.PageSize)
	}
	f, err := s.parseAgentFilter(req.Filter)
	if err != nil {
		return nil, err
	}
	nodes := s.nodes.list()
	slices.SortFunc(nodes, func(a, b *datastore.Node) int { return strings.Compare(a.ID.String(), b.ID.String()) })
	resp := &agentv1.ListAgentsResponse{}
	var lastID string
	for _, n := range nodes {
		if req.PageToken != "" && n.ID.String() <= req.PageToken {
			continue
		}
		if !f.match(n) {
			continue
		}
		if req.PageSize > 0 && len(resp.Agents) == int(req.PageSize) {
			resp.NextPageToken = lastID
			break
		}
		resp.Agents = append(resp.Agents, nodeToProto(n, req.OutputMask))
		lastID = n.ID.String()
	}
	return resp, nil
}

// CountAgents counts attested agents matching the filter.
func (s *Service) CountAgents(ctx context.Context, req *agentv1.CountAgentsRequest) (*agentv1.CountAgentsResponse, error) {
	var f agentFilter
	if fl := req.Filter; fl != nil {
		var err error
		f, err = s.parseAgentFilter(&agentv1.ListAgentsRequest_Filter{ByAttestationType: fl.ByAttestationType,
			BySelectorMatch: fl.BySelectorMatch, ByBanned: fl.ByBanned, ByCanReattest: fl.ByCanReattest, ByExpiresBefore: fl.ByExpiresBefore})
		if err != nil {
			return nil, err
		}
	}
	var n int32
	for _, node := range s.nodes.list() {
		if f.match(node) {
			n++
		}
	}
	return &agentv1.CountAgentsResponse{Count: n}, nil
}

func (s *Service) agentIDFromRequest(p *types.SPIFFEID) (spiffeid.ID, error) {
	id, err := idFromProto("id", p)
	if err != nil {
		return id, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := idpolicy.AgentID(s.td, id); err != nil {
		return id, status.Errorf(codes.InvalidArgument, "id: %v", err)
	}
	return id, nil
}

// GetAgent returns one attested agent.
func (s *Service) GetAgent(ctx context.Context, req *agentv1.GetAgentRequest) (*types.Agent, error) {
	id, err := s.agentIDFromRequest(req.Id)
	if err != nil {
		return nil, err
	}
	n, ok := s.nodes.get(id)
	if !ok {
		return nil, status.Errorf(codes.NotFound, "agent %s not found", id)
	}
	return nodeToProto(n, req.OutputMask), nil
}

// DeleteAgent evicts an agent: it must attest again (where its attestor allows).
func (s *Service) DeleteAgent(ctx context.Context, req *agentv1.DeleteAgentRequest) (*emptypb.Empty, error) {
	id, err := s.agentIDFromRequest(req.Id)
	if err != nil {
		return nil, err
	}
	if err := s.deleteNode(ctx, id); err != nil {
		if errors.Is(err, datastore.ErrNotFound) {
			return nil, status.Errorf(codes.NotFound, "agent %s not found", id)
		}
		return nil, s.statusFor(ctx, "deleting agent", err)
	}
	s.log.InfoContext(ctx, "agent evicted", "spiffe_id", id.String())
	return &emptypb.Empty{}, nil
}

// BanAgent bans an agent: its SVID stops working and it cannot re-attest
// until deleted. Only the serials are written, so no concurrent write of the
// node can bring them back.
func (s *Service) BanAgent(ctx context.Context, req *agentv1.BanAgentRequest) (*emptypb.Empty, error) {
	id, err := s.agentIDFromRequest(req.Id)
	if err != nil {
		return nil, err
	}
	_, err = s.writeNode(ctx, id, func() (*datastore.Node, error) { return s.store.BanNode(ctx, id) })
	if err != nil {
		if errors.Is(err, datastore.ErrNotFound) {
			return nil, status.Errorf(codes.NotFound, "agent %s not found", id)
		}
		return nil, s.statusFor(ctx, "banning agent", err)
	}
	s.log.InfoContext(ctx, "agent banned", "spiffe_id", id.String())
	return &emptypb.Empty{}, nil
}
