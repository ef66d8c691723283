package server_test

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"
)

// rawID is a SPIFFEID message as a client may send it, unchecked.
func rawID(trustDomain, path string) *types.SPIFFEID {
	return &types.SPIFFEID{TrustDomain: trustDomain, Path: path}
}

// malformedIDs are IDs no rule can accept: they do not parse (go-spiffe's
// spiffeid.TrustDomainFromString and FromPath, as SPIRE builds IDs from the
// message) or are missing.
var malformedIDs = map[string]*types.SPIFFEID{
	"missing":                  nil,
	"no trust domain":          rawID("", "/web"),
	"uppercase trust domain":   rawID("Example.org", "/web"),
	"trust domain with port":   rawID("example.org:8443", "/web"),
	"path without slash":       rawID("example.org", "web"),
	"trailing slash":           rawID("example.org", "/web/"),
	"root slash":               rawID("example.org", "/"),
	"empty segment":            rawID("example.org", "//web"),
	"dot segment":              rawID("example.org", "/a/./b"),
	"dot-dot segment":          rawID("example.org", "/a/../b"),
	"dot-dot into /spire":      rawID("example.org", "/a/../spire/server"),
	"percent-encoded":          rawID("example.org", "/a%2Fb"),
	"percent-encoded /spire":   rawID("example.org", "/%73pire/server"),
	"space in path":            rawID("example.org", "/a b"),
	"query in path":            rawID("example.org", "/web?x=1"),
	"tilde in path":            rawID("example.org", "/web~1"),
	"other trust domain":       rawID("other.org", "/web"),
	"other trust domain agent": rawID("other.org", "/spire/agent/x"),
	"trust domain itself":      rawID("example.org", ""),
}

// reservedIDs are well-formed members of the trust domain that SPIRE 1.13
// accepts as a parent but refuses as an entry's SPIFFE ID or a join token
// alias: the /spire namespace.
var reservedIDs = map[string]*types.SPIFFEID{
	"/spire":                      rawID("example.org", "/spire"),
	"/spire/foo":                  rawID("example.org", "/spire/foo"),
	"/spire/server":               rawID("example.org", "/spire/server"),
	"/spire/agent":                rawID("example.org", "/spire/agent"),
	"/spire/agent/x":              rawID("example.org", "/spire/agent/x"),
	"/spire/agent/join_token/abc": rawID("example.org", "/spire/agent/join_token/abc"),
}

// TestRefusedSPIFFEIDs sends every ID SPIRE 1.13 refuses, in each place an
// admin can put one, over the admin socket: each gets InvalidArgument (per
// result for batch calls) and the entries stay as they were.
func TestRefusedSPIFFEIDs(t *testing.T) {
	h := startServer(t)
	entries := entryv1.NewEntryClient(h.admin)
	agents := agentv1.NewAgentClient(h.admin)
	existing := h.createEntry(&types.Entry{ParentId: protoID("/node"), SpiffeId: protoID("/existing"), Selectors: []*types.Selector{sel("unix", "uid:1")}})

	newEntry := func(parent, id *types.SPIFFEID) *types.Entry {
		return &types.Entry{ParentId: parent, SpiffeId: id, Selectors: []*types.Selector{sel("unix", "uid:2")}}
	}
	resultCode := func(st *types.Status, err error) (codes.Code, string) {
		if err != nil {
			return status.Code(err), err.Error()
		}
		return codes.Code(st.GetCode()), st.GetMessage()
	}
	create := func(e *types.Entry) (codes.Code, string) {
		resp, err := entries.BatchCreateEntry(ctxT(t), &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{e}})
		if err == nil && resp.Results[0].Entry != nil {
			t.Errorf("BatchCreateEntry refused %v but returned an entry %v", e, resp.Results[0].Entry)
		}
		return resultCode(resp.GetResults()[0].GetStatus(), err)
	}
	update := func(e *types.Entry, mask *types.EntryMask) (codes.Code, string) {
		e.Id = existing
		resp, err := entries.BatchUpdateEntry(ctxT(t), &entryv1.BatchUpdateEntryRequest{Entries: []*types.Entry{e}, InputMask: mask})
		return resultCode(resp.GetResults()[0].GetStatus(), err)
	}
	token := func(id *types.SPIFFEID) (codes.Code, string) {
		_, err := agents.CreateJoinToken(ctxT(t), &agentv1.CreateJoinTokenRequest{Ttl: 60, AgentId: id})
		return status.Code(err), fmt.Sprint(err)
	}

	type call struct {
		name string
		do   func() (codes.Code, string)
	}
	var calls []call
	asEntryID := func(name string, id *types.SPIFFEID) {
		calls = append(calls,
			call{"BatchCreateEntry spiffe_id " + name, func() (codes.Code, string) { return create(newEntry(protoID("/node"), id)) }},
			call{"BatchUpdateEntry spiffe_id " + name, func() (codes.Code, string) {
				return update(&types.Entry{SpiffeId: id}, &types.EntryMask{SpiffeId: true})
			}},
			call{"BatchUpdateEntry (no mask) spiffe_id " + name, func() (codes.Code, string) {
				return update(newEntry(protoID("/node"), id), nil)
			}},
		)
		if id != nil {
			// A nil agent_id asks for no alias, which is fine.
			calls = append(calls, call{"CreateJoinToken agent_id " + name, func() (codes.Code, string) { return token(id) }})
		}
	}
	asParentID := func(name string, id *types.SPIFFEID) {
		calls = append(calls,
			call{"BatchCreateEntry parent_id " + name, func() (codes.Code, string) { return create(newEntry(id, protoID("/web"))) }},
			call{"BatchUpdateEntry parent_id " + name, func() (codes.Code, string) {
				return update(&types.Entry{ParentId: id}, &types.EntryMask{ParentId: true})
			}},
		)
	}
	for name, id := range malformedIDs {
		asEntryID(name, id)
		asParentID(name, id)
	}
	for name, id := range reservedIDs {
		asEntryID(name, id)
	}

	before := listAllEntries(t, h)
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			code, msg := c.do()
			if code != codes.InvalidArgument {
				t.Errorf("%s = %v (%s), want InvalidArgument", c.name, code, msg)
			}
		})
	}

	// All of them in one batch: a status for each.
	var batch []*types.Entry
	for _, id := range reservedIDs {
		batch = append(batch, newEntry(protoID("/node"), id))
	}
	for _, id := range malformedIDs {
		batch = append(batch, newEntry(id, protoID("/web")))
	}
	resp := must(entries.BatchCreateEntry(ctxT(t), &entryv1.BatchCreateEntryRequest{Entries: batch}))(t)
	if len(resp.Results) != len(batch) {
		t.Fatalf("BatchCreateEntry of %d entries returned %d results", len(batch), len(resp.Results))
	}
	for i, r := range resp.Results {
		if codes.Code(r.Status.GetCode()) != codes.InvalidArgument || r.Entry != nil {
			t.Errorf("batch result %d for %v = %v, entry %v; want InvalidArgument and no entry", i, batch[i], r.Status, r.Entry)
		}
	}

	after := listAllEntries(t, h)
	if diff := cmp.Diff(before, after, protocmp.Transform()); diff != "" {
		t.Errorf("refused IDs changed the entries (-before +after):\n%s", diff)
	}
	count := must(entries.CountEntries(ctxT(t), &entryv1.CountEntriesRequest{}))(t)
	if int(count.Count) != len(before) || len(before) != 1 {
		t.Errorf("CountEntries = %d with %d listed before, want the one existing entry", count.Count, len(before))
	}
}

// TestAcceptedSPIFFEIDs is the control: IDs SPIRE 1.13 accepts are accepted
// in the same places, and an entry with one yields an X509-SVID go-spiffe
// parses.
func TestAcceptedSPIFFEIDs(t *testing.T) {
	h := startServer(t)
	agent := h.newAgent()
	entries := entryv1.NewEntryClient(h.admin)
	for _, c := range []struct{ parent, id string }{
		{"/node", "/web"},
		{"/node", "/Web/UPPER"},
		{"/node", "/a-b_c.d/..."},
		{"/node", "/spirex/y"},
		{"/node", "/spire-agent"},
		{"/node", "/SPIRE/agent/x"},
		{"/node", "/x/spire/server"},
		{"/spire", "/p1"},
		{"/spire/foo", "/p2"},
		{"/spire/server", "/p3"},
		{"/spire/agent", "/p4"},
		{"/spire/agent/x", "/p5"},
	} {
		id := h.createEntry(&types.Entry{ParentId: protoID(c.parent), SpiffeId: protoID(c.id), Selectors: []*types.Selector{sel("unix", "uid:3")}})
		e := must(entries.GetEntry(ctxT(t), &entryv1.GetEntryRequest{Id: id}))(t)
		if e.SpiffeId.Path != c.id || e.ParentId.Path != c.parent {
			t.Errorf("entry %s <- %s stored as %v <- %v", c.id, c.parent, e.SpiffeId, e.ParentId)
		}
	}
	id := h.createEntry(&types.Entry{ParentId: protoID(agent.ID.Path()), SpiffeId: protoID("/control"), Selectors: []*types.Selector{sel("unix", "uid:4")}})
	svid, err := h.workloadSVID(agent, id)
	if err != nil {
		t.Fatalf("workload SVID for the control entry: %v", err)
	}
	if svid.ID != spiffeID("/control") {
		t.Errorf("workload SVID ID = %s, want %s", svid.ID, spiffeID("/control"))
	}
	for _, path := range []string{"/host", "/Host/UP", "/spirex"} {
		if _, err := agentv1.NewAgentClient(h.admin).CreateJoinToken(ctxT(t), &agentv1.CreateJoinTokenRequest{Ttl: 60, AgentId: protoID(path)}); err != nil {
			t.Errorf("CreateJoinToken with alias %s = %v, want success", path, err)
		}
	}
}

func listAllEntries(t *testing.T, h *harness) []*types.Entry {
	t.Helper()
	var out []*types.Entry
	token := ""
	for {
		resp := must(entryv1.NewEntryClient(h.admin).ListEntries(ctxT(t), &entryv1.ListEntriesRequest{PageToken: token}))(t)
		out = append(out, resp.Entries...)
		if token = resp.NextPageToken; token == "" {
			return out
		}
	}
}
