package topology

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Plan is what `arbor topology plan` shows: every tier of the tree with its
// lifetimes and outage budgets. All budgets are worst cases (the shortest
// time that can happen), see TierPlan.
type Plan struct {
	TrustDomain string
	// MinOutageBudget is the threshold below which a tier is flagged.
	MinOutageBudget time.Duration
	// Tiers in tree order (depth first from the root, children in file order).
	Tiers []TierPlan
}

// TierPlan is one server of the plan.
type TierPlan struct {
	Server   string
	Parent   string
	Depth    int
	Replicas int
	// Prefix draws the tree ("├─ ", "│  └─ ") before the name.
	Prefix string

	// CATTL is the lifetime of each CA the tier holds; RotateEvery is when
	// it asks for the next one (half-life).
	CATTL       time.Duration
	RotateEvery time.Duration
	X509SVIDTTL time.Duration
	// ChainLength is the number of certificates from a workload's X509-SVID
	// up to and including the trust anchor: the SVID, one CA per tier from
	// this one up to the root, plus the upstream's when the root has one
	// (ChainAtLeast then says the upstream may add more).
	ChainLength  int
	ChainAtLeast bool

	// IssuingBudget is how long the tier keeps issuing if its parent (or,
	// on the root, its upstream authority) is down: at worst the parent
	// goes down just as the tier's CA reaches half-life, when the tier
	// would have rotated, so half of ca_ttl remains. Zero for a
	// self-signed root, which depends on nobody.
	IssuingBudget time.Duration
	// WorkloadBudget is how long workloads keep valid X509-SVIDs if this
	// tier is down: agents renew at half-life, so at worst half of the
	// shortest X.509 SVID TTL the tier issues (server default or entry).
	WorkloadBudget time.Duration
	// JWTBudget is the same for cached JWT-SVIDs: half the shortest JWT TTL.
	JWTBudget time.Duration
	// AgentBudget is how long agents of this tier keep their own SVID if
	// the tier is down (half of agent_svid_ttl); after that they must
	// re-attest when it returns.
	AgentBudget time.Duration
	// BelowMinimum is set when IssuingBudget is under MinOutageBudget.
	BelowMinimum bool
}

// NewPlan computes the plan of a parsed (valid) file.
func NewPlan(f *File) *Plan {
	p := &Plan{TrustDomain: f.TrustDomain.Name(), MinOutageBudget: f.MinOutageBudget()}
	root := f.Root()
	upstream := root != nil && root.Upstream != nil
	prefixes := treePrefixes(f)
	for _, s := range f.Walk() {
		depth := f.Depth(s.Name)
		t := TierPlan{
			Server:         s.Name,
			Parent:         s.Parent,
			Depth:          depth,
			Replicas:       s.Replicas,
			Prefix:         prefixes[s.Name],
			CATTL:          s.CATTL,
			RotateEvery:    s.CATTL / 2,
			X509SVIDTTL:    s.X509SVIDTTL,
			ChainLength:    depth + 2,
			WorkloadBudget: shortestX509(s) / 2,
			JWTBudget:      shortestJWT(s) / 2,
			AgentBudget:    s.AgentSVIDTTL / 2,
		}
		if upstream {
			t.ChainLength++
			t.ChainAtLeast = true
		}
		if s.Parent != "" || s.Upstream != nil {
			t.IssuingBudget = s.CATTL / 2
			t.BelowMinimum = t.IssuingBudget < p.MinOutageBudget
		}
		p.Tiers = append(p.Tiers, t)
	}
	return p
}

func shortestX509(s *Server) time.Duration {
	d := s.X509SVIDTTL
	for _, e := range s.Entries {
		if e.X509SVIDTTL > 0 && e.X509SVIDTTL < d {
			d = e.X509SVIDTTL
		}
	}
	return d
}

func shortestJWT(s *Server) time.Duration {
	d := s.JWTSVIDTTL
	for _, e := range s.Entries {
		if e.JWTSVIDTTL > 0 && e.JWTSVIDTTL < d {
			d = e.JWTSVIDTTL
		}
	}
	return d
}

// treePrefixes draws the tree: the prefix before each server's name.
func treePrefixes(f *File) map[string]string {
	out := map[string]string{}
	var visit func(s *Server, indent string, last, top bool)
	visit = func(s *Server, indent string, last, top bool) {
		switch {
		case top:
			out[s.Name] = ""
		case last:
			out[s.Name] = indent + "└─ "
		default:
			out[s.Name] = indent + "├─ "
		}
		next := indent
		if !top {
			if last {
				next += "   "
			} else {
				next += "│  "
			}
		}
		kids := f.Children(s.Name)
		for i, c := range kids {
			visit(c, next, i == len(kids)-1, false)
		}
	}
	for _, s := range f.Servers {
		if s.Parent == "" {
			visit(s, "", true, true)
		}
	}
	return out
}

// WriteText prints the plan as a table with the tree drawn in the first
// column, followed by a legend of what each budget means.
func (p *Plan) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "trust domain %s: %d server(s)\n\n", p.TrustDomain, len(p.Tiers))
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVER\tTIER\tCA TTL\tROTATES\tCHAIN\tISSUES IF PARENT DOWN\tX509-SVIDS IF DOWN\tJWT-SVIDS IF DOWN\tAGENTS IF DOWN")
	for _, t := range p.Tiers {
		name := t.Prefix + t.Server
		if t.Replicas > 1 {
			name += fmt.Sprintf(" (x%d)", t.Replicas)
		}
		chain := fmt.Sprint(t.ChainLength)
		if t.ChainAtLeast {
			chain += "+"
		}
		issues := "-"
		if t.IssuingBudget > 0 {
			issues = formatDuration(t.IssuingBudget)
			if t.BelowMinimum {
				issues += " (below " + formatDuration(p.MinOutageBudget) + ")"
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, t.Depth, formatDuration(t.CATTL), formatDuration(t.RotateEvery),
			chain, issues, formatDuration(t.WorkloadBudget), formatDuration(t.JWTBudget), formatDuration(t.AgentBudget))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	b.WriteString(`
ROTATES                every server asks for its next CA at half its ca_ttl.
CHAIN                  certificates from a workload's X509-SVID to the trust anchor, both included.
ISSUES IF PARENT DOWN  worst case: the parent fails just as the tier's CA reaches half-life, so
                       half of ca_ttl remains; then the tier and everything under it lose identity.
X509/JWT-SVIDS IF DOWN worst case: agents renew at half-life, so half of the shortest SVID TTL
                       remains when the tier fails; then its workloads hold expired SVIDs.
AGENTS IF DOWN         half of agent_svid_ttl; after it, agents must re-attest when the tier returns.
`)
	_, err := io.WriteString(w, b.String())
	return err
}
