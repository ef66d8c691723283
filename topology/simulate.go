package topology

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Event kinds of a simulation.
const (
	EventDown         = "down"          // the tier stops answering
	EventJWTSVIDs     = "jwt-svids"     // cached JWT-SVIDs of its workloads expire
	EventX509SVIDs    = "x509-svids"    // its workloads' X509-SVIDs expire
	EventAgentSVIDs   = "agent-svids"   // its agents' own SVIDs expire
	EventParentAgent  = "parent-agent"  // a child's co-located agent loses its SVID
	EventCAExpired    = "ca-expired"    // a child tier's CA and JWT key expire
	EventManualAction = "manual-action" // someone must act before the tier recovers
)

// Event is one moment of a simulated outage.
type Event struct {
	// At is the earliest time after the outage starts when the event can
	// happen (the worst case); Latest the latest (the best case).
	At, Latest time.Duration
	// Server is the tier the event happens on.
	Server string
	Kind   string
	What   string
	// LosesIdentity is set when workloads hold no valid identity after it.
	LosesIdentity bool
	// Workloads are the SPIFFE IDs of the entries that lose identity.
	Workloads []string
}

// Simulation is what `arbor topology simulate` prints: what expires when
// a tier is down for a while.
type Simulation struct {
	Down string
	For  time.Duration
	// Start, when not zero, turns offsets into wall-clock times.
	Start time.Time
	// Events happen within the outage (At <= For), in time order.
	Events []Event
	// Later are the events the outage is too short to reach.
	Later []Event
	// Survivable is true when no workload loses identity within the
	// outage (at worst). NeedsAction is true when the tree will not
	// recover by itself when the tier returns.
	Survivable  bool
	NeedsAction bool
}

// Simulate predicts, from the TTLs of the file, what happens when server
// down (all its replicas) is unreachable for d, starting at start (zero
// for relative times only). Every time is a worst case: the earliest
// moment it can happen given the rotation rules (CAs at half-life, agents
// renewing SVIDs at half-life); Latest is when it happens at the latest.
//
// The workloads of a tier are those of its entry blocks; a leaf (no
// children) is assumed to serve workloads even without entry blocks, a
// tier with children and no entries is assumed to serve none.
func Simulate(f *File, down string, d time.Duration, start time.Time) (*Simulation, error) {
	s, err := f.Server(down)
	if err != nil {
		return nil, err
	}
	if d <= 0 {
		return nil, fmt.Errorf("topology: outage duration must be positive, got %v", d)
	}
	var events []Event
	events = append(events, Event{Server: s.Name, Kind: EventDown,
		What: fmt.Sprintf("%s goes down: its agents cannot renew SVIDs, new workloads get none, its children cannot rotate their CAs", s.Name)})
	// A tier with children and no entry blocks of its own is taken to serve
	// only its children's co-located agents: its outage costs no workload
	// its identity until the children's CAs run out.
	w := workloadIDs(s)
	serves := len(w) > 0 || len(f.Children(s.Name)) == 0
	x509, jwt := shortestX509(s), shortestJWT(s)
	if serves {
		events = append(events,
			Event{At: x509 / 2, Latest: s.X509SVIDTTL, Server: s.Name, Kind: EventX509SVIDs, LosesIdentity: true, Workloads: w,
				What: fmt.Sprintf("X509-SVIDs of workloads under %s's agents expire (TTL %s, renewed at half-life); mTLS with them fails", s.Name, formatDuration(x509))},
			Event{At: jwt / 2, Latest: s.JWTSVIDTTL, Server: s.Name, Kind: EventJWTSVIDs, LosesIdentity: true, Workloads: w,
				What: fmt.Sprintf("cached JWT-SVIDs of workloads under %s's agents expire (TTL %s)", s.Name, formatDuration(jwt))})
	}
	events = append(events, Event{At: s.AgentSVIDTTL / 2, Latest: s.AgentSVIDTTL, Server: s.Name, Kind: EventAgentSVIDs,
		What: fmt.Sprintf("agents of %s hold expired agent SVIDs (TTL %s): they re-attest when %s returns; agents on join tokens need new tokens", s.Name, formatDuration(s.AgentSVIDTTL), s.Name)})
	for _, c := range f.Children(s.Name) {
		if c.Agent != nil {
			e := Event{At: s.AgentSVIDTTL / 2, Latest: s.AgentSVIDTTL, Server: c.Name, Kind: EventParentAgent,
				What: fmt.Sprintf("the co-located agent of %s loses its SVID from %s (%s): it re-attests with %s when %s returns", c.Name, s.Name, formatDuration(s.AgentSVIDTTL), c.Agent.NodeAttestor.Kind, s.Name)}
			switch c.Agent.NodeAttestor.Kind {
			case NodeAttestorJoinToken:
				e.Kind = EventManualAction
				e.What = fmt.Sprintf("the co-located agent of %s loses its SVID from %s (%s) and cannot re-attest with a used join token: generate a new token for it, or %s stays cut off after %s returns", c.Name, s.Name, formatDuration(s.AgentSVIDTTL), c.Name, s.Name)
			case NodeAttestorAWSIID, NodeAttestorGCPIIT, NodeAttestorAzureMSI:
				// Trust on first use: the machine has attested already.
				e.Kind = EventManualAction
				e.What = fmt.Sprintf("the co-located agent of %s loses its SVID from %s (%s) and cannot attest again with %s (one attestation per machine): evict it at %s, or %s stays cut off after %s returns", c.Name, s.Name, formatDuration(s.AgentSVIDTTL), c.Agent.NodeAttestor.Kind, s.Name, c.Name, s.Name)
			}
			events = append(events, e)
		}
		var names, ids []string
		for _, t := range subtree(f, c) {
			names = append(names, t.Name)
			ids = append(ids, workloadIDs(t)...)
		}
		what := fmt.Sprintf("%s's CA and JWT signing key expire (ca_ttl %s, rotated at half-life): %s stops issuing and every SVID under it is invalid", c.Name, formatDuration(c.CATTL), c.Name)
		if len(names) > 1 {
			what = fmt.Sprintf("%s's CA and JWT signing key expire (ca_ttl %s, rotated at half-life): %s stop issuing (their CAs chain to it) and every SVID under them is invalid", c.Name, formatDuration(c.CATTL), strings.Join(names, ", "))
		}
		events = append(events, Event{At: c.CATTL / 2, Latest: c.CATTL, Server: c.Name, Kind: EventCAExpired, LosesIdentity: true, Workloads: ids, What: what})
	}
	slices.SortStableFunc(events, func(a, b Event) int { return cmp.Compare(a.At, b.At) })

	sim := &Simulation{Down: s.Name, For: d, Start: start, Survivable: true}
	for _, e := range events {
		if e.At > d {
			sim.Later = append(sim.Later, e)
			continue
		}
		sim.Events = append(sim.Events, e)
		if e.LosesIdentity {
			sim.Survivable = false
		}
		if e.Kind == EventManualAction {
			sim.NeedsAction = true
		}
	}
	return sim, nil
}

// subtree is s and every server below it, in tree order.
func subtree(f *File, s *Server) []*Server {
	out := []*Server{s}
	for _, c := range f.Children(s.Name) {
		out = append(out, subtree(f, c)...)
	}
	return out
}

// workloadIDs are the SPIFFE IDs of a server's declared workload entries.
func workloadIDs(s *Server) []string {
	var out []string
	for _, e := range s.Entries {
		if !e.Downstream {
			out = append(out, e.SPIFFEID.String())
		}
	}
	return out
}

// WriteText prints the timeline.
func (sim *Simulation) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s down for %s", sim.Down, formatDuration(sim.For))
	if !sim.Start.IsZero() {
		fmt.Fprintf(&b, " from %s", sim.Start.UTC().Format(time.RFC3339))
	}
	b.WriteString(" (worst case: earliest time each thing can happen)\n\n")
	when := func(e Event) string {
		s := "+" + formatDuration(e.At)
		if e.At == 0 {
			s = "+0"
		}
		if !sim.Start.IsZero() {
			s += " " + sim.Start.Add(e.At).UTC().Format(time.RFC3339)
		}
		return s
	}
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	write := func(e Event) {
		fmt.Fprintf(tw, "  %s\t%s\t%s", when(e), e.Server, e.What)
		if e.Latest > e.At {
			fmt.Fprintf(tw, " [at the latest +%s]", formatDuration(e.Latest))
		}
		fmt.Fprintln(tw)
		if len(e.Workloads) > 0 {
			fmt.Fprintf(tw, "  \t\tloses identity: %s\n", strings.Join(e.Workloads, ", "))
		}
	}
	for _, e := range sim.Events {
		write(e)
	}
	fmt.Fprintf(tw, "  %s\t%s\t%s returns\n", when(Event{At: sim.For}), sim.Down, sim.Down)
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(sim.Later) > 0 {
		b.WriteString("\nnot reached by this outage:\n")
		for _, e := range sim.Later {
			write(e)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	b.WriteString("\n")
	switch {
	case sim.Survivable && sim.NeedsAction:
		b.WriteString("survivable: no workload loses identity, but the tree needs manual action to recover (see above)\n")
	case sim.Survivable:
		b.WriteString("survivable: no workload loses identity and the tree recovers by itself\n")
	default:
		b.WriteString("NOT survivable: workloads lose identity during the outage\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
