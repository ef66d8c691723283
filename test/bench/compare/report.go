package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/arborid/arbor/test/load/loadgen"
)

// metric is one number read from a sample.
type metric struct {
	key, label string
	higher     bool // higher is better
	get        func(*Sample) (float64, bool)
}

func rpcStat(phase, rpc string, f func(*loadgen.RPCStats) float64) func(*Sample) (float64, bool) {
	return func(s *Sample) (float64, bool) {
		p := s.Phases[phase]
		if p == nil || p.RPCs[rpc] == nil {
			return 0, false
		}
		return f(p.RPCs[rpc]), true
	}
}

const mibf = 1 << 20

var metrics = []metric{
	{"x509_per_s", "X509-SVIDs/s (issuance, back to back)", true, func(s *Sample) (float64, bool) {
		p := s.Phases["x509"]
		return p.X509PerSecond, p != nil
	}},
	{"x509_cpu_us", "server CPU µs per X509-SVID", false, func(s *Sample) (float64, bool) {
		p := s.Phases["x509"]
		if p == nil || p.Server == nil || p.RPCs[loadgen.RPCX509] == nil || p.RPCs[loadgen.RPCX509].Items == 0 {
			return 0, false
		}
		return p.Server.CPUSeconds * 1e6 / float64(p.RPCs[loadgen.RPCX509].Items), true
	}},
	{"x509_vs_raw", "X509-SVIDs/s ÷ raw signing limit measured just before", true, func(s *Sample) (float64, bool) {
		p := s.Phases["x509"]
		if p == nil || s.Raw == nil || s.Raw.PerSecond == 0 {
			return 0, false
		}
		return p.X509PerSecond / s.Raw.PerSecond, true
	}},
	{"x509_cpu_efficiency", "raw CPU per SVID ÷ server CPU per X509-SVID", true, func(s *Sample) (float64, bool) {
		p := s.Phases["x509"]
		if p == nil || p.Server == nil || s.Raw == nil || p.RPCs[loadgen.RPCX509] == nil || p.RPCs[loadgen.RPCX509].Items == 0 || p.Server.CPUSeconds == 0 {
			return 0, false
		}
		perSVID := p.Server.CPUSeconds * 1e6 / float64(p.RPCs[loadgen.RPCX509].Items)
		return s.Raw.CPUMicrosPerSVID / perSVID, true
	}},
	{"x509_p99_ms", "BatchNewX509SVID p99 ms", false, rpcStat("x509", loadgen.RPCX509, func(r *loadgen.RPCStats) float64 { return r.P99MS })},
	{"sync_p50_ms", "agent sync p50 ms", false, rpcStat("sync", loadgen.RPCSync, func(r *loadgen.RPCStats) float64 { return r.P50MS })},
	{"sync_p99_ms", "agent sync p99 ms", false, rpcStat("sync", loadgen.RPCSync, func(r *loadgen.RPCStats) float64 { return r.P99MS })},
	{"sync_cpu_ms", "server CPU ms per sync", false, func(s *Sample) (float64, bool) {
		p := s.Phases["sync"]
		return p.ServerCPUPerSyncMS, p != nil && p.ServerCPUPerSyncMS > 0
	}},
	{"sync_server_gc", "server GC cycles during the sync phase", false, syncGC(func(g *PhaseGC) float64 { return float64(g.ServerCycles) })},
	{"sync_server_gc_stw_ms", "server GC stop-the-world ms during the sync phase", false, syncGC(func(g *PhaseGC) float64 { return g.ServerSTWMS })},
	{"sync_server_gc_mark_ms", "server GC mark ms (wall) during the sync phase", false, syncGC(func(g *PhaseGC) float64 { return g.ServerMarkMS })},
	{"sync_client_gc", "load generator GC cycles during the sync phase", false, syncGC(func(g *PhaseGC) float64 { return float64(g.ClientCycles) })},
	{"sync_client_gc_pause_ms", "load generator GC pause ms during the sync phase", false, syncGC(func(g *PhaseGC) float64 { return g.ClientPauseMS })},
	{"jwt_per_s", "JWT-SVIDs/s", true, rpcStat("jwt", loadgen.RPCJWT, func(r *loadgen.RPCStats) float64 { return r.ItemsPerS })},
	{"jwt_p99_ms", "NewJWTSVID p99 ms", false, rpcStat("jwt", loadgen.RPCJWT, func(r *loadgen.RPCStats) float64 { return r.P99MS })},
	{"rss_seeded_mib", "server RSS with the entries loaded, MiB", false, func(s *Sample) (float64, bool) {
		return float64(s.RSSSeededBytes) / mibf, s.RSSSeededBytes > 0
	}},
	{"rss_peak_mib", "server peak RSS under load, MiB", false, func(s *Sample) (float64, bool) {
		var peak int64
		for _, p := range s.Phases {
			if p.Server != nil {
				peak = max(peak, p.Server.RSSPeakBytes)
			}
		}
		return float64(peak) / mibf, peak > 0
	}},
	{"seed_per_s", "entries created/s (BatchCreateEntry)", true, func(s *Sample) (float64, bool) {
		return s.Setup.SeedPerSecond, s.Setup != nil
	}},
	{"errors", "failed calls (all phases)", false, func(s *Sample) (float64, bool) {
		n := 0
		if s.Setup != nil {
			n += s.Setup.Errors
		}
		for _, p := range s.Phases {
			n += p.Errors
		}
		for _, p := range s.Curve {
			n += p.Errors
		}
		return float64(n), true
	}},
}

// syncGC reads one garbage-collection figure of the sync phase.
func syncGC(f func(*PhaseGC) float64) func(*Sample) (float64, bool) {
	return func(s *Sample) (float64, bool) {
		g := s.GC["sync"]
		if g == nil {
			return 0, false
		}
		return f(g), true
	}
}

// stat is the median and spread of one metric over runs.
type stat struct {
	Median, Min, Max float64
	N                int
}

func newStat(v []float64) stat {
	if len(v) == 0 {
		return stat{}
	}
	v = slices.Clone(v)
	slices.Sort(v)
	m := v[len(v)/2]
	if len(v)%2 == 0 {
		m = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return stat{Median: m, Min: v[0], Max: v[len(v)-1], N: len(v)}
}

type cell struct {
	backend, server, metric string
	entries                 int
}

type curveCell struct {
	backend, server string
	agents          int
}

type summary struct {
	backends, servers []string
	entries           []int
	agents            []int
	cells             map[cell]stat
	curve             map[curveCell]stat
	raw               stat
}

func summarize(res *Results) *summary {
	var raws []float64
	for _, r := range res.RawSigning {
		raws = append(raws, r.PerSecond)
	}
	for _, smp := range res.Samples {
		if smp.Raw != nil {
			raws = append(raws, smp.Raw.PerSecond)
		}
	}
	sum := &summary{cells: map[cell]stat{}, curve: map[curveCell]stat{}, raw: newStat(raws)}
	vals := map[cell][]float64{}
	cvals := map[curveCell][]float64{}
	for _, s := range res.Samples {
		if !slices.Contains(sum.backends, s.Backend) {
			sum.backends = append(sum.backends, s.Backend)
		}
		if !slices.Contains(sum.servers, s.Server) {
			sum.servers = append(sum.servers, s.Server)
		}
		if !slices.Contains(sum.entries, s.Entries) {
			sum.entries = append(sum.entries, s.Entries)
		}
		if s.Error != "" {
			continue
		}
		for _, m := range metrics {
			if v, ok := m.get(s); ok {
				c := cell{s.Backend, s.Server, m.key, s.Entries}
				vals[c] = append(vals[c], v)
			}
		}
		for n, p := range s.Curve {
			if !slices.Contains(sum.agents, n) {
				sum.agents = append(sum.agents, n)
			}
			c := curveCell{s.Backend, s.Server, n}
			cvals[c] = append(cvals[c], p.X509PerSecond)
		}
	}
	slices.Sort(sum.entries)
	slices.Sort(sum.agents)
	slices.Sort(sum.servers) // arbor before spire
	for c, v := range vals {
		sum.cells[c] = newStat(v)
	}
	for c, v := range cvals {
		sum.curve[c] = newStat(v)
	}
	return sum
}

func (s *summary) get(backend, server, metric string, entries int) (stat, bool) {
	st, ok := s.cells[cell{backend, server, metric, entries}]
	return st, ok && st.N > 0
}

// ratio is arbor's median over spire's.
func (s *summary) ratio(backend, metric string, entries int) (float64, bool) {
	a, ok1 := s.get(backend, "arbor", metric, entries)
	b, ok2 := s.get(backend, "spire", metric, entries)
	if !ok1 || !ok2 || b.Median == 0 {
		return 0, false
	}
	return a.Median / b.Median, true
}

func fmtNum(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 100:
		return fmt.Sprintf("%.1f", v)
	case v >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

func (st stat) String() string {
	if st.N == 0 {
		return "–"
	}
	if st.N == 1 || st.Min == st.Max {
		return fmtNum(st.Median)
	}
	return fmt.Sprintf("%s (%s–%s)", fmtNum(st.Median), fmtNum(st.Min), fmtNum(st.Max))
}

func humanCount(n int) string {
	if n >= 1000 && n%1000 == 0 {
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

func (s *summary) markdown(res *Results) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# arbor vs spire-server v1.13.3\n\n")
	fmt.Fprintf(&b, "Measured %s on %d CPUs in %.0f s. Options: `%v`.\n\n", res.Started.Format("2006-01-02 15:04 MST"), res.CPUs, res.Seconds, res.Options)
	fmt.Fprintf(&b, "Raw signing limit (CSR check + P-256 certificate signing on all cores, no RPC): %s SVIDs/s over %d measurements (one before every x509 phase; the spread is the machine's noise).\n\n", s.raw, s.raw.N)
	b.WriteString("Cells are medians over runs, with (min–max) when they differ. Ratios are arbor / spire-server.\n\n")

	b.WriteString("## Targets\n\n| target | datastore | entries | arbor | spire-server | measured | goal | met |\n|---|---|---|---|---|---|---|---|\n")
	largest := s.entries[len(s.entries)-1]
	for _, backend := range s.backends {
		for _, n := range s.entries {
			a, _ := s.get(backend, "arbor", "x509_per_s", n)
			sp, _ := s.get(backend, "spire", "x509_per_s", n)
			if r, ok := s.ratio(backend, "x509_per_s", n); ok {
				fmt.Fprintf(&b, "| X509-SVID issuance vs spire | %s | %s | %s/s | %s/s | %.2f× | ≥ 2× | %s |\n", backend, humanCount(n), a, sp, r, yes(r >= 2))
			}
			if r, ok := s.ratio(backend, "x509_cpu_us", n); ok && r > 0 {
				a, _ := s.get(backend, "arbor", "x509_cpu_us", n)
				sp, _ := s.get(backend, "spire", "x509_cpu_us", n)
				fmt.Fprintf(&b, "| X509-SVID issuance vs spire (server CPU per SVID, spire ÷ arbor) | %s | %s | %s µs | %s µs | %.2f× | ≥ 2× | %s |\n", backend, humanCount(n), a, sp, 1/r, yes(1/r >= 2))
			}
			if r, ok := s.get(backend, "arbor", "x509_vs_raw", n); ok {
				fmt.Fprintf(&b, "| X509-SVID issuance vs raw signing (wall clock) | %s | %s | %s/s | – | %.0f%% (%.0f–%.0f%%) | ≥ 60%% | %s |\n", backend, humanCount(n), a,
					100*r.Median, 100*r.Min, 100*r.Max, yes(r.Median >= 0.6))
			}
			if r, ok := s.get(backend, "arbor", "x509_cpu_efficiency", n); ok {
				fmt.Fprintf(&b, "| X509-SVID issuance vs raw signing (CPU per SVID) | %s | %s | – | – | %.0f%% (%.0f–%.0f%%) | ≥ 60%% | %s |\n", backend, humanCount(n),
					100*r.Median, 100*r.Min, 100*r.Max, yes(r.Median >= 0.6))
			}
		}
		if r, ok := s.ratio(backend, "sync_p99_ms", largest); ok {
			a, _ := s.get(backend, "arbor", "sync_p99_ms", largest)
			sp, _ := s.get(backend, "spire", "sync_p99_ms", largest)
			fmt.Fprintf(&b, "| agent sync p99 | %s | %s | %s ms | %s ms | %.3f× | ≤ 0.2× (at 100k) | %s |\n", backend, humanCount(largest), a, sp, r, yes(r <= 0.2))
		}
		if r, ok := s.ratio(backend, "sync_cpu_ms", largest); ok {
			a, _ := s.get(backend, "arbor", "sync_cpu_ms", largest)
			sp, _ := s.get(backend, "spire", "sync_cpu_ms", largest)
			fmt.Fprintf(&b, "| server CPU per agent sync | %s | %s | %s ms | %s ms | %.3f× | (≤ 0.2× for p99) | %s |\n", backend, humanCount(largest), a, sp, r, yes(r <= 0.2))
		}
		if r, ok := s.ratio(backend, "rss_seeded_mib", largest); ok {
			a, _ := s.get(backend, "arbor", "rss_seeded_mib", largest)
			sp, _ := s.get(backend, "spire", "rss_seeded_mib", largest)
			fmt.Fprintf(&b, "| server RSS | %s | %s | %s MiB | %s MiB | %.2f× | ≤ 0.5× (at 100k) | %s |\n", backend, humanCount(largest), a, sp, r, yes(r <= 0.5))
		}
	}
	b.WriteString("\n")

	for _, backend := range s.backends {
		for _, n := range s.entries {
			fmt.Fprintf(&b, "## %s, %s entries\n\n| metric | arbor | spire-server | arbor / spire |\n|---|---|---|---|\n", backend, humanCount(n))
			for _, m := range metrics {
				a, ok1 := s.get(backend, "arbor", m.key, n)
				sp, ok2 := s.get(backend, "spire", m.key, n)
				if !ok1 && !ok2 {
					continue
				}
				r := "–"
				if v, ok := s.ratio(backend, m.key, n); ok {
					r = fmt.Sprintf("%.2f×", v)
				}
				fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", m.label, a, sp, r)
			}
			b.WriteString("\n")
		}
	}
	if len(s.agents) > 0 {
		b.WriteString("## X509-SVIDs/s vs agents (smallest size)\n\n| datastore | agents | arbor | spire-server | arbor / spire |\n|---|---|---|---|---|\n")
		for _, backend := range s.backends {
			for _, n := range s.agents {
				a := s.curve[curveCell{backend, "arbor", n}]
				sp := s.curve[curveCell{backend, "spire", n}]
				r := "–"
				if a.N > 0 && sp.N > 0 && sp.Median > 0 {
					r = fmt.Sprintf("%.2f×", a.Median/sp.Median)
				}
				fmt.Fprintf(&b, "| %s | %d | %s | %s | %s |\n", backend, n, a, sp, r)
			}
		}
		b.WriteString("\n")
	}
	var failed []string
	for _, smp := range res.Samples {
		if smp.Error != "" {
			failed = append(failed, fmt.Sprintf("- %s %s %s run %d: %s", smp.Server, smp.Backend, humanCount(smp.Entries), smp.Run, smp.Error))
		}
	}
	if len(failed) > 0 {
		b.WriteString("## Failed runs\n\n" + strings.Join(failed, "\n") + "\n\n")
	}
	b.WriteString("## Charts\n\n")
	for _, c := range chartFiles {
		fmt.Fprintf(&b, "- [%s](%s)\n", c.title, c.file)
	}
	return b.String()
}

func yes(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}
