package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// federationExampleCopy copies examples/federation's two files into dir with free
// ports (a port both files name, the other root's bundle endpoint, gets the
// same one; all 12 of them are remapped) and returns their paths. edit, when
// not nil, changes a file's text (by its name) before it is written.
func federationExampleCopy(t *testing.T, dir string, edit func(name, src string) string) []string {
	t.Helper()
	ports := map[string]string{}
	addr := regexp.MustCompile(`127\.0\.0\.1:(\d+)`)
	var topos []string
	for _, name := range []string{"example-org.hcl", "partner.hcl"} {
		src, err := os.ReadFile(filepath.Join("..", "..", "examples", "federation", name))
		if err != nil {
			t.Fatal(err)
		}
		out := addr.ReplaceAllStringFunc(string(src), func(m string) string {
			old := m[len("127.0.0.1:"):]
			if _, ok := ports[old]; !ok {
				ports[old] = strconv.Itoa(freePort(t))
			}
			return "127.0.0.1:" + ports[old]
		})
		if edit != nil {
			out = edit(name, out)
		}
		topo := filepath.Join(dir, name)
		if err := os.WriteFile(topo, []byte(out), 0o600); err != nil {
			t.Fatal(err)
		}
		topos = append(topos, topo)
	}
	if len(ports) != 12 {
		t.Fatalf("remapped %d ports of examples/federation, want 12 (five servers' listen and health_listen, two bundle endpoints)", len(ports))
	}
	return topos
}

// arborRun runs arbor with args (bounded to a minute) and returns its
// stdout, stderr and exit code.
func arborRun(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, arborBin, args...)
	var o, e syncBuffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("arbor %s still running after a minute", strings.Join(args, " "))
	}
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("arbor %s: %v", strings.Join(args, " "), err)
	}
	return o.String(), e.String(), code
}

// statusJSON is the part of `arbor status --output json` the tests read,
// with the documented field names.
type statusJSON struct {
	File        string `json:"file"`
	TrustDomain string `json:"trust_domain"`
	UpPID       int    `json:"up_pid"`
	Ready       bool   `json:"ready"`
	Tiers       []struct {
		Name                    string     `json:"name"`
		Parent                  string     `json:"parent"`
		State                   string     `json:"state"`
		Serving                 bool       `json:"serving"`
		AdminSocket             string     `json:"admin_socket"`
		Agents                  *int       `json:"agents"`
		CANotAfter              *time.Time `json:"ca_not_after"`
		OutageBudgetSeconds     *int64     `json:"outage_budget_seconds"`
		PlanOutageBudgetSeconds int64      `json:"plan_outage_budget_seconds"`
		ParentReachable         *bool      `json:"parent_reachable"`
		Federations             []struct {
			TrustDomain      string   `json:"trust_domain"`
			BundleHeld       bool     `json:"bundle_held"`
			X509Authorities  int      `json:"x509_authorities"`
			BundleAgeSeconds *float64 `json:"bundle_age_seconds"`
			RefreshesOK      int      `json:"refreshes_ok"`
		} `json:"federations"`
		Demo *struct {
			SPIFFEID string `json:"spiffe_id"`
			MTLS     string `json:"mtls"`
			JWT      string `json:"jwt"`
		} `json:"demo"`
	} `json:"tiers"`
}

func readStatus(t *testing.T, topos ...string) []statusJSON {
	t.Helper()
	st, err := tryStatus(t, topos...)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// tryStatus is readStatus that returns, rather than fails on, arbor status
// finding no arbor up of the files: one just started may not hold its lock
// yet (it parses its files first).
func tryStatus(t *testing.T, topos ...string) ([]statusJSON, error) {
	t.Helper()
	out, errOut, code := arborRun(t, append([]string{"status", "--output", "json"}, topos...)...)
	if code == 1 && strings.Contains(errOut, "no arbor up runs") {
		return nil, fmt.Errorf("arbor status: %s", strings.TrimSpace(errOut))
	}
	if code != 0 {
		t.Fatalf("arbor status --output json exited %d: %s", code, errOut)
	}
	var st []statusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("arbor status --output json printed no JSON array (%v):\n%s", err, out)
	}
	if len(st) != len(topos) {
		t.Fatalf("arbor status of %d files printed %d objects", len(topos), len(st))
	}
	return st, nil
}

// TestStatusOfRunningTree runs `arbor status` on examples/federation's two
// files (copied with free ports): refused in one line before arbor up runs
// them; then every tier of both trust domains serving with its agents (the
// number `arbor agent count` gives), its CA's not-after within its ca_ttl,
// the outage budget left until that not-after and the plan's worst case
// (half of ca_ttl), its parent reachable, each root's federated bundle held
// with an age, the demos' checks; a tier stopped with --stop shown down;
// and refused again once arbor up has stopped.
func TestStatusOfRunningTree(t *testing.T) {
	requireSetup(t)
	dir := shortTempDir(t, "st")
	topos := federationExampleCopy(t, dir, nil)
	org, partner := topos[0], topos[1]

	_, errOut, code := arborRun(t, "status", org)
	lock := filepath.Join(dir, ".arbor", "example-org", "root", "up.lock")
	want := fmt.Sprintf("arbor: no arbor up runs %s (nothing holds %s); start it with: arbor up %s\n", org, lock, org)
	if code != 1 || errOut != want {
		t.Errorf("arbor status before arbor up: exit %d, printed\n%s\nwant exit 1 and the one line\n%s", code, errOut, want)
	}

	up := runUpFiles(t, topos)
	ttl := map[string]time.Duration{
		"example.org/root": 48 * time.Hour, "example.org/regional": 24 * time.Hour, "example.org/leaf": 12 * time.Hour,
		"partner.example/root": 24 * time.Hour, "partner.example/leaf": 12 * time.Hour,
	}
	var st []statusJSON
	poll(t, 3*time.Minute, "arbor status showing both trees ready, demos ok and the federated bundles fetched", func() error {
		if up.done() {
			t.Fatalf("arbor up exited early (%v):\n%s", up.err, up.out.String())
		}
		var err error
		if st, err = tryStatus(t, topos...); err != nil {
			return err
		}
		for _, tree := range st {
			if !tree.Ready {
				return fmt.Errorf("%s not ready", tree.TrustDomain)
			}
			for _, tier := range tree.Tiers {
				if tier.Demo != nil && (tier.Demo.MTLS != "ok" || tier.Demo.JWT != "ok") {
					return fmt.Errorf("demo of %s/%s: mTLS %s, JWT %s", tree.TrustDomain, tier.Name, tier.Demo.MTLS, tier.Demo.JWT)
				}
				for _, fed := range tier.Federations {
					if !fed.BundleHeld || fed.BundleAgeSeconds == nil {
						return fmt.Errorf("%s/%s: the bundle of %s not fetched yet", tree.TrustDomain, tier.Name, fed.TrustDomain)
					}
				}
			}
		}
		return nil
	})
	checked := time.Now()
	demos := 0
	for i, tree := range st {
		if tree.File != topos[i] || tree.UpPID != up.cmd.Process.Pid {
			t.Errorf("status of %s names file %s and arbor up pid %d, want pid %d", topos[i], tree.File, tree.UpPID, up.cmd.Process.Pid)
		}
		if len(tree.Tiers) == 0 {
			t.Errorf("%s: no tiers", tree.TrustDomain)
		}
		for _, tier := range tree.Tiers {
			name := tree.TrustDomain + "/" + tier.Name
			if tier.State != "serving" || !tier.Serving {
				t.Errorf("%s: state %q, want serving", name, tier.State)
				continue
			}
			count := (&arborServer{adminSock: tier.AdminSocket}).cli(t, "agent", "count")
			if tier.Agents == nil || fmt.Sprintf("%d attested agent", *tier.Agents) != strings.TrimSuffix(strings.TrimSpace(count), "s") {
				t.Errorf("%s: agents %v, arbor agent count says %q", name, tier.Agents, strings.TrimSpace(count))
			}
			caTTL, ok := ttl[name]
			if !ok {
				t.Errorf("unexpected tier %s", name)
				continue
			}
			if tier.CANotAfter == nil || !tier.CANotAfter.After(checked) || tier.CANotAfter.After(checked.Add(caTTL)) {
				t.Errorf("%s: CA not-after %v, want within its ca_ttl %v from now", name, tier.CANotAfter, caTTL)
			}
			if tier.Parent == "" {
				if tier.OutageBudgetSeconds != nil || tier.PlanOutageBudgetSeconds != 0 || tier.ParentReachable != nil {
					t.Errorf("%s (a root): outage budget %v, plan %d, parent reachable %v; want none", name, tier.OutageBudgetSeconds, tier.PlanOutageBudgetSeconds, tier.ParentReachable)
				}
			} else {
				if want := int64(caTTL / 2 / time.Second); tier.PlanOutageBudgetSeconds != want {
					t.Errorf("%s: plan outage budget %ds, want half of ca_ttl (%ds)", name, tier.PlanOutageBudgetSeconds, want)
				}
				if b := tier.OutageBudgetSeconds; b == nil || tier.CANotAfter == nil ||
					*b <= 0 || *b > int64(tier.CANotAfter.Sub(checked.Add(-time.Minute))/time.Second) {
					t.Errorf("%s: outage budget %v, want the time left until the CA's not-after %v", name, b, tier.CANotAfter)
				}
				if tier.ParentReachable == nil || !*tier.ParentReachable {
					t.Errorf("%s: parent reachable %v, want true", name, tier.ParentReachable)
				}
			}
			if tier.Demo != nil {
				demos++
			}
		}
		root := tree.Tiers[0]
		other := map[string]string{"example.org": "partner.example", "partner.example": "example.org"}[tree.TrustDomain]
		if len(root.Federations) != 1 || root.Federations[0].TrustDomain != other || root.Federations[0].X509Authorities == 0 {
			t.Errorf("%s/root federations %+v, want the bundle of %s held", tree.TrustDomain, root.Federations, other)
		}
	}
	if demos != 2 {
		t.Errorf("%d demo workloads in the status, want 2 (one per leaf)", demos)
	}

	text, _, code := arborRun(t, "status", org)
	for _, want := range []string{
		fmt.Sprintf("example.org (%s): arbor up pid %d, ready", org, up.cmd.Process.Pid),
		"federated partner.example: 1 X.509",
		"demo spiffe://example.org/demo/leaf: mTLS ok, JWT ok",
		"parent regional reachable",
	} {
		if code != 0 || !strings.Contains(text, want) {
			t.Errorf("arbor status (exit %d) printed\n%s\nwant a line with %q", code, text, want)
		}
	}
	if !regexp.MustCompile(`(?m)^    regional +serving +agents \d+, CA until \S+ \(\S+\), outage budget \S+ \(plan: 12h at worst\), parent root reachable$`).MatchString(text) {
		t.Errorf("arbor status printed\n%s\nwant regional's line with its CA, outage budget and parent", text)
	}

	if out, err := exec.Command(arborBin, "up", "--stop", "partner.example/leaf", org, partner).CombinedOutput(); err != nil {
		t.Fatalf("arbor up --stop partner.example/leaf: %v\n%s", err, out)
	}
	for _, tier := range readStatus(t, partner)[0].Tiers {
		if want := map[string]string{"root": "serving", "leaf": "down"}[tier.Name]; tier.State != want || tier.Serving != (want == "serving") {
			t.Errorf("after --stop leaf: partner.example/%s state %q serving %v, want %s", tier.Name, tier.State, tier.Serving, want)
		}
	}
	if text, _, _ := arborRun(t, "status", partner); !strings.Contains(text, "DOWN") {
		t.Errorf("arbor status after --stop leaf printed\n%s\nwant leaf DOWN", text)
	}

	stopUp(t, up)
	if _, errOut, code := arborRun(t, "status", org, partner); code != 1 || !strings.HasPrefix(errOut, "arbor: no arbor up runs "+org) {
		t.Errorf("arbor status after arbor up stopped: exit %d, printed %q; want exit 1 and no arbor up running", code, errOut)
	}
}
