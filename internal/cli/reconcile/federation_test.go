package reconcile

import (
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/arborid/arbor/internal/cli/admin"
	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/internal/testkit"
	"github.com/arborid/arbor/topology"
)

var partnerTD = spiffeid.RequireTrustDomainFromString("partner.test")

// fedTopo is a root and a regional whose admin sockets are the test's
// servers; %[5]s is the federation block(s), %[6]s more of the root's body.
const fedTopo = `trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:0"
  health_listen = "off"
  state_dir     = %[1]q
  admin_socket  = %[2]q
  ca_ttl        = "48h"
  %[6]s
}
server "regional" {
  parent        = "root"
  listen        = "127.0.0.1:0"
  health_listen = "off"
  state_dir     = %[3]q
  admin_socket  = %[4]q
  ca_ttl        = "24h"
}
%[5]s
`

// fedTree is what the federation tests run against: a partner trust
// domain serving its bundle endpoint (https_spiffe), and two servers of
// example.org standing for the root and the regional of fedTopo. apply only
// speaks to admin sockets, so they need not be nested.
type fedTree struct {
	t                 *testing.T
	dir               string
	partner           *testkit.Server
	endpoint          string // https://127.0.0.1:PORT of the partner
	bootstrap         string // the partner's X.509 authorities as PEM
	root, regional    *testkit.Server
	rootAdm, regAdm   *admin.Client
	rootSock, regSock string
}

func startFedTree(t *testing.T) *fedTree {
	t.Helper()
	dir := testkit.ShortDir(t)
	tr := &fedTree{t: t, dir: dir, rootSock: filepath.Join(dir, "root.sock"), regSock: filepath.Join(dir, "reg.sock")}
	tr.partner = testkit.StartServer(t, server.Config{Name: "partner", TrustDomain: partnerTD, ListenAddr: "127.0.0.1:0",
		AdminSocket: filepath.Join(dir, "partner.sock"), StateDir: filepath.Join(dir, "partner"),
		BundleEndpoint: &server.BundleEndpointConfig{ListenAddr: "127.0.0.1:0", RefreshHint: time.Second}})
	tr.endpoint = "https://" + tr.partner.BundleEndpointAddr().String()
	pb, err := bundlev1.NewBundleClient(tr.partner.Admin).GetBundle(testkit.Context(t, 30*time.Second), &bundlev1.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var pemData []byte
	for _, a := range pb.X509Authorities {
		pemData = append(pemData, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.Asn1})...)
	}
	tr.bootstrap = filepath.Join(dir, "partner.pem")
	if err := os.WriteFile(tr.bootstrap, pemData, 0o600); err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString("example.org")
	tr.root = testkit.StartServer(t, server.Config{Name: "root", TrustDomain: td, ListenAddr: "127.0.0.1:0",
		AdminSocket: tr.rootSock, StateDir: filepath.Join(dir, "root"), JoinToken: true, FederationRefreshFloor: 200 * time.Millisecond})
	tr.regional = testkit.StartServer(t, server.Config{Name: "regional", TrustDomain: td, ListenAddr: "127.0.0.1:0",
		AdminSocket: tr.regSock, StateDir: filepath.Join(dir, "regional"), JoinToken: true, FederationRefreshFloor: 200 * time.Millisecond})
	tr.rootAdm = dialAdmin(t, tr.rootSock)
	tr.regAdm = dialAdmin(t, tr.regSock)
	return tr
}

func dialAdmin(t *testing.T, sock string) *admin.Client {
	t.Helper()
	c, err := admin.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// file writes fedTopo with the given federation block (and root body) and
// parses it.
func (tr *fedTree) file(federation, rootBody string) *topology.File {
	tr.t.Helper()
	path := filepath.Join(tr.dir, "t.hcl")
	src := fmt.Sprintf(fedTopo, filepath.Join(tr.dir, "root"), tr.rootSock, filepath.Join(tr.dir, "regional"), tr.regSock, federation, rootBody)
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		tr.t.Fatal(err)
	}
	f, diags := topology.ParseFile(path)
	if diags.HasErrors() {
		tr.t.Fatal(topology.FormatDiagnostics(diags, nil))
	}
	return f
}

// partnerBlock is an https_spiffe federation block with partner.test at
// url, bootstrapped from the partner's PEM, with fetchedBy ("" for none).
func (tr *fedTree) partnerBlock(url, fetchedBy string) string {
	b := fmt.Sprintf("federation %q {\n  bundle_endpoint = %q\n  profile = \"https_spiffe\"\n  endpoint_spiffe_id = \"spiffe://partner.test/spire/server\"\n  bootstrap_bundle = %q\n",
		partnerTD.Name(), url, tr.bootstrap)
	if fetchedBy != "" {
		b += fmt.Sprintf("  fetched_by = %q\n", fetchedBy)
	}
	return b + "}\n"
}

// relationships is what c holds, as "TD URL" lines.
func relationships(t *testing.T, c *admin.Client) []string {
	t.Helper()
	rs, err := c.Relationships(testkit.Context(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		out = append(out, r.TrustDomain+" "+r.BundleEndpointUrl)
	}
	return out
}

func runApply(t *testing.T, f *topology.File, dry bool) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := Run(testkit.Context(t, 60*time.Second), f, Options{DryRun: dry, UID: 4242, Out: &out})
	return out.String(), err
}

func wantOutput(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}

// TestApplyFederations: apply gives the fetching server (fetched_by) the
// federation block as a relationship, which the running server fetches at
// once; a second apply changes nothing; a changed bundle_endpoint is an
// update; a relationship the file moves elsewhere is reported on the
// server that holds it and left there.
func TestApplyFederations(t *testing.T) {
	tr := startFedTree(t)
	apply := func(f *topology.File, dry bool) string {
		t.Helper()
		out, err := runApply(t, f, dry)
		if err != nil {
			t.Fatalf("Run: %v\n%s", err, out)
		}
		return out
	}
	f := tr.file(tr.partnerBlock(tr.endpoint, "regional"), "")
	create := fmt.Sprintf("+ regional: create federation partner.test -> %s https_spiffe spiffe://partner.test/spire/server (federation \"partner.test\")", tr.endpoint)
	wantOutput(t, apply(f, true), create, "would apply 2 change(s)")
	if got := relationships(t, tr.regAdm); len(got) != 0 {
		t.Fatalf("after a dry run the regional holds %v, want nothing", got)
	}

	wantOutput(t, apply(f, false), create, "applied 2 change(s)")
	if got, want := relationships(t, tr.regAdm), []string{"partner.test " + tr.endpoint}; strings.Join(got, ";") != strings.Join(want, ";") {
		t.Errorf("regional relationships = %v, want %v", got, want)
	}
	if got := relationships(t, tr.rootAdm); len(got) != 0 {
		t.Errorf("root relationships = %v, want none (the regional fetches)", got)
	}
	// The running regional fetches with no restart: JWT keys come only
	// from the endpoint (the bootstrap PEM has none).
	testkit.Poll(t, 20*time.Second, "the regional fetching the partner's bundle after apply", func() error {
		b, err := tr.regAdm.FederatedBundle(testkit.Context(t, 10*time.Second), partnerTD)
		switch {
		case err != nil:
			return err
		case b == nil || len(b.JwtAuthorities) == 0:
			return errors.New("no bundle fetched from the endpoint yet")
		}
		return nil
	})

	wantOutput(t, apply(f, false), "= regional: unchanged federation partner.test", "applied 0 change(s)")

	// Another URL for the same endpoint: an update, in use without a restart.
	moved := strings.Replace(tr.endpoint, "127.0.0.1", "localhost", 1)
	f = tr.file(tr.partnerBlock(moved, "regional"), "")
	wantOutput(t, apply(f, true), fmt.Sprintf("~ regional: update federation partner.test: bundle_endpoint %s -> %s (federation \"partner.test\")", tr.endpoint, moved),
		"would apply 1 change(s)")
	wantOutput(t, apply(f, false), "~ regional: update federation partner.test", "applied 1 change(s)")
	if got := relationships(t, tr.regAdm); len(got) != 1 || got[0] != "partner.test "+moved {
		t.Errorf("after the update the regional holds %v, want partner.test %s", got, moved)
	}
	if err := tr.regAdm.RefreshBundle(testkit.Context(t, 30*time.Second), partnerTD); err != nil {
		t.Errorf("refreshing through the updated URL: %v", err)
	}
	wantOutput(t, apply(f, false), "= regional: unchanged federation partner.test", "applied 0 change(s)")

	// The root fetches now: created there, reported (not deleted) on the regional.
	f = tr.file(tr.partnerBlock(moved, ""), "")
	out := apply(f, false)
	wantOutput(t, out, "+ root: create federation partner.test -> "+moved,
		"? regional: not in file: federation partner.test (the file has root fetch it); left as is: apply never deletes (arbor federation delete --trust-domain partner.test --socket-path "+tr.regSock+")",
		"applied 1 change(s)")
	if got := relationships(t, tr.regAdm); len(got) != 1 {
		t.Errorf("the regional holds %v after apply, want its relationship left as is", got)
	}
	wantOutput(t, apply(f, false), "= root: unchanged federation partner.test", "? regional: not in file", "applied 0 change(s)")
}

// TestApplyRefusesBadFederation: a relationship the server could not hold
// is one clear error naming the server and the trust domain, and changes
// nothing: one lacking a field is refused before any call (a File built in
// code may hold what topology.Parse refuses), one the server refuses is not
// created and its bootstrap bundle not stored.
func TestApplyRefusesBadFederation(t *testing.T) {
	tr := startFedTree(t)
	const entry = `entry "web" {
    spiffe_id = "spiffe://example.org/web"
    parent_id = "spiffe://example.org/node/a"
    selectors = ["unix:uid:1000"]
  }`
	f := tr.file(tr.partnerBlock(tr.endpoint, ""), entry)
	f.Federations[0].EndpointSPIFFEID = spiffeid.ID{}
	out, err := runApply(t, f, false)
	if err == nil {
		t.Fatalf("Run with an https_spiffe federation without endpoint_spiffe_id succeeded:\n%s", out)
	}
	wantOutput(t, out, `! root: reconcile: federation "partner.test": the https_spiffe profile needs endpoint_spiffe_id`, "applied 0 change(s)")
	entries, err := tr.rootAdm.ListEntries(testkit.Context(t, 30*time.Second), admin.EntryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if got := relationships(t, tr.rootAdm); len(got) != 0 || len(entries) != 0 {
		t.Errorf("after the refusal the root holds relationships %v and %d entries, want nothing", got, len(entries))
	}

	f = tr.file(tr.partnerBlock(tr.endpoint, ""), "")
	f.Federations[0].BundleEndpoint = strings.Replace(tr.endpoint, "https://", "https://user:pw@", 1)
	out, err = runApply(t, f, false)
	if err == nil {
		t.Fatalf("Run with credentials in the bundle endpoint URL succeeded:\n%s", out)
	}
	wantOutput(t, out, "! root: root: creating federation partner.test: federation create: failed to convert federation relationship: bundle_endpoint_url:",
		"is not an https:// URL without credentials (InvalidArgument)",
		"applied 1 change(s)") // the downstream entry of the regional; the refused relationship is not counted
	if got := relationships(t, tr.rootAdm); len(got) != 0 {
		t.Errorf("after the server refused it the root holds %v, want no relationship", got)
	}
	b, err := tr.rootAdm.FederatedBundle(testkit.Context(t, 30*time.Second), partnerTD)
	if err != nil || b != nil {
		t.Errorf("after the server refused the relationship the root holds bundle %v (%v), want none (the bootstrap bundle not stored)", b, err)
	}
}

// TestDesiredFederationsFollowFetchedBy: a federation block is desired on
// the server that fetches it and nowhere else, with every attribute.
func TestDesiredFederationsFollowFetchedBy(t *testing.T) {
	dir := t.TempDir()
	src := fmt.Sprintf(fedTopo, filepath.Join(dir, "root"), filepath.Join(dir, "r.sock"), filepath.Join(dir, "regional"), filepath.Join(dir, "g.sock"),
		`federation "partner.test" {
  bundle_endpoint    = "https://partner.test:8443"
  profile            = "https_spiffe"
  endpoint_spiffe_id = "spiffe://partner.test/spire/server"
  bootstrap_bundle   = "p.pem"
  fetched_by         = "regional"
}
federation "web.test" {
  bundle_endpoint = "https://web.test/bundle"
}`, "")
	f, diags := topology.Parse([]byte(src), filepath.Join(dir, "t.hcl"))
	if diags.HasErrors() {
		t.Fatal(topology.FormatDiagnostics(diags, nil))
	}
	desc := func(ds []DesiredFederation) string {
		var out []string
		for _, d := range ds {
			out = append(out, fmt.Sprintf("%s %s %s %s", d.TrustDomain, d.Relationship.BundleEndpointUrl, profileString(d.Relationship), filepath.Base(d.BootstrapBundle)))
		}
		return strings.Join(out, "; ")
	}
	for _, tt := range []struct{ server, want string }{
		{"root", "web.test https://web.test/bundle https_web ."},
		{"regional", "partner.test https://partner.test:8443 https_spiffe spiffe://partner.test/spire/server p.pem"},
	} {
		s, err := f.Server(tt.server)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DesiredFederations(f, s)
		if err != nil {
			t.Fatal(err)
		}
		if desc(got) != tt.want {
			t.Errorf("DesiredFederations(%s) = %q, want %q", tt.server, desc(got), tt.want)
		}
		for _, d := range got {
			if d.Relationship.TrustDomainBundle != nil {
				t.Errorf("DesiredFederations(%s) carries a bundle for %s; it is read only when the server holds none", tt.server, d.TrustDomain)
			}
		}
	}
	f.Federations[1].Profile = "http"
	if _, err := DesiredFederations(f, f.Servers[0]); err == nil || !strings.Contains(err.Error(), `profile "http"`) {
		t.Errorf("DesiredFederations with profile http = %v, want a refusal naming it", err)
	}
}

// TestApplyStoresTheBootstrapBundleOnlyWhenNoneIsHeld: bootstrap_bundle is
// sent while the fetching server holds no bundle of the trust domain (an
// update of a relationship that has none), and never again once one is held.
func TestApplyStoresTheBootstrapBundleOnlyWhenNoneIsHeld(t *testing.T) {
	tr := startFedTree(t)
	web := spiffeid.RequireTrustDomainFromString("web.test")
	const url = "https://127.0.0.1:1/bundle"
	if err := tr.rootAdm.CreateRelationship(testkit.Context(t, 30*time.Second), &types.FederationRelationship{TrustDomain: web.Name(), BundleEndpointUrl: url,
		BundleEndpointProfile: &types.FederationRelationship_HttpsWeb{HttpsWeb: &types.HTTPSWebProfile{}}}); err != nil {
		t.Fatal(err)
	}
	f := tr.file(fmt.Sprintf("federation %q {\n  bundle_endpoint = %q\n  bootstrap_bundle = %q\n}\n", web.Name(), url, tr.bootstrap), "")
	out, err := runApply(t, f, false)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out)
	}
	wantOutput(t, out, fmt.Sprintf("~ root: update federation web.test: bootstrap bundle %s (no bundle held)", tr.bootstrap))
	b, err := tr.rootAdm.FederatedBundle(testkit.Context(t, 30*time.Second), web)
	if err != nil || b == nil || len(b.X509Authorities) == 0 {
		t.Fatalf("after apply the root holds bundle %v (%v), want the bootstrap bundle", b, err)
	}
	out, err = runApply(t, f, false)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out)
	}
	wantOutput(t, out, "= root: unchanged federation web.test", "applied 0 change(s)")
}
