package topology

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// svgDoc is what TestGraphSVG reads back from a drawing: every text and
// the shapes, to check the picture says what the file says.
type svgDoc struct {
	texts []string
	rects int
	paths int
}

// parseSVG decodes src with encoding/xml, failing on any malformed XML,
// and collects the text of every <text> element.
func parseSVG(t *testing.T, src []byte) svgDoc {
	t.Helper()
	var doc svgDoc
	d := xml.NewDecoder(bytes.NewReader(src))
	d.Strict = true
	var inText bool
	var cur strings.Builder
	depth, root := 0, ""
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v\n%s", err, src)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				root = tok.Name.Space + " " + tok.Name.Local
			}
			depth++
			switch tok.Name.Local {
			case "text":
				inText = true
				cur.Reset()
			case "rect":
				doc.rects++
			case "path":
				doc.paths++
			}
		case xml.EndElement:
			depth--
			if tok.Name.Local == "text" {
				inText = false
				doc.texts = append(doc.texts, cur.String())
			}
		case xml.CharData:
			if inText {
				cur.Write(tok)
			}
		}
	}
	if root != "http://www.w3.org/2000/svg svg" || depth != 0 {
		t.Fatalf("SVG root element = %q (depth %d at end), want an svg element in the SVG namespace", root, depth)
	}
	return doc
}

// TestGraphSVG checks that every example draws as well-formed SVG with one
// box per server showing its name, CA TTL and datastore, and one labelled
// edge per child; and that names needing XML escaping stay text.
func TestGraphSVG(t *testing.T) {
	for _, name := range exampleFiles {
		t.Run(name, func(t *testing.T) {
			f := parseExample(t, name)
			var b bytes.Buffer
			if err := WriteGraph(&b, f, GraphSVG); err != nil {
				t.Fatal(err)
			}
			doc := parseSVG(t, b.Bytes())
			texts := map[string]int{}
			for _, s := range doc.texts {
				texts[s]++
			}
			edges := 0
			for _, s := range f.Servers {
				if texts[s.Name] != 1 {
					t.Errorf("server %q is drawn %d times, want once; texts: %q", s.Name, texts[s.Name], doc.texts)
				}
				ca := "CA " + formatDuration(s.CATTL) + " · " + s.Datastore.Kind
				if texts[ca] == 0 {
					t.Errorf("no box line %q for %s; texts: %q", ca, s.Name, doc.texts)
				}
				if s.Parent != "" {
					edges++
				}
			}
			var labels int
			for _, kind := range []string{NodeAttestorJoinToken, NodeAttestorX509PoP, NodeAttestorAWSIID, NodeAttestorK8sPSAT, NodeAttestorGCPIIT, NodeAttestorAzureMSI} {
				labels += texts[kind]
			}
			if labels != edges {
				t.Errorf("%d attestor edge labels, want %d (one per child)", labels, edges)
			}
			if doc.paths < edges+1 { // the arrow marker plus one path per edge
				t.Errorf("%d paths, want at least %d", doc.paths, edges+1)
			}
			for _, fed := range f.Federations {
				if texts[fed.TrustDomain.Name()] != 1 {
					t.Errorf("federated trust domain %s not drawn", fed.TrustDomain.Name())
				}
			}
		})
	}

	// Text that is markup in XML comes back as the same text. Server names
	// cannot hold such characters, so the name is set after parsing: the
	// drawing must not rely on validation for well-formedness.
	f, diags := Parse([]byte("trust_domain = \"example.org\"\nserver \"r\" {}\n"), "escape.hcl")
	if diags.HasErrors() {
		t.Fatalf("Parse: %v", diags)
	}
	f.Servers[0].Name = `r<&>"'`
	var b bytes.Buffer
	if err := WriteGraph(&b, f, GraphSVG); err != nil {
		t.Fatal(err)
	}
	doc := parseSVG(t, b.Bytes())
	if !cmp.Equal(doc.texts[:3], []string{"example.org", "1 server · 1 tier", "tier 0"}) || !strings.Contains(strings.Join(doc.texts, "\n"), "r<&>\"'") {
		t.Errorf("texts = %q, want the header, the tier and the server name r<&>\"' unchanged", doc.texts)
	}
}
