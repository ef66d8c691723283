// Command compare runs the same load against arbor and a real spire-server
// v1.13.3, one after the other on this machine, for each datastore (SQLite,
// then PostgreSQL) and each number of entries, and writes a ratio table
// (results.md), the raw numbers (results.json, raw/) and SVG charts of the
// scale curves into an output folder:
//
//	go run ./test/bench/compare --out bench-out --entries 1000,10000,100000 --runs 3
//
// Each server run starts a fresh server with a fresh datastore, seeds the
// entries and attests the agents with the load generator (test/load/loadgen),
// then measures: agent sync at a fixed interval (latency and server CPU per
// sync), X509-SVID issuance back to back (throughput), JWT-SVIDs, and at the
// smallest size X509-SVIDs/s for a growing number of agents. The raw signing
// limit of the machine is measured in the same run. See docs/performance.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/test/bench/benchproc"
	"github.com/arborid/arbor/test/load/loadgen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "compare:", err)
		}
		os.Exit(1)
	}
}

// options are the command's flags.
type options struct {
	out          string
	servers      []string
	backends     []string
	entries      []int
	runs         int
	agents       int
	perAgent     int
	curve        []int
	shape        string
	syncInterval time.Duration
	phase        time.Duration
	curvePhase   time.Duration
	rawDuration  time.Duration
	arborBin     string
	spireBin     string
	pgDSN        string
	timeout      time.Duration
	quiet        bool
	seedConc     int
	loadgenGOGC  int
	from         []string
}

func parseInts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(strings.ReplaceAll(strings.ToLower(f), "k", "000"))
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("empty list")
	}
	return out, nil
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{}
	servers := fs.String("servers", "arbor,spire", "servers to measure")
	backends := fs.String("backends", "sqlite,postgres", "datastores: sqlite, postgres")
	entries := fs.String("entries", "1000,10000,100000", "total registration entries per size (k = 000)")
	curve := fs.String("agent-curve", "1,4,16", "agent counts for the SVIDs/s vs agents curve (at the smallest size)")
	fs.StringVar(&o.out, "out", "bench-out", "output folder")
	fs.IntVar(&o.runs, "runs", 2, "runs of each server per size; the report shows medians")
	fs.IntVar(&o.agents, "agents", 16, "simulated agents for the sync and issuance phases")
	fs.IntVar(&o.perAgent, "entries-per-agent", 10, "entries each simulated agent is authorized for")
	fs.StringVar(&o.shape, "shape", "unix", "selector shape: unix, k8s, mixed")
	fs.DurationVar(&o.syncInterval, "sync-interval", 250*time.Millisecond, "each agent's sync interval in the sync phase")
	fs.DurationVar(&o.phase, "phase", 10*time.Second, "duration of the sync, X509 and JWT phases")
	fs.DurationVar(&o.curvePhase, "curve-phase", 5*time.Second, "duration of each agent-curve phase")
	fs.DurationVar(&o.rawDuration, "raw", 3*time.Second, "duration of each raw signing limit measurement")
	fs.StringVar(&o.arborBin, "arbor-bin", "", "arbor binary (default: go build ./cmd/arbor into <out>/bin)")
	fs.StringVar(&o.spireBin, "spire-bin", "", "directory of spire-server (default: bash test/spirepeer/build.sh)")
	fs.StringVar(&o.pgDSN, "pg-dsn", envOr("ARBOR_TEST_POSTGRES_DSN", "postgres://arbor:arbor@127.0.0.1:5432/arbor_test?sslmode=disable"),
		"PostgreSQL DSN of a role that may create databases; each server run gets a fresh database")
	fs.DurationVar(&o.timeout, "timeout", 3*time.Hour, "bound on the whole comparison")
	fs.IntVar(&o.seedConc, "seed-concurrency", 4, "BatchCreateEntry calls in flight while seeding (setup only, not measured)")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress lines")
	fs.IntVar(&o.loadgenGOGC, "loadgen-gogc", 100, "GOGC of this process, which runs the load generator (not of the servers): its collections pause the agents it times")
	from := fs.String("from", "", "comma-separated results.json files of earlier runs: merge them into one report in --out instead of measuring")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *from != "" {
		o.from = strings.Split(*from, ",")
	}
	var err error
	if o.entries, err = parseInts(*entries); err != nil {
		return nil, fmt.Errorf("--entries: %w", err)
	}
	slices.Sort(o.entries)
	if o.curve, err = parseInts(*curve); err != nil {
		return nil, fmt.Errorf("--agent-curve: %w", err)
	}
	slices.Sort(o.curve)
	o.servers = strings.Split(*servers, ",")
	for _, s := range o.servers {
		if s != "arbor" && s != "spire" {
			return nil, fmt.Errorf("--servers: unknown server %q (arbor, spire)", s)
		}
	}
	o.backends = strings.Split(*backends, ",")
	for _, b := range o.backends {
		if b != "sqlite" && b != "postgres" {
			return nil, fmt.Errorf("--backends: unknown datastore %q (sqlite, postgres)", b)
		}
	}
	if o.runs < 1 || o.agents < 1 || o.perAgent < 1 {
		return nil, errors.New("--runs, --agents and --entries-per-agent must be at least 1")
	}
	return o, nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// Sample is one server run: one server, datastore, size and repetition.
type Sample struct {
	Server  string `json:"server"`
	Backend string `json:"backend"`
	Entries int    `json:"entries"`
	Run     int    `json:"run"`
	// RSSSeededBytes is the server's RSS after seeding and a short settle.
	RSSSeededBytes int64                      `json:"rss_seeded_bytes"`
	Setup          *loadgen.SetupReport       `json:"setup"`
	Phases         map[string]*loadgen.Report `json:"phases"`
	// Raw is the raw signing limit measured just before the x509 phase.
	Raw *loadgen.Raw `json:"raw_signing,omitempty"`
	// Curve maps an agent count to that phase's report.
	Curve map[int]*loadgen.Report `json:"curve,omitempty"`
	// GC is what garbage collection did in each phase, in the server and
	// in the load generator.
	GC    map[string]*PhaseGC `json:"gc,omitempty"`
	Error string              `json:"error,omitempty"`
}

// Results is everything one comparison measured.
type Results struct {
	Started    time.Time     `json:"started"`
	Seconds    float64       `json:"seconds"`
	Options    any           `json:"options"`
	CPUs       int           `json:"cpus"`
	RawSigning []loadgen.Raw `json:"raw_signing"`
	Samples    []*Sample     `json:"samples"`
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if len(o.from) > 0 {
		return merge(o)
	}
	repo, err := benchproc.RepoRoot()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(o.out, "raw"), 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(o.out, "logs"), 0o755); err != nil {
		return err
	}
	logf := func(format string, a ...any) {
		fmt.Fprintf(stderr, "compare: "+format+"\n", a...)
	}
	if o.arborBin == "" && slices.Contains(o.servers, "arbor") {
		logf("building arbor")
		bin, err := filepath.Abs(filepath.Join(o.out, "bin"))
		if err != nil {
			return err
		}
		if o.arborBin, err = benchproc.BuildArbor(ctx, repo, bin); err != nil {
			return err
		}
	}
	if o.spireBin == "" && slices.Contains(o.servers, "spire") {
		logf("building spire-server v1.13.3 (cached after the first time)")
		if o.spireBin, err = benchproc.BuildSpire(ctx, repo); err != nil {
			return err
		}
	}
	debug.SetGCPercent(o.loadgenGOGC)
	res := &Results{Started: time.Now(), CPUs: runtime.NumCPU(), Options: map[string]any{
		"loadgen_gogc": o.loadgenGOGC,
		"servers":      o.servers, "backends": o.backends, "entries": o.entries, "runs": o.runs, "agents": o.agents,
		"entries_per_agent": o.perAgent, "agent_curve": o.curve, "shape": o.shape, "sync_interval": o.syncInterval.String(),
		"phase": o.phase.String(), "curve_phase": o.curvePhase.String(), "arbor_commit": gitCommit(ctx, repo),
	}}
	measureRaw := func() error {
		r, err := loadgen.RawSigningRate(o.rawDuration)
		if err != nil {
			return err
		}
		res.RawSigning = append(res.RawSigning, r)
		logf("raw signing limit: %.0f SVIDs/s, %.0f µs CPU per SVID", r.PerSecond, r.CPUMicrosPerSVID)
		return nil
	}
	if err := measureRaw(); err != nil {
		return err
	}
	for _, backend := range o.backends {
		for si, n := range o.entries {
			for r := range o.runs {
				// Alternate the order so that drift in the machine's load
				// does not always favour the same server.
				order := slices.Clone(o.servers)
				if r%2 == 1 {
					slices.Reverse(order)
				}
				for _, kind := range order {
					name := fmt.Sprintf("%s-%s-%d-run%d", kind, backend, n, r+1)
					logf("%s: starting", name)
					s := measure(ctx, o, serverSpec{kind: kind, backend: backend, arborBin: o.arborBin, spireBin: o.spireBin,
						pgBase: o.pgDSN, logDir: filepath.Join(o.out, "logs"), name: name}, n, r+1, si == 0, stderr)
					res.Samples = append(res.Samples, s)
					if s.Error != "" {
						logf("%s: FAILED: %s", name, s.Error)
					} else {
						logf("%s: done: %s", name, s.oneLine())
					}
					if err := writeJSON(filepath.Join(o.out, "raw", name+".json"), s); err != nil {
						return err
					}
					if ctx.Err() != nil {
						return ctx.Err()
					}
				}
			}
		}
	}
	if err := measureRaw(); err != nil {
		return err
	}
	res.Seconds = time.Since(res.Started).Seconds()
	if err := writeJSON(filepath.Join(o.out, "results.json"), res); err != nil {
		return err
	}
	sum := summarize(res)
	if err := os.WriteFile(filepath.Join(o.out, "results.md"), []byte(sum.markdown(res)), 0o644); err != nil {
		return err
	}
	if err := sum.writeCharts(o.out, res); err != nil {
		return err
	}
	logf("wrote %s/results.md, results.json, *.svg", o.out)
	for _, s := range res.Samples {
		if s.Error != "" {
			return fmt.Errorf("%d server runs failed; see results.md", countFailed(res))
		}
	}
	return nil
}

func countFailed(res *Results) int {
	n := 0
	for _, s := range res.Samples {
		if s.Error != "" {
			n++
		}
	}
	return n
}

// merge reads earlier results.json files and writes one report of all their
// samples (medians over every run) into o.out.
func merge(o *options) error {
	all := &Results{Options: map[string]any{"merged_from": o.from}}
	for i, path := range o.from {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var r Results
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if i == 0 || r.Started.Before(all.Started) {
			all.Started = r.Started
		}
		all.Seconds += r.Seconds
		all.CPUs = r.CPUs
		all.RawSigning = append(all.RawSigning, r.RawSigning...)
		all.Samples = append(all.Samples, r.Samples...)
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(o.out, "results.json"), all); err != nil {
		return err
	}
	sum := summarize(all)
	if err := os.WriteFile(filepath.Join(o.out, "results.md"), []byte(sum.markdown(all)), 0o644); err != nil {
		return err
	}
	return sum.writeCharts(o.out, all)
}

// gitCommit names the checkout the arbor binary was built from (when it was
// built by this run), with "+dirty" for local changes.
func gitCommit(ctx context.Context, repo string) string {
	out, err := exec.CommandContext(ctx, "git", "-C", repo, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.CommandContext(ctx, "git", "-C", repo, "status", "--porcelain", "--", "cmd", "internal", "root", "topology").Output(); err == nil && len(st) > 0 {
		c += "+dirty"
	}
	return c
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func (s *Sample) oneLine() string {
	var parts []string
	if p := s.Phases["sync"]; p != nil {
		if st := p.RPCs[loadgen.RPCSync]; st != nil {
			parts = append(parts, fmt.Sprintf("sync p99 %.2fms cpu/sync %.3fms", st.P99MS, p.ServerCPUPerSyncMS))
		}
		if g := s.GC["sync"]; g != nil {
			parts = append(parts, fmt.Sprintf("sync GCs server %d (stw %.1fms, mark %.0fms) loadgen %d (pause %.1fms)",
				g.ServerCycles, g.ServerSTWMS, g.ServerMarkMS, g.ClientCycles, g.ClientPauseMS))
		}
	}
	if p := s.Phases["x509"]; p != nil {
		parts = append(parts, fmt.Sprintf("x509 %.0f/s", p.X509PerSecond))
	}
	parts = append(parts, fmt.Sprintf("rss %.0fMiB", float64(s.RSSSeededBytes)/(1<<20)))
	return strings.Join(parts, ", ")
}

// measure runs one server through every phase and never returns an error:
// a failure is recorded in the sample so that the comparison goes on.
func measure(ctx context.Context, o *options, spec serverSpec, entries, runNo int, curve bool, stderr io.Writer) *Sample {
	s := &Sample{Server: spec.kind, Backend: spec.backend, Entries: entries, Run: runNo, Phases: map[string]*loadgen.Report{}}
	if err := measureInto(ctx, o, spec, s, curve, stderr); err != nil {
		s.Error = err.Error()
	}
	return s
}

func measureInto(ctx context.Context, o *options, spec serverSpec, s *Sample, curve bool, stderr io.Writer) error {
	srv, err := startServer(ctx, spec)
	if err != nil {
		return err
	}
	defer srv.Stop()
	agents := o.agents
	if curve {
		agents = max(agents, o.curve[len(o.curve)-1])
	}
	cfg := loadgen.Config{
		AdminSocket: srv.AdminSock, ServerAddr: srv.Addr, TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"),
		Agents: agents, Entries: s.Entries, EntriesPerAgent: o.perAgent, Shape: loadgen.Shape(o.shape),
		SeedConcurrency: o.seedConc, ServerPID: srv.PID(), ProgressEvery: 5 * time.Second, WarmupTimeout: 3 * time.Minute,
	}
	if !o.quiet {
		cfg.Progress = stderr
	}
	gen, err := loadgen.New(cfg)
	if err != nil {
		return err
	}
	defer gen.Close()
	if s.Setup, err = gen.Setup(ctx); err != nil {
		return err
	}
	// Let the server settle (caches rebuilt, garbage collected) before
	// reading its memory with the entries loaded.
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(3 * time.Second):
	}
	p, err := loadgen.ReadProc(srv.PID())
	if err != nil {
		return err
	}
	s.RSSSeededBytes = p.RSSBytes
	phases := []loadgen.Load{
		{Name: "sync", Agents: o.agents, Interval: o.syncInterval, Duration: o.phase, Sync: true},
		{Name: "x509", Agents: o.agents, Duration: o.phase, X509: true, X509Batch: 50},
		{Name: "jwt", Agents: o.agents, Duration: o.phase / 2, JWT: 1},
	}
	for _, load := range phases {
		if load.Name == "x509" {
			// The ceiling for this server's issuance, measured next to it
			// (the machine is shared, so the limit drifts).
			raw, err := loadgen.RawSigningRate(o.rawDuration)
			if err != nil {
				return err
			}
			s.Raw = &raw
		}
		gcw := watchGC(srv.Log)
		rep, err := gen.Run(ctx, load)
		if err != nil {
			return err
		}
		s.Phases[load.Name] = rep
		if s.GC == nil {
			s.GC = map[string]*PhaseGC{}
		}
		s.GC[load.Name] = gcw.done()
	}
	if curve {
		s.Curve = map[int]*loadgen.Report{}
		for _, n := range o.curve {
			rep, err := gen.Run(ctx, loadgen.Load{Name: fmt.Sprintf("x509-%dagents", n), Agents: n, Duration: o.curvePhase, X509: true, X509Batch: 50})
			if err != nil {
				return err
			}
			s.Curve[n] = rep
		}
	}
	return nil
}
