package e2e

import (
	"bytes"
	"crypto/x509"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/testing/protocmp"
)

// TestSpireServerCLI drives arbor's admin socket with the real spire-server
// CLI of every SPIRE release in spirePeers: every command below works
// unchanged against arbor. Where a command has a JSON output (-output json)
// the test decodes it into the spire-api-sdk message the CLI printed;
// otherwise it checks the pretty text.
func TestSpireServerCLI(t *testing.T) {
	requireSetup(t)
	t.Parallel()
	forEachSpire(t, testSpireServerCLI)
}

func testSpireServerCLI(t *testing.T, p *spirePeer) {
	a := newArbor(t, `datastore "sqlite" {}`)
	a.spire = p
	a.start(t)
	hostID := mustID(t, "/host")
	uid := strconv.Itoa(os.Getuid())

	t.Run("healthcheck", func(t *testing.T) {
		if out := a.cli(t, "healthcheck"); out != "Server is healthy.\n" {
			t.Errorf("healthcheck printed %q, want %q", out, "Server is healthy.\n")
		}
		if out := a.cli(t, "healthcheck", "-shallow"); out != "Server is healthy.\n" {
			t.Errorf("healthcheck -shallow printed %q, want %q", out, "Server is healthy.\n")
		}
	})

	t.Run("bundle", func(t *testing.T) {
		certs, _ := a.bundlePEM(t)
		for _, c := range certs {
			if !c.IsCA || len(c.URIs) != 1 || c.URIs[0].String() != td.IDString() {
				t.Errorf("bundle show: authority %s has IsCA=%v URIs=%v, want a CA with URI %s", c.Subject, c.IsCA, c.URIs, td.IDString())
			}
		}
		out := a.cli(t, "bundle", "show", "-format", "spiffe")
		b, err := spiffebundle.Parse(td, []byte(out))
		if err != nil {
			t.Fatalf("bundle show -format spiffe: spiffebundle.Parse = %v\n%s", err, out)
		}
		if !equalCerts(b.X509Authorities(), certs) {
			t.Errorf("bundle show -format spiffe has %d X.509 authorities that differ from the %d of bundle show", len(b.X509Authorities()), len(certs))
		}
		if len(b.JWTAuthorities()) == 0 {
			t.Error("bundle show -format spiffe has no JWT authorities")
		}
		if seq, ok := b.SequenceNumber(); !ok || seq == 0 {
			t.Errorf("bundle show -format spiffe: spiffe_sequence = %d (set %v), want > 0", seq, ok)
		}

		var api types.Bundle
		a.cliJSON(t, &api, "bundle", "show")
		if api.GetTrustDomain() != td.Name() || len(api.GetX509Authorities()) != len(certs) || len(api.GetJwtAuthorities()) != len(b.JWTAuthorities()) {
			t.Errorf("bundle show -output json = %v, want trust domain %s with %d X.509 and %d JWT authorities",
				&api, td.Name(), len(certs), len(b.JWTAuthorities()))
		}

		var count bundlev1.CountBundlesResponse
		a.cliJSON(t, &count, "bundle", "count")
		if count.GetCount() != 1 {
			t.Errorf("bundle count = %d, want 1 (the own trust domain's)", count.GetCount())
		}
		if out := a.cli(t, "bundle", "count"); out != "1 bundle\n" {
			t.Errorf("bundle count printed %q, want %q", out, "1 bundle\n")
		}
	})

	t.Run("token generate", func(t *testing.T) {
		var tok types.JoinToken
		before := time.Now()
		a.cliJSON(t, &tok, "token", "generate", "-ttl", "120")
		if tok.GetValue() == "" {
			t.Fatalf("token generate -output json = %v, want a token value", &tok)
		}
		exp := time.Unix(tok.GetExpiresAt(), 0)
		if exp.Before(before.Add(110*time.Second)) || exp.After(time.Now().Add(130*time.Second)) {
			t.Errorf("token generate -ttl 120: expires_at %v, want about %v", exp, before.Add(120*time.Second))
		}
	})

	// The agent the agent commands below act on; its join token's node alias
	// is the first entry.
	token := a.generateToken(t, hostID)
	startAgent(t, a, token)
	agentID := mustID(t, "/spire/agent/join_token/"+token)

	var entryID string
	workloadID := mustID(t, "/cli/workload")
	t.Run("entry create", func(t *testing.T) {
		var resp entryv1.BatchCreateEntryResponse
		a.cliJSON(t, &resp, "entry", "create", "-parentID", hostID.String(), "-spiffeID", workloadID.String(),
			"-selector", "unix:uid:"+uid, "-selector", "unix:gid:0", "-x509SVIDTTL", "300", "-dns", "w.example.org")
		if len(resp.Results) != 1 || resp.Results[0].GetStatus().GetCode() != 0 {
			t.Fatalf("entry create = %v, want one OK result", &resp)
		}
		e := resp.Results[0].GetEntry()
		entryID = e.GetId()
		want := &types.Entry{
			Id:          entryID,
			SpiffeId:    &types.SPIFFEID{TrustDomain: td.Name(), Path: workloadID.Path()},
			ParentId:    &types.SPIFFEID{TrustDomain: td.Name(), Path: hostID.Path()},
			Selectors:   []*types.Selector{{Type: "unix", Value: "gid:0"}, {Type: "unix", Value: "uid:" + uid}},
			X509SvidTtl: 300,
			DnsNames:    []string{"w.example.org"},
		}
		if diff := cmp.Diff(want, e, entryCmpOpts()...); entryID == "" || diff != "" {
			t.Errorf("entry create returned entry (-want +got):\n%s", diff)
		}
		// A duplicate is refused with AlreadyExists, as SPIRE does.
		r := a.cliRun(t, "entry", "create", "-parentID", hostID.String(), "-spiffeID", workloadID.String(),
			"-selector", "unix:uid:"+uid, "-selector", "unix:gid:0")
		if r.err == nil || !strings.Contains(r.stderr+r.stdout, "AlreadyExists") {
			t.Errorf("duplicate entry create: err %v, output %q, want a failure mentioning AlreadyExists", r.err, r.stdout+r.stderr)
		}
	})
	if entryID == "" {
		t.Fatal("no entry to continue with")
	}

	t.Run("entry show", func(t *testing.T) {
		var bySPIFFEID, byEntryID entryv1.ListEntriesResponse
		a.cliJSON(t, &bySPIFFEID, "entry", "show", "-spiffeID", workloadID.String())
		if len(bySPIFFEID.Entries) != 1 || bySPIFFEID.Entries[0].GetId() != entryID {
			t.Errorf("entry show -spiffeID %s = %v, want entry %s only", workloadID, &bySPIFFEID, entryID)
		}
		a.cliJSON(t, &byEntryID, "entry", "show", "-entryID", entryID)
		if diff := cmp.Diff(&bySPIFFEID, &byEntryID, protocmp.Transform()); diff != "" {
			t.Errorf("entry show -entryID differs from -spiffeID (-spiffeID +entryID):\n%s", diff)
		}
		var byParent entryv1.ListEntriesResponse
		a.cliJSON(t, &byParent, "entry", "show", "-parentID", agentID.String())
		if len(byParent.Entries) != 1 || byParent.Entries[0].GetSpiffeId().GetPath() != hostID.Path() {
			t.Errorf("entry show -parentID %s = %v, want the node alias %s", agentID, &byParent, hostID)
		}
		var bySelector entryv1.ListEntriesResponse
		a.cliJSON(t, &bySelector, "entry", "show", "-selector", "unix:uid:"+uid)
		if len(bySelector.Entries) != 1 || bySelector.Entries[0].GetId() != entryID {
			t.Errorf("entry show -selector unix:uid:%s = %v, want entry %s", uid, &bySelector, entryID)
		}
		// The label column's width differs between releases (17 in
		// v1.13, 24 in v1.15): compare "label: value" pairs.
		pretty := a.cli(t, "entry", "show", "-entryID", entryID)
		lines := prettyLines(pretty)
		for _, want := range []string{"Found 1 entry", "Entry ID: " + entryID, "SPIFFE ID: " + workloadID.String(),
			"Parent ID: " + hostID.String(), "X509-SVID TTL: 300", "Selector: unix:uid:" + uid, "DNS name: w.example.org"} {
			if !slices.Contains(lines, want) {
				t.Errorf("entry show -entryID printed\n%s\nwant a line %q", pretty, want)
			}
		}
	})

	t.Run("entry count", func(t *testing.T) {
		var count entryv1.CountEntriesResponse
		a.cliJSON(t, &count, "entry", "count")
		if count.GetCount() != 2 {
			t.Errorf("entry count = %d, want 2 (node alias and workload)", count.GetCount())
		}
		if out := a.cli(t, "entry", "count"); out != "2 registration entries\n" {
			t.Errorf("entry count printed %q, want %q", out, "2 registration entries\n")
		}
	})

	t.Run("entry update", func(t *testing.T) {
		var before entryv1.ListEntriesResponse
		a.cliJSON(t, &before, "entry", "show", "-entryID", entryID)
		var resp entryv1.BatchUpdateEntryResponse
		a.cliJSON(t, &resp, "entry", "update", "-entryID", entryID, "-parentID", hostID.String(),
			"-spiffeID", workloadID.String(), "-selector", "unix:uid:4242", "-x509SVIDTTL", "600", "-jwtSVIDTTL", "120")
		if len(resp.Results) != 1 || resp.Results[0].GetStatus().GetCode() != 0 {
			t.Fatalf("entry update = %v, want one OK result", &resp)
		}
		var after entryv1.ListEntriesResponse
		a.cliJSON(t, &after, "entry", "show", "-entryID", entryID)
		if len(before.Entries) != 1 || len(after.Entries) != 1 {
			t.Fatalf("entry show -entryID %s: before %v, after %v", entryID, &before, &after)
		}
		got := after.Entries[0]
		want := &types.Entry{
			Id:          entryID,
			SpiffeId:    &types.SPIFFEID{TrustDomain: td.Name(), Path: workloadID.Path()},
			ParentId:    &types.SPIFFEID{TrustDomain: td.Name(), Path: hostID.Path()},
			Selectors:   []*types.Selector{{Type: "unix", Value: "uid:4242"}},
			X509SvidTtl: 600,
			JwtSvidTtl:  120,
		}
		if diff := cmp.Diff(want, got, entryCmpOpts()...); diff != "" {
			t.Errorf("entry after update (-want +got):\n%s", diff)
		}
		if got.GetRevisionNumber() <= before.Entries[0].GetRevisionNumber() {
			t.Errorf("revision after update = %d, want more than %d", got.GetRevisionNumber(), before.Entries[0].GetRevisionNumber())
		}
	})

	t.Run("agent list, show, count", func(t *testing.T) {
		var list agentv1.ListAgentsResponse
		a.cliJSON(t, &list, "agent", "list")
		if len(list.Agents) != 1 {
			t.Fatalf("agent list = %v, want one agent", &list)
		}
		got := list.Agents[0]
		if got.GetId().GetPath() != agentID.Path() || got.GetAttestationType() != "join_token" || got.GetX509SvidSerialNumber() == "" || got.GetBanned() {
			t.Errorf("agent list: %v, want agent %s attested by join_token, with a serial, not banned", got, agentID)
		}
		var show types.Agent
		a.cliJSON(t, &show, "agent", "show", "-spiffeID", agentID.String())
		if diff := cmp.Diff(got, &show, protocmp.Transform()); diff != "" {
			t.Errorf("agent show differs from agent list (-list +show):\n%s", diff)
		}
		pretty := a.cli(t, "agent", "show", "-spiffeID", agentID.String())
		lines := prettyLines(pretty)
		for _, want := range []string{"Found an attested agent given its SPIFFE ID", "SPIFFE ID: " + agentID.String(), "Attestation type: join_token"} {
			if !slices.Contains(lines, want) {
				t.Errorf("agent show printed\n%s\nwant a line %q", pretty, want)
			}
		}
		var count agentv1.CountAgentsResponse
		a.cliJSON(t, &count, "agent", "count")
		if count.GetCount() != 1 {
			t.Errorf("agent count = %d, want 1", count.GetCount())
		}
		var filtered agentv1.ListAgentsResponse
		a.cliJSON(t, &filtered, "agent", "list", "-attestationType", "x509pop")
		if len(filtered.Agents) != 0 {
			t.Errorf("agent list -attestationType x509pop = %v, want none", &filtered)
		}
	})

	t.Run("entry delete", func(t *testing.T) {
		out := a.cli(t, "entry", "delete", "-entryID", entryID)
		if !strings.Contains(out, "Deleted entry with ID: "+entryID) {
			t.Errorf("entry delete printed %q, want it to name %s", out, entryID)
		}
		r := a.cliRun(t, "entry", "show", "-entryID", entryID)
		if r.err == nil || !strings.Contains(r.stderr, "NotFound") {
			t.Errorf("entry show of a deleted entry: err %v, stderr %q, want a NotFound failure", r.err, r.stderr)
		}
		var count entryv1.CountEntriesResponse
		a.cliJSON(t, &count, "entry", "count")
		if count.GetCount() != 1 {
			t.Errorf("entry count after delete = %d, want 1", count.GetCount())
		}
	})

	t.Run("agent ban", func(t *testing.T) {
		if out := a.cli(t, "agent", "ban", "-spiffeID", agentID.String()); out != "Agent banned successfully\n" {
			t.Errorf("agent ban printed %q, want %q", out, "Agent banned successfully\n")
		}
		var banned agentv1.ListAgentsResponse
		a.cliJSON(t, &banned, "agent", "list", "-banned", "true")
		if len(banned.Agents) != 1 || !banned.Agents[0].GetBanned() || banned.Agents[0].GetId().GetPath() != agentID.Path() {
			t.Errorf("agent list -banned true = %v, want agent %s, banned", &banned, agentID)
		}
		var notBanned agentv1.ListAgentsResponse
		a.cliJSON(t, &notBanned, "agent", "list", "-banned", "false")
		if len(notBanned.Agents) != 0 {
			t.Errorf("agent list -banned false = %v, want none", &notBanned)
		}
	})

	t.Run("agent evict", func(t *testing.T) {
		if out := a.cli(t, "agent", "evict", "-spiffeID", agentID.String()); out != "Agent evicted successfully\n" {
			t.Errorf("agent evict printed %q, want %q", out, "Agent evicted successfully\n")
		}
		var list agentv1.ListAgentsResponse
		a.cliJSON(t, &list, "agent", "list")
		if len(list.Agents) != 0 {
			t.Errorf("agent list after evict = %v, want none", &list)
		}
		if out := a.cli(t, "agent", "list"); out != "No attested agents found\n" {
			t.Errorf("agent list after evict printed %q, want %q", out, "No attested agents found\n")
		}
		var count agentv1.CountAgentsResponse
		a.cliJSON(t, &count, "agent", "count")
		if count.GetCount() != 0 {
			t.Errorf("agent count after evict = %d, want 0", count.GetCount())
		}
		r := a.cliRun(t, "agent", "show", "-spiffeID", agentID.String())
		if r.err == nil || !strings.Contains(r.stderr, "NotFound") {
			t.Errorf("agent show of an evicted agent: err %v, stderr %q, want a NotFound failure", r.err, r.stderr)
		}
	})
}

// prettyLines returns the non-empty lines of the CLI's pretty output with
// "Label     : value" written as "Label: value".
func prettyLines(out string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		if label, value, ok := strings.Cut(l, " : "); ok {
			l = strings.TrimSpace(label) + ": " + strings.TrimSpace(value)
		}
		lines = append(lines, l)
	}
	return lines
}

// entryCmpOpts compares entries on what the CLI sets, ignoring server-made
// fields.
func entryCmpOpts() []cmp.Option {
	return []cmp.Option{
		protocmp.Transform(),
		protocmp.IgnoreFields(&types.Entry{}, "created_at", "revision_number"),
		protocmp.SortRepeated(func(a, b *types.Selector) bool {
			return a.GetType()+":"+a.GetValue() < b.GetType()+":"+b.GetValue()
		}),
	}
}

func equalCerts(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i].Raw, b[i].Raw) {
			return false
		}
	}
	return true
}
