package topology

import (
	"encoding/xml"
	"fmt"
	"strings"
)

// SVG layout, in pixels. Text widths are estimated from character counts
// (the drawing carries no font metrics), generously for sans-serif.
const (
	svgMargin     = 24
	svgTierColumn = 64 // left column holding the "tier N" labels
	svgHeader     = 64 // title and subtitle
	svgPadX       = 14
	svgLine       = 17
	svgNameSize   = 14
	svgTextSize   = 12
	svgCharWidth  = 7.2 // average glyph width at svgTextSize
	svgNameWidth  = 8.6 // at svgNameSize, bold
	svgGapX       = 36  // between sibling boxes
	svgGapY       = 72  // between tiers: room for the edge label
	svgMinBox     = 150
)

// svgTierFill are box fills per depth: the root darkest, leaves lightest.
var svgTierFill = []string{"#dbe7fd", "#e4f2e6", "#fdf1dc", "#f3e6f8"}

var svgTierStroke = []string{"#3367d6", "#2e7d32", "#c77700", "#7b3fa0"}

// svgText escapes s for XML character data and attribute values.
func svgText(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// svgBoxLines are the lines of a server's box: name first, then CA TTL and
// datastore, then what else shapes the tier.
func svgBoxLines(f *File, s *Server) []string {
	lines := []string{s.Name, fmt.Sprintf("CA %s · %s", formatDuration(s.CATTL), s.Datastore.Kind)}
	var extra []string
	if s.Replicas > 1 {
		extra = append(extra, fmt.Sprintf("%d replicas", s.Replicas))
	}
	if s.Upstream != nil {
		extra = append(extra, "upstream "+s.Upstream.Kind)
	}
	if n := len(workloadIDs(s)); n > 0 {
		extra = append(extra, plural(n, "entry", "entries"))
	}
	if len(extra) > 0 {
		lines = append(lines, strings.Join(extra, " · "))
	}
	return lines
}

type svgBox struct {
	s     *Server
	lines []string
	x, y  float64 // top-left
	depth int
}

// writeSVG draws the tree: one row per tier (root at the top), a box per
// server, elbow edges from parent to child labelled with the attestor of
// the child's co-located agent, federated trust domains in a dashed column
// on the right.
func writeSVG(b *strings.Builder, f *File) {
	servers := f.Walk()
	boxes := map[string]*svgBox{}
	width, maxLines, maxDepth := float64(svgMinBox), 0, 0
	for _, s := range servers {
		bx := &svgBox{s: s, lines: svgBoxLines(f, s), depth: f.Depth(s.Name)}
		boxes[s.Name] = bx
		maxLines = max(maxLines, len(bx.lines))
		maxDepth = max(maxDepth, bx.depth)
		width = max(width, float64(len([]rune(bx.lines[0])))*svgNameWidth+2*svgPadX)
		for _, l := range bx.lines[1:] {
			width = max(width, float64(len([]rune(l)))*svgCharWidth+2*svgPadX)
		}
	}
	height := float64(maxLines)*svgLine + 14

	// Leaves take consecutive slots left to right; a parent is centred
	// over its first and last child.
	slot := 0
	left := float64(svgMargin + svgTierColumn)
	var place func(s *Server) float64
	place = func(s *Server) float64 {
		bx := boxes[s.Name]
		bx.y = svgHeader + float64(bx.depth)*(height+svgGapY)
		kids := f.Children(s.Name)
		if len(kids) == 0 {
			bx.x = left + float64(slot)*(width+svgGapX)
			slot++
			return bx.x
		}
		first := place(kids[0])
		last := first
		for _, c := range kids[1:] {
			last = place(c)
		}
		bx.x = (first + last) / 2
		return bx.x
	}
	for _, s := range servers {
		if s.Parent == "" {
			place(s)
		}
	}
	treeRight := left + float64(max(slot, 1))*(width+svgGapX) - svgGapX

	// Federations: a column right of the tree, one row each.
	fedX := treeRight + 2*svgGapX
	fedW := 0.0
	for _, fed := range f.Federations {
		fedW = max(fedW, float64(len(fed.TrustDomain.Name()))*svgCharWidth+2*svgPadX, float64(len(svgFedLine(fed)))*svgCharWidth+2*svgPadX)
	}
	fedH := 2*svgLine + 10.0
	totalW := treeRight + svgMargin
	if len(f.Federations) > 0 {
		totalW = fedX + fedW + svgMargin
	}
	bottom := svgHeader + float64(maxDepth+1)*(height+svgGapY) - svgGapY
	bottom = max(bottom, svgHeader+float64(len(f.Federations))*(fedH+16))

	// A legend under the tree when there are edges to explain.
	var legend []string
	if maxDepth > 0 {
		legend = append(legend, "edge label: how the child's co-located agent attests to its parent")
		for _, s := range servers {
			if s.Parent != "" && s.Agent != nil && s.Agent.NodeAttestor.Kind == NodeAttestorJoinToken {
				legend = append(legend, "orange join_token: needs a new token after a long parent outage")
				break
			}
		}
	}
	legendY := bottom + 24
	totalH := bottom + svgMargin + float64(len(legend))*svgLine
	for _, l := range legend {
		totalW = max(totalW, float64(len(l))*svgCharWidth+2*svgMargin)
	}

	title := f.TrustDomain.Name()
	subtitle := plural(len(servers), "server", "servers") + " · " + plural(maxDepth+1, "tier", "tiers")
	if n := len(f.Federations); n > 0 {
		subtitle += " · federated with " + plural(n, "trust domain", "trust domains")
	}
	totalW = max(totalW, float64(len(title))*11+2*svgMargin, float64(len(subtitle))*svgCharWidth+2*svgMargin)

	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="Helvetica, Arial, sans-serif" font-size="%d">`+"\n",
		totalW, totalH, totalW, totalH, svgTextSize)
	fmt.Fprintf(b, "  <title>%s</title>\n", svgText("arbor topology of "+title))
	b.WriteString(`  <defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>` + "\n")
	fmt.Fprintf(b, `  <rect x="0" y="0" width="%.0f" height="%.0f" fill="#ffffff"/>`+"\n", totalW, totalH)
	fmt.Fprintf(b, `  <text x="%d" y="28" font-size="18" font-weight="bold" fill="#222">%s</text>`+"\n", svgMargin, svgText(title))
	fmt.Fprintf(b, `  <text x="%d" y="46" fill="#666">%s</text>`+"\n", svgMargin, svgText(subtitle))

	// Tier labels and faint bands, so that depth reads at a glance.
	for d := 0; d <= maxDepth; d++ {
		y := svgHeader + float64(d)*(height+svgGapY)
		label := fmt.Sprintf("tier %d", d)
		fmt.Fprintf(b, `  <rect x="%d" y="%.0f" width="%.0f" height="%.0f" rx="6" fill="#f6f7f9"/>`+"\n",
			svgMargin/2, y-8, treeRight-svgMargin/2+svgMargin/2, height+16)
		fmt.Fprintf(b, `  <text x="%d" y="%.0f" fill="#888" font-weight="bold">%s</text>`+"\n", svgMargin, y+height/2+4, svgText(label))
	}

	// Edges under the boxes: an elbow from the parent's bottom centre to
	// the child's top centre, the attestor on the child's vertical leg.
	b.WriteString("  <g fill=\"none\" stroke=\"#555\" stroke-width=\"1.5\">\n")
	for _, s := range servers {
		p := boxes[s.Parent]
		if p == nil {
			continue
		}
		c := boxes[s.Name]
		px, py := p.x+width/2, p.y+height
		cx, cy := c.x+width/2, c.y
		mid := py + (cy-py)*0.35
		fmt.Fprintf(b, `    <path d="M%.1f,%.1f V%.1f H%.1f V%.1f" marker-end="url(#arrow)"/>`+"\n", px, py, mid, cx, cy-1)
	}
	b.WriteString("  </g>\n")
	for _, s := range servers {
		p := boxes[s.Parent]
		if p == nil || s.Agent == nil {
			continue
		}
		c := boxes[s.Name]
		label := s.Agent.NodeAttestor.Kind
		w := float64(len(label))*svgCharWidth + 12
		cx := c.x + width/2
		ly := c.y - svgGapY*0.32
		fill, stroke := "#ffffff", "#999"
		if label == NodeAttestorJoinToken {
			// A join-token agent cannot re-attest after a long parent
			// outage (a validation warning): make it stand out.
			fill, stroke = "#fff4e5", "#c77700"
		}
		fmt.Fprintf(b, `  <rect x="%.1f" y="%.1f" width="%.1f" height="18" rx="9" fill="%s" stroke="%s"/>`+"\n", cx-w/2, ly-9, w, fill, stroke)
		fmt.Fprintf(b, `  <text x="%.1f" y="%.1f" text-anchor="middle" font-size="11" fill="#333">%s</text>`+"\n", cx, ly+4, svgText(label))
	}

	// Boxes.
	for _, s := range servers {
		bx := boxes[s.Name]
		i := min(bx.depth, len(svgTierFill)-1)
		fmt.Fprintf(b, `  <g>`+"\n")
		if s.Replicas > 1 {
			// A shadow box behind: more than one process.
			fmt.Fprintf(b, `    <rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" rx="8" fill="%s" stroke="%s"/>`+"\n",
				bx.x+5, bx.y+5, width, height, svgTierFill[i], svgTierStroke[i])
		}
		fmt.Fprintf(b, `    <rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" rx="8" fill="%s" stroke="%s" stroke-width="1.5"/>`+"\n",
			bx.x, bx.y, width, height, svgTierFill[i], svgTierStroke[i])
		// Lines centred vertically: boxes share the tallest box's height.
		top := bx.y + (height-float64(len(bx.lines))*svgLine)/2 + 13
		for j, l := range bx.lines {
			y := top + float64(j)*svgLine
			if j == 0 {
				fmt.Fprintf(b, `    <text x="%.1f" y="%.1f" text-anchor="middle" font-size="%d" font-weight="bold" fill="#111">%s</text>`+"\n",
					bx.x+width/2, y, svgNameSize, svgText(l))
				continue
			}
			fmt.Fprintf(b, `    <text x="%.1f" y="%.1f" text-anchor="middle" fill="#333">%s</text>`+"\n", bx.x+width/2, y, svgText(l))
		}
		b.WriteString("  </g>\n")
	}

	// Federations, linked by dashed lines to the server that fetches them.
	for i, fed := range f.Federations {
		y := svgHeader + float64(i)*(fedH+16)
		for _, s := range servers {
			if fetcher := f.Fetcher(fed); fetcher == nil || s.Name != fetcher.Name {
				continue
			}
			r := boxes[s.Name]
			fmt.Fprintf(b, `  <path d="M%.1f,%.1f L%.1f,%.1f" fill="none" stroke="#888" stroke-width="1.2" stroke-dasharray="5,4"/>`+"\n",
				r.x+width, r.y+height/2, fedX, y+fedH/2)
		}
		fmt.Fprintf(b, `  <rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" rx="%.1f" fill="#fafafa" stroke="#888" stroke-dasharray="5,4"/>`+"\n",
			fedX, y, fedW, fedH, fedH/2)
		fmt.Fprintf(b, `  <text x="%.1f" y="%.1f" text-anchor="middle" font-weight="bold" fill="#333">%s</text>`+"\n", fedX+fedW/2, y+17, svgText(fed.TrustDomain.Name()))
		fmt.Fprintf(b, `  <text x="%.1f" y="%.1f" text-anchor="middle" font-size="11" fill="#666">%s</text>`+"\n", fedX+fedW/2, y+17+svgLine-2, svgText(svgFedLine(fed)))
	}
	for i, l := range legend {
		fmt.Fprintf(b, `  <text x="%d" y="%.1f" font-size="11" fill="#666">%s</text>`+"\n", svgMargin, legendY+float64(i)*svgLine, svgText(l))
	}
	b.WriteString("</svg>\n")
}

func svgFedLine(fed Federation) string { return "federated · " + fed.Profile }

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
