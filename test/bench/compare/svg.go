package main

import (
	"fmt"
	"html"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// point and series are what a line chart draws.
type point struct{ x, y float64 }

type series struct {
	name   string
	color  string
	dashed bool
	pts    []point
}

// chart is a line chart written as a standalone SVG.
type chart struct {
	title, xLabel, yLabel string
	logX, logY            bool
	series                []series
	// hline draws a labelled horizontal reference line when label != "".
	hline      float64
	hlineLabel string
}

const (
	chartW, chartH                     = 760, 440
	padLeft, padRight, padTop, padBott = 80, 200, 44, 56
)

// axis maps data values to pixels, linearly or in log10.
type axis struct {
	lo, hi   float64
	log      bool
	from, to float64 // pixels
}

func (a axis) pos(v float64) float64 {
	f := func(x float64) float64 {
		if a.log {
			return math.Log10(x)
		}
		return x
	}
	if a.hi == a.lo {
		return (a.from + a.to) / 2
	}
	return a.from + (f(v)-f(a.lo))/(f(a.hi)-f(a.lo))*(a.to-a.from)
}

// ticks returns tick values: powers of 10 (and 2×, 5×) for log axes, a
// 1-2-5 step for linear ones.
func (a axis) ticks() []float64 {
	var out []float64
	if a.log {
		for e := math.Floor(math.Log10(a.lo)); e <= math.Ceil(math.Log10(a.hi)); e++ {
			for _, m := range []float64{1, 2, 5} {
				v := m * math.Pow(10, e)
				if v >= a.lo*0.999 && v <= a.hi*1.001 {
					out = append(out, v)
				}
			}
		}
		return out
	}
	step := niceStep((a.hi - a.lo) / 5)
	for v := math.Ceil(a.lo/step) * step; v <= a.hi*1.0001; v += step {
		out = append(out, v)
	}
	return out
}

func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

// bounds returns an axis range covering vs with some headroom.
func bounds(vs []float64, log bool) (float64, float64) {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range vs {
		if log && v <= 0 {
			continue
		}
		lo, hi = math.Min(lo, v), math.Max(hi, v)
	}
	if math.IsInf(lo, 0) {
		return 1, 10
	}
	if log {
		lo = math.Pow(10, math.Floor(math.Log10(lo)))
		hi = math.Pow(10, math.Ceil(math.Log10(hi)))
		if lo == hi {
			hi = lo * 10
		}
		return lo, hi
	}
	lo = math.Min(0, lo)
	if hi <= lo {
		hi = lo + 1
	}
	step := niceStep((hi - lo) / 5)
	return lo, math.Ceil(hi*1.05/step) * step
}

func fmtTick(v float64) string {
	switch {
	case v >= 1e6 && math.Mod(v, 1e6) == 0:
		return fmt.Sprintf("%gM", v/1e6)
	case v >= 1e3 && math.Mod(v, 1e3) == 0:
		return fmt.Sprintf("%gk", v/1e3)
	default:
		return fmt.Sprintf("%g", math.Round(v*1000)/1000)
	}
}

// svg renders the chart.
func (c chart) svg() string {
	var xs, ys []float64
	for _, s := range c.series {
		for _, p := range s.pts {
			xs, ys = append(xs, p.x), append(ys, p.y)
		}
	}
	if c.hlineLabel != "" {
		ys = append(ys, c.hline)
	}
	xlo, xhi := bounds(xs, c.logX)
	if c.logX && len(xs) > 0 {
		// Entry counts are the data: keep the axis on them.
		xlo, xhi = minOf(xs)/1.4, maxOf(xs)*1.4
	}
	ylo, yhi := bounds(ys, c.logY)
	x := axis{lo: xlo, hi: xhi, log: c.logX, from: padLeft, to: chartW - padRight}
	y := axis{lo: ylo, hi: yhi, log: c.logY, from: chartH - padBott, to: padTop}

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", chartW, chartH, chartW, chartH)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="15" font-weight="bold">%s</text>`+"\n", padLeft, html.EscapeString(c.title))
	// Grid and ticks.
	for _, t := range y.ticks() {
		py := y.pos(t)
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#e5e5e5"/>`+"\n", padLeft, chartW-padRight, py, py)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", padLeft-6, py, fmtTick(t))
	}
	xticks := x.ticks()
	if c.logX {
		xticks = uniqueSorted(xs)
	}
	for _, t := range xticks {
		px := x.pos(t)
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#e5e5e5"/>`+"\n", px, px, padTop, chartH-padBott)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", px, chartH-padBott+16, fmtTick(t))
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#444"/>`+"\n", padLeft, padTop, chartW-padLeft-padRight, chartH-padTop-padBott)
	scale := ""
	if c.logX {
		scale = " (log scale)"
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", (padLeft+chartW-padRight)/2, chartH-12, html.EscapeString(c.xLabel+scale))
	yscale := ""
	if c.logY {
		yscale = " (log scale)"
	}
	fmt.Fprintf(&b, `<text transform="translate(18 %d) rotate(-90)" text-anchor="middle">%s</text>`+"\n", (padTop+chartH-padBott)/2, html.EscapeString(c.yLabel+yscale))
	if c.hlineLabel != "" {
		py := y.pos(c.hline)
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#888" stroke-dasharray="2 4"/>`+"\n", padLeft, chartW-padRight, py, py)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" fill="#666">%s</text>`+"\n", padLeft+4, py-4, html.EscapeString(c.hlineLabel))
	}
	// Series and legend.
	for i, s := range c.series {
		dash := ""
		if s.dashed {
			dash = ` stroke-dasharray="7 4"`
		}
		var pts []string
		for _, p := range s.pts {
			if (c.logY && p.y <= 0) || (c.logX && p.x <= 0) {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x.pos(p.x), y.pos(p.y)))
		}
		if len(pts) > 0 {
			fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", strings.Join(pts, " "), s.color, dash)
			for _, p := range pts {
				xy := strings.Split(p, ",")
				fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="3.5" fill="%s"/>`+"\n", xy[0], xy[1], s.color)
			}
		}
		ly := padTop + 10 + 20*i
		lx := chartW - padRight + 14
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="2"%s/>`+"\n", lx, lx+26, ly, ly, s.color, dash)
		fmt.Fprintf(&b, `<text x="%d" y="%d" dominant-baseline="middle">%s</text>`+"\n", lx+32, ly, html.EscapeString(s.name))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func minOf(v []float64) float64 {
	m := math.Inf(1)
	for _, x := range v {
		m = math.Min(m, x)
	}
	return m
}

func maxOf(v []float64) float64 {
	m := math.Inf(-1)
	for _, x := range v {
		m = math.Max(m, x)
	}
	return m
}

func uniqueSorted(v []float64) []float64 {
	seen := map[float64]bool{}
	var out []float64
	for _, x := range v {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

var seriesStyle = map[string]struct {
	color  string
	dashed bool
}{
	"arbor/sqlite":   {"#1b7837", false},
	"arbor/postgres": {"#1b7837", true},
	"spire/sqlite":   {"#9e3a26", false},
	"spire/postgres": {"#9e3a26", true},
}

func styled(server, backend string, pts []point) series {
	st := seriesStyle[server+"/"+backend]
	name := server
	if server == "spire" {
		name = "spire-server"
	}
	return series{name: name + " " + backend, color: st.color, dashed: st.dashed, pts: pts}
}

var chartFiles = []struct{ file, title string }{
	{"x509_vs_entries.svg", "X509-SVID issuance throughput vs entries"},
	{"sync_p99_vs_entries.svg", "agent sync p99 latency vs entries"},
	{"sync_cost_vs_entries.svg", "server CPU per sync vs entries"},
	{"rss_vs_entries.svg", "server RSS vs entries"},
	{"x509_vs_agents.svg", "X509-SVID issuance vs agents"},
}

// writeCharts writes the scale curves as SVG files into dir.
func (s *summary) writeCharts(dir string, res *Results) error {
	perEntries := func(metric string) []series {
		var out []series
		for _, server := range s.servers {
			for _, backend := range s.backends {
				var pts []point
				for _, n := range s.entries {
					if st, ok := s.get(backend, server, metric, n); ok {
						pts = append(pts, point{float64(n), st.Median})
					}
				}
				out = append(out, styled(server, backend, pts))
			}
		}
		return out
	}
	var agentSeries []series
	for _, server := range s.servers {
		for _, backend := range s.backends {
			var pts []point
			for _, n := range s.agents {
				if st := s.curve[curveCell{backend, server, n}]; st.N > 0 {
					pts = append(pts, point{float64(n), st.Median})
				}
			}
			agentSeries = append(agentSeries, styled(server, backend, pts))
		}
	}
	raw := ""
	if s.raw.N > 0 {
		raw = fmt.Sprintf("raw signing limit %.0f/s", s.raw.Median)
	}
	charts := []chart{
		{title: chartFiles[0].title, xLabel: "registration entries", yLabel: "X509-SVIDs per second", logX: true,
			series: perEntries("x509_per_s"), hline: s.raw.Median, hlineLabel: raw},
		{title: chartFiles[1].title, xLabel: "registration entries", yLabel: "sync p99, ms", logX: true, logY: true, series: perEntries("sync_p99_ms")},
		{title: chartFiles[2].title, xLabel: "registration entries", yLabel: "server CPU ms per sync", logX: true, logY: true, series: perEntries("sync_cpu_ms")},
		{title: chartFiles[3].title, xLabel: "registration entries", yLabel: "RSS, MiB", logX: true, series: perEntries("rss_seeded_mib")},
		{title: chartFiles[4].title, xLabel: "agents", yLabel: "X509-SVIDs per second", logX: true, series: agentSeries, hline: s.raw.Median, hlineLabel: raw},
	}
	for i, c := range charts {
		if err := os.WriteFile(filepath.Join(dir, chartFiles[i].file), []byte(c.svg()), 0o644); err != nil {
			return err
		}
	}
	return nil
}
