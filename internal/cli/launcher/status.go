package launcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/cli/admin"
	"github.com/arborid/arbor/internal/cli/demo"
	"github.com/arborid/arbor/internal/statelock"
	"github.com/arborid/arbor/topology"
)

// `arbor status FILE`: the live tree of a running `arbor up`, on demand.
// Each server is asked directly (its admin socket: health, agents, bundle,
// federation relationships; its health listener's /metrics: the CA's
// remaining lifetime, parent reachability, federated bundle ages); the
// control socket adds what only arbor up knows (tiers stopped on request,
// the demo workloads' checks).

// ErrNotRunning is returned by Status when no `arbor up` runs the file.
var ErrNotRunning = errors.New("no arbor up running")

// NotRunningError says which file no `arbor up` runs, and the lock that
// says so; it unwraps to ErrNotRunning.
type NotRunningError struct {
	File string
	Lock string
}

func (e *NotRunningError) Error() string {
	return fmt.Sprintf("no arbor up runs %s (nothing holds %s); start it with: arbor up %s", e.File, e.Lock, e.File)
}

func (e *NotRunningError) Unwrap() error { return ErrNotRunning }

// TreeStatus is the status of one topology file's running tree. Its JSON
// field names are stable (docs/cli.md, arbor status).
type TreeStatus struct {
	File        string `json:"file"`
	TrustDomain string `json:"trust_domain"`
	// UpPID is the process ID of the arbor up running the file.
	UpPID int `json:"up_pid"`
	// Ready is set once arbor up has started every tier (it printed
	// "ready"); before, tiers may be missing or starting.
	Ready bool `json:"ready"`
	// Control is why the control socket did not answer, "" when it did.
	Control string       `json:"control_error,omitempty"`
	Checked time.Time    `json:"checked"`
	Tiers   []TierStatus `json:"tiers"`
}

// Tier states.
const (
	TierServing     = "serving"     // the admin socket's health service says SERVING
	TierDown        = "down"        // stopped with arbor up --stop
	TierUnreachable = "unreachable" // no answer, or not SERVING
)

// TierStatus is one server of the tree. Optional numbers are null in JSON
// when they are unknown (the server does not answer, or its health
// listener is off).
type TierStatus struct {
	Name   string `json:"name"`
	Parent string `json:"parent,omitempty"`
	Depth  int    `json:"depth"`
	// State is TierServing, TierDown or TierUnreachable; Serving is
	// State == TierServing.
	State   string `json:"state"`
	Serving bool   `json:"serving"`
	// Error says why the tier is unreachable.
	Error        string `json:"error,omitempty"`
	AdminSocket  string `json:"admin_socket"`
	HealthListen string `json:"health_listen,omitempty"`
	PID          int    `json:"pid,omitempty"`
	// Agents is the number of attested agents; Entries of registration
	// entries.
	Agents  *int `json:"agents"`
	Entries *int `json:"entries"`
	// CANotAfter is when the tier's active X.509 CA (its chain's earliest
	// not-after) expires, to the second.
	CANotAfter *time.Time `json:"ca_not_after"`
	// OutageBudgetSeconds is how long, from now, the tier keeps issuing if
	// its parent (or the root's upstream authority) goes down now: until
	// CANotAfter, which no SVID it issues outlives. Null for a root without
	// an upstream authority (it depends on nobody) or when unknown.
	OutageBudgetSeconds *int64 `json:"outage_budget_seconds"`
	// PlanOutageBudgetSeconds is the same budget at worst, from the
	// topology's lifetimes (arbor topology plan's issuing budget: half of
	// ca_ttl, the parent going down as the CA reaches half-life); zero for
	// a root without an upstream authority.
	PlanOutageBudgetSeconds int64 `json:"plan_outage_budget_seconds"`
	// AgentBudgetSeconds is how long this tier's agents keep their SVIDs
	// if the tier itself goes down (plan: half of agent_svid_ttl).
	AgentBudgetSeconds int64 `json:"agent_budget_seconds"`
	// ParentReachable is the tier's own view of its parent (or upstream):
	// whether its last call succeeded. Null for a root without upstream or
	// when unknown.
	ParentReachable *bool `json:"parent_reachable"`
	// Federations are the tier's federation relationships.
	Federations []FederationStatus `json:"federations,omitempty"`
	// Demo is the latest check of the tier's demo workload, if it runs one.
	Demo *DemoStatus `json:"demo,omitempty"`
}

// FederationStatus is one federation relationship of a tier.
type FederationStatus struct {
	TrustDomain    string `json:"trust_domain"`
	BundleEndpoint string `json:"bundle_endpoint_url"`
	Profile        string `json:"bundle_endpoint_profile"`
	// BundleHeld is set when the tier holds a bundle of the trust domain.
	BundleHeld      bool `json:"bundle_held"`
	X509Authorities int  `json:"x509_authorities"`
	JWTAuthorities  int  `json:"jwt_authorities"`
	// BundleAgeSeconds is the time since the bundle was last fetched over
	// its endpoint; null when it was not fetched yet or is unknown.
	BundleAgeSeconds *float64 `json:"bundle_age_seconds"`
	RefreshesOK      int      `json:"refreshes_ok"`
	RefreshesFailed  int      `json:"refreshes_failed"`
}

// DemoStatus is the latest check of a demo workload.
type DemoStatus struct {
	SPIFFEID string    `json:"spiffe_id"`
	MTLS     string    `json:"mtls"`
	JWT      string    `json:"jwt"`
	Checked  time.Time `json:"checked"`
}

// upState is what the control socket's GET /status answers: what only
// arbor up knows.
type upState struct {
	PID   int       `json:"pid"`
	Ready bool      `json:"ready"`
	Tiers []upTier  `json:"tiers"`
	Since time.Time `json:"since"`
}

type upTier struct {
	Name string      `json:"name"`
	Down bool        `json:"down"`
	PID  int         `json:"pid,omitempty"`
	Demo *DemoStatus `json:"demo,omitempty"`
}

// state is the control socket's answer for f.
func (l *launcher) state(f *topology.File) upState {
	st := upState{PID: os.Getpid(), Ready: l.ready.Load(), Since: l.began}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, t := range l.tiers {
		if t.f != f {
			continue
		}
		ut := upTier{Name: t.srv.Node(), Down: t.server == nil}
		if t.server != nil {
			ut.PID = t.server.cmd.Process.Pid
		}
		if t.demoState != "" {
			if ds, err := demo.ReadStatus(t.demoState); err == nil && !ds.Checked.Before(t.demoSince) {
				ut.Demo = &DemoStatus{SPIFFEID: ds.ID, MTLS: ds.MTLS, JWT: ds.JWT, Checked: ds.Checked}
			}
		}
		st.Tiers = append(st.Tiers, ut)
	}
	return st
}

// controlClient is an HTTP client of the control socket at path.
func controlClient(path string, timeout time.Duration) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}, Timeout: timeout}
}

// upLock is the lock file of the arbor up running f.
func upLock(f *topology.File) (string, error) {
	sock, err := ControlSocket(f)
	if err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(sock), upLockName), nil
}

// Status asks the tree of f that an `arbor up` runs for its status. It
// returns a *NotRunningError when no arbor up runs f.
func Status(ctx context.Context, f *topology.File) (*TreeStatus, error) {
	lock, err := upLock(f)
	if err != nil {
		return nil, err
	}
	ts := &TreeStatus{File: f.Path, TrustDomain: f.TrustDomain.Name(), Checked: time.Now().UTC().Truncate(time.Second)}
	var held *statelock.HeldError
	switch err := statelock.Check(lock, "topology "+f.Path); {
	case err == nil:
		return nil, &NotRunningError{File: f.Path, Lock: lock}
	case errors.As(err, &held):
		ts.UpPID = held.PID
	default:
		return nil, err
	}
	up, err := askState(ctx, f)
	if err != nil {
		ts.Control = err.Error()
	} else {
		ts.UpPID, ts.Ready = up.PID, up.Ready
	}
	plan := topology.NewPlan(f)
	for i, block := range f.Walk() {
		for _, s := range block.ReplicaList() {
			var ut *upTier
			if up != nil {
				for j := range up.Tiers {
					if up.Tiers[j].Name == s.Node() {
						ut = &up.Tiers[j]
					}
				}
			}
			ts.Tiers = append(ts.Tiers, tierStatus(ctx, f, s, plan.Tiers[i], ut))
		}
	}
	return ts, nil
}

// askState asks the control socket of f what arbor up knows.
func askState(ctx context.Context, f *topology.File) (*upState, error) {
	path, err := ControlSocket(f)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://arbor-up/status", nil)
	if err != nil {
		return nil, err
	}
	client := controlClient(path, 5*time.Second)
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %v", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("control socket %s: %s: %s", path, resp.Status, strings.TrimSpace(string(b)))
	}
	var st upState
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st); err != nil {
		return nil, fmt.Errorf("control socket %s: %v", path, err)
	}
	return &st, nil
}

// tierStatus asks server s directly: its admin socket, then its /metrics.
func tierStatus(ctx context.Context, f *topology.File, s *topology.Server, plan topology.TierPlan, ut *upTier) TierStatus {
	ts := TierStatus{Name: s.Node(), Parent: s.Parent, Depth: plan.Depth, AdminSocket: s.AdminSocket, HealthListen: s.HealthListen,
		PlanOutageBudgetSeconds: int64(plan.IssuingBudget / time.Second), AgentBudgetSeconds: int64(plan.AgentBudget / time.Second)}
	if ut != nil {
		ts.PID, ts.Demo = ut.PID, ut.Demo
		if ut.Down {
			ts.State = TierDown
			return ts
		}
	}
	c, err := admin.Dial(s.AdminSocket)
	if err != nil {
		ts.State, ts.Error = TierUnreachable, err.Error()
		return ts
	}
	defer c.Close()
	c.Timeout = 3 * time.Second
	if err := c.Serving(ctx); err != nil {
		ts.State, ts.Error = TierUnreachable, err.Error()
		return ts
	}
	ts.State, ts.Serving = TierServing, true
	var errs []error
	if agents, entries, err := c.Counts(ctx); err == nil {
		a, e := int(agents), int(entries)
		ts.Agents, ts.Entries = &a, &e
	} else {
		errs = append(errs, err)
	}
	rels, err := c.Relationships(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	m, merr := scrape(ctx, s.HealthListen)
	if merr == nil {
		now := time.Now()
		if m.has("arbor_ca_x509_remaining_seconds") {
			left := time.Duration(m.sum("arbor_ca_x509_remaining_seconds")) * time.Second
			at := now.Add(left).UTC().Truncate(time.Second)
			ts.CANotAfter = &at
			if s.Parent != "" || s.Upstream != nil {
				b := int64(max(left, 0) / time.Second)
				ts.OutageBudgetSeconds = &b
			}
		}
		if m.has("arbor_upstream_reachable") {
			r := m.sum("arbor_upstream_reachable") == 1
			ts.ParentReachable = &r
		}
	} else if s.HealthListen != "" {
		errs = append(errs, fmt.Errorf("metrics of %s: %v", s.HealthListen, merr))
	}
	for _, r := range rels {
		fs := FederationStatus{TrustDomain: r.TrustDomain, BundleEndpoint: r.BundleEndpointUrl}
		switch {
		case r.GetHttpsSpiffe() != nil:
			fs.Profile = topology.ProfileHTTPSSPIFFE
		case r.GetHttpsWeb() != nil:
			fs.Profile = topology.ProfileHTTPSWeb
		}
		if td, err := spiffeid.TrustDomainFromString(r.TrustDomain); err == nil {
			if b, err := c.FederatedBundle(ctx, td); err == nil && b != nil {
				fs.BundleHeld, fs.X509Authorities, fs.JWTAuthorities = true, len(b.X509Authorities), len(b.JwtAuthorities)
			} else if err != nil {
				errs = append(errs, err)
			}
		}
		if merr == nil {
			if age, ok := m.value("arbor_federation_bundle_age_seconds", "trust_domain", r.TrustDomain); ok {
				fs.BundleAgeSeconds = &age
			}
			ok, _ := m.value("arbor_federation_refreshes_total", "trust_domain", r.TrustDomain, "result", "ok")
			failed, _ := m.value("arbor_federation_refreshes_total", "trust_domain", r.TrustDomain, "result", "error")
			fs.RefreshesOK, fs.RefreshesFailed = int(ok), int(failed)
		}
		ts.Federations = append(ts.Federations, fs)
	}
	if err := errors.Join(errs...); err != nil {
		ts.Error = strings.ReplaceAll(err.Error(), "\n", "; ")
	}
	return ts
}

// WriteText prints ts for a terminal: a header line, then a line per tier
// and one per federation relationship and demo workload.
func (ts *TreeStatus) WriteText(w io.Writer) error {
	head := fmt.Sprintf("%s (%s): arbor up pid %d", ts.TrustDomain, ts.File, ts.UpPID)
	switch {
	case ts.Control != "":
		head += ", its control socket does not answer (" + ts.Control + ")"
	case ts.Ready:
		head += ", ready"
	default:
		head += ", still starting the tree"
	}
	if _, err := fmt.Fprintln(w, head); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, t := range ts.Tiers {
		name := strings.Repeat("  ", t.Depth) + t.Name
		switch t.State {
		case TierDown:
			fmt.Fprintf(tw, "  %s\tDOWN\tstopped with arbor up --stop; arbor up --start %s %s brings it back\n", name, t.Name, ts.File)
			continue
		case TierUnreachable:
			fmt.Fprintf(tw, "  %s\tNOT SERVING\t%s\n", name, t.Error)
			continue
		}
		var parts []string
		if t.Agents != nil {
			parts = append(parts, fmt.Sprintf("agents %d", *t.Agents))
		}
		if t.CANotAfter != nil {
			parts = append(parts, fmt.Sprintf("CA until %s (%s)", t.CANotAfter.Format(time.RFC3339), roughly(t.CANotAfter.Sub(ts.Checked))))
		} else {
			parts = append(parts, "CA expiry unknown (health_listen off)")
		}
		switch {
		case t.Parent == "" && t.PlanOutageBudgetSeconds == 0:
			parts = append(parts, "root: depends on no parent")
		case t.OutageBudgetSeconds != nil:
			parts = append(parts, fmt.Sprintf("outage budget %s (plan: %s at worst)", roughly(time.Duration(*t.OutageBudgetSeconds)*time.Second),
				roughly(time.Duration(t.PlanOutageBudgetSeconds)*time.Second)))
		default:
			parts = append(parts, fmt.Sprintf("outage budget at worst %s", roughly(time.Duration(t.PlanOutageBudgetSeconds)*time.Second)))
		}
		if t.ParentReachable != nil {
			parent := t.Parent
			if parent == "" {
				parent = "upstream"
			}
			parts = append(parts, map[bool]string{true: "parent " + parent + " reachable", false: "PARENT " + parent + " UNREACHABLE"}[*t.ParentReachable])
		}
		fmt.Fprintf(tw, "  %s\tserving\t%s\n", name, strings.Join(parts, ", "))
		for _, fs := range t.Federations {
			line := "federated " + fs.TrustDomain + ": "
			if fs.BundleHeld {
				line += fmt.Sprintf("%d X.509, %d JWT", fs.X509Authorities, fs.JWTAuthorities)
			} else {
				line += "no bundle held yet"
			}
			if fs.BundleAgeSeconds != nil {
				line += ", bundle age " + (time.Duration(*fs.BundleAgeSeconds * float64(time.Second))).Round(time.Second).String()
			} else {
				line += ", bundle age unknown"
			}
			line += fmt.Sprintf(", refreshes %d ok, %d failed", fs.RefreshesOK, fs.RefreshesFailed)
			fmt.Fprintf(tw, "  %s\t\t%s\n", strings.Repeat("  ", t.Depth+1), line)
		}
		if t.Demo != nil {
			fmt.Fprintf(tw, "  %s\t\tdemo %s: mTLS %s, JWT %s\n", strings.Repeat("  ", t.Depth+1), t.Demo.SPIFFEID, t.Demo.MTLS, t.Demo.JWT)
		}
		if t.Error != "" {
			fmt.Fprintf(tw, "  %s\t\tpartly unknown: %s\n", strings.Repeat("  ", t.Depth+1), t.Error)
		}
	}
	return tw.Flush()
}

// roughly prints d to the minute (to the second under a minute).
func roughly(d time.Duration) string {
	if d < time.Minute {
		return d.Round(time.Second).String()
	}
	s := strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
