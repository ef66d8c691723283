package topology

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Graph formats.
const (
	GraphDOT     = "dot"
	GraphMermaid = "mermaid"
	GraphSVG     = "svg"
)

// WriteGraph draws the tree of servers in format GraphDOT (Graphviz),
// GraphMermaid or GraphSVG: one node per server labelled with its tier and
// CA TTL, an edge from each parent to its child labelled with the attestor
// the child's co-located agent uses, and federated trust domains as dashed
// edges from the root. The SVG is drawn natively (tiers in rows, root at
// the top; each box shows the server's name, CA TTL and datastore) and
// needs no Graphviz.
func WriteGraph(w io.Writer, f *File, format string) error {
	var b strings.Builder
	servers := f.Walk()
	id := map[string]string{}
	for i, s := range servers {
		id[s.Name] = fmt.Sprintf("n%d", i)
	}
	label := func(s *Server) []string {
		l := []string{s.Name, fmt.Sprintf("tier %d · CA %s", f.Depth(s.Name), formatDuration(s.CATTL))}
		if s.Replicas > 1 {
			l = append(l, fmt.Sprintf("%d replicas", s.Replicas))
		}
		if s.Upstream != nil {
			l = append(l, "upstream "+s.Upstream.Kind)
		}
		return l
	}
	edge := func(s *Server) string {
		if s.Agent == nil {
			return ""
		}
		return s.Agent.NodeAttestor.Kind
	}
	switch format {
	case GraphDOT:
		fmt.Fprintf(&b, "digraph %s {\n  rankdir=TB;\n  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n  edge [fontname=\"Helvetica\", fontsize=10];\n", strconv.Quote(f.TrustDomain.Name()))
		for _, s := range servers {
			fmt.Fprintf(&b, "  %s [label=%s];\n", id[s.Name], strconv.Quote(strings.Join(label(s), "\n")))
		}
		for _, s := range servers {
			if s.Parent != "" {
				fmt.Fprintf(&b, "  %s -> %s [label=%s];\n", id[s.Parent], id[s.Name], strconv.Quote(edge(s)))
			}
		}
		for i, fed := range f.Federations {
			fmt.Fprintf(&b, "  f%d [label=%s, shape=ellipse, style=dashed];\n", i, strconv.Quote(fed.TrustDomain.Name()))
			if fetcher := f.Fetcher(fed); fetcher != nil {
				fmt.Fprintf(&b, "  %s -> f%d [style=dashed, dir=both, label=%s];\n", id[fetcher.Name], i, strconv.Quote(fed.Profile))
			}
		}
		b.WriteString("}\n")
	case GraphMermaid:
		b.WriteString("flowchart TD\n")
		for _, s := range servers {
			fmt.Fprintf(&b, "  %s[\"%s\"]\n", id[s.Name], mermaidEscape(strings.Join(label(s), "<br/>")))
		}
		for _, s := range servers {
			if s.Parent != "" {
				fmt.Fprintf(&b, "  %s -->|%s| %s\n", id[s.Parent], mermaidEscape(edge(s)), id[s.Name])
			}
		}
		for i, fed := range f.Federations {
			fmt.Fprintf(&b, "  f%d([\"%s\"])\n", i, mermaidEscape(fed.TrustDomain.Name()))
			if fetcher := f.Fetcher(fed); fetcher != nil {
				fmt.Fprintf(&b, "  %s <-.->|%s| f%d\n", id[fetcher.Name], fed.Profile, i)
			}
		}
	case GraphSVG:
		writeSVG(&b, f)
	default:
		return fmt.Errorf("topology: unknown graph format %q (want %s, %s or %s)", format, GraphDOT, GraphMermaid, GraphSVG)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// mermaidEscape keeps quotes and pipes from ending a Mermaid label.
func mermaidEscape(s string) string {
	return strings.NewReplacer(`"`, "#quot;", "|", "#124;").Replace(s)
}
