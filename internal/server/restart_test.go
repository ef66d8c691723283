package server_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/internal/testkit"
)

// postgresDSN creates a fresh schema for the test and returns a DSN that uses it.
func postgresDSN(t *testing.T) string { return testkit.PostgresDSN(t) }

func TestRestartKeepsState(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			var opts []option
			if backend == "postgres" {
				dsn := postgresDSN(t)
				opts = append(opts, func(c *server.Config) { c.Datastore, c.PostgresDSN = "postgres", dsn })
			}
			h := startServer(t, opts...)
			agent := h.newAgent()
			entryID := h.createEntry(&types.Entry{ParentId: protoID(agent.ID.Path()), SpiffeId: protoID("/db"), Selectors: []*types.Selector{sel("unix", "uid:5")}})
			before := h.snapshot()
			caBefore, _ := h.srv.CA().X509CA()
			pendingToken := h.token(600)
			fed := &types.Bundle{TrustDomain: "partner.org", X509Authorities: []*types.X509Certificate{{Asn1: caBefore.Raw}}}
			must(bundlev1.NewBundleClient(h.admin).BatchSetFederatedBundle(ctxT(t), &bundlev1.BatchSetFederatedBundleRequest{Bundle: []*types.Bundle{fed}}))(t)
			before = h.snapshot()

			h.restart()

			caAfter, _ := h.srv.CA().X509CA()
			if !caAfter.Equal(caBefore) {
				t.Errorf("X.509 CA changed across restart: serial %v -> %v", caBefore.SerialNumber, caAfter.SerialNumber)
			}
			after := h.snapshot()
			if diff := cmp.Diff(before, after, protocmp.Transform()); diff != "" {
				t.Errorf("state changed across restart (-before +after):\n%s", diff)
			}
			// The agent keeps working with the SVID it had: no re-attestation.
			resp, err := entryv1.NewEntryClient(h.dial(agent)).GetAuthorizedEntries(ctxT(t), &entryv1.GetAuthorizedEntriesRequest{})
			if err != nil {
				t.Fatalf("agent sync after restart: %v", err)
			}
			if len(resp.Entries) != 1 || resp.Entries[0].Id != entryID {
				t.Fatalf("authorized entries after restart = %v, want [%s]", resp.Entries, entryID)
			}
			svid, err := h.workloadSVID(agent, entryID)
			if err != nil {
				t.Fatalf("SVID after restart: %v", err)
			}
			if svid.Certificates[len(svid.Certificates)-1].Issuer.String() != caBefore.Subject.String() {
				t.Errorf("SVID after restart issued by %v, want %v", svid.Certificates[0].Issuer, caBefore.Subject)
			}
			// A join token created before the restart still works once.
			if _, err := h.attest(pendingToken); err != nil {
				t.Fatalf("join token from before the restart: %v", err)
			}
			// Restarting again does not grow the bundle.
			h.restart()
			again := h.snapshot()
			if len(again.Bundle.X509Authorities) != len(before.Bundle.X509Authorities) || len(again.Bundle.JwtAuthorities) != len(before.Bundle.JwtAuthorities) {
				t.Errorf("bundle grew across restarts: %d/%d -> %d/%d authorities",
					len(before.Bundle.X509Authorities), len(before.Bundle.JwtAuthorities), len(again.Bundle.X509Authorities), len(again.Bundle.JwtAuthorities))
			}
		})
	}
}
