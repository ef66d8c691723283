package main

import (
	"encoding/xml"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/arborid/arbor/test/load/loadgen"
)

func sample(server, backend string, entries, run int, x509, syncP99 float64, rss int64) *Sample {
	return &Sample{Server: server, Backend: backend, Entries: entries, Run: run, RSSSeededBytes: rss,
		Setup: &loadgen.SetupReport{SeedPerSecond: 100},
		Raw:   &loadgen.Raw{PerSecond: 1000, CPUMicrosPerSVID: 2000},
		Phases: map[string]*loadgen.Report{
			"x509": {X509PerSecond: x509, Server: &loadgen.ProcStats{CPUSeconds: 1},
				RPCs: map[string]*loadgen.RPCStats{loadgen.RPCX509: {Items: int64(x509), P99MS: 5}}},
			"sync": {ServerCPUPerSyncMS: 0.5, RPCs: map[string]*loadgen.RPCStats{loadgen.RPCSync: {P50MS: 1, P99MS: syncP99}}},
		},
		Curve: map[int]*loadgen.Report{1: {X509PerSecond: x509 / 2}},
	}
}

// TestSummaryAndCharts feeds known samples through the report and checks
// medians, ratios and that every chart is well-formed SVG.
func TestSummaryAndCharts(t *testing.T) {
	res := &Results{CPUs: 2, RawSigning: []loadgen.Raw{{PerSecond: 1000}}, Samples: []*Sample{
		sample("arbor", "sqlite", 1000, 1, 900, 1, 30<<20),
		sample("arbor", "sqlite", 1000, 2, 700, 3, 32<<20),
		sample("arbor", "sqlite", 1000, 3, 800, 2, 31<<20),
		sample("spire", "sqlite", 1000, 1, 400, 10, 100<<20),
		sample("spire", "sqlite", 1000, 2, 400, 10, 100<<20),
		{Server: "spire", Backend: "sqlite", Entries: 1000, Run: 3, Error: "boom"},
	}}
	sum := summarize(res)
	cases := []struct {
		metric, server string
		want           stat
	}{
		{"x509_per_s", "arbor", stat{Median: 800, Min: 700, Max: 900, N: 3}},
		{"x509_per_s", "spire", stat{Median: 400, Min: 400, Max: 400, N: 2}},
		{"sync_p99_ms", "arbor", stat{Median: 2, Min: 1, Max: 3, N: 3}},
		{"rss_seeded_mib", "arbor", stat{Median: 31, Min: 30, Max: 32, N: 3}},
		{"x509_vs_raw", "arbor", stat{Median: 0.8, Min: 0.7, Max: 0.9, N: 3}},
	}
	for _, tc := range cases {
		got, _ := sum.get("sqlite", tc.server, tc.metric, 1000)
		if got != tc.want {
			t.Errorf("%s %s = %+v, want %+v", tc.server, tc.metric, got, tc.want)
		}
	}
	if r, ok := sum.ratio("sqlite", "x509_per_s", 1000); !ok || r != 2 {
		t.Errorf("x509 ratio = %v, %v; want 2", r, ok)
	}
	md := sum.markdown(res)
	for _, want := range []string{"| X509-SVID issuance vs spire | sqlite | 1k | 800.0 (700.0–900.0)/s | 400.0/s | 2.00× | ≥ 2× | yes |",
		"| agent sync p99 | sqlite | 1k | 2.00 (1.00–3.00) ms | 10.00 ms | 0.200× | ≤ 0.2× (at 100k) | yes |",
		"spire sqlite 1k run 3: boom"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	dir := t.TempDir()
	if err := sum.writeCharts(dir, res); err != nil {
		t.Fatal(err)
	}
	for _, c := range chartFiles {
		b, err := readFile(dir, c.file)
		if err != nil {
			t.Fatal(err)
		}
		d := xml.NewDecoder(strings.NewReader(b))
		for {
			if _, err := d.Token(); err != nil {
				if err.Error() != "EOF" {
					t.Errorf("%s is not well-formed XML: %v", c.file, err)
				}
				break
			}
		}
		if !strings.Contains(b, "<polyline") {
			t.Errorf("%s draws no line", c.file)
		}
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"--entries", "10k,1k", "--agent-curve", "4,1", "--backends", "sqlite"}, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	if got := o.entries; len(got) != 2 || got[0] != 1000 || got[1] != 10000 {
		t.Errorf("entries = %v, want [1000 10000]", got)
	}
	if got := o.curve; len(got) != 2 || got[0] != 1 || got[1] != 4 {
		t.Errorf("agent curve = %v, want [1 4]", got)
	}
	for _, bad := range [][]string{{"--entries", "x"}, {"--servers", "envoy"}, {"--backends", "mysql"}, {"--runs", "0"}, {"stray"}} {
		if _, err := parseFlags(bad, &strings.Builder{}); err == nil {
			t.Errorf("parseFlags(%q) succeeded", bad)
		}
	}
}

func readFile(dir, name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	return string(b), err
}

// TestMerge merges two earlier results files into one report whose medians
// cover the runs of both.
func TestMerge(t *testing.T) {
	dir := t.TempDir()
	a := &Results{CPUs: 2, Samples: []*Sample{sample("arbor", "sqlite", 1000, 1, 600, 1, 30<<20), sample("spire", "sqlite", 1000, 1, 300, 5, 90<<20)}}
	b := &Results{CPUs: 2, Samples: []*Sample{sample("arbor", "sqlite", 1000, 1, 1000, 1, 30<<20), sample("spire", "sqlite", 1000, 1, 500, 5, 90<<20)}}
	pa, pb := filepath.Join(dir, "a.json"), filepath.Join(dir, "b.json")
	if err := writeJSON(pa, a); err != nil {
		t.Fatal(err)
	}
	if err := writeJSON(pb, b); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "merged")
	o, err := parseFlags([]string{"--from", pa + "," + pb, "--out", out}, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	if err := merge(o); err != nil {
		t.Fatal(err)
	}
	md, err := readFile(out, "results.md")
	if err != nil {
		t.Fatal(err)
	}
	// Medians of (600, 1000) and (300, 500): 800 and 400, ratio 2.
	if want := "| X509-SVID issuance vs spire | sqlite | 1k | 800.0 (600.0–1000)/s | 400.0 (300.0–500.0)/s | 2.00× | ≥ 2× | yes |"; !strings.Contains(md, want) {
		t.Errorf("merged report lacks %q:\n%s", want, md)
	}
}

// TestServerGCFromTrace reads gctrace lines as arbor and spire-server print
// them, between other log lines.
func TestServerGCFromTrace(t *testing.T) {
	log := strings.Join([]string{
		`time=2026-12-04T18:55:00Z level=WARN msg="something"`,
		`gc 48 @27.750s 2%: 5.0+359+0.005 ms clock, 10+0.093/43/336+0.011 ms cpu, 101->116->69 MB, 117 MB goal, 0 MB stacks, 1 MB globals, 2 P`,
		`gc 49 @28.390s 2%: 2.3+42+0.5 ms clock, 4.7+0.67/17/35+0.011 ms cpu, 120->121->56 MB, 141 MB goal, 0 MB stacks, 1 MB globals, 2 P`,
		`gc 50 @28.711s 3%: 0.1+1+0.1 ms clock, 0.2+0/1/0+0.2 ms cpu, 4->4->0 MB, 4 MB goal, 0 MB stacks, 0 MB globals, 2 P (forced)`,
		`not a gc line`,
	}, "\n")
	g := &PhaseGC{}
	addServerGC(g, strings.NewReader(log))
	want := PhaseGC{ServerCycles: 3, ServerSTWMS: 5.005 + 2.8 + 0.2, ServerMaxSTWMS: 5, ServerMarkMS: 402, ServerHeapMB: 0}
	if g.ServerCycles != want.ServerCycles || !near(g.ServerSTWMS, want.ServerSTWMS) || g.ServerMaxSTWMS != want.ServerMaxSTWMS ||
		!near(g.ServerMarkMS, want.ServerMarkMS) || g.ServerHeapMB != want.ServerHeapMB {
		t.Errorf("addServerGC = %+v, want %+v", *g, want)
	}
}

func near(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }

// TestWatchGC counts a collection of this process and one the server logs
// while the phase runs, and none written before it began.
func TestWatchGC(t *testing.T) {
	path := filepath.Join(t.TempDir(), "server.log")
	before := "gc 1 @0.1s 0%: 1+1+1 ms clock, 1+0/1/0+1 ms cpu, 4->4->1 MB, 4 MB goal, 0 MB stacks, 0 MB globals, 2 P\n"
	if err := os.WriteFile(path, []byte(before), 0o644); err != nil {
		t.Fatal(err)
	}
	w := watchGC(path)
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("gc 2 @1.0s 0%: 0.5+7+0.25 ms clock, 1+0/1/0+1 ms cpu, 8->9->3 MB, 9 MB goal, 0 MB stacks, 0 MB globals, 2 P\n")
	f.Close()
	runtime.GC()
	g := w.done()
	if g.ServerCycles != 1 || g.ServerMarkMS != 7 || g.ServerSTWMS != 0.75 || g.ServerHeapMB != 3 {
		t.Errorf("server GC = %+v, want 1 cycle, mark 7 ms, STW 0.75 ms, heap 3 MB", *g)
	}
	if g.ClientCycles < 1 || g.ClientPauseMS <= 0 {
		t.Errorf("client GC = %d cycles, %v ms paused; want at least the forced one", g.ClientCycles, g.ClientPauseMS)
	}
}
