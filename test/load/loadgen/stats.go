package loadgen

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
)

// RPC names used as keys in reports.
const (
	RPCAttest = "AttestAgent"
	RPCSync   = "SyncAuthorizedEntries"
	RPCX509   = "BatchNewX509SVID"
	RPCJWT    = "NewJWTSVID"
)

// recorder collects latencies and error codes per RPC. Safe for concurrent use.
type recorder struct {
	mu    sync.Mutex
	rpcs  map[string]*rpcSamples
	start time.Time
}

type rpcSamples struct {
	lat    []time.Duration
	items  int64
	errors map[string]int
}

func newRecorder() *recorder { return &recorder{rpcs: map[string]*rpcSamples{}} }

func (r *recorder) get(rpc string) *rpcSamples {
	s := r.rpcs[rpc]
	if s == nil {
		s = &rpcSamples{errors: map[string]int{}}
		r.rpcs[rpc] = s
	}
	return s
}

// observe records one call: its latency, how many items it produced (SVIDs,
// entries) and the status codes of what failed (the call's own error, or
// per-item statuses of a batch).
func (r *recorder) observe(rpc string, d time.Duration, items int, failed ...codes.Code) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.get(rpc)
	s.lat = append(s.lat, d)
	s.items += int64(items)
	for _, c := range failed {
		s.errors[c.String()]++
	}
}

func (r *recorder) counts() (calls, items, errs map[string]int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	calls, items, errs = map[string]int64{}, map[string]int64{}, map[string]int64{}
	for name, s := range r.rpcs {
		calls[name] = int64(len(s.lat))
		items[name] = s.items
		for _, n := range s.errors {
			errs[name] += int64(n)
		}
	}
	return calls, items, errs
}

// RPCStats summarizes one RPC over a phase. Latencies are in milliseconds.
type RPCStats struct {
	Calls     int64          `json:"calls"`
	Items     int64          `json:"items"`
	PerSecond float64        `json:"calls_per_second"`
	ItemsPerS float64        `json:"items_per_second"`
	MeanMS    float64        `json:"mean_ms"`
	P50MS     float64        `json:"p50_ms"`
	P95MS     float64        `json:"p95_ms"`
	P99MS     float64        `json:"p99_ms"`
	MaxMS     float64        `json:"max_ms"`
	Errors    map[string]int `json:"errors,omitempty"`
}

// Percentile returns the q-th quantile (0..1) of sorted durations by the
// nearest-rank method; zero for no samples.
func Percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(q*float64(len(sorted))+0.999999999) - 1
	return sorted[max(0, min(rank, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func (r *recorder) summary(elapsed time.Duration) map[string]*RPCStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]*RPCStats{}
	for name, s := range r.rpcs {
		lat := slices.Clone(s.lat)
		slices.Sort(lat)
		var sum time.Duration
		for _, d := range lat {
			sum += d
		}
		st := &RPCStats{Calls: int64(len(lat)), Items: s.items, Errors: maps.Clone(s.errors)}
		if len(st.Errors) == 0 {
			st.Errors = nil
		}
		if len(lat) > 0 {
			st.MeanMS = ms(sum / time.Duration(len(lat)))
			st.P50MS = ms(Percentile(lat, 0.50))
			st.P95MS = ms(Percentile(lat, 0.95))
			st.P99MS = ms(Percentile(lat, 0.99))
			st.MaxMS = ms(lat[len(lat)-1])
		}
		if elapsed > 0 {
			st.PerSecond = float64(st.Calls) / elapsed.Seconds()
			st.ItemsPerS = float64(st.Items) / elapsed.Seconds()
		}
		out[name] = st
	}
	return out
}

// ProcStats is what /proc says about a process over a phase.
type ProcStats struct {
	PID           int     `json:"pid"`
	RSSStartBytes int64   `json:"rss_start_bytes"`
	RSSEndBytes   int64   `json:"rss_end_bytes"`
	RSSPeakBytes  int64   `json:"rss_peak_bytes"`
	CPUSeconds    float64 `json:"cpu_seconds"`
}

// Report is the result of one Load.
type Report struct {
	Name     string  `json:"name"`
	Agents   int     `json:"agents"`
	Entries  int     `json:"entries"`
	Seconds  float64 `json:"seconds"`
	Interval float64 `json:"interval_seconds"`
	// RPCs maps RPC names (RPCSync, RPCX509, RPCJWT) to their statistics.
	RPCs map[string]*RPCStats `json:"rpcs"`
	// Errors counts every failed call or batch item.
	Errors int `json:"errors"`
	// X509PerSecond is issued X509-SVIDs per second.
	X509PerSecond float64 `json:"x509_svids_per_second"`
	// Server is the server process (when Config.ServerPID is set).
	Server *ProcStats `json:"server,omitempty"`
	// Client is this load generator's own process.
	Client *ProcStats `json:"client,omitempty"`
	// ServerCPUPerSyncMS is server CPU milliseconds per sync call (only
	// meaningful for sync-only loads).
	ServerCPUPerSyncMS float64 `json:"server_cpu_ms_per_sync,omitempty"`
	// StartLagP99MS and StartLagMaxMS say how late iterations started
	// against their schedule: the generator's own delay (not in the RPC
	// latencies); large values mean it could not keep up.
	StartLagP99MS float64 `json:"start_lag_p99_ms"`
	StartLagMaxMS float64 `json:"start_lag_max_ms"`
	// Skipped counts due iterations not run because the agent's previous
	// one was still running.
	Skipped int `json:"skipped_iterations"`
	// AgentsSynced counts the agents whose last sync of a syncing load
	// succeeded with all their entries; MinSyncsPerAgent is the fewest
	// successful syncs of one agent (-1 when the load does not sync).
	AgentsSynced     int `json:"agents_synced"`
	MinSyncsPerAgent int `json:"min_syncs_per_agent"`
	// MachineCPUSeconds is the busy CPU time of the whole machine during
	// the phase; OtherCPUSeconds what is left of it after the server and
	// the load generator: other processes sharing the cores, which delay
	// both and so show in the latencies.
	MachineCPUSeconds float64 `json:"machine_cpu_seconds,omitempty"`
	OtherCPUSeconds   float64 `json:"other_processes_cpu_seconds,omitempty"`
	// Goroutines is the load generator's peak goroutine count seen by the
	// progress lines (zero without progress).
	Goroutines int64 `json:"generator_goroutines,omitempty"`
}

// SetupReport is the result of Setup.
type SetupReport struct {
	Entries        int     `json:"entries"`
	Agents         int     `json:"agents"`
	PerAgent       int     `json:"entries_per_agent"`
	SeedSeconds    float64 `json:"seed_seconds"`
	SeedPerSecond  float64 `json:"entries_created_per_second"`
	AttestSeconds  float64 `json:"attest_seconds"`
	WarmupSeconds  float64 `json:"warmup_seconds"`
	RSSAfterBytes  int64   `json:"server_rss_after_setup_bytes,omitempty"`
	CPUSecondsUsed float64 `json:"server_cpu_seconds_setup,omitempty"`
	// RPCs holds AttestAgent latencies.
	RPCs   map[string]*RPCStats `json:"rpcs"`
	Errors int                  `json:"errors"`
}

// WriteText writes a human-readable table of the report.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "phase %q: %d agents, %d entries, %.1fs", r.Name, r.Agents, r.Entries, r.Seconds)
	if r.Interval > 0 {
		fmt.Fprintf(&b, ", every %gs", r.Interval)
	}
	fmt.Fprintf(&b, ", %d errors\n", r.Errors)
	fmt.Fprintf(&b, "  %-22s %9s %10s %10s %9s %9s %9s %9s  %s\n", "rpc", "calls", "calls/s", "items/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors")
	names := slices.Collect(maps.Keys(r.RPCs))
	sort.Strings(names)
	for _, name := range names {
		s := r.RPCs[name]
		fmt.Fprintf(&b, "  %-22s %9d %10.1f %10.1f %9.2f %9.2f %9.2f %9.2f  %s\n", name, s.Calls, s.PerSecond, s.ItemsPerS,
			s.P50MS, s.P95MS, s.P99MS, s.MaxMS, formatErrors(s.Errors))
	}
	if r.X509PerSecond > 0 {
		fmt.Fprintf(&b, "  X509-SVIDs/s: %.1f\n", r.X509PerSecond)
	}
	if p := r.Server; p != nil {
		fmt.Fprintf(&b, "  server pid %d: RSS %.1f MiB (peak %.1f MiB), CPU %.2fs", p.PID, mib(p.RSSEndBytes), mib(p.RSSPeakBytes), p.CPUSeconds)
		if r.ServerCPUPerSyncMS > 0 {
			fmt.Fprintf(&b, ", %.3f ms CPU per sync", r.ServerCPUPerSyncMS)
		}
		b.WriteString("\n")
	}
	if p := r.Client; p != nil {
		fmt.Fprintf(&b, "  load generator: CPU %.2fs, RSS %.1f MiB (peak %.1f MiB)", p.CPUSeconds, mib(p.RSSEndBytes), mib(p.RSSPeakBytes))
		if r.Goroutines > 0 {
			fmt.Fprintf(&b, ", %d goroutines", r.Goroutines)
		}
		b.WriteString("\n")
	}
	if r.MachineCPUSeconds > 0 && r.Seconds > 0 {
		fmt.Fprintf(&b, "  machine: %.2f cores busy on average, %.2f of them other processes\n", r.MachineCPUSeconds/r.Seconds, r.OtherCPUSeconds/r.Seconds)
	}
	fmt.Fprintf(&b, "  start lag p99 %.2f ms, max %.2f ms, %d iterations skipped (agent busy)", r.StartLagP99MS, r.StartLagMaxMS, r.Skipped)
	if r.MinSyncsPerAgent >= 0 {
		fmt.Fprintf(&b, "; %d/%d agents synced all their entries, at least %d syncs each", r.AgentsSynced, r.Agents, r.MinSyncsPerAgent)
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteText writes a human-readable summary of the setup.
func (s *SetupReport) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "setup: %d entries (%d per agent) in %.1fs (%.0f/s), %d agents attested in %.1fs, warm-up %.1fs, %d errors\n",
		s.Entries, s.PerAgent, s.SeedSeconds, s.SeedPerSecond, s.Agents, s.AttestSeconds, s.WarmupSeconds, s.Errors)
	if a := s.RPCs[RPCAttest]; a != nil {
		fmt.Fprintf(&b, "  AttestAgent p50 %.2f ms, p99 %.2f ms\n", a.P50MS, a.P99MS)
	}
	if s.RSSAfterBytes > 0 {
		fmt.Fprintf(&b, "  server RSS after setup %.1f MiB, CPU %.2fs\n", mib(s.RSSAfterBytes), s.CPUSecondsUsed)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func formatErrors(m map[string]int) string {
	if len(m) == 0 {
		return "-"
	}
	keys := slices.Collect(maps.Keys(m))
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, ",")
}
