package server_test

import (
	"bytes"
	"crypto/x509"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/arborid/arbor/downstream"
	"github.com/arborid/arbor/internal/server"
)

// startServerOn is startServer with a given clock, so that several tiers
// can share one.
func startServerOn(t *testing.T, c *clock, opts ...option) *harness {
	t.Helper()
	dir := shortDir(t)
	cfg := server.Config{
		Name:        "test",
		TrustDomain: td,
		ListenAddr:  "127.0.0.1:0",
		AdminSocket: filepath.Join(dir, "admin.sock"),
		StateDir:    filepath.Join(dir, "state"),
		JoinToken:   true,
		Now:         c.Now,
	}
	for _, o := range opts {
		o(&cfg)
	}
	h := &harness{t: t, cfg: cfg, clock: c}
	h.start()
	return h
}

// startChildOn starts a downstream server under parent on parent's clock,
// the way startChild does, with a bundle sync every `sync`.
func startChildOn(t *testing.T, parent *harness, name string, sync time.Duration, opts ...option) *harness {
	t.Helper()
	up := parentLink(t, parent, name)
	all := append([]option{func(c *server.Config) {
		c.Name, c.Parent, c.ParentBundleSyncInterval = name, up, sync
	}}, opts...)
	return startServerOn(t, parent.clock, all...)
}

// parentLink is a downstream tier's link to parent: an agent attested to
// parent, a downstream entry for spiffe://td/tier/NAME under it, and that
// entry's SVID as the link's client certificate.
func parentLink(t *testing.T, parent *harness, name string) *downstream.Upstream {
	t.Helper()
	agent := parent.newAgent()
	entryID := parent.createEntry(&types.Entry{ParentId: protoID(agent.ID.Path()), SpiffeId: protoID("/tier/" + name),
		Selectors: []*types.Selector{sel("unix", "uid:0")}, Downstream: true})
	svid := must(parent.workloadSVID(agent, entryID))(t)
	up, err := downstream.New(ctxT(t), downstream.Config{
		TrustDomain: td, ParentAddress: parent.cfg.ListenAddr,
		Source: staticSource{svid: svid, bundle: parent.snapshotBundle()},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	return up
}

// ownBundle is the server's own bundle as its cache holds it (no RPC).
func ownX509(h *harness) [][]byte {
	var out [][]byte
	if b := h.srv.Bundles().Own(); b != nil {
		for _, a := range b.X509Authorities {
			out = append(out, a.Cert)
		}
	}
	return out
}

func ownKIDs(h *harness) []string {
	var out []string
	if b := h.srv.Bundles().Own(); b != nil {
		for _, a := range b.JWTAuthorities {
			out = append(out, a.KeyID)
		}
	}
	return out
}

func hasDER(list [][]byte, der []byte) bool {
	return slices.ContainsFunc(list, func(d []byte) bool { return bytes.Equal(d, der) })
}

func derOf(cs ...*x509.Certificate) [][]byte {
	var out [][]byte
	for _, c := range cs {
		out = append(out, c.Raw)
	}
	return out
}
