package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestUpTwoTrustDomains runs `arbor up` on examples/federation's two files
// (example.org: root, regional, leaf; partner.example: root, leaf), copied
// with free ports: the roots federate over each other's https_spiffe bundle
// endpoint after arbor up's one bundle exchange, the federated bundles flow
// down to the leaves, and each leaf's demo workload keeps mTLS to the other
// trust domain's demo and validates its JWT-SVID. The status block shows
// each federated bundle's age; --stop/--start take TD/NAME (a bare name both
// files declare is refused); Ctrl-C stops everything. Again with partner's
// federation block fetched by its leaf (fetched_by), which then holds the
// relationship, gets the bundle exchange and shows the age.
func TestUpTwoTrustDomains(t *testing.T) {
	requireSetup(t)
	t.Run("roots fetch", func(t *testing.T) { testUpTwoTrustDomains(t, "") })
	t.Run("partner's leaf fetches", func(t *testing.T) { testUpTwoTrustDomains(t, "leaf") })
}

// testUpTwoTrustDomains runs the two files; fetchedBy, when set, is the
// partner.example server its federation block names as fetched_by.
func testUpTwoTrustDomains(t *testing.T, fetchedBy string) {
	dir := shortTempDir(t, "upfed")
	topos := federationExampleCopy(t, dir, func(name, out string) string {
		if name != "partner.hcl" || fetchedBy == "" {
			return out
		}
		block := `federation "example.org" {`
		if !strings.Contains(out, block) {
			t.Fatalf("partner.hcl has no %s", block)
		}
		return strings.Replace(out, block, fmt.Sprintf("%s\n  fetched_by = %q", block, fetchedBy), 1)
	})

	partnerFetcher := "partner.example/root"
	if fetchedBy != "" {
		partnerFetcher = "partner.example/" + fetchedBy
	}
	start := time.Now()
	up := runUpFiles(t, topos)
	want := []string{
		"demo spiffe://example.org/demo/leaf: mTLS ok, JWT ok (peer spiffe://partner.example/demo/leaf)",
		"demo spiffe://partner.example/demo/leaf: mTLS ok, JWT ok (peer spiffe://example.org/demo/leaf)",
		"all 2 demo workloads hold SVIDs, talk mTLS across leaves and trust domains and validate JWT-SVIDs",
	}
	age := []*regexp.Regexp{
		regexp.MustCompile(`example\.org/root +federated partner\.example: 1 X\.509, [1-9] JWT, bundle age \d+s, refreshes [1-9]\d* ok`),
		regexp.MustCompile(regexp.QuoteMeta(partnerFetcher) + ` +federated example\.org: 1 X\.509, [1-9] JWT, bundle age \d+s, refreshes [1-9]\d* ok`),
	}
	poll(t, 3*time.Minute, "both demo workloads ok across the trust domains and each root showing its federated bundle's age", func() error {
		if up.done() {
			t.Fatalf("arbor up exited early (%v):\n%s", up.err, up.out.String())
		}
		s := up.out.String()
		for _, w := range want {
			if !strings.Contains(s, w) {
				return fmt.Errorf("no %q yet; output so far:\n%s", w, tailString(s, 14))
			}
		}
		for _, re := range age {
			if !re.MatchString(s) {
				return fmt.Errorf("no status line matching %q yet:\n%s", re, tailString(s, 14))
			}
		}
		return nil
	})
	t.Logf("arbor up examples/federation/*.hcl: %v until both demos reported mTLS and JWT ok across the trust domains and both fetching servers a fetched bundle", time.Since(start).Round(100*time.Millisecond))
	for _, line := range []string{
		"example.org/root: holds the bundle of partner.example",
		partnerFetcher + ": holds the bundle of example.org",
		"example.org/root: fetched the bundle of partner.example",
		partnerFetcher + ": fetched the bundle of example.org",
		"topology of example.org (" + topos[0] + "):",
		"topology of partner.example (" + topos[1] + "):",
	} {
		if !strings.Contains(up.out.String(), line) {
			t.Errorf("arbor up printed no %q", line)
		}
	}
	if fetchedBy != "" {
		if strings.Contains(up.out.String(), "partner.example/root federated") {
			t.Errorf("partner.example's root shows a federation its leaf fetches")
		}
		stopUp(t, up)
		return
	}

	control := func(action, name string) (string, error) {
		b, err := exec.Command(arborBin, append([]string{"up", "--" + action, name}, topos...)...).CombinedOutput()
		return string(b), err
	}
	if out, err := control("stop", "leaf"); err == nil || !strings.Contains(out, "say which with example.org/leaf or partner.example/leaf") {
		t.Errorf("arbor up --stop leaf (in both files) = %v, %q; want a refusal naming both", err, out)
	}
	if out, err := control("stop", "partner.example/leaf"); err != nil {
		t.Fatalf("arbor up --stop partner.example/leaf: %v\n%s", err, out)
	}
	mark := len(up.out.String())
	poll(t, time.Minute, "partner.example's leaf down, example.org's leaf still up", func() error {
		s := up.out.String()[mark:]
		if !strings.Contains(s, "partner.example/leaf DOWN") || !strings.Contains(s, "example.org/leaf     agents") {
			return fmt.Errorf("not yet:\n%s", tailString(s, 10))
		}
		return nil
	})
	// A single file's control socket, with the name as that file has it.
	if b, err := exec.Command(arborBin, "up", "--start", "leaf", topos[1]).CombinedOutput(); err != nil {
		t.Fatalf("arbor up --start leaf partner.hcl: %v\n%s", err, b)
	}
	mark = len(up.out.String())
	poll(t, time.Minute, "partner.example's leaf back", func() error {
		s := up.out.String()[mark:]
		if strings.Contains(s, "partner.example/leaf DOWN") || !strings.Contains(s, "partner.example/leaf agents") {
			return fmt.Errorf("not yet:\n%s", tailString(s, 10))
		}
		return nil
	})

	stopUp(t, up)
	for _, sock := range []string{"example-org/root", "example-org/regional", "example-org/leaf", "partner/root", "partner/leaf"} {
		if _, err := os.Stat(filepath.Join(dir, ".arbor", sock, "admin.sock")); err == nil {
			t.Errorf("%s's admin socket is still there after arbor up stopped", sock)
		}
	}
}
